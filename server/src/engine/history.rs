//! The cluster's event history: the leader's engine tells what it saw (a
//! machine joined or was lost, an instance placed or moved, this member
//! became leader) as [`ClusterEvent`]s under `/_shoal/history/events`
//! (in-order keys), keeping the newest [`MAX_EVENTS`].
//!
//! Deciding what happened is pure ([`machine_events`], [`action_event`]);
//! [`Recorder`] writes in the background, in order, so the engine's loop never
//! waits for it. When the writer falls behind by [`QUEUE`] events, newer ones
//! are dropped (and logged): the history is a record, not a log of truth.

use std::collections::BTreeSet;
use std::sync::Arc;

use api::fleet::{ClusterEvent, EVENTS_DIR, MAX_EVENTS};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::plan::Action;
use crate::keyspace::{Op, Precondition};
use crate::member::Member;

/// Events waiting to be written at most.
const QUEUE: usize = 4096;

/// Hands events to the background writer.
#[derive(Debug, Clone)]
pub struct Recorder {
    queue: mpsc::Sender<ClusterEvent>,
}

impl Recorder {
    /// Starts the writer; it ends when every `Recorder` is dropped.
    pub fn start(member: Arc<Member>) -> Self {
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(write_all(member, events));
        Self { queue }
    }

    /// Queues an event to be written (dropped when the queue is full: a burst
    /// of thousands of placements logs one line per dropped event at debug level
    /// only, so it cannot flood the log).
    pub fn record(&self, event: ClusterEvent) {
        if let Err(e) = self.queue.try_send(event) {
            tracing::debug!(%e, "cluster event history is behind; an event is dropped");
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

/// Writes queued events in order, trimming the history to [`MAX_EVENTS`].
async fn write_all(member: Arc<Member>, mut events: mpsc::Receiver<ClusterEvent>) {
    while let Some(event) = events.recv().await {
        let value = match serde_json::to_string(&event) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%e, "cannot encode a cluster event");
                continue;
            }
        };
        let op = Op::CreateInOrder {
            dir: EVENTS_DIR.to_owned(),
            value: Some(value),
            ttl: None,
        };
        if let Err(e) = member.write(op).await {
            tracing::info!(%e, kind = %event.kind, "cannot record a cluster event");
            continue;
        }
        trim(&member).await;
    }
}

/// Deletes the oldest events beyond [`MAX_EVENTS`] (each only if unchanged).
async fn trim(member: &Member) {
    let excess: Vec<(String, u64)> = {
        let keys = member.keys.read();
        let all = keys.children(EVENTS_DIR);
        let over = all.len().saturating_sub(MAX_EVENTS);
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
            tracing::debug!(%e, "cannot trim the cluster event history");
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
