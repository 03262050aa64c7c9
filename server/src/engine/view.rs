//! The fleet as the engine sees it: machines, units, placements, states and
//! unplaced reasons, read from the applied key space in one pass.

use std::collections::BTreeMap;

use api::fleet::{
    Assignment, Desired, InstanceState, Machine, Unit, MACHINES_DIR, PLACEMENTS_DIR, STATES_DIR,
    UNITS_DIR, UNPLACED_DIR,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::keyspace::{path, Entry, KeySpace};

/// A unit spec with its container revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitView {
    /// The spec.
    pub unit: Unit,
    /// [`Unit::container_revision`] of the spec.
    pub revision: u64,
}

/// A placement with the modified index its compare-and-swap needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementView {
    /// What the engine decided.
    pub assignment: Assignment,
    /// Modified index of `/_shoal/placements/<instance>`.
    pub index: u64,
}

/// Everything the planner looks at. Build it with [`FleetView::from_keys`]
/// or by hand in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Live machines by id.
    pub machines: BTreeMap<String, Machine>,
    /// Units by name.
    pub units: BTreeMap<String, UnitView>,
    /// Placements by instance.
    pub placements: BTreeMap<String, PlacementView>,
    /// Reported states by instance.
    pub states: BTreeMap<String, InstanceState>,
    /// Recorded reasons instances are not placed, by instance.
    pub unplaced: BTreeMap<String, String>,
    /// When the engine first saw each placed-on machine missing (leader memory,
    /// filled in by the run loop, not by the key space).
    pub missing_since: BTreeMap<String, DateTime<Utc>>,
}

/// The fleet's entries, copied out of the key space so the lock is held only
/// for the copy, not for the JSON parsing.
#[derive(Debug, Clone, Default)]
pub struct RawFleet {
    machines: Vec<(String, Entry)>,
    units: Vec<(String, Entry)>,
    placements: Vec<(String, Entry)>,
    states: Vec<(String, Entry)>,
    unplaced: Vec<(String, Entry)>,
}

impl RawFleet {
    /// Copies the fleet's directories out of the key space.
    pub fn read(keys: &KeySpace) -> Self {
        Self {
            machines: keys.children(MACHINES_DIR),
            units: keys.children(UNITS_DIR),
            placements: keys.children(PLACEMENTS_DIR),
            states: keys.children(STATES_DIR),
            unplaced: keys.children(UNPLACED_DIR),
        }
    }
}

/// The JSON values whose TTL has not run out at `now`, by key base name, with
/// their entries; malformed values are skipped with a warning.
fn values<T: DeserializeOwned>(
    entries: Vec<(String, Entry)>,
    now: DateTime<Utc>,
) -> Vec<(String, T, Entry)> {
    entries
        .into_iter()
        .filter(|(_, e)| e.expiration.is_none_or(|at| at > now))
        .filter_map(|(key, entry)| {
            let raw = entry.value.as_deref()?;
            match serde_json::from_str::<T>(raw) {
                Ok(v) => Some((path::base(&key).to_owned(), v, entry)),
                Err(e) => {
                    tracing::warn!(%key, %e, "skipping a malformed fleet record");
                    None
                }
            }
        })
        .collect()
}

impl FleetView {
    /// Reads the fleet from the key space as of `now` (expired leases are gone).
    pub fn from_keys(keys: &KeySpace, now: DateTime<Utc>) -> Self {
        Self::from_raw(RawFleet::read(keys), now)
    }

    /// Parses copied entries as of `now` (expired leases are gone).
    pub fn from_raw(raw: RawFleet, now: DateTime<Utc>) -> Self {
        let machines = values::<Machine>(raw.machines, now)
            .into_iter()
            .map(|(id, mut m, _)| {
                if m.id != id {
                    if !m.id.is_empty() {
                        tracing::warn!(key = %id, record = %m.id, "machine record names another id; the key wins");
                    }
                    m.id.clone_from(&id);
                }
                (id, m)
            })
            .collect();
        let units = values::<Unit>(raw.units, now)
            .into_iter()
            .filter_map(|(name, unit, _)| {
                if unit.name != name {
                    tracing::warn!(key = %name, record = %unit.name, "skipping a unit stored under another name");
                    return None;
                }
                let revision = unit.container_revision();
                Some((name, UnitView { unit, revision }))
            })
            .collect();
        let placements = values::<Assignment>(raw.placements, now)
            .into_iter()
            .map(|(instance, assignment, entry)| {
                let index = entry.modified_index;
                (instance, PlacementView { assignment, index })
            })
            .collect();
        let states = values::<InstanceState>(raw.states, now)
            .into_iter()
            .map(|(instance, s, _)| (instance, s))
            .collect();
        let unplaced = values::<String>(raw.unplaced, now)
            .into_iter()
            .map(|(instance, s, _)| (instance, s))
            .collect();
        Self {
            machines,
            units,
            placements,
            states,
            unplaced,
            missing_since: BTreeMap::new(),
        }
    }

