//! Coalesced read index: one quorum round answers every linearizable read
//! that arrived before the round began.
//!
//! A read may reuse a round only if that round *started* after the read
//! arrived: the leadership it confirmed is then at least as recent as the
//! read, which is what linearizability asks. Rounds run one at a time, so
//! under load each round serves the whole wave of reads queued behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::member::ServeError;
use crate::raft::Raft;

/// Serialises quorum rounds and shares their results.
#[derive(Debug, Default)]
pub struct ReadIndex {
    /// Number of rounds started so far.
    started: AtomicU64,
    /// Held while a round runs.
    round: tokio::sync::Mutex<()>,
    /// `(round number, read index)` of the last round that succeeded.
    last: Mutex<Option<(u64, u64)>>,
}

impl ReadIndex {
    /// The read index for a read arriving now: confirmed by a quorum round
    /// that began after this call, and applied on this (leader) member.
    pub async fn get(&self, raft: &Raft) -> Result<u64, ServeError> {
        let arrived = self.started.load(Ordering::SeqCst);
        let _turn = self.round.lock().await;
        if let Some((round, index)) = *self.last.lock().unwrap_or_else(PoisonError::into_inner) {
            if round > arrived {
                return Ok(index);
            }
        }
        let round = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let log_id = raft
            .ensure_linearizable()
            .await
            .map_err(|e| ServeError::Unavailable(e.to_string()))?;
        let index = log_id.map_or(0, |l| l.index);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((round, index));
        Ok(index)
    }
}
