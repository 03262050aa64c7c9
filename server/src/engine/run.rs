//! The engine's loop: on the leader only, re-plan whenever the key space
//! changes (and every second), and execute the plan with compare-and-swap.
//!
//! A failed comparison (etcd 101 or 105) means someone else changed the key
//! since the view was read: the loop simply plans again from the new state.
//! What the leader sees happen (leadership, machines coming and going,
//! placements) goes to the cluster event history (`history`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api::fleet::{PLACEMENTS_DIR, UNPLACED_DIR};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};

use super::history::{self, Recorder};
use super::plan::{plan, Action};
use super::view::FleetView;
use crate::keyspace::{ErrorCode, Op, Precondition};
use crate::member::{Member, ServeError};

/// How often the leader re-plans without a key-space change (grace periods run out).
const TICK: Duration = Duration::from_secs(1);
/// The least time between two plans, so a burst of changes (lease renewals,
/// state reports) costs one plan, not one per change.
const MIN_GAP: Duration = Duration::from_millis(50);
/// How many actions are in flight at once (the proposer batches them into few entries).
const PARALLEL: usize = 64;

/// Runs until the task is dropped.
pub async fn run(member: Arc<Member>) {
    let mut changed = member.keys.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When this leader first saw each placed-on machine missing.
    let mut missing: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let recorder = Recorder::start(member.clone(), history::CLUSTER_EVENTS);
    // The machines of the last plan while leader; `None` when not leading.
    let mut known: Option<BTreeSet<String>> = None;
    let mut last_plan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = changed.changed() => if r.is_err() { return },
        }
        tokio::time::sleep_until(last_plan + MIN_GAP).await;
        changed.mark_unchanged();
        last_plan = tokio::time::Instant::now();
        if !member.is_leader() {
            missing.clear();
            known = None;
            continue;
        }
        let now = crate::clock::now();
        let started = std::time::Instant::now();
        let mut view = member.fleet_view(now);
        let read = started.elapsed();
        let machines: BTreeSet<String> = view.machines.keys().cloned().collect();
        match &known {
            None => {
                let (term, _) = member.raft_position();
                let detail = format!("member {} leads in term {term}", member.name);
                recorder.record(history::event(now, "leader_elected", detail));
            }
            Some(before) => {
                for e in history::machine_events(before, &machines, now) {
                    recorder.record(e);
                }
            }
        }
        known = Some(machines);
        track_missing(&mut missing, &view, now);
        view.missing_since.clone_from(&missing);
        let actions = plan(&view, now);
        tracing::debug!(actions = actions.len(), ?read, took = ?started.elapsed(), "engine planned");
        if actions.is_empty() {
            continue;
        }
        let (member, recorder) = (&member, &recorder);
        let outcomes: Vec<bool> = stream::iter(actions)
            .map(|a| async move {
                let told = history::action_event(&a, now);
                let ok = execute(member, a).await;
                if let Some(e) = told.filter(|_| ok) {
                    recorder.record(e);
                }
                ok
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        if outcomes.iter().any(|ok| !ok) {
            // Something moved under us or the write failed: re-plan soon, not in a hot loop.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Remembers when each machine that still has placements went missing; forgets the rest.
fn track_missing(
    missing: &mut BTreeMap<String, DateTime<Utc>>,
    view: &FleetView,
    now: DateTime<Utc>,
) {
    let gone: Vec<&String> = view
        .placements
        .values()
        .map(|p| &p.assignment.machine_id)
        .filter(|m| !view.machines.contains_key(*m))
        .collect();
    missing.retain(|m, _| gone.contains(&m));
    for m in gone {
        missing.entry(m.clone()).or_insert(now);
    }
}

fn put(key: String, value: String, cond: Precondition) -> Op {
    Op::Put {
        key,
        value: Some(value),
        ttl: None,
        refresh: false,
        cond,
    }
}

fn delete(key: String, cond: Precondition) -> Op {
    Op::Delete {
        key,
        dir: false,
        recursive: false,
        cond,
    }
}

/// The write that carries out an action.
pub fn op_of(action: &Action) -> Result<Op, serde_json::Error> {
    Ok(match action {
        Action::Place {
            instance,
            assignment,
        } => put(
            format!("{PLACEMENTS_DIR}/{instance}"),
            serde_json::to_string(assignment)?,
            Precondition {
                prev_exist: Some(false),
                ..Precondition::default()
            },
        ),
        Action::Move {
            instance,
            assignment,
            prev_index,
        } => put(
            format!("{PLACEMENTS_DIR}/{instance}"),
            serde_json::to_string(assignment)?,
            Precondition {
                prev_index: Some(*prev_index),
                ..Precondition::default()
            },
        ),
        Action::Remove {
            instance,
            prev_index,
        } => delete(
            format!("{PLACEMENTS_DIR}/{instance}"),
            Precondition {
                prev_index: Some(*prev_index),
                ..Precondition::default()
            },
        ),
        Action::Unplaceable { instance, reason } => put(
            format!("{UNPLACED_DIR}/{instance}"),
            serde_json::to_string(reason)?,
            Precondition::default(),
        ),
        Action::Placed { instance } => delete(
            format!("{UNPLACED_DIR}/{instance}"),
            Precondition::default(),
        ),
    })
}

/// Executes one action; false when the plan should be redone.
async fn execute(member: &Member, action: Action) -> bool {
    let op = match op_of(&action) {
        Ok(op) => op,
        Err(e) => {
            tracing::warn!(%e, ?action, "cannot encode an engine action");
            return false;
        }
    };
    match member.write(op).await {
        Ok(_) => {
            tracing::debug!(?action, "engine action applied");
            true
        }
        Err(ServeError::Key(e))
            if matches!(e.code, ErrorCode::TestFailed | ErrorCode::NodeExist) =>
        {
            tracing::debug!(?action, "placement changed under the engine; re-planning");
            false
        }
        Err(ServeError::Key(e))
            if e.code == ErrorCode::KeyNotFound && matches!(action, Action::Placed { .. }) =>
        {
            true
        }
        Err(e) => {
            tracing::info!(%e, ?action, "engine action failed; re-planning");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use api::fleet::Assignment;

    use super::*;

    fn assignment() -> Assignment {
        Assignment {
            unit: "web".into(),
            instance: "web@1".into(),
            machine_id: "m1".into(),
            revision: 4,
        }
    }

    #[test]
    fn placements_are_written_with_compare_and_swap() {
        let place = Action::Place {
            instance: "web@1".into(),
            assignment: assignment(),
        };
        let Ok(Op::Put {
            key, value, cond, ..
        }) = op_of(&place)
        else {
            panic!("place is a put");
        };
        assert_eq!(key, "/_shoal/placements/web@1");
        assert_eq!(cond.prev_exist, Some(false));
        let back: Assignment = serde_json::from_str(&value.expect("a value")).expect("json");
        assert_eq!(back, assignment());

        let moved = Action::Move {
            instance: "web@1".into(),
            assignment: assignment(),
            prev_index: 9,
        };
        let Ok(Op::Put { cond, .. }) = op_of(&moved) else {
            panic!("move is a put");
        };
        assert_eq!(cond.prev_index, Some(9));

        let removed = Action::Remove {
            instance: "web@1".into(),
            prev_index: 9,
        };
        let Ok(Op::Delete { key, cond, .. }) = op_of(&removed) else {
            panic!("remove is a delete");
        };
        assert_eq!(key, "/_shoal/placements/web@1");
        assert_eq!(cond.prev_index, Some(9));
    }

    #[test]
    fn reasons_are_json_strings_under_unplaced() {
        let why = Action::Unplaceable {
            instance: "db".into(),
            reason: "no \"machines\"".into(),
        };
        let Ok(Op::Put { key, value, .. }) = op_of(&why) else {
            panic!("unplaceable is a put");
        };
        assert_eq!(key, "/_shoal/unplaced/db");
        assert_eq!(value.as_deref(), Some(r#""no \"machines\"""#));
    }
}