    /// The instances a unit wants, in order: `name`, `name@1..N`, or
    /// `name@<machine id>` for each machine a global unit may run on (not
    /// draining, matching its pin and metadata). Empty unless launched.
    pub fn wanted_instances(&self, unit: &Unit) -> Vec<String> {
        if unit.desired != Desired::Launched {
            return Vec::new();
        }
        instance_names(unit, &self.machines)
    }
}

/// The instance names of `unit` regardless of its desired state (see
/// [`FleetView::wanted_instances`]).
pub fn instance_names(unit: &Unit, machines: &BTreeMap<String, Machine>) -> Vec<String> {
    let p = &unit.placement;
    if p.global {
        machines
            .values()
            .filter(|m| global_fits(unit, m))
            .map(|m| format!("{}@{}", unit.name, m.id))
            .collect()
    } else if p.replicas > 1 {
        (1..=p.replicas)
            .map(|n| format!("{}@{n}", unit.name))
            .collect()
    } else {
        vec![unit.name.clone()]
    }
}

/// True when a global unit wants an instance on `m`: the static rules only.
pub fn global_fits(unit: &Unit, m: &Machine) -> bool {
    !m.draining
        && unit
            .placement
            .machine_id
            .as_ref()
            .is_none_or(|pin| *pin == m.id)
        && missing_metadata(unit, m).is_none()
}

/// The first metadata requirement of `unit` that `m` does not meet: the key
/// and its allowed values.
pub fn missing_metadata<'u>(unit: &'u Unit, m: &Machine) -> Option<(&'u str, &'u [String])> {
    unit.placement
        .machine_metadata
        .iter()
        .find(|(key, allowed)| {
            !m.metadata
                .get(*key)
                .is_some_and(|v| allowed.iter().any(|a| a == v))
        })
        .map(|(key, allowed)| (key.as_str(), allowed.as_slice()))
}

/// The unit an instance belongs to: the part before `@`.
pub fn unit_of(instance: &str) -> &str {
    instance.split_once('@').map_or(instance, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{Command, Op, Precondition};

    fn put(ks: &mut KeySpace, key: &str, value: &str) {
        let op = Op::Put {
            key: key.into(),
            value: Some(value.into()),
            ttl: None,
            refresh: false,
            cond: Precondition::default(),
        };
        ks.apply(&Command {
            now: Utc::now(),
            op,
        })
        .expect("put");
    }

    #[test]
    fn reads_records_and_skips_malformed_ones() {
        let mut ks = KeySpace::default();
        put(
            &mut ks,
            "/_shoal/machines/m1",
            r#"{"id":"m1","hostname":"h1","cpu_millis":1000,"memory_mb":512}"#,
        );
        put(&mut ks, "/_shoal/machines/m2", "not json");
        put(
            &mut ks,
            "/_shoal/units/web",
            r#"{"name":"web","image":"nginx"}"#,
        );
        put(&mut ks, "/_shoal/units/bad", r#"{"name":"bad"}"#);
        put(
            &mut ks,
            "/_shoal/placements/web",
            r#"{"unit":"web","instance":"web","machine_id":"m1","revision":3}"#,
        );
        put(&mut ks, "/_shoal/unplaced/db", r#""no machines""#);
        let v = FleetView::from_keys(&ks, Utc::now());
        assert_eq!(v.machines.keys().collect::<Vec<_>>(), ["m1"]);
        assert_eq!(v.units.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(
            v.units["web"].revision,
            v.units["web"].unit.container_revision()
        );
        assert_eq!(v.placements["web"].index, 5);
        assert_eq!(v.placements["web"].assignment.machine_id, "m1");
        assert_eq!(v.unplaced["db"], "no machines");
    }

    #[test]
    fn unit_of_strips_the_instance_suffix() {
        assert_eq!(unit_of("web@3"), "web");
        assert_eq!(unit_of("db"), "db");
    }
}
