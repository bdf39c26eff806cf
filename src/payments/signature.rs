//! The webhook's signature, the scheme Stripe uses: the header
//! `Flashdrop-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<raw body>")>`. Checked in constant time; a signature older or
//! newer than the tolerance is refused, so a captured request cannot be
//! replayed later. Several `v1` entries may be sent (a secret being
//! rotated): one match is enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the header.
pub const HEADER: &str = "Flashdrop-Signature";
/// How far a signature's time may be from ours, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Flashdrop-Signature header")]
    Missing,
    #[error("Flashdrop-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>")]
    Malformed,
    #[error("the signature's time is more than 300 s from the server's")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header a provider sends for `body` at unix time `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// Checks `header` against `body` at unix time `now`.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => {
                signatures.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            // Other schemes a provider may add are not ours to check.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, t, body);
    // `verify_slice` compares in constant time.
    match signatures
        .iter()
        .any(|s| expected.clone().verify_slice(s).is_ok())
    {
        true => Ok(()),
        false => Err(SignatureError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test-secret";

    #[test]
    fn a_signed_body_verifies_and_any_change_is_refused() {
        let body = br#"{"event_id":"e1"}"#;
        let header = sign(SECRET, 1_000, body);
        assert_eq!(verify(SECRET, Some(&header), body, 1_000), Ok(()));
        assert_eq!(verify(SECRET, Some(&header), body, 1_300), Ok(()));
        assert_eq!(
            verify(SECRET, Some(&header), br#"{"event_id":"e2"}"#, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another-secret", Some(&header), body, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 699),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn headers_that_are_not_the_scheme_are_refused() {
        let body = b"{}";
        for header in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(
                verify(SECRET, Some(header), body, 1).is_err(),
                "{header:?} passed"
            );
        }
        assert_eq!(verify(SECRET, None, body, 1), Err(SignatureError::Missing));
    }

    #[test]
    fn one_matching_signature_of_several_is_enough() {
        let body = b"{}";
        let good = sign(SECRET, 5, body);
        let v1 = good.split_once("v1=").unwrap().1;
        let header = format!("t=5,v1={},v1={v1}", "00".repeat(32));
        assert_eq!(verify(SECRET, Some(&header), body, 5), Ok(()));
    }
}
