//! Snapshot chunks on the wire: a JSON head (vote, meta, offset, done), a
//! newline, then the chunk's bytes raw.
//!
//! openraft's own serde form writes `data` as a JSON array of numbers, about
//! four bytes per byte; a multi-megabyte key space then takes several times
//! its size to send and parse.

use openraft::raft::InstallSnapshotRequest;
use openraft::{SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use super::{MemberNode, NodeId, TypeConfig};

/// A chunk body that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The body has no newline after its head.
    #[error("snapshot chunk without a head line")]
    NoHead,
    /// The head is not the expected JSON.
    #[error("snapshot chunk head: {0}")]
    Head(#[from] serde_json::Error),
}

#[derive(Serialize, Deserialize)]
struct Head {
    vote: Vote<NodeId>,
    meta: SnapshotMeta<NodeId, MemberNode>,
    offset: u64,
    done: bool,
}

/// Encodes one chunk: compact JSON never contains a raw newline, so the first
/// one ends the head.
pub fn encode(req: &InstallSnapshotRequest<TypeConfig>) -> Result<Vec<u8>, serde_json::Error> {
    let head = Head {
        vote: req.vote,
        meta: req.meta.clone(),
        offset: req.offset,
        done: req.done,
    };
    let mut body = serde_json::to_vec(&head)?;
    body.reserve(1 + req.data.len());
    body.push(b'\n');
    body.extend_from_slice(&req.data);
    Ok(body)
}

/// Decodes a body written by [`encode`].
pub fn decode(body: &[u8]) -> Result<InstallSnapshotRequest<TypeConfig>, ChunkError> {
    let split = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(ChunkError::NoHead)?;
    let head: Head = serde_json::from_slice(&body[..split])?;
    Ok(InstallSnapshotRequest {
        vote: head.vote,
        meta: head.meta,
        offset: head.offset,
        data: body[split + 1..].to_vec(),
        done: head.done,
    })
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    use super::*;

    fn chunk(data: Vec<u8>) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-1-42".into(),
            },
            offset: 1 << 20,
            data,
            done: true,
        }
    }

    #[test]
    fn a_chunk_survives_the_round_trip_with_newlines_in_its_data() -> anyhow::Result<()> {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let sent = chunk(data.clone());
        let body = encode(&sent)?;
        assert!(body.len() < data.len() + 300, "raw, not a JSON array");
        let got = decode(&body)?;
        assert_eq!(got.data, data);
        assert_eq!(got.offset, sent.offset);
        assert_eq!(got.meta, sent.meta);
        assert_eq!(got.vote, sent.vote);
        assert!(got.done);
        Ok(())
    }

    #[test]
    fn a_body_without_a_head_is_refused() {
        assert!(matches!(decode(b"{}"), Err(ChunkError::NoHead)));
        assert!(matches!(decode(b"nope\n"), Err(ChunkError::Head(_))));
    }
}
