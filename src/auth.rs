//! JWT authentication: HS256 tokens with `sub`, `role` and `exp`, checked by
//! the OpenAPI security scheme so every protected operation documents it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use poem::Request;
use poem_openapi::{Enum, SecurityScheme, auth::Bearer};
use serde::{Deserialize, Serialize};

use crate::{
    config::Secret,
    error::{ApiError, ErrorCode},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "lowercase")]
#[oai(rename_all = "lowercase")]
pub enum Role {
    Buyer,
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub exp: u64,
}

/// Longest buyer id we accept; ids become part of Redis fields and MongoDB
/// documents.
pub const MAX_SUB_LEN: usize = 128;

/// How many tokens that verified an instance remembers (a few MB at most:
/// a token and its claims are a few hundred bytes).
const TOKENS_REMEMBERED: usize = 16_384;

/// Allowed clock skew on `exp`, in seconds.
const LEEWAY_SECONDS: u64 = 5;

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens that verified, with their claims. A buyer's requests carry
    /// the same token, and its signature and claims would check the same
    /// again: only its expiry can change the answer, and that is checked
    /// on every use. A token is remembered by its whole text, so a token
    /// that differs in any byte is checked in full.
    verified: quick_cache::sync::Cache<Box<str>, Claims>,
}

impl JwtKeys {
    pub fn new(secret: &Secret) -> Self {
        Self::remembering(secret, TOKENS_REMEMBERED)
    }

    /// Keys that remember up to `tokens` verified tokens.
    fn remembering(secret: &Secret, tokens: usize) -> Self {
        let bytes = secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            verified: quick_cache::sync::Cache::new(tokens),
        }
    }

    pub fn mint(&self, sub: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        check_sub(sub)?;
        let exp = crate::clock::LocalClock::default().now().timestamp() as u64 + ttl.as_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The token's claims, when its signature is ours and it has not
    /// expired (with `LEEWAY_SECONDS` of skew allowed).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// `verify` at `now` (seconds): the clock of a remembered token's
    /// expiry, which is the same as the library's for one checked in full.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if let Some(claims) = self.verified.get(token) {
            if claims.exp < now.saturating_sub(LEEWAY_SECONDS) {
                self.verified.remove(token);
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        check_sub(&data.claims.sub)?;
        self.verified.insert(token.into(), data.claims.clone());
        Ok(data.claims)
    }

    /// How many verified tokens are remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.verified.len()
    }
}

fn check_sub(sub: &str) -> Result<(), TokenError> {
    if sub.is_empty() || sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
        return Err(TokenError::Invalid(format!(
            "sub must be 1..={MAX_SUB_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// A caller with a valid token of any role.
#[derive(SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_bearer",
    rename = "bearerAuth"
)]
pub struct Caller(pub Claims);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Claims> {
    let keys = req.data::<std::sync::Arc<JwtKeys>>().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "the JWT keys are not attached to this route"
        ))
    })?;
    keys.verify(&bearer.token)
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()).into())
}

impl Caller {
    pub fn buyer_id(&self) -> &str {
        &self.0.sub
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Admin => Ok(()),
            Role::Buyer => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this route needs the admin role",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::new(SECRET))
    }

    /// A token of `keys` for `sub`, valid for a minute.
    fn minted(keys: &JwtKeys, sub: &str, role: Role) -> String {
        keys.mint(sub, role, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let token = minted(&keys(), "alice", Role::Admin);
        let claims = keys().verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role, Role::Admin);
    }

    #[test]
    fn tokens_of_another_secret_are_refused() {
        let other = JwtKeys::new(&Secret::new("another-secret-another-secret-xx"));
        let token = minted(&other, "bob", Role::Buyer);
        assert!(matches!(keys().verify(&token), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn a_verified_token_is_remembered_and_its_expiry_checked_on_every_use() {
        let keys = keys();
        let token = minted(&keys, "carol", Role::Buyer);
        let now = jsonwebtoken::get_current_timestamp();
        let exp = keys.verify_at(&token, now).unwrap().exp;
        assert_eq!(keys.remembered(), 1);
        assert_eq!(keys.verify_at(&token, now + 30).unwrap().sub, "carol");
        // At the end of the leeway after `exp`, then past it.
        assert!(keys.verify_at(&token, exp + LEEWAY_SECONDS).is_ok());
        assert!(matches!(
            keys.verify_at(&token, exp + LEEWAY_SECONDS + 1),
            Err(TokenError::Expired)
        ));
        assert_eq!(keys.remembered(), 0, "an expired token is forgotten");
    }

    #[test]
    fn a_token_differing_from_a_remembered_one_in_any_part_is_checked_in_full() {
        let keys = keys();
        let token = minted(&keys, "dave", Role::Buyer);
        keys.verify(&token).unwrap();
        let admin = minted(&keys, "dave", Role::Admin);
        let parts: Vec<&str> = token.split('.').collect();
        let admin_parts: Vec<&str> = admin.split('.').collect();
        // Another token's claims under this token's signature.
        let forged = format!("{}.{}.{}", parts[0], admin_parts[1], parts[2]);
        assert!(matches!(keys.verify(&forged), Err(TokenError::Invalid(_))));
        // The signature's first character changed.
        let first = if parts[2].starts_with('A') { 'B' } else { 'A' };
        let resigned = format!("{}.{}.{first}{}", parts[0], parts[1], &parts[2][1..]);
        assert!(matches!(
            keys.verify(&resigned),
            Err(TokenError::Invalid(_))
        ));
        assert_eq!(keys.verify(&token).unwrap().role, Role::Buyer);
        assert_eq!(keys.remembered(), 1);
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let keys = JwtKeys::remembering(&Secret::new(SECRET), 64);
        for i in 0..1_000 {
            let token = minted(&keys, &format!("buyer-{i}"), Role::Buyer);
            assert_eq!(keys.verify(&token).unwrap().sub, format!("buyer-{i}"));
        }
        let remembered = keys.remembered();
        assert!(
            (1..=64).contains(&remembered),
            "remembers {remembered} of 1000 tokens"
        );
    }

    #[test]
    fn empty_and_oversized_subjects_are_refused() {
        assert!(
            keys()
                .mint("", Role::Buyer, Duration::from_secs(60))
                .is_err()
        );
        let long = "x".repeat(MAX_SUB_LEN + 1);
        assert!(
            keys()
                .mint(&long, Role::Buyer, Duration::from_secs(60))
                .is_err()
        );
    }
}
