//! Consensus: openraft's type configuration, storage and network for Shoal.
//!
//! Laid out as openraft's own examples: `log_store` (raft.db), `state_machine`
//! (the key space, state.db), `network` (outbound peer RPC over HTTP), `chunk`
//! (snapshot chunks on the wire). The
//! inbound side of the peer RPC lives in `http::peer`.

pub mod chunk;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keyspace::{Command, Event, KeyError};

/// A member as raft knows it: its name and the URL its peers reach it on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// The member's `--name` (empty for a member added but not yet started).
    pub name: String,
    /// The member's peer URL.
    pub peer_url: String,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_url)
    }
}

/// The payload of one raft entry: key-space commands proposed together, so
/// concurrent writes share one log append and one fsync (group commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Command>);

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A blank or membership entry: no key-space result.
    Nothing,
    /// The outcome of each command of a batch, in order.
    Keys(Vec<Result<Event, KeyError>>),
}

openraft::declare_raft_types!(
    /// Shoal's raft type configuration.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        Node = MemberNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A member id.
pub type NodeId = u64;
/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// A member's id: the first 8 bytes of SHA-256 of its peer URL, so every
/// member derives the same id for the same member without talking.
pub fn member_id(peer_url: &str) -> NodeId {
    let digest = Sha256::digest(peer_url.trim_end_matches('/').as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// A member id as etcd prints it: 16 hex digits.
pub fn id_hex(id: NodeId) -> String {
    format!("{id:016x}")
}

fn io_err<E: std::error::Error + 'static>(e: &E) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::<NodeId>::new(
        openraft::ErrorSubject::Store,
        openraft::ErrorVerb::Write,
        openraft::AnyError::new(e),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_stable_and_distinct() {
        assert_eq!(
            member_id("http://127.0.0.1:2380"),
            member_id("http://127.0.0.1:2380/")
        );
        assert_ne!(
            member_id("http://127.0.0.1:2380"),
            member_id("http://127.0.0.2:2380")
        );
        assert_eq!(id_hex(255), "00000000000000ff");
    }
}
