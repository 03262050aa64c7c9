//! TTL expiry: the leader proposes the removal of keys whose TTL has run out.
//!
//! Only the leader decides, through the log, so every member removes the
//! same keys at the same index. The state machine re-checks each key against
//! the leader's clock stamped in the command, so a stale proposal is harmless.

use std::sync::Arc;
use std::time::Duration;

use crate::keyspace::Op;
use crate::member::Member;

/// How often the leader looks for expired keys.
const TICK: Duration = Duration::from_millis(100);
/// The most keys one expiry command removes.
const BATCH: usize = 512;

/// Runs until the task is dropped.
pub async fn run(member: Arc<Member>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !member.is_leader() {
            continue;
        }
        let due = member.keys.read().expired(crate::clock::now(), BATCH);
        if due.is_empty() {
            continue;
        }
        if let Err(e) = member.propose(Op::Expire { keys: due }).await {
            tracing::debug!(%e, "expiry proposal did not apply");
        }
    }
}
