//! etcd v2's error codes for the key space, with their messages and HTTP statuses.

use serde::{Deserialize, Serialize};

/// The etcd v2 error codes Shoal produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// 100: the key does not exist.
    KeyNotFound,
    /// 101: a prevValue/prevIndex comparison failed.
    TestFailed,
    /// 102: the operation needs a file but found a directory.
    NotFile,
    /// 104: a path component is a file, not a directory.
    NotDir,
    /// 105: the key exists and prevExist=false.
    NodeExist,
    /// 107: the root cannot be written.
    RootReadOnly,
    /// 108: a directory with children cannot be removed without recursive.
    DirNotEmpty,
    /// 201: prevValue was given empty.
    PrevValueRequired,
    /// 202: ttl is not a number.
    TtlNaN,
    /// 203: an index is not a number.
    IndexNaN,
    /// 209: a field has an invalid value.
    InvalidField,
    /// 210: the form is malformed.
    InvalidForm,
    /// 211: refresh was given a value.
    RefreshValue,
    /// 212: refresh was given no TTL.
    RefreshTtlRequired,
    /// 300: the consensus layer failed.
    RaftInternal,
    /// 301: no leader is known right now.
    LeaderElect,
    /// 401: the watched index is older than the event history.
    EventIndexCleared,
}

impl ErrorCode {
    /// etcd's numeric code.
    pub fn code(self) -> u32 {
        match self {
            Self::KeyNotFound => 100,
            Self::TestFailed => 101,
            Self::NotFile => 102,
            Self::NotDir => 104,
            Self::NodeExist => 105,
            Self::RootReadOnly => 107,
            Self::DirNotEmpty => 108,
            Self::PrevValueRequired => 201,
            Self::TtlNaN => 202,
            Self::IndexNaN => 203,
            Self::InvalidField => 209,
            Self::InvalidForm => 210,
            Self::RefreshValue => 211,
            Self::RefreshTtlRequired => 212,
            Self::RaftInternal => 300,
            Self::LeaderElect => 301,
            Self::EventIndexCleared => 401,
        }
    }

    /// etcd's fixed message for the code.
    pub fn message(self) -> &'static str {
        match self {
            Self::KeyNotFound => "Key not found",
            Self::TestFailed => "Compare failed",
            Self::NotFile => "Not a file",
            Self::NotDir => "Not a directory",
            Self::NodeExist => "Key already exists",
            Self::RootReadOnly => "Root is read only",
            Self::DirNotEmpty => "Directory not empty",
            Self::PrevValueRequired => "PrevValue is Required in POST form",
            Self::TtlNaN => "The given TTL in POST form is not a number",
            Self::IndexNaN => "The given index in POST form is not a number",
            Self::InvalidField => "Invalid field",
            Self::InvalidForm => "Invalid POST form",
            Self::RefreshValue => "Value provided on refresh",
            Self::RefreshTtlRequired => "A TTL must be provided on refresh",
            Self::RaftInternal => "Raft Internal Error",
            Self::LeaderElect => "During Leader Election",
            Self::EventIndexCleared => "The event in requested index is outdated and cleared",
        }
    }

    /// The HTTP status etcd answers with for the code.
    pub fn status(self) -> u16 {
        match self {
            Self::KeyNotFound => 404,
            Self::NotFile | Self::DirNotEmpty => 403,
            Self::TestFailed | Self::NodeExist => 412,
            Self::RaftInternal | Self::LeaderElect => 500,
            _ => 400,
        }
    }
}

/// A key-space error: etcd's code, what it is about, and the index when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {} ({cause}) [{index}]", code.code(), code.message())]
pub struct KeyError {
    /// Which error.
    pub code: ErrorCode,
    /// What it is about: a key, a comparison, a field.
    pub cause: String,
    /// The key space index when it happened.
    pub index: u64,
}

impl KeyError {
    /// An error about `cause` at `index`.
    pub fn new(code: ErrorCode, cause: impl Into<String>, index: u64) -> Self {
        Self {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// The wire body etcd clients expect.
    pub fn to_wire(&self) -> api::error::EtcdError {
        api::error::EtcdError {
            error_code: self.code.code(),
            message: self.code.message().to_owned(),
            cause: self.cause.clone(),
            index: self.index,
        }
    }
}
