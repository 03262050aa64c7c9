//! Fleet records parsed once. The engine, the `/api/v1` fleet handlers and the
//! dashboard read the whole fleet many times a second, and between two reads
//! only a few of its thousands of records change. [`Records`] keeps every
//! record as it was parsed, with the modified index it was parsed at, and
//! parses again only what was written since: a read is a walk of the key
//! space under its read lock, the JSON parsing of the changed records after
//! the lock is released, and clones.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use api::fleet::{
    Assignment, InstanceState, Machine, Unit, MACHINES_DIR, PLACEMENTS_DIR, STATES_DIR, UNITS_DIR,
    UNPLACED_DIR,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::view::{FleetView, PlacementView, UnitView};
use crate::keyspace::{path, KeySpace};

/// The parsed fleet directories, shared by every reader of the fleet.
#[derive(Debug, Default)]
pub struct Records {
    dirs: Mutex<Dirs>,
}

#[derive(Debug, Default)]
struct Dirs {
    machines: Dir<Machine>,
    units: Dir<UnitView>,
    placements: Dir<PlacementView>,
    states: Dir<InstanceState>,
    unplaced: Dir<String>,
}

/// One directory's records by base name: the modified index each was parsed
/// at, and what it gave (`None`: malformed, warned about once).
#[derive(Debug)]
struct Dir<T> {
    parsed: HashMap<String, (u64, Option<T>)>,
}

impl<T> Default for Dir<T> {
    fn default() -> Self {
        Self {
            parsed: HashMap::new(),
        }
    }
}

/// A live record found by the walk: its base name, its modified index and,
/// when it was not parsed at that index yet, its value to parse.
struct Found {
    name: String,
    index: u64,
    fresh: Option<String>,
}

impl<T: Clone> Dir<T> {
    /// The live (unexpired) records of `dir` in `keys` as of `now`.
    fn walk(&self, keys: &KeySpace, dir: &str, now: DateTime<Utc>) -> Vec<Found> {
        keys.each_child(dir)
            .filter(|(_, e)| e.expiration.is_none_or(|at| at > now))
            .filter_map(|(key, e)| {
                let value = e.value.as_deref()?;
                let name = path::base(key);
                let known = self
                    .parsed
                    .get(name)
                    .is_some_and(|(index, _)| *index == e.modified_index);
                Some(Found {
                    name: name.to_owned(),
                    index: e.modified_index,
                    fresh: (!known).then(|| value.to_owned()),
                })
            })
            .collect()
    }

    /// Parses the fresh records with `make` (name, value, modified index),
    /// forgets the ones no longer found, and returns the well-formed ones.
    fn settle(
        &mut self,
        found: Vec<Found>,
        make: impl Fn(&str, &str, u64) -> Option<T>,
    ) -> BTreeMap<String, T> {
        let mut before = std::mem::take(&mut self.parsed);
        let mut out = BTreeMap::new();
        for f in found {
            let record = match f.fresh {
                Some(value) => make(&f.name, &value, f.index),
                None => before.remove(&f.name).and_then(|(_, record)| record),
            };
            if let Some(r) = &record {
                out.insert(f.name.clone(), r.clone());
            }
            self.parsed.insert(f.name, (f.index, record));
        }
        out
    }
}

impl Records {
    /// The fleet as of `now` (expired leases are gone), from the key space
    /// `read` locks; the lock is held for the walk only.
    pub fn view<G: Deref<Target = KeySpace>>(
        &self,
        read: impl FnOnce() -> G,
        now: DateTime<Utc>,
    ) -> FleetView {
        let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = read();
        let machines = dirs.machines.walk(&keys, MACHINES_DIR, now);
        let units = dirs.units.walk(&keys, UNITS_DIR, now);
        let placements = dirs.placements.walk(&keys, PLACEMENTS_DIR, now);
        let states = dirs.states.walk(&keys, STATES_DIR, now);
        let unplaced = dirs.unplaced.walk(&keys, UNPLACED_DIR, now);
        drop(keys);
        FleetView {
            machines: dirs.machines.settle(machines, machine),
            units: dirs.units.settle(units, unit),
            placements: dirs.placements.settle(placements, |name, value, index| {
                let assignment = parse::<Assignment>(PLACEMENTS_DIR, name, value)?;
                Some(PlacementView { assignment, index })
            }),
            states: dirs
                .states
                .settle(states, |name, value, _| parse(STATES_DIR, name, value)),
            unplaced: dirs
                .unplaced
                .settle(unplaced, |name, value, _| parse(UNPLACED_DIR, name, value)),
            missing_since: BTreeMap::new(),
        }
    }
}

/// A machine record; the key names the machine when the record disagrees.
fn machine(id: &str, value: &str, _: u64) -> Option<Machine> {
    let mut m = parse::<Machine>(MACHINES_DIR, id, value)?;
    if m.id != id {
        if !m.id.is_empty() {
            tracing::warn!(key = %id, record = %m.id, "machine record names another id; the key wins");
        }
        id.clone_into(&mut m.id);
    }
    Some(m)
}

