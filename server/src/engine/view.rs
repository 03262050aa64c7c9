//! The fleet as the engine sees it: machines, units, placements, states and
//! unplaced reasons, as [`super::records`] reads them from the applied key space.

use std::collections::BTreeMap;

use api::fleet::{Assignment, Desired, InstanceState, Machine, Unit};
use chrono::{DateTime, Utc};

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

/// Everything the planner looks at. Read it with
/// [`Records::view`](super::records::Records::view) or build it by hand in tests.
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

impl FleetView {
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

    #[test]
    fn unit_of_strips_the_instance_suffix() {
        assert_eq!(unit_of("web@3"), "web");
        assert_eq!(unit_of("db"), "db");
    }
}
