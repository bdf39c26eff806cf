//! [`Text`]: a request body's text field, which takes a JSON string and
//! nothing else.
//!
//! poem-openapi's `String` also takes a JSON number or boolean and makes
//! text of it (a description sent as the number `6.27e16` was kept as the
//! text `"6.274019507408948e+16"`), so a body the document says is wrong
//! would be kept. `Text` has the same schema
//! (`type: string`) and the same validators (`min_length`, `max_length`,
//! `pattern`), and refuses anything but a string; the refusal reads
//! "field `name` must be a string, not 123" like every other wrong type.

use std::{borrow::Cow, fmt, ops::Deref};

use poem_openapi::{
    registry::{MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

/// A JSON string from a request body; see the module's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Type for Text {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn register(registry: &mut Registry) {
        String::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(self))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(Self(s)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.0
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_json_string_is_text() {
        assert_eq!(
            Text::parse_from_json(Some(json!("ok"))).unwrap(),
            Text::from("ok")
        );
        for wrong in [
            json!(6.274019507408948e16),
            json!(7),
            json!(true),
            json!(null),
        ] {
            let err = Text::parse_from_json(Some(wrong.clone())).unwrap_err();
            assert!(
                err.message().contains("Expected input type \"string\""),
                "{wrong}: {}",
                err.message()
            );
        }
        assert!(Text::parse_from_json(None).is_err());
    }

    #[test]
    fn its_schema_is_a_strings() {
        assert_eq!(Text::name(), String::name());
        assert_eq!(
            format!("{:?}", Text::schema_ref()),
            format!("{:?}", String::schema_ref())
        );
    }
}
