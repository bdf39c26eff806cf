//! Request limits: the cap on body size (413 beyond it).

use poem::{Body, Endpoint, IntoResponse, Request, Response, Result, error::ReadBodyError};

use crate::error::ApiError;

/// Refuses bodies larger than `max` bytes with 413, whether the client
/// declares a length or streams a chunked body.
pub async fn cap_body<E: Endpoint>(next: E, mut req: Request, max: usize) -> Result<Response> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max as u64 => return Err(too_large(max)),
        Some(_) => {}
        None if req
            .headers()
            .contains_key(poem::http::header::TRANSFER_ENCODING) =>
        {
            let bytes = req
                .take_body()
                .into_bytes_limit(max)
                .await
                .map_err(|e| match e {
                    ReadBodyError::PayloadTooLarge => too_large(max),
                    other => ApiError::invalid(format!("cannot read the body: {other}")).into(),
                })?;
            req.set_body(Body::from_bytes(bytes));
        }
        None => {}
    }
    next.call(req).await.map(IntoResponse::into_response)
}

fn too_large(max: usize) -> poem::Error {
    poem::Error::from_string(
        format!("the request body is larger than {max} bytes"),
        poem::http::StatusCode::PAYLOAD_TOO_LARGE,
    )
}
