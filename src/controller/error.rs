//! The one error type of the controller's handlers, rendered as the
//! `tapio-wire/v1` error envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::wire::v1::{ErrorBody, ErrorCode};

/// A refused request: its code and a message for the client. Internal
/// errors carry a fixed message; their detail only goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn missing(fields: &[&str]) -> ApiError {
        ApiError::new(
            ErrorCode::MissingField,
            format!("missing field: {}", fields.join(", ")),
        )
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidField, message)
    }

    /// Logs `detail` and returns an error whose body says nothing more than
    /// "internal error".
    pub fn internal(detail: &str) -> ApiError {
        tracing::error!("internal error: {detail}");
        ApiError::new(ErrorCode::InternalError, "internal error")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(ErrorBody::new(self.code, self.message))).into_response()
    }
}