/// A unit spec with its revision; one stored under another name is skipped.
fn unit(name: &str, value: &str, _: u64) -> Option<UnitView> {
    let unit = parse::<Unit>(UNITS_DIR, name, value)?;
    if unit.name != name {
        tracing::warn!(key = %name, record = %unit.name, "skipping a unit stored under another name");
        return None;
    }
    let revision = unit.container_revision();
    Some(UnitView { unit, revision })
}

/// `value` of `dir/name` as JSON; a malformed one is skipped with a warning.
fn parse<T: DeserializeOwned>(dir: &str, name: &str, value: &str) -> Option<T> {
    serde_json::from_str(value)
        .inspect_err(|e| tracing::warn!(%dir, %name, %e, "skipping a malformed fleet record"))
        .ok()
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::keyspace::{Command, Op, Precondition};

    fn put(ks: &mut KeySpace, key: &str, value: &str, ttl: Option<u64>) {
        let op = Op::Put {
            key: key.into(),
            value: Some(value.into()),
            ttl,
            refresh: false,
            cond: Precondition::default(),
        };
        ks.apply(&Command {
            now: Utc::now(),
            op,
        })
        .expect("put");
    }

    fn delete(ks: &mut KeySpace, key: &str) {
        let op = Op::Delete {
            key: key.into(),
            dir: false,
            recursive: false,
            cond: Precondition::default(),
        };
        ks.apply(&Command {
            now: Utc::now(),
            op,
        })
        .expect("delete");
    }

    fn machine_json(id: &str, host: &str) -> String {
        format!(r#"{{"id":"{id}","hostname":"{host}","cpu_millis":1000,"memory_mb":512}}"#)
    }

    #[test]
    fn reads_records_and_skips_malformed_ones() {
        let mut ks = KeySpace::default();
        put(
            &mut ks,
            "/_shoal/machines/m1",
            &machine_json("m1", "h1"),
            None,
        );
        put(&mut ks, "/_shoal/machines/m2", "not json", None);
        put(
            &mut ks,
            "/_shoal/machines/m3",
            &machine_json("", "h3"),
            None,
        );
        let web = r#"{"name":"web","image":"nginx"}"#;
        put(&mut ks, "/_shoal/units/web", web, None);
        put(&mut ks, "/_shoal/units/bad", r#"{"name":"bad"}"#, None);
        put(&mut ks, "/_shoal/units/alias", web, None);
        let placed = r#"{"unit":"web","instance":"web","machine_id":"m1","revision":3}"#;
        put(&mut ks, "/_shoal/placements/web", placed, None);
        put(&mut ks, "/_shoal/unplaced/db", r#""no machines""#, None);
        let v = Records::default().view(|| &ks, Utc::now());
        assert_eq!(v.machines.keys().collect::<Vec<_>>(), ["m1", "m3"]);
        assert_eq!(v.machines["m3"].id, "m3", "the key names the machine");
        assert_eq!(v.units.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(
            v.units["web"].revision,
            v.units["web"].unit.container_revision()
        );
        assert_eq!(v.placements["web"].index, 7);
        assert_eq!(v.placements["web"].assignment.machine_id, "m1");
        assert_eq!(v.unplaced["db"], "no machines");
    }

    #[test]
    fn later_reads_see_rewritten_deleted_and_expired_records() {
        let mut ks = KeySpace::default();
        let records = Records::default();
        put(
            &mut ks,
            "/_shoal/machines/m1",
            &machine_json("m1", "h1"),
            None,
        );
        put(
            &mut ks,
            "/_shoal/machines/m2",
            &machine_json("m2", "h2"),
            None,
        );
        put(
            &mut ks,
            "/_shoal/machines/m3",
            &machine_json("m3", "h3"),
            Some(5),
        );
        put(&mut ks, "/_shoal/machines/m4", "not json", None);
        let first = records.view(|| &ks, Utc::now());
        assert_eq!(
            first.machines.keys().collect::<Vec<_>>(),
            ["m1", "m2", "m3"]
        );

        put(
            &mut ks,
            "/_shoal/machines/m1",
            &machine_json("m1", "renamed"),
            None,
        );
        delete(&mut ks, "/_shoal/machines/m2");
        put(
            &mut ks,
            "/_shoal/machines/m4",
            &machine_json("m4", "h4"),
            None,
        );
        let later = records.view(|| &ks, Utc::now() + Duration::seconds(10));
        assert_eq!(later.machines.keys().collect::<Vec<_>>(), ["m1", "m4"]);
        assert_eq!(later.machines["m1"].hostname, "renamed");
        assert_eq!(later.machines["m4"].hostname, "h4");

        let again = records.view(|| &ks, Utc::now() + Duration::seconds(10));
        assert_eq!(again, later, "an unchanged key space reads the same");
    }
}
