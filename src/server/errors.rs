//! HTTP error answers: every refusal carries a readable JSON body with a
//! stable code (the [`ErrorCode`] vocabulary), never an empty 4xx.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::rtc::{ErrorCode, SignalError};

/// The HTTP status of a refusal with `code`.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Busy | ErrorCode::Draining => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::NoToken | ErrorCode::BadToken | ErrorCode::TokenExpired => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::MissingGrant
        | ErrorCode::WrongSession
        | ErrorCode::OriginNotAllowed
        | ErrorCode::HostNotAllowed => StatusCode::FORBIDDEN,
        ErrorCode::SessionInUse => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BadContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `{"error": {"code", "message"}}` with the status of `code`.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    error_with(status_of(code), code.as_str(), message)
}

/// The same body for codes outside [`ErrorCode`] (the prompt API's drop reasons).
pub fn error_with(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// Refuse unless the request's media type is `want` (compared without its
/// parameters and case-insensitively, as RFC 9110 says; `application/sdpx`
/// is not `application/sdp`).
pub fn require_content_type(headers: &HeaderMap, want: &str) -> Result<(), SignalError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(SignalError::new(
            ErrorCode::BadContentType,
            format!("Content-Type must be {want}, not {got:?}"),
        ))
    }
}

/// Unknown paths (the static files' fallback).
pub async fn not_found() -> Response {
    error(ErrorCode::NotFound, "no such page or endpoint")
}

/// A known path with a method it does not take.
pub async fn method_not_allowed() -> Response {
    error(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method; see the README's endpoint table",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types_are_exact_and_case_insensitive() {
        let cases = [
            ("application/sdp", true),
            ("Application/SDP", true),
            ("application/sdp; charset=utf-8", true),
            ("application/sdpx", false),
            ("text/plain", false),
            ("", false),
        ];
        for (got, ok) in cases {
            let mut h = HeaderMap::new();
            if !got.is_empty() {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(got));
            }
            assert_eq!(
                require_content_type(&h, "application/sdp").is_ok(),
                ok,
                "{got:?}"
            );
        }
    }
}
