//! The planner: a pure function from a [`FleetView`] to the [`Action`]s that
//! bring placements in line with the units' rules. No IO, no clock: the run
//! loop passes `now` and executes the actions.
//!
//! Rules, in the order a machine is checked: draining machines get nothing;
//! the `machine_id` pin; required metadata; `machine_of` (the machine of that
//! single-instance unit); `conflicts` (names or globs, both ways: neither
//! unit may name the other); capacity (CPU and memory requests must fit, a
//! capacity of 0 means unknown, so unlimited). Among the machines that pass,
//! the engine prefers the `spread` value with fewest instances of the unit,
//! then the machine running fewest instances, then the smallest machine id.
//!
//! Placed instances that still satisfy their rules stay (capacity is not
//! re-checked, so nothing churns); a spec change re-assigns the instance on
//! the same machine with the new revision. An instance whose machine is gone
//! moves at once, or for `exclusive` units only once the machine has been
//! missing for [`Params::exclusive_grace`].

use std::collections::{BTreeMap, BTreeSet};

use api::fleet::{Assignment, Machine, Unit, UnitKind};
use chrono::{DateTime, Duration, Utc};
use wildmatch::WildMatch;

use super::view::{metadata_fits, unit_of, FleetView, UnitView};

/// One change the engine wants made to the key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the placement (`prevExist=false`).
    Place {
        /// Instance name.
        instance: String,
        /// The new placement.
        assignment: Assignment,
    },
    /// Replace the placement (`prevIndex`): another machine or a new revision.
    Move {
        /// Instance name.
        instance: String,
        /// The new placement.
        assignment: Assignment,
        /// Modified index of the placement being replaced.
        prev_index: u64,
    },
    /// Delete the placement (`prevIndex`): not wanted any more, or nowhere to go.
    Remove {
        /// Instance name.
        instance: String,
        /// Modified index of the placement being deleted.
        prev_index: u64,
    },
    /// Record why the instance cannot be placed.
    Unplaceable {
        /// Instance name.
        instance: String,
        /// Which rule excluded which machines.
        reason: String,
    },
    /// Clear a recorded unplaced reason: the instance is placed or gone.
    Placed {
        /// Instance name.
        instance: String,
    },
}

/// Tunables of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// How long an `exclusive` instance waits after its machine went missing before it moves.
    pub exclusive_grace: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            exclusive_grace: Duration::seconds(30),
        }
    }
}

/// Plans with the default [`Params`].
pub fn plan(view: &FleetView, now: DateTime<Utc>) -> Vec<Action> {
    plan_with(view, now, &Params::default())
}

/// What a machine runs, as the plan goes.
#[derive(Debug, Default)]
struct Slot {
    /// Instance -> unit name.
    instances: BTreeMap<String, String>,
    /// Unit name -> how many of its instances run here.
    per_unit: BTreeMap<String, usize>,
    /// How many instances here belong to units with conflicts.
    with_conflicts: usize,
    cpu: u64,
    mem: u64,
}

/// An instance the units want, with the machine a global instance is bound to.
struct Want<'a> {
    unit: &'a UnitView,
    machine: Option<String>,
}

