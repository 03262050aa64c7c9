//! etcd v2 `/v2/members` and `/v2/stats` shapes.

use serde::{Deserialize, Serialize};

/// One member of the control plane, as `GET /v2/members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Member id as 16 hex digits.
    pub id: String,
    /// Member name (empty until the member has started and published it).
    pub name: String,
    /// URLs its peers reach it on.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// URLs clients reach it on (empty until published).
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

/// `GET /v2/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// Every voting member.
    pub members: Vec<Member>,
}

/// `POST /v2/members` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMember {
    /// The new member's peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The etcd API version this server speaks.
    pub etcdserver: String,
    /// The cluster protocol version.
    pub etcdcluster: String,
    /// Shoal's own version.
    pub shoal: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"true"` when the member sees a leader, as etcd spells it.
    pub health: String,
}
