//! The cluster's event history: the leader's engine tells what it saw (a
//! machine joined or was lost, an instance placed or moved, this member
//! became leader) as [`ClusterEvent`]s under `/_shoal/history/events`
//! (in-order keys), keeping the newest [`MAX_EVENTS`].
//!
//! Deciding what happened is pure ([`machine_events`], [`action_event`]);
//! [`Recorder`] writes in the background, in order, so the engine's loop never
//! waits for it. When the writer falls behind by [`QUEUE`] events, newer ones
//! are dropped, counted and logged once: the history is a record, not a log of
//! truth. The same recorder keeps the audit log (`crate::auth::audit`) in its
//! own directory ([`Log`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use api::fleet::{ClusterEvent, EVENTS_DIR, MAX_EVENTS};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::plan::Action;
use crate::keyspace::{Op, Precondition};
use crate::member::Member;

/// Events waiting to be written at most.
const QUEUE: usize = 4096;

/// Where a [`Recorder`] keeps its events and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// The key-space directory of in-order keys.
    pub dir: &'static str,
    /// The newest this many are kept (trimmed every `keep / 100 + 1` writes).
    pub keep: usize,
    /// What the log is, in words, for the server's log lines.
    pub what: &'static str,
}

/// The engine's cluster event history.
pub const CLUSTER_EVENTS: Log = Log {
    dir: EVENTS_DIR,
    keep: MAX_EVENTS,
    what: "cluster event history",
};

/// Hands events to the background writer.
#[derive(Debug, Clone)]
pub struct Recorder {
    queue: mpsc::Sender<ClusterEvent>,
    dropped: Arc<AtomicU64>,
    what: &'static str,
}

impl Recorder {
    /// Starts the writer of `log`; it ends when every `Recorder` is dropped.
    pub fn start(member: Arc<Member>, log: Log) -> Self {
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(write_all(member, log, events));
        Self {
            queue,
            dropped: Arc::default(),
            what: log.what,
        }
    }

    /// Queues an event to be written (dropped and counted when the queue is
    /// full; the first drop is logged, later ones at debug level only, so a
    /// burst cannot flood the log).
    pub fn record(&self, event: ClusterEvent) {
        if let Err(e) = self.queue.try_send(event) {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!(%e, what = self.what, "the writer is behind; events are dropped (further drops are counted, logged at debug level)");
            } else {
                tracing::debug!(%e, what = self.what, dropped = before + 1, "an event is dropped");
            }
        }
    }
}

/// A new event of `kind`.
pub fn event(at: DateTime<Utc>, kind: &str, detail: String) -> ClusterEvent {
    ClusterEvent {
        at,
        kind: kind.into(),
        machine: None,
        instance: None,
        detail,
    }
}

/// Machines that joined (in `now` only) and were lost (in `before` only).
pub fn machine_events(
    before: &BTreeSet<String>,
    now: &BTreeSet<String>,
    at: DateTime<Utc>,
) -> Vec<ClusterEvent> {
    let joined = now
        .difference(before)
        .map(|m| (m, "machine_joined", "lease taken"));
    let lost = before
        .difference(now)
        .map(|m| (m, "machine_lost", "lease lapsed or removed"));
    joined
        .chain(lost)
        .map(|(m, kind, detail)| ClusterEvent {
            machine: Some(m.clone()),
            ..event(at, kind, detail.into())
        })
        .collect()
}

/// The event an applied engine action stands for: placements and moves.
pub fn action_event(action: &Action, at: DateTime<Utc>) -> Option<ClusterEvent> {
    let (kind, instance, assignment) = match action {
        Action::Place {
            instance,
            assignment,
        } => ("instance_placed", instance, assignment),
        Action::Move {
            instance,
            assignment,
            ..
        } => ("instance_moved", instance, assignment),
        _ => return None,
    };
    Some(ClusterEvent {
        machine: Some(assignment.machine_id.clone()),
        instance: Some(instance.clone()),
        ..event(
            at,
            kind,
            format!("{} revision {:x}", assignment.unit, assignment.revision),
        )
    })
}

/// Writes queued events in order, trimming the log to its `keep` newest.
async fn write_all(member: Arc<Member>, log: Log, mut events: mpsc::Receiver<ClusterEvent>) {
    let trim_every = log.keep / 100 + 1;
    let mut since_trim = trim_every;
    while let Some(event) = events.recv().await {
        let value = match serde_json::to_string(&event) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%e, what = log.what, "cannot encode an event");
                continue;
            }
        };
        let op = Op::CreateInOrder {
            dir: log.dir.to_owned(),
            value: Some(value),
            ttl: None,
        };
        if let Err(e) = member.write(op).await {
            tracing::info!(%e, kind = %event.kind, what = log.what, "cannot record an event");
            continue;
        }
        since_trim += 1;
        if since_trim >= trim_every {
            since_trim = 0;
            trim(&member, log).await;
        }
    }
}

/// Deletes the oldest events beyond `log.keep` (each only if unchanged).
async fn trim(member: &Member, log: Log) {
    let excess: Vec<(String, u64)> = {
        let keys = member.keys.read();
        let all = keys.children(log.dir);
        let over = all.len().saturating_sub(log.keep);
        all.into_iter()
            .take(over)
            .map(|(k, e)| (k, e.modified_index))
            .collect()
    };
    for (key, index) in excess {
        let op = Op::Delete {
            key,
            dir: false,
            recursive: false,
            cond: Precondition {
                prev_index: Some(index),
                ..Precondition::default()
            },
        };
        if let Err(e) = member.write(op).await {
            tracing::debug!(%e, what = log.what, "cannot trim");
        }
    }
}

#[cfg(test)]
mod tests {
    use api::fleet::Assignment;

    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn joined_and_lost_machines_are_told_once() {
        let at = Utc::now();
        let told = machine_events(&set(&["m1", "m2"]), &set(&["m2", "m3"]), at);
        let what: Vec<(&str, &str)> = told
            .iter()
            .map(|e| (e.kind.as_str(), e.machine.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(what, [("machine_joined", "m3"), ("machine_lost", "m1")]);
        assert!(machine_events(&set(&["m1"]), &set(&["m1"]), at).is_empty());
    }

    #[test]
    fn placements_and_moves_are_events_other_actions_not() {
        let at = Utc::now();
        let assignment = Assignment {
            unit: "web".into(),
            instance: "web@1".into(),
            machine_id: "m2".into(),
            revision: 0x2a,
        };
        let moved = Action::Move {
            instance: "web@1".into(),
            assignment: assignment.clone(),
            prev_index: 3,
        };
        let e = action_event(&moved, at).expect("a move is an event");
        assert_eq!(e.kind, "instance_moved");
        assert_eq!(e.machine.as_deref(), Some("m2"));
        assert_eq!(e.instance.as_deref(), Some("web@1"));
        assert_eq!(e.detail, "web revision 2a");
        let placed = Action::Place {
            instance: "web@1".into(),
            assignment,
        };
        assert_eq!(
            action_event(&placed, at).map(|e| e.kind),
            Some("instance_placed".into())
        );
        let removed = Action::Remove {
            instance: "web@1".into(),
            prev_index: 3,
        };
        assert!(action_event(&removed, at).is_none());
    }
}
