//! Error bodies: etcd's numeric codes on `/v2/*`, stable string codes on `/api/v1`.

use serde::{Deserialize, Serialize};

/// etcd v2's error body, e.g. `{"errorCode":100,"message":"Key not found","cause":"/a","index":7}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EtcdError {
    /// etcd's numeric error code (100 key not found, 101 compare failed, ...).
    pub error_code: u32,
    /// etcd's fixed message for the code.
    pub message: String,
    /// What the error is about (a key, a comparison, a field).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
    /// The key space index when the error happened.
    #[serde(default)]
    pub index: u64,
}

/// The error body of every `/api/v1` endpoint: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// The error itself.
    pub error: ApiError,
}

/// A machine-readable code with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// Stable code a program can branch on, e.g. `lock_busy`, `bad_request`, `not_found`.
    pub code: String,
    /// What went wrong, in words.
    pub message: String,
}

/// An error and its causes on one line, `outer: cause: root cause`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
