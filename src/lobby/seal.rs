//! Sealing a lobby's seed, so that reading the database before the start
//! does not reveal the draw: ChaCha20-Poly1305 under a key from
//! `FLASHDROP_SEED_KEY` (the SHA-256 of its text), a fresh random nonce per
//! seed, and the sale's id as associated data, so a sealed seed opens only
//! for its own sale. The seed is opened once, at the start, by the
//! instance that makes the draw; from then on the draw carries it in the
//! clear.

use chacha20poly1305::{
    AeadCore, ChaCha20Poly1305, KeyInit,
    aead::{Aead, OsRng, Payload},
};
use sha2::{Digest, Sha256};

use super::draw::Seed;
use crate::{config::Secret, ids::SaleId};

const NONCE_BYTES: usize = 12;

/// The key seeds are sealed with. Never printed.
#[derive(Clone)]
pub struct SeedKey(ChaCha20Poly1305);

impl std::fmt::Debug for SeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedKey(***)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the lobby's sealed seed does not open with FLASHDROP_SEED_KEY (a different key, or the value was altered)"
)]
pub struct SealError;

impl SeedKey {
    pub fn new(secret: &Secret) -> Self {
        let key = Sha256::digest(secret.expose().as_bytes());
        Self(ChaCha20Poly1305::new(&key))
    }

    /// The seed sealed for `sale`, as lowercase hex: nonce, then
    /// ciphertext and tag.
    pub fn seal(&self, sale: &SaleId, seed: &Seed) -> anyhow::Result<String> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: seed.text().as_bytes(),
                    aad: sale.as_str().as_bytes(),
                },
            )
            .map_err(|e| anyhow::anyhow!("sealing the seed: {e}"))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(hex::encode(out))
    }

    /// The seed `seal` sealed for `sale`.
    pub fn open(&self, sale: &SaleId, sealed: &str) -> Result<Seed, SealError> {
        let bytes = hex::decode(sealed).map_err(|_| SealError)?;
        if bytes.len() <= NONCE_BYTES {
            return Err(SealError);
        }
        let (nonce, body) = bytes.split_at(NONCE_BYTES);
        let text = self
            .0
            .decrypt(
                nonce.into(),
                Payload {
                    msg: body,
                    aad: sale.as_str().as_bytes(),
                },
            )
            .map_err(|_| SealError)?;
        String::from_utf8(text)
            .map(Seed::from_text)
            .map_err(|_| SealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_seed_opens_for_its_sale_with_its_key_only() {
        let key = SeedKey::new(&Secret::new("a-seed-key-of-at-least-32-bytes!!"));
        let (sale, other) = (SaleId::new(), SaleId::new());
        let seed = Seed::draw().unwrap();
        let sealed = key.seal(&sale, &seed).unwrap();
        assert!(!sealed.contains(seed.text()), "sealed, not in the clear");
        assert_eq!(key.open(&sale, &sealed).unwrap(), seed);
        assert!(key.open(&other, &sealed).is_err(), "bound to its sale");
        let wrong = SeedKey::new(&Secret::new("another-key-of-at-least-32-bytes!!"));
        assert!(wrong.open(&sale, &sealed).is_err(), "bound to its key");
        let mut altered = sealed.into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert!(
            key.open(&sale, &String::from_utf8(altered).unwrap())
                .is_err()
        );
        assert_ne!(
            key.seal(&sale, &seed).unwrap(),
            key.seal(&sale, &seed).unwrap(),
            "fresh nonces"
        );
    }
}
