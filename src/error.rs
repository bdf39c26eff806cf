//! The one error shape of the API, `{"code", "message"}`, with the stable
//! machine codes of the design. Internal causes are logged, never sent.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json};

#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Stable machine code, e.g. `sold_out`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    fn json(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
        Json(ErrorBody {
            code: code.to_owned(),
            message: message.into(),
        })
    }
}

#[derive(Debug, ApiResponse)]
pub enum ErrorResponse {
    /// `invalid_request`: the request is malformed or breaks a rule.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `unauthorized`: no token, or a bad or expired one.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// `forbidden`: the token's role may not do this.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `not_found`.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `sold_out`, `limit_exceeded`, `sale_not_active`, `sale_started`,
    /// `sale_ended`, `invalid_change`, `reservation_confirming`,
    /// `reservation_confirmed`, `reservation_exists`, `stock_available`,
    /// `waitlist_disabled`.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `reservation_expired`: the hold ended before it was confirmed.
    #[oai(status = 410)]
    Gone(Json<ErrorBody>),
    /// `internal`: an unexpected failure (logged with its cause).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `rate_limited`: too many requests; retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        String,
    ),
    /// `unavailable`: Redis or MongoDB cannot be reached; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// What handlers return on failure. Converted into [`ErrorResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("rate limited; retry after {0} s")]
    RateLimited(u64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict(code, message.into())
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest(message.into())
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }
}

impl From<ApiError> for ErrorResponse {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidRequest(m) => {
                ErrorResponse::BadRequest(ErrorBody::json("invalid_request", m))
            }
            ApiError::Unauthorized(m) => {
                ErrorResponse::Unauthorized(ErrorBody::json("unauthorized", m))
            }
            ApiError::Forbidden(m) => ErrorResponse::Forbidden(ErrorBody::json("forbidden", m)),
            ApiError::NotFound(m) => ErrorResponse::NotFound(ErrorBody::json("not_found", m)),
            ApiError::Conflict(code, m) => ErrorResponse::Conflict(ErrorBody::json(code, m)),
            ApiError::Expired(m) => ErrorResponse::Gone(ErrorBody::json("reservation_expired", m)),
            ApiError::RateLimited(secs) => ErrorResponse::TooManyRequests(
                ErrorBody::json(
                    "rate_limited",
                    format!("too many requests; retry after {secs} s"),
                ),
                secs.to_string(),
            ),
            ApiError::Unavailable(m) => {
                tracing::warn!(reason = %m, "answering 503");
                ErrorResponse::Unavailable(ErrorBody::json("unavailable", m))
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                ErrorResponse::Internal(ErrorBody::json("internal", "internal error"))
            }
        }
    }
}

impl From<ApiError> for poem::Error {
    fn from(err: ApiError) -> Self {
        ErrorResponse::from(err).into()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::Other(e) => ApiError::Internal(e),
        }
    }
}

/// Turns every error that reaches the top of the router (poem-openapi's own
/// parse and auth failures, unknown routes) into the one JSON shape. Errors
/// that already carry our response pass through unchanged.
pub async fn into_json_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "invalid_request",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let status = if code == "invalid_request" {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let message = if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error");
        "internal error".to_owned()
    } else {
        err.to_string()
    };
    let body = ErrorBody {
        code: code.to_owned(),
        message,
    };
    poem::web::Json(serde_json::json!({"code": body.code, "message": body.message}))
        .with_status(status)
        .into_response()
}
