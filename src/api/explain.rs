//! What the generated layer says when a request does not fit the document,
//! said for people: which field, and why, in the words of the document
//! rather than the names of Rust types. And `Allow` on every 405.

use std::sync::LazyLock;

use poem::{
    IntoResponse, Response,
    http::{StatusCode, header},
};
use poem_openapi::error::{ParseParamError, ParsePathError, ParseRequestPayloadError};

use crate::error::{ErrorCode, error_response};

/// A parse failure of the generated layer (a parameter, a path segment,
/// the body, which the front door kept as read) as a 400 in plain words;
/// other errors pass unchanged.
pub fn explain(err: poem::Error, body: Option<&[u8]>) -> poem::Error {
    let message = if let Some(e) = err.downcast_ref::<ParseParamError>() {
        format!("parameter `{}` {}", e.name, plain(&e.reason))
    } else if let Some(e) = err.downcast_ref::<ParsePathError>() {
        format!("path segment `{}` {}", e.name, plain(&e.reason))
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        body_problem(&e.reason, body.unwrap_or_default())
    } else {
        return err;
    };
    poem::Error::from_response(error_response(ErrorCode::InvalidRequest, message))
}

/// The body's problem: not JSON, not an object, or one field named.
fn body_problem(reason: &str, body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return "the body is empty; send a JSON object".to_owned();
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return format!("the body is not valid JSON: {e}"),
    };
    let Some(object) = value.as_object() else {
        return "the body must be a JSON object".to_owned();
    };
    if let Some((field, rule)) = field_rule(reason) {
        return format!("field `{field}` {}", plain_rule(rule));
    }
    let stripped = strip_context(reason);
    if let Some(field) = between(stripped, "properties `", "`") {
        return format!("field `{field}` is read-only");
    }
    if let Some(field) = between(stripped, "unknown field `", "`") {
        return format!("field `{field}` is not known here");
    }
    // A missing field or a value of the wrong type: the generated parser
    // names the type, not the field; the document's schema finds the field.
    if let Some(problem) = context_type(reason).and_then(|name| first_bad_field(name, object)) {
        return problem;
    }
    format!("the body does not fit the document: {}", plain(reason))
}

/// The request type named in ` (occurred while parsing "CreateSale")` or
/// `failed to parse "CreateSale": ...`. An optional field adds its own
/// context first (`(occurred while parsing "optional_string")`): the
/// body's type is the last one named.
fn context_type(reason: &str) -> Option<&str> {
    const CONTEXT: &str = "(occurred while parsing \"";
    match reason.rsplit_once(CONTEXT) {
        Some((_, last)) => between(last, "", "\")"),
        None => between(reason, "failed to parse \"", "\""),
    }
}

/// The first field of `object` that breaks the type or presence its
/// schema in the document declares.
fn first_bad_field(
    schema: &str,
    object: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let schema = &SPEC["components"]["schemas"][schema];
    let required = schema["required"].as_array();
    for (field, declared) in schema["properties"].as_object()? {
        let value = object.get(field).filter(|v| !v.is_null());
        let Some(value) = value else {
            if required.is_some_and(|r| r.iter().any(|f| f == field)) {
                return Some(format!("field `{field}` is required"));
            }
            continue;
        };
        let ty = declared["type"].as_str().unwrap_or("object");
        let format = declared["format"].as_str().unwrap_or("");
        let fits = match (ty, format) {
            ("integer", _) => value.is_i64(),
            ("number", _) => value.is_number(),
            ("boolean", _) => value.is_boolean(),
            ("string", "date-time") => value
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            ("string", _) => value.is_string(),
            _ => true,
        };
        if !fits {
            let words = type_words(&format!("{ty}_{format}"));
            return Some(format!("field `{field}` must be {words}, not {value}"));
        }
    }
    None
}

/// `field `quantity` verification failed. minimum(1, exclusive: false)`.
fn field_rule(reason: &str) -> Option<(&str, &str)> {
    let field = between(reason, "field `", "` verification failed. ")?;
    let (_, rule) = reason.split_once("verification failed. ")?;
    Some((field, strip_context(rule)))
}

/// One reason in plain words, without the names of Rust types.
fn plain(reason: &str) -> String {
    let reason = strip_context(reason);
    if let Some(rule) = reason.strip_prefix("verification failed. ") {
        return plain_rule(rule);
    }
    if let Some(ty) = between(reason, "Expected input type \"", "\"") {
        let found = reason
            .split_once("found ")
            .map(|(_, v)| v.trim_end_matches('.'))
            .unwrap_or("something else");
        return format!("must be {}, not {found}", type_words(ty));
    }
    if between(reason, "Type \"", "\" expects an input value").is_some() {
        return "is required".to_owned();
    }
    // What `str::parse` says of a bad number in a query or a header.
    if reason.contains("invalid digit")
        || reason.contains("empty string")
        || reason.contains("number too")
    {
        return "must be a whole number".to_owned();
    }
    reason.to_owned()
}

