//! Draining before a reboot: with the machine marked draining the engine
//! moves its instances to other machines, and the reboot waits (bounded by
//! `--drain-timeout`) until no instance is placed here any more and every
//! instance that was placed here runs where it moved to, as the agent of
//! that machine reports it under `/_shoal/states`. [`pending`] is the pure
//! judgement; [`read`] fetches what it judges.

use std::collections::{BTreeMap, BTreeSet};

use api::fleet::{Desired, InstanceState, Unit, STATES_DIR};
use api::{Client, ClientError};

use crate::reconcile::{desired_instances, list_dir, read_placements, PlacementEntry};

/// The fleet as the drain judges it: placements, units and state reports.
#[derive(Debug, Clone, Default)]
pub struct FleetNow {
    /// Every placement.
    pub placements: Vec<PlacementEntry>,
    /// Every unit by name.
    pub units: BTreeMap<String, Unit>,
    /// The last state report of each instance, by instance name.
    pub states: BTreeMap<String, InstanceState>,
}

/// What still keeps a draining machine from rebooting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Instances of launched units still placed on this machine.
    pub here: BTreeSet<String>,
    /// Instances moved away from this machine that do not run yet where they are placed.
    pub starting: BTreeSet<String>,
}

impl Pending {
    /// True when nothing is left to wait for.
    pub fn done(&self) -> bool {
        self.here.is_empty() && self.starting.is_empty()
    }
}

/// Reads placements, units and states with a quorum read (a reboot must not rest on a stale answer).
pub async fn read(client: &Client) -> Result<FleetNow, ClientError> {
    let (placements, units) = read_placements(client, true).await?;
    let mut states = BTreeMap::new();
    for node in list_dir(client, STATES_DIR, true).await? {
        let value = node.value.as_deref().unwrap_or_default();
        match serde_json::from_str::<InstanceState>(value) {
            Ok(state) => {
                states.insert(state.instance.clone(), state);
            }
            Err(e) => tracing::warn!(key = ?node.key, error = %e, "unreadable instance state"),
        }
    }
    Ok(FleetNow {
        placements,
        units,
        states,
    })
}

/// What `machine_id` still waits for, given `moved`: the instances that were
/// placed on it since it began draining. An instance of `moved` counts as
/// started once the machine it is placed on reports it running at the placed
/// revision; one placed nowhere any more (unplaceable, destroyed) or whose
/// unit is not launched is not waited for.
pub fn pending(machine_id: &str, moved: &BTreeSet<String>, fleet: &FleetNow) -> Pending {
    let here = desired_instances(machine_id, &fleet.placements, &fleet.units)
        .into_keys()
        .collect();
    let starting = fleet
        .placements
        .iter()
        .map(|p| &p.assignment)
        .filter(|a| a.machine_id != machine_id && moved.contains(&a.instance))
        .filter(|a| {
            fleet
                .units
                .get(&a.unit)
                .is_some_and(|u| u.desired == Desired::Launched)
        })
        .filter(|a| {
            !fleet.states.get(&a.instance).is_some_and(|s| {
                s.machine_id == a.machine_id && s.state == "running" && s.revision == a.revision
            })
        })
        .map(|a| a.instance.clone())
        .collect();
    Pending { here, starting }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::fleet::Assignment;

    const ME: &str = "m1";

    fn fleet(placed: &[(&str, &str)], states: &[(&str, &str, &str)]) -> FleetNow {
        let unit = Unit::new("web", "busybox");
        let revision = unit.container_revision();
        FleetNow {
            placements: placed
                .iter()
                .enumerate()
                .map(|(i, (instance, machine))| PlacementEntry {
                    assignment: Assignment {
                        unit: "web".into(),
                        instance: (*instance).into(),
                        machine_id: (*machine).into(),
                        revision,
                    },
                    index: i as u64 + 1,
                })
                .collect(),
            states: states
                .iter()
                .map(|(instance, machine, state)| {
                    let s = InstanceState {
                        instance: (*instance).into(),
                        machine_id: (*machine).into(),
                        state: (*state).into(),
                        revision,
                        ..InstanceState::default()
                    };
                    ((*instance).into(), s)
                })
                .collect(),
            units: [("web".to_owned(), unit)].into(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn an_instance_still_placed_here_keeps_the_machine_up() {
        let f = fleet(
            &[("web@1", ME), ("web@2", "m2")],
            &[("web@1", ME, "running")],
        );
        let p = pending(ME, &set(&["web@1"]), &f);
        assert_eq!(p.here, set(&["web@1"]));
        assert!(p.starting.is_empty());
        assert!(!p.done());
    }

    #[test]
    fn a_moved_instance_is_waited_for_until_its_new_machine_runs_it() {
        let moved = set(&["web@1"]);
        for (machine, state) in [(ME, "running"), ("m2", "pending"), ("m2", "created")] {
            let f = fleet(&[("web@1", "m2")], &[("web@1", machine, state)]);
            let p = pending(ME, &moved, &f);
            assert_eq!(p.starting, moved, "{machine} {state}");
            assert!(!p.done());
        }
        let no_report = fleet(&[("web@1", "m2")], &[]);
        assert_eq!(pending(ME, &moved, &no_report).starting, moved);
        let running = fleet(&[("web@1", "m2")], &[("web@1", "m2", "running")]);
        assert!(pending(ME, &moved, &running).done());
    }

    #[test]
    fn a_report_at_another_revision_or_from_a_third_machine_does_not_count() {
        let moved = set(&["web@1"]);
        let mut old = fleet(&[("web@1", "m2")], &[("web@1", "m2", "running")]);
        old.placements[0].assignment.revision += 1;
        assert_eq!(pending(ME, &moved, &old).starting, moved);
        let third = fleet(&[("web@1", "m2")], &[("web@1", "m3", "running")]);
        assert_eq!(pending(ME, &moved, &third).starting, moved);
    }

    #[test]
    fn instances_not_moved_from_here_or_not_wanted_are_not_waited_for() {
        // web@2 never was on this machine; web@1 is placed nowhere any more.
        let f = fleet(&[("web@2", "m2")], &[("web@2", "m2", "pending")]);
        assert!(pending(ME, &set(&["web@1"]), &f).done());
        // An inactive unit runs nowhere, so nothing is waited for.
        let mut inactive = fleet(&[("web@1", "m2")], &[]);
        if let Some(u) = inactive.units.get_mut("web") {
            u.desired = Desired::Inactive;
        }
        assert!(pending(ME, &set(&["web@1"]), &inactive).done());
    }
}
