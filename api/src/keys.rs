//! etcd v2 `/v2/keys` response shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One key or directory as etcd v2 renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Full path of the key, e.g. `/foo/bar`; absent for the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Value of a file node; absent for directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// True for directories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    /// When the key expires, if it has a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<DateTime<Utc>>,
    /// Seconds left before the key expires, if it has a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Children of a directory, when listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<Node>>,
    /// Index of the write that last changed this node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modified_index: u64,
    /// Index of the write that created this node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_index: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The body of every successful `/v2/keys` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeysResponse {
    /// `get`, `set`, `create`, `update`, `delete`, `compareAndSwap`,
    /// `compareAndDelete` or `expire`.
    pub action: String,
    /// The node after the operation (or the deleted node).
    pub node: Node,
    /// The node before the operation, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Node>,
}