struct Planner<'a> {
    view: &'a FleetView,
    slots: BTreeMap<String, Slot>,
    /// Where each instance is (to be) placed on a live machine.
    placed_at: BTreeMap<String, String>,
    /// Compiled conflict patterns of the units that have any.
    patterns: BTreeMap<&'a str, Vec<WildMatch>>,
    /// Live machines, least loaded first, then by id: the order machines are tried in.
    by_load: BTreeSet<(usize, &'a str)>,
    /// Every value of each spread key across live machines (`""` for machines without it).
    spread_values: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// (unit, spread value) -> instances of the unit on machines with that value.
    spread_counts: BTreeMap<(String, &'a str), usize>,
}

/// Most reason groups an unplaced reason lists.
const MAX_REASONS: usize = 10;
/// Most machine ids one reason group lists.
const MAX_IDS: usize = 3;

impl<'a> Planner<'a> {
    fn new(view: &'a FleetView) -> Self {
        let patterns = view
            .units
            .iter()
            .filter(|(_, uv)| !uv.unit.placement.conflicts.is_empty())
            .map(|(name, uv)| {
                let ps = uv.unit.placement.conflicts.iter();
                (name.as_str(), ps.map(|p| WildMatch::new(p)).collect())
            })
            .collect();
        let mut spread_values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for uv in view.units.values() {
            if let Some(key) = &uv.unit.placement.spread {
                spread_values.entry(key).or_insert_with(|| {
                    let values = view.machines.values();
                    values.map(|m| spread_value(m, key)).collect()
                });
            }
        }
        Self {
            view,
            slots: BTreeMap::new(),
            placed_at: BTreeMap::new(),
            patterns,
            by_load: view.machines.keys().map(|id| (0, id.as_str())).collect(),
            spread_values,
            spread_counts: BTreeMap::new(),
        }
    }

    /// Moves a live machine's position in the load order after its count changed.
    fn reload(&mut self, machine: &str, before: usize, after: usize) {
        if let Some((id, _)) = self.view.machines.get_key_value(machine) {
            self.by_load.remove(&(before, id.as_str()));
            self.by_load.insert((after, id.as_str()));
        }
    }

    /// Adjusts the unit's spread count for the value of `machine`.
    fn count_spread(&mut self, machine: &str, unit: &Unit, add: bool) {
        let (Some(key), Some(m)) = (&unit.placement.spread, self.view.machines.get(machine)) else {
            return;
        };
        let n = self
            .spread_counts
            .entry((unit.name.clone(), spread_value(m, key)))
            .or_default();
        *n = if add {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
    }

    fn add(&mut self, machine: &str, instance: &str, unit: &Unit) {
        let slot = self.slots.entry(machine.to_owned()).or_default();
        let before = slot.instances.len();
        if slot
            .instances
            .insert(instance.to_owned(), unit.name.clone())
            .is_none()
        {
            *slot.per_unit.entry(unit.name.clone()).or_default() += 1;
            if !unit.placement.conflicts.is_empty() {
                slot.with_conflicts += 1;
            }
        }
        slot.cpu = slot.cpu.saturating_add(unit.cpu_millis);
        slot.mem = slot.mem.saturating_add(unit.memory_mb);
        let after = slot.instances.len();
        if after != before {
            self.reload(machine, before, after);
            self.count_spread(machine, unit, true);
        }
        self.placed_at
            .insert(instance.to_owned(), machine.to_owned());
    }

    fn remove(&mut self, machine: &str, instance: &str, unit: &Unit) {
        let mut removed = None;
        if let Some(slot) = self.slots.get_mut(machine) {
            let before = slot.instances.len();
            if slot.instances.remove(instance).is_some() {
                removed = Some((before, slot.instances.len()));
                if let Some(n) = slot.per_unit.get_mut(&unit.name) {
                    *n = n.saturating_sub(1);
                }
                if !unit.placement.conflicts.is_empty() {
                    slot.with_conflicts = slot.with_conflicts.saturating_sub(1);
                }
                slot.cpu = slot.cpu.saturating_sub(unit.cpu_millis);
                slot.mem = slot.mem.saturating_sub(unit.memory_mb);
            }
        }
        if let Some((before, after)) = removed {
            self.reload(machine, before, after);
            self.count_spread(machine, unit, false);
        }
        self.placed_at.remove(instance);
    }

    /// The machine `machine_of` points at, or why there is none.
    fn target_machine(&self, unit: &Unit) -> Result<Option<String>, String> {
        let Some(target) = &unit.placement.machine_of else {
            return Ok(None);
        };
        if let Some(t) = self.view.units.get(target) {
            if t.unit.placement.global || t.unit.placement.replicas > 1 {
                return Err(format!(
                    "machine_of {target}: {target} has several instances; it must be a single-instance unit"
                ));
            }
        }
        match self.placed_at.get(target) {
            Some(m) => Ok(Some(m.clone())),
            None => Err(format!("machine_of {target}: {target} is not placed")),
        }
    }

    /// Checks every rule for `instance` of `unit` on `m`; the error names the first broken one.
    fn check(
        &self,
        instance: &str,
        unit: &Unit,
        m: &Machine,
        capacity: bool,
    ) -> Result<(), String> {
        if m.draining {
            return Err("draining".into());
        }
        if let Some(pin) = &unit.placement.machine_id {
            if *pin != m.id {
                return Err(format!("not machine {pin} (machine_id)"));
            }
        }
        metadata_fits(unit, m)?;
        if let Some(target) = self.target_machine(unit)? {
            if target != m.id {
                let of = unit.placement.machine_of.as_deref().unwrap_or_default();
                return Err(format!("not where {of} runs ({target})"));
            }
        }
        let empty = Slot::default();
        let slot = self.slots.get(&m.id).unwrap_or(&empty);
        if !unit.placement.conflicts.is_empty() || slot.with_conflicts > 0 {
            for (other, other_unit) in &slot.instances {
                if other != instance && self.conflicts(unit, instance, other_unit, other) {
                    return Err(format!("conflicts with {other}"));
                }
            }
        }
        if capacity {
            let free = m.cpu_millis.saturating_sub(slot.cpu);
            if m.cpu_millis > 0 && unit.cpu_millis > free {
                return Err(format!(
                    "not enough cpu (need {}m, free {free}m)",
                    unit.cpu_millis
                ));
            }
            let free = m.memory_mb.saturating_sub(slot.mem);
            if m.memory_mb > 0 && unit.memory_mb > free {
                return Err(format!(
                    "not enough memory (need {} MiB, free {free})",
                    unit.memory_mb
                ));
            }
        }
        Ok(())
    }

    /// True when either unit's conflicts name the other (its unit or instance name).
    fn conflicts(&self, unit: &Unit, instance: &str, other_unit: &str, other: &str) -> bool {
        let names = |of: &str, unit: &str, instance: &str| {
            self.patterns
                .get(of)
                .is_some_and(|ps| ps.iter().any(|w| w.matches(unit) || w.matches(instance)))
        };
        names(&unit.name, other_unit, other) || names(other_unit, &unit.name, instance)
    }

    /// Picks the best machine for an instance, or says why none fits.
    fn choose(&self, instance: &str, want: &Want<'_>) -> Result<String, String> {
        let unit = &want.unit.unit;
        let target = self.target_machine(unit)?;
        let bound = want
            .machine
            .clone()
            .or(target)
            .or_else(|| unit.placement.machine_id.clone());
        let candidates: Box<dyn Iterator<Item = &Machine>> = match &bound {
            Some(id) => match self.view.machines.get(id) {
                Some(m) => Box::new(std::iter::once(m)),
                None => return Err(format!("machine {id} is not in the fleet")),
            },
            None if self.view.machines.is_empty() => return Err("no machines in the fleet".into()),
            None => Box::new(
                self.by_load
                    .iter()
                    .filter_map(|(_, id)| self.view.machines.get(*id)),
            ),
        };
        let count = |key: &str, m: &Machine| {
            let value = spread_value(m, key);
            let n = self.spread_counts.get(&(unit.name.clone(), value));
            n.copied().unwrap_or(0)
        };
        // The best spread count any machine could offer: finding it ends the search.
        let floor = unit.placement.spread.as_ref().map_or(0, |key| {
            let values = self.spread_values.get(key.as_str()).into_iter().flatten();
            values
                .map(|v| {
                    let n = self.spread_counts.get(&(unit.name.clone(), *v));
                    n.copied().unwrap_or(0)
                })
                .min()
                .unwrap_or(0)
        });
        // Candidates come least loaded first, then by id, so the first machine
        // with the lowest spread count wins.
        let mut best: Option<(usize, &str)> = None;
        let mut rejected: Vec<(&str, String)> = Vec::new();
        for m in candidates {
            match self.check(instance, unit, m, true) {
                Ok(()) => {
                    let spread = unit.placement.spread.as_ref().map_or(0, |k| count(k, m));
                    if best.is_none_or(|(s, _)| spread < s) {
                        best = Some((spread, &m.id));
                    }
                    if spread <= floor {
                        break;
                    }
                }
                Err(why) => rejected.push((&m.id, why)),
            }
        }
        match best {
            Some((_, id)) => Ok(id.to_owned()),
            None => {
                rejected.sort_unstable();
                Err(reason(&rejected))
            }
        }
    }
}

/// A machine's value of a spread key (`""` when it has none).
fn spread_value<'m>(m: &'m Machine, key: &str) -> &'m str {
    m.metadata.get(key).map_or("", String::as_str)
}

