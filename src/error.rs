//! The one error shape of the API, `{"code", "message"}`, with the stable
//! machine codes of the design as one enum. Internal causes are logged,
//! never sent.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Enum, Object, payload::Json};

/// Stable machine codes. Clients match on these; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, strum::IntoStaticStr, strum::EnumIter)]
#[oai(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotAdmitted,
    NotFound,
    MethodNotAllowed,
    SoldOut,
    LimitExceeded,
    SaleNotActive,
    SaleStarted,
    SaleEnded,
    InvalidChange,
    ReservationConfirming,
    ReservationConfirmed,
    ReservationExists,
    StockAvailable,
    WaitlistDisabled,
    /// The server lacks a setting this needs (e.g. `FLASHDROP_SEED_KEY`).
    NotConfigured,
    ReservationExpired,
    /// The sale takes payment: the hold is paid for, and the payment
    /// confirms it.
    PaymentRequired,
    /// The sale takes no payment: the buyer confirms the hold.
    PaymentNotTaken,
    /// A webhook's amount or currency is not its payment intent's.
    PaymentMismatch,
    /// A webhook's signature is missing, wrong or too old.
    BadSignature,
    /// The buyer may no longer cancel the order (or never could).
    CancelClosed,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidRequest => StatusCode::BAD_REQUEST,
            Unauthorized | BadSignature => StatusCode::UNAUTHORIZED,
            Forbidden | NotAdmitted => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SoldOut
            | LimitExceeded
            | SaleNotActive
            | SaleStarted
            | SaleEnded
            | InvalidChange
            | ReservationConfirming
            | ReservationConfirmed
            | ReservationExists
            | StockAvailable
            | WaitlistDisabled
            | PaymentRequired
            | PaymentNotTaken
            | PaymentMismatch
            | CancelClosed
            | NotConfigured => StatusCode::CONFLICT,
            ReservationExpired => StatusCode::GONE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as clients see it (also a metrics label).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Stable machine code, e.g. `sold_out`.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

/// Every error body the server sends is built here.
pub fn error_body(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code,
        message: message.into(),
    }
}

/// An error as a plain poem response, for the places outside poem-openapi's
/// typed responses (middleware, probes, the catch-all).
pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    use poem_openapi::types::ToJSON;
    let resp = poem::web::Json(error_body(code, message).to_json()).with_status(code.status());
    match code {
        ErrorCode::Unavailable => resp
            .with_header("Retry-After", UNAVAILABLE_RETRY_AFTER.to_string())
            .into_response(),
        _ => resp.into_response(),
    }
}

/// The 429 answer: the error body and `Retry-After` in whole seconds.
pub fn rate_limited_response(retry_after_secs: u64) -> Response {
    error_response(
        ErrorCode::RateLimited,
        rate_limited_message(retry_after_secs),
    )
    .with_header("Retry-After", retry_after_secs.to_string())
    .into_response()
}

fn rate_limited_message(secs: u64) -> String {
    format!("too many requests; retry after {secs} s")
}

#[derive(Debug, ApiResponse)]
pub enum ErrorResponse {
    /// `invalid_request`: the request is malformed or breaks a rule.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `unauthorized`: no token, or a bad or expired one; `bad_signature`:
    /// a webhook not signed with the shared secret, or signed too long ago.
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
    /// `waitlist_disabled`, `payment_required`, `payment_not_taken`,
    /// `payment_mismatch`, `cancel_closed`, `not_configured`.
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
    /// `unavailable`: Redis or MongoDB cannot be reached, or what was
    /// asked for is a moment away; retry after `Retry-After` seconds.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        String,
    ),
}

/// What a 503 tells a client to wait, in seconds.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 1;

/// What the services return on failure. Converted into [`ErrorResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal with its code: every 4xx, and 503.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("rate limited; retry after {0} s")]
    RateLimited(u64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Refused {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// A script found no sale in Redis even after a rebuild was asked for:
    /// another caller is still rebuilding it.
    pub fn rebuilding() -> Self {
        Self::unavailable("sale state is being rebuilt")
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Refused { code, .. } => *code,
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<ApiError> for ErrorResponse {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        let message = match err {
            ApiError::Refused { message, .. } => message,
            ApiError::RateLimited(secs) => {
                return ErrorResponse::TooManyRequests(
                    Json(error_body(code, rate_limited_message(secs))),
                    secs.to_string(),
                );
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error");
                "internal error".to_owned()
            }
        };
        if code == ErrorCode::Unavailable {
            tracing::warn!(reason = %message, "answering 503");
        }
        let body = Json(error_body(code, message));
        match code.status().as_u16() {
            400 => ErrorResponse::BadRequest(body),
            401 => ErrorResponse::Unauthorized(body),
            403 => ErrorResponse::Forbidden(body),
            404 => ErrorResponse::NotFound(body),
            409 => ErrorResponse::Conflict(body),
            410 => ErrorResponse::Gone(body),
            503 => ErrorResponse::Unavailable(body, UNAVAILABLE_RETRY_AFTER.to_string()),
            _ => ErrorResponse::Internal(body),
        }
    }
}

impl From<ApiError> for poem::Error {
    fn from(err: ApiError) -> Self {
        ErrorResponse::from(err).into()
    }
}

impl From<crate::ids::UnknownId> for ApiError {
    fn from(err: crate::ids::UnknownId) -> Self {
        ApiError::not_found(err.0)
    }
}

impl From<crate::ids::UnknownId> for ErrorResponse {
    fn from(err: crate::ids::UnknownId) -> Self {
        ApiError::from(err).into()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::Unavailable(m) => ApiError::unavailable(m),
            StoreError::Other(e) => ApiError::Internal(e),
        }
    }
}

/// Turns every error that reaches the top of the router (poem-openapi's own
/// parse and auth failures, unknown routes) into the one JSON shape. Errors
/// that already carry our response pass through unchanged.
pub fn into_json_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    // Keep the matched route for the metrics middleware outside.
    let pattern = err.data::<poem::PathPattern>().cloned();
    let code = match err.status() {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidRequest,
    };
    let message = if code == ErrorCode::Internal {
        tracing::error!(error = %err, "unhandled error");
        "internal error".to_owned()
    } else {
        err.to_string()
    };
    let mut resp = error_response(code, message);
    if let Some(pattern) = pattern {
        resp.set_data(pattern);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem_openapi::types::ToJSON;

    #[test]
    fn every_code_reads_as_its_openapi_name() {
        use strum::IntoEnumIterator;
        for code in ErrorCode::iter() {
            assert_eq!(
                code.to_json(),
                Some(serde_json::Value::String(code.as_str().to_owned()))
            );
        }
    }

    #[test]
    fn refusals_answer_with_their_code_and_status() {
        let resp = ErrorResponse::from(ApiError::new(ErrorCode::SoldOut, "gone"));
        assert!(matches!(
            resp,
            ErrorResponse::Conflict(Json(ErrorBody {
                code: ErrorCode::SoldOut,
                ..
            }))
        ));
        let resp = ErrorResponse::from(ApiError::RateLimited(3));
        assert!(matches!(resp, ErrorResponse::TooManyRequests(_, ref s) if s == "3"));
    }
}
