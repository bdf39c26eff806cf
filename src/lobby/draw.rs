//! The lobby's draw: commit to a random seed before anyone joins, reveal it
//! at the start, and order the lobby by `HMAC-SHA256(key = seed, message =
//! buyer id)`, ascending. Anyone can check the order from the revealed seed
//! and the hash published before the start; a buyer finds their own value
//! without learning who the others are.

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// A lobby's secret until the start: 256 bits from the operating system,
/// as 64 lowercase hex characters. The draw keys on this text as published.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(String);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    /// A new seed from the operating system's random source.
    pub fn draw() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
        Ok(Self(hex::encode(bytes)))
    }

    /// A seed as revealed (or stored).
    pub fn from_text(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn text(&self) -> &str {
        &self.0
    }

    /// What is published before the start: SHA-256 of the seed's text.
    pub fn commitment(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// A buyer's place value: HMAC-SHA256 keyed by the seed's text.
    pub fn value_of(&self, buyer: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(buyer.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The lobby in draw order: `(value, buyer)` by value ascending.
    pub fn order<'a>(&self, buyers: impl IntoIterator<Item = &'a str>) -> Vec<(String, &'a str)> {
        let mut drawn: Vec<(String, &str)> =
            buyers.into_iter().map(|b| (self.value_of(b), b)).collect();
        drawn.sort_unstable();
        drawn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_hmac_sha256_keyed_by_the_seed_text() {
        // The well-known HMAC-SHA256 example.
        let seed = Seed::from_text("key");
        assert_eq!(
            seed.value_of("The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(
            Seed::from_text("abc").commitment(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn seeds_are_fresh_256_bit_hex() {
        let (a, b) = (Seed::draw().unwrap(), Seed::draw().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.text().len(), 64);
        assert!(
            a.text()
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
