//! Typed errors that become HTTP responses.
//!
//! Business logic returns its own error enum; implementing `From<MyError> for HttpError`
//! maps each case to a status and a stable machine-readable `code`, so clients get
//! `{"error": {"code": "amount_too_large", "message": "..."}}` and never a bare 500.

use serde::Serialize;

/// An error that is answered as an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct HttpError {
    pub status: u16,
    /// A stable identifier clients can match on, e.g. `invalid_vpa`.
    pub code: String,
    /// What was wrong, for a human.
    pub message: String,
}

/// The JSON body an error is answered with.
#[derive(Serialize)]
pub(crate) struct Body<'a> {
    pub error: Inner<'a>,
}

#[derive(Serialize)]
pub(crate) struct Inner<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

impl HttpError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }
    pub fn conflict(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    pub fn unprocessable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(422, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }
}

impl From<crate::kv::KvError> for HttpError {
    fn from(e: crate::kv::KvError) -> Self {
        HttpError::unavailable(format!("key-value store: {e}"))
    }
}
