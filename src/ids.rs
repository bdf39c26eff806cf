//! Ids of sales and reservations, parsed once where a request comes in. An
//! id that does not have the right form is answered 404 without touching a
//! store, and everything behind the edge can rely on the form.

use std::fmt;

/// A path segment that is not an id of the kind asked for.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0} not found")]
pub struct UnknownId(pub &'static str);

/// A sale id: a MongoDB ObjectId in lowercase hex. Short, time-ordered, and
/// safe inside a Redis hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaleId(String);

fn is_object_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_object_id() -> String {
    bson::oid::ObjectId::new().to_hex()
}

impl SaleId {
    pub fn new() -> Self {
        Self(new_object_id())
    }

    pub fn parse(s: &str) -> Result<Self, UnknownId> {
        if is_object_id(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(UnknownId("sale"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SaleId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SaleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reservation id, `<sale id>-<24 hex>`: it names its sale, so every call
/// on it goes straight to that sale's keys. It is also the `_id` of the
/// order it may become.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationId {
    id: String,
    sale: SaleId,
}

impl ReservationId {
    pub fn new(sale: &SaleId) -> Self {
        Self {
            id: format!("{sale}-{}", new_object_id()),
            sale: sale.clone(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownId> {
        match s.split_once('-') {
            Some((sale, own)) if is_object_id(sale) && is_object_id(own) => Ok(Self {
                id: s.to_owned(),
                sale: SaleId(sale.to_owned()),
            }),
            _ => Err(UnknownId("reservation")),
        }
    }

    pub fn sale(&self) -> &SaleId {
        &self.sale
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_object_ids_are_sale_ids() {
        assert!(SaleId::parse(SaleId::new().as_str()).is_ok());
        assert!(SaleId::parse("{x}").is_err());
        assert!(SaleId::parse("65F0000000000000000000AA").is_err());
    }

    #[test]
    fn reservation_ids_name_their_sale() {
        let sale = SaleId::new();
        let rid = ReservationId::new(&sale);
        assert_eq!(ReservationId::parse(rid.as_str()).unwrap().sale(), &sale);
        assert!(ReservationId::parse("nope").is_err());
        assert!(ReservationId::parse(&format!("{sale}-x")).is_err());
    }
}
