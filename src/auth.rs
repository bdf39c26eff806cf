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

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &Secret) -> Self {
        let bytes = secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
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

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        check_sub(&data.claims.sub)?;
        Ok(data.claims)
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

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::new("0123456789abcdef0123456789abcdef"))
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let token = keys()
            .mint("alice", Role::Admin, Duration::from_secs(60))
            .unwrap();
        let claims = keys().verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role, Role::Admin);
    }

    #[test]
    fn tokens_of_another_secret_are_refused() {
        let other = JwtKeys::new(&Secret::new("another-secret-another-secret-xx"));
        let token = other
            .mint("bob", Role::Buyer, Duration::from_secs(60))
            .unwrap();
        assert!(matches!(keys().verify(&token), Err(TokenError::Invalid(_))));
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