/// "no machine fits: m1: metadata region=eu required; m2, m3: draining".
fn reason(rejected: &[(&str, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (id, why) in rejected {
        match groups.iter_mut().find(|(w, _)| w == why) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((why, vec![id])),
        }
    }
    let mut parts: Vec<String> = groups
        .iter()
        .take(MAX_REASONS)
        .map(|(why, ids)| {
            let shown = ids
                .iter()
                .take(MAX_IDS)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if ids.len() > MAX_IDS {
                format!("{shown} (+{} more): {why}", ids.len() - MAX_IDS)
            } else {
                format!("{shown}: {why}")
            }
        })
        .collect();
    if groups.len() > MAX_REASONS {
        parts.push(format!("+{} more reasons", groups.len() - MAX_REASONS));
    }
    format!("no machine fits: {}", parts.join("; "))
}

/// Plans the actions that make placements match the units in `view` at `now`.
pub fn plan_with(view: &FleetView, now: DateTime<Utc>, params: &Params) -> Vec<Action> {
    let mut p = Planner::new(view);
    let mut actions = Vec::new();

    let mut wanted: BTreeMap<String, Want<'_>> = BTreeMap::new();
    for uv in view.units.values() {
        for instance in view.wanted_instances(&uv.unit) {
            let machine = uv
                .unit
                .placement
                .global
                .then(|| instance.split_once('@').map(|(_, m)| m.to_owned()))
                .flatten();
            wanted.insert(instance, Want { unit: uv, machine });
        }
    }

    // Existing placements: drop the unwanted, note the ones whose machine is gone.
    let mut settled: BTreeSet<&str> = BTreeSet::new();
    let mut pending: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    let mut kept = Vec::new();
    for (instance, pv) in &view.placements {
        let Some(want) = wanted.get(instance) else {
            actions.push(Action::Remove {
                instance: instance.clone(),
                prev_index: pv.index,
            });
            continue;
        };
        let machine = &pv.assignment.machine_id;
        if !view.machines.contains_key(machine) {
            if want.unit.unit.kind == UnitKind::Exclusive {
                let since = view.missing_since.get(machine).copied().unwrap_or(now);
                if now - since < params.exclusive_grace {
                    settled.insert(instance);
                    continue;
                }
            }
            pending.insert(instance, Some(pv.index));
            continue;
        }
        p.add(machine, instance, &want.unit.unit);
        kept.push((instance, pv, want));
    }

    // Placements on live machines stay while they keep every rule but capacity.
    for (instance, pv, want) in kept {
        let unit = &want.unit.unit;
        let machine = &pv.assignment.machine_id;
        p.remove(machine, instance, unit);
        let fits = match (&want.machine, view.machines.get(machine)) {
            (Some(bound), _) if bound != machine => false,
            (_, Some(m)) => p.check(instance, unit, m, false).is_ok(),
            (_, None) => false,
        };
        if !fits {
            pending.insert(instance, Some(pv.index));
            continue;
        }
        p.add(machine, instance, unit);
        settled.insert(instance);
        if pv.assignment.revision != want.unit.revision {
            actions.push(Action::Move {
                instance: instance.clone(),
                assignment: assign(instance, machine, want.unit),
                prev_index: pv.index,
            });
        }
    }

    for instance in wanted.keys() {
        if !view.placements.contains_key(instance) {
            pending.insert(instance, None);
        }
    }
    // Units that follow another (`machine_of`) go after the ones they follow.
    let (plain, following): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(i, _)| {
        wanted
            .get(*i)
            .is_none_or(|w| w.unit.unit.placement.machine_of.is_none())
    });
    for (instance, prev) in plain.into_iter().chain(following) {
        let Some(want) = wanted.get(instance) else {
            continue;
        };
        match p.choose(instance, want) {
            Ok(machine) => {
                let assignment = assign(instance, &machine, want.unit);
                p.add(&machine, instance, &want.unit.unit);
                settled.insert(instance);
                actions.push(match prev {
                    Some(prev_index) => Action::Move {
                        instance: instance.to_owned(),
                        assignment,
                        prev_index,
                    },
                    None => Action::Place {
                        instance: instance.to_owned(),
                        assignment,
                    },
                });
            }
            Err(reason) => {
                if let Some(prev_index) = prev {
                    actions.push(Action::Remove {
                        instance: instance.to_owned(),
                        prev_index,
                    });
                }
                if view.unplaced.get(instance) != Some(&reason) {
                    actions.push(Action::Unplaceable {
                        instance: instance.to_owned(),
                        reason,
                    });
                }
            }
        }
    }

    for instance in view.unplaced.keys() {
        if settled.contains(instance.as_str()) || !wanted.contains_key(instance) {
            actions.push(Action::Placed {
                instance: instance.clone(),
            });
        }
    }
    actions
}

fn assign(instance: &str, machine: &str, unit: &UnitView) -> Assignment {
    debug_assert_eq!(unit_of(instance), unit.unit.name);
    Assignment {
        unit: unit.unit.name.clone(),
        instance: instance.to_owned(),
        machine_id: machine.to_owned(),
        revision: unit.revision,
    }
}

#[cfg(test)]
mod tests;
