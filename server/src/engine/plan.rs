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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use api::fleet::{Assignment, Machine, Unit, UnitKind};
use chrono::{DateTime, Duration, Utc};

use self::conflicts::Conflicts;
use self::spread::Spread;
use super::view::{missing_metadata, unit_of, FleetView, UnitView};

mod conflicts;
mod spread;

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
struct Slot<'a> {
    /// Instance -> unit number.
    instances: BTreeMap<&'a str, usize>,
    /// Unit number -> how many of its instances run here.
    per_unit: BTreeMap<usize, usize>,
    /// How many instances here belong to units with patterns for instance names.
    by_instance: usize,
    cpu: u64,
    mem: u64,
}

/// Why a machine cannot take an instance: the first rule it breaks.
#[derive(Debug)]
enum Reject<'a> {
    Draining,
    /// Pinned to another machine (`machine_id`).
    Pin(&'a str),
    /// A required metadata key and its allowed values.
    Metadata(&'a str, &'a [String]),
    /// `machine_of` cannot be followed.
    Target(String),
    /// Not the machine the `machine_of` unit runs on.
    NotWhere {
        of: &'a str,
        target: &'a str,
    },
    /// An instance already there that conflicts.
    Conflict(&'a str),
    Cpu {
        need: u64,
        free: u64,
    },
    Memory {
        need: u64,
        free: u64,
    },
}

impl fmt::Display for Reject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::Draining => f.write_str("draining"),
            Reject::Pin(pin) => write!(f, "not machine {pin} (machine_id)"),
            Reject::Metadata(key, allowed) => {
                write!(f, "metadata {key}={} required", allowed.join("|"))
            }
            Reject::Target(why) => f.write_str(why),
            Reject::NotWhere { of, target } => write!(f, "not where {of} runs ({target})"),
            Reject::Conflict(other) => write!(f, "conflicts with {other}"),
            Reject::Cpu { need, free } => {
                write!(f, "not enough cpu (need {need}m, free {free}m)")
            }
            Reject::Memory { need, free } => {
                write!(f, "not enough memory (need {need} MiB, free {free})")
            }
        }
    }
}

/// The rules that hold for a whole plan: draining, the pin, required metadata.
fn static_rules<'u>(unit: &'u Unit, m: &Machine) -> Result<(), Reject<'u>> {
    if m.draining {
        return Err(Reject::Draining);
    }
    if let Some(pin) = &unit.placement.machine_id {
        if *pin != m.id {
            return Err(Reject::Pin(pin));
        }
    }
    match missing_metadata(unit, m) {
        Some((key, allowed)) => Err(Reject::Metadata(key, allowed)),
        None => Ok(()),
    }
}

/// The plan's state. Machines and units are numbers: their positions in
/// `machines` and `units`, both in the view's (id or name) order.
struct Planner<'a> {
    view: &'a FleetView,
    /// Live machines by number.
    machines: Vec<&'a Machine>,
    /// Live machine id -> number.
    numbers: HashMap<&'a str, usize>,
    /// Units by number.
    units: Vec<&'a UnitView>,
    /// What each machine runs, by machine number.
    slots: Vec<Slot<'a>>,
    /// Where each instance is (to be) placed on a live machine.
    placed_at: HashMap<&'a str, usize>,
    conflicts: Conflicts,
    /// Live machines, least loaded first, then by id: the order machines are tried in.
    by_load: BTreeSet<(usize, usize)>,
    spread: Spread,
}

/// Most reason groups an unplaced reason lists.
const MAX_REASONS: usize = 10;
/// Most machine ids one reason group lists.
const MAX_IDS: usize = 3;

impl<'a> Planner<'a> {
    fn new(view: &'a FleetView) -> Self {
        let machines: Vec<&Machine> = view.machines.values().collect();
        let units: Vec<&UnitView> = view.units.values().collect();
        let specs: Vec<&Unit> = units.iter().map(|uv| &uv.unit).collect();
        Self {
            view,
            numbers: view
                .machines
                .keys()
                .zip(0..)
                .map(|(id, n)| (id.as_str(), n))
                .collect(),
            slots: machines.iter().map(|_| Slot::default()).collect(),
            placed_at: HashMap::new(),
            conflicts: Conflicts::new(&specs),
            by_load: (0..machines.len()).map(|n| (0, n)).collect(),
            spread: Spread::new(&specs, &machines),
            machines,
            units,
        }
    }