fn plain_rule(rule: &str) -> String {
    let number = |r: &str| between(r, "(", ",").unwrap_or("?").to_owned();
    let inner = |r: &str| between(r, "(", ")").unwrap_or("?").to_owned();
    if rule.starts_with("minimum(") {
        if rule.contains("exclusive: true") {
            return format!("must be more than {}", number(rule));
        }
        return format!("must be at least {}", number(rule));
    }
    if rule.starts_with("maximum(") {
        if rule.contains("exclusive: true") {
            return format!("must be less than {}", number(rule));
        }
        return format!("must be at most {}", number(rule));
    }
    if rule.starts_with("minLength(") {
        return format!("must be at least {} characters long", inner(rule));
    }
    if rule.starts_with("maxLength(") {
        return format!("must be at most {} characters long", inner(rule));
    }
    if let Some(pattern) = between(rule, "pattern(\"", "\")") {
        return match PATTERN_WORDS.iter().find(|(p, _)| *p == pattern) {
            Some((_, words)) => format!("must be {words}"),
            None => format!("must match {pattern}"),
        };
    }
    rule.to_owned()
}

/// The patterns the document declares, in words.
pub const CURRENCY_PATTERN: &str = "^[A-Z]{3}$";
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,128}$";
pub const NAME_PATTERN: &str = "\\S";
const PATTERN_WORDS: &[(&str, &str)] = &[
    (CURRENCY_PATTERN, "three upper-case letters, e.g. EUR"),
    (
        IDEMPOTENCY_KEY_PATTERN,
        "1 to 128 visible ASCII characters (no spaces)",
    ),
    (NAME_PATTERN, "more than blanks"),
];

fn type_words(ty: &str) -> &'static str {
    match ty {
        t if t.starts_with("integer") => "an integer",
        t if t.starts_with("number") => "a number",
        "string_date-time" => "a date-time such as 2030-01-01T12:00:00Z",
        t if t.starts_with("string") => "a string",
        t if t.starts_with("boolean") => "true or false",
        t if t.starts_with("[") || t.starts_with("array") => "a list",
        _ => "a JSON object",
    }
}

/// Drops ` (occurred while parsing "ReserveRequest")` and the like.
fn strip_context(reason: &str) -> &str {
    let reason = reason
        .split(" (occurred while parsing")
        .next()
        .unwrap_or(reason);
    match reason.strip_prefix("failed to parse \"") {
        Some(rest) => rest.split_once("\": ").map_or(reason, |(_, r)| r),
        None => reason,
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = s.split_once(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

/// Adds `Allow` to a 405 on `path`, listing the methods the document has
/// for it.
pub fn allow_on_405(resp: Response, path: &str) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED || resp.headers().contains_key(header::ALLOW)
    {
        return resp;
    }
    let allow = allowed_methods(path).unwrap_or_else(|| "GET, HEAD".to_owned());
    resp.with_header(header::ALLOW, allow).into_response()
}

/// The API's own document, read once.
static SPEC: LazyLock<serde_json::Value> =
    LazyLock::new(|| serde_json::from_str(&super::spec_json()).unwrap_or_default());

/// Path templates of the API (`/api/v1/sales/{id}`) and their methods.
static ROUTES: LazyLock<Vec<(Vec<String>, String)>> = LazyLock::new(|| {
    let mut routes = Vec::new();
    if let Some(paths) = SPEC["paths"].as_object() {
        for (template, ops) in paths {
            let segments = format!("/api/v1{template}")
                .split('/')
                .map(str::to_owned)
                .collect();
            let mut methods: Vec<String> = ops
                .as_object()
                .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                .unwrap_or_default();
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".to_owned());
            }
            routes.push((segments, methods.join(", ")));
        }
    }
    routes
});

fn allowed_methods(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        })
        .map(|(_, methods)| methods.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_words() {
        assert_eq!(
            plain("verification failed. minimum(1, exclusive: false)"),
            "must be at least 1"
        );
        assert_eq!(
            plain_rule("pattern(\"^[A-Z]{3}$\")"),
            "must be three upper-case letters, e.g. EUR"
        );
        assert_eq!(
            plain(r#"Expected input type "integer_int64", found "x"."#),
            r#"must be an integer, not "x""#
        );
    }

    #[test]
    fn a_body_of_the_wrong_type_names_its_field() {
        let reason = r#"Expected input type "integer_int64", found "x". (occurred while parsing "ReserveRequest")"#;
        assert_eq!(
            body_problem(reason, br#"{"quantity": "x"}"#),
            r#"field `quantity` must be an integer, not "x""#
        );
        let reason = r#"failed to parse "ReserveRequest": field `quantity` verification failed. maximum(1000, exclusive: false)"#;
        assert_eq!(
            body_problem(reason, br#"{"quantity": 5000}"#),
            "field `quantity` must be at most 1000"
        );
        // An optional field's parser adds its own context before the
        // body's: the body's type is the last one named.
        let reason = r#"Expected input type "string", found 7. (occurred while parsing "optional_string") (occurred while parsing "PatchSale")"#;
        assert_eq!(
            body_problem(reason, br#"{"name": 7}"#),
            "field `name` must be a string, not 7"
        );
        assert_eq!(
            body_problem("", b"{"),
            "the body is not valid JSON: EOF while parsing an object at line 1 column 1"
        );
    }

    #[test]
    fn allow_lists_the_methods_of_the_path() {
        let allow = allowed_methods("/api/v1/reservations/abc").unwrap();
        let mut methods: Vec<&str> = allow.split(", ").collect();
        methods.sort_unstable();
        assert_eq!(methods, ["DELETE", "GET", "HEAD"]);
        let allow = allowed_methods("/api/v1/sales/abc/reservations").unwrap();
        assert_eq!(allow, "POST");
        assert!(allowed_methods("/api/v1/nowhere").is_none());
    }
}