    /// The unit with number `u`.
    fn unit(&self, u: usize) -> &'a Unit {
        &self.units[u].unit
    }

    /// The id of machine `m`.
    fn id(&self, m: usize) -> &'a str {
        &self.machines[m].id
    }

    /// The number of the live machine `id`.
    fn number(&self, id: &str) -> Option<usize> {
        self.numbers.get(id).copied()
    }

    /// The machine a global instance is bound to (the part after `@`).
    fn bound<'i>(&self, instance: &'i str, u: usize) -> Option<&'i str> {
        self.unit(u)
            .placement
            .global
            .then(|| instance.split_once('@').map(|(_, m)| m))
            .flatten()
    }

    fn add(&mut self, m: usize, instance: &'a str, u: usize) {
        let unit = self.unit(u);
        let by_instance = self.conflicts.by_instance(u);
        let slot = &mut self.slots[m];
        let before = slot.instances.len();
        if slot.instances.insert(instance, u).is_none() {
            *slot.per_unit.entry(u).or_default() += 1;
            slot.by_instance += usize::from(by_instance);
        }
        slot.cpu = slot.cpu.saturating_add(unit.cpu_millis);
        slot.mem = slot.mem.saturating_add(unit.memory_mb);
        let after = slot.instances.len();
        if after != before {
            self.reload(m, before, after);
            self.spread.adjust(u, m, true);
        }
        self.placed_at.insert(instance, m);
    }

    fn remove(&mut self, m: usize, instance: &str, u: usize) {
        let unit = self.unit(u);
        let by_instance = self.conflicts.by_instance(u);
        let slot = &mut self.slots[m];
        let before = slot.instances.len();
        if slot.instances.remove(instance).is_some() {
            if let Some(n) = slot.per_unit.get_mut(&u) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    slot.per_unit.remove(&u);
                }
            }
            slot.by_instance = slot.by_instance.saturating_sub(usize::from(by_instance));
            slot.cpu = slot.cpu.saturating_sub(unit.cpu_millis);
            slot.mem = slot.mem.saturating_sub(unit.memory_mb);
            let after = slot.instances.len();
            self.reload(m, before, after);
            self.spread.adjust(u, m, false);
        }
        self.placed_at.remove(instance);
    }

    /// Moves a machine's position in the load order after its count changed.
    fn reload(&mut self, m: usize, before: usize, after: usize) {
        self.by_load.remove(&(before, m));
        self.by_load.insert((after, m));
    }

    /// The machine `machine_of` points at, or why there is none.
    fn target_machine(&self, unit: &Unit) -> Result<Option<usize>, String> {
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
        match self.placed_at.get(target.as_str()) {
            Some(&m) => Ok(Some(m)),
            None => Err(format!("machine_of {target}: {target} is not placed")),
        }
    }

    /// Checks every rule for `instance` of unit `u` on machine `m`; the error is the first broken one.
    fn check(&self, instance: &str, u: usize, m: usize, capacity: bool) -> Result<(), Reject<'a>> {
        let (unit, machine, slot) = (self.unit(u), self.machines[m], &self.slots[m]);
        static_rules(unit, machine)?;
        if let Some(target) = self.target_machine(unit).map_err(Reject::Target)? {
            if target != m {
                return Err(Reject::NotWhere {
                    of: unit.placement.machine_of.as_deref().unwrap_or_default(),
                    target: self.id(target),
                });
            }
        }
        if let Some(other) = self.conflict_on(slot, instance, u) {
            return Err(Reject::Conflict(other));
        }
        if capacity {
            let free = machine.cpu_millis.saturating_sub(slot.cpu);
            if machine.cpu_millis > 0 && unit.cpu_millis > free {
                let need = unit.cpu_millis;
                return Err(Reject::Cpu { need, free });
            }
            let free = machine.memory_mb.saturating_sub(slot.mem);
            if machine.memory_mb > 0 && unit.memory_mb > free {
                let need = unit.memory_mb;
                return Err(Reject::Memory { need, free });
            }
        }
        Ok(())
    }

    /// The first instance on `slot` (by name) that conflicts with `instance` of unit `u`.
    ///
    /// Settled by unit counts alone when no patterns for instance names are
    /// involved; the slot's instances are only walked when there may be a conflict.
    fn conflict_on(&self, slot: &Slot<'a>, instance: &str, u: usize) -> Option<&'a str> {
        let c = &self.conflicts;
        let present = |v: usize| {
            let n = slot.per_unit.get(&v).copied().unwrap_or(0);
            n > usize::from(v == u && slot.instances.contains_key(instance))
        };
        let maybe = c.named(u).iter().any(|&v| present(v))
            || ((c.by_instance(u) || slot.by_instance > 0)
                && slot.instances.iter().any(|(other, &v)| {
                    *other != instance && c.instances_clash(u, instance, v, other)
                }));
        if !maybe {
            return None;
        }
        slot.instances
            .iter()
            .find(|(other, &v)| **other != instance && c.clash(u, instance, v, other))
            .map(|(other, _)| *other)
    }

    /// The machine an instance of unit `u` must go to, if any: the global
    /// instance's machine, the `machine_of` target's, or the pin.
    fn bound_machine(&self, instance: &str, u: usize) -> Result<Option<usize>, String> {
        let unit = self.unit(u);
        let target = self.target_machine(unit)?;
        let id = match (self.bound(instance, u), target) {
            (None, Some(t)) => return Ok(Some(t)),
            (Some(id), _) => id,
            (None, None) => match &unit.placement.machine_id {
                Some(pin) => pin.as_str(),
                None => return Ok(None),
            },
        };
        match self.number(id) {
            Some(m) => Ok(Some(m)),
            None => Err(format!("machine {id} is not in the fleet")),
        }
    }

    /// Picks the best machine for an instance of unit `u`, or says why none fits.
    fn choose(&self, instance: &str, u: usize) -> Result<usize, String> {
        match self.bound_machine(instance, u)? {
            Some(m) => self.pick(instance, u, std::iter::once(m)),
            None if self.machines.is_empty() => Err("no machines in the fleet".into()),
            None => self.pick(instance, u, self.by_load.iter().map(|&(_, m)| m)),
        }
    }

    /// The candidate with the lowest spread count, the first one among
    /// equals (candidates come least loaded first, then by id).
    fn pick(
        &self,
        instance: &str,
        u: usize,
        candidates: impl Iterator<Item = usize>,
    ) -> Result<usize, String> {
        // The best spread count any usable machine could offer: finding it ends the search.
        let unit = self.unit(u);
        let floor = self
            .spread
            .floor(u, |m| static_rules(unit, self.machines[m]).is_ok());
        let mut best: Option<(usize, usize)> = None;
        let mut rejected: Vec<(usize, Reject<'a>)> = Vec::new();
        for m in candidates {
            match self.check(instance, u, m, true) {
                Ok(()) => {
                    let spread = self.spread.count(u, m);
                    if best.is_none_or(|(s, _)| spread < s) {
                        best = Some((spread, m));
                    }
                    if spread <= floor {
                        break;
                    }
                }
                Err(why) if best.is_none() => rejected.push((m, why)),
                Err(_) => {}
            }
        }
        if let Some((_, m)) = best {
            return Ok(m);
        }
        rejected.sort_unstable_by_key(|(m, _)| *m);
        let named: Vec<(&str, String)> = rejected
            .iter()
            .map(|(m, why)| (self.id(*m), why.to_string()))
            .collect();
        Err(reason(&named))
    }
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

/// Every instance the units want, with its unit's number (its position in `view.units`).
fn wanted(view: &FleetView) -> BTreeMap<String, usize> {
    let mut wanted = BTreeMap::new();
    for (u, uv) in view.units.values().enumerate() {
        for instance in view.wanted_instances(&uv.unit) {
            wanted.insert(instance, u);
        }
    }
    wanted
}

/// Plans the actions that make placements match the units in `view` at `now`.
pub fn plan_with(view: &FleetView, now: DateTime<Utc>, params: &Params) -> Vec<Action> {
    let wanted = wanted(view);
    let mut p = Planner::new(view);
    let mut actions = Vec::new();

    // Existing placements: drop the unwanted, note the ones whose machine is gone.
    let mut settled: BTreeSet<&str> = BTreeSet::new();
    let mut pending: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    let mut kept = Vec::new();
    for (instance, pv) in &view.placements {
        let Some(&u) = wanted.get(instance) else {
            actions.push(Action::Remove {
                instance: instance.clone(),
                prev_index: pv.index,
            });
            continue;
        };
        let machine = &pv.assignment.machine_id;
        let Some(m) = p.number(machine) else {
            if p.unit(u).kind == UnitKind::Exclusive {
                let since = view.missing_since.get(machine).copied().unwrap_or(now);
                if now - since < params.exclusive_grace {
                    settled.insert(instance);
                    continue;
                }
            }
            pending.insert(instance, Some(pv.index));
            continue;
        };
        p.add(m, instance, u);
        kept.push((instance, pv, u, m));
    }

    // Placements on live machines stay while they keep every rule but capacity.
    for (instance, pv, u, m) in kept {
        p.remove(m, instance, u);
        let fits = match p.bound(instance, u) {
            Some(bound) if bound != pv.assignment.machine_id => false,
            _ => p.check(instance, u, m, false).is_ok(),
        };
        if !fits {
            pending.insert(instance, Some(pv.index));
            continue;
        }
        p.add(m, instance, u);
        settled.insert(instance);
        let uv = p.units[u];
        if pv.assignment.revision != uv.revision {
            actions.push(Action::Move {
                instance: instance.clone(),
                assignment: assign(instance, &pv.assignment.machine_id, uv),
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
            .is_none_or(|&u| p.unit(u).placement.machine_of.is_none())
    });
    for (instance, prev) in plain.into_iter().chain(following) {
        let Some(&u) = wanted.get(instance) else {
            continue;
        };
        match p.choose(instance, u) {
            Ok(m) => {
                let assignment = assign(instance, p.id(m), p.units[u]);
                p.add(m, instance, u);
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
