//! Spread bookkeeping for one plan: the values of every spread key numbered
//! once, and each spreading unit's instance count per value.
//!
//! Units and machines are numbers: their positions in the plan's lists.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};

use api::fleet::{Machine, Unit};

/// Instances per spread value, for the units that spread.
#[derive(Debug)]
pub(super) struct Spread {
    /// Per spread key in use: machine number -> value number.
    keys: Vec<Vec<usize>>,
    /// Per unit: the number of the key it spreads over, if any.
    key_of: Vec<Option<usize>>,
    /// Per unit: its instances per value number of its key.
    counts: Vec<Vec<usize>>,
    /// Per unit: the value numbers of the machines it may run on, found on first use.
    reachable: Vec<OnceCell<Vec<usize>>>,
}

/// A machine's value of a spread key (`""` when it has none).
fn spread_value<'m>(m: &'m Machine, key: &str) -> &'m str {
    m.metadata.get(key).map_or("", String::as_str)
}

/// Numbers the values of `key` across `machines`: machine number -> value number, and how many values.
fn number_values(machines: &[&Machine], key: &str) -> (Vec<usize>, usize) {
    let mut values: BTreeMap<&str, usize> = BTreeMap::new();
    let of_machine = machines
        .iter()
        .map(|m| {
            let next = values.len();
            *values.entry(spread_value(m, key)).or_insert(next)
        })
        .collect();
    (of_machine, values.len())
}

impl Spread {
    /// Numbers the values of every key `units` spread over, across `machines`.
    pub(super) fn new(units: &[&Unit], machines: &[&Machine]) -> Self {
        let mut numbers: HashMap<&str, usize> = HashMap::new();
        let mut keys = Vec::new();
        let mut sizes = Vec::new();
        let mut key_of = Vec::with_capacity(units.len());
        let mut counts = Vec::with_capacity(units.len());
        for unit in units {
            let Some(key) = unit.placement.spread.as_deref() else {
                key_of.push(None);
                counts.push(Vec::new());
                continue;
            };
            let k = *numbers.entry(key).or_insert_with(|| {
                let (of_machine, size) = number_values(machines, key);
                keys.push(of_machine);
                sizes.push(size);
                keys.len() - 1
            });
            key_of.push(Some(k));
            counts.push(vec![0; sizes.get(k).copied().unwrap_or(0)]);
        }
        Self {
            keys,
            key_of,
            reachable: (0..units.len()).map(|_| OnceCell::new()).collect(),
            counts,
        }
    }

    /// The value number of machine `m` for the key unit `u` spreads over.
    fn value(&self, u: usize, m: usize) -> Option<usize> {
        let k = self.key_of.get(u).copied().flatten()?;
        self.keys.get(k)?.get(m).copied()
    }

    /// Instances of unit `u` on machines with machine `m`'s spread value (0 when `u` does not spread).
    pub(super) fn count(&self, u: usize, m: usize) -> usize {
        self.value(u, m)
            .and_then(|v| self.counts.get(u)?.get(v).copied())
            .unwrap_or(0)
    }

    /// Counts one instance of unit `u` on machine `m` more, or one fewer.
    pub(super) fn adjust(&mut self, u: usize, m: usize, add: bool) {
        let Some(v) = self.value(u, m) else {
            return;
        };
        if let Some(n) = self.counts.get_mut(u).and_then(|c| c.get_mut(v)) {
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        }
    }

    /// The lowest count unit `u` has over the values of the machines `allowed`
    /// keeps: no machine the unit can use offers less. `allowed` must not
    /// change within the plan (it is asked once per unit).
    pub(super) fn floor(&self, u: usize, allowed: impl Fn(usize) -> bool) -> usize {
        let Some(k) = self.key_of.get(u).copied().flatten() else {
            return 0;
        };
        let values = self.reachable.get(u).map(|cell| {
            cell.get_or_init(|| {
                let of_machine = self.keys.get(k).map_or(&[][..], Vec::as_slice);
                let mut vs: Vec<usize> = (0..of_machine.len())
                    .filter(|&m| allowed(m))
                    .filter_map(|m| of_machine.get(m).copied())
                    .collect();
                vs.sort_unstable();
                vs.dedup();
                vs
            })
        });
        let counts = self.counts.get(u).map_or(&[][..], Vec::as_slice);
        values
            .into_iter()
            .flatten()
            .filter_map(|&v| counts.get(v).copied())
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoned(id: &str, zone: Option<&str>) -> Machine {
        let mut m = Machine {
            id: id.into(),
            ..Machine::default()
        };
        if let Some(z) = zone {
            m.metadata.insert("zone".into(), z.into());
        }
        m
    }

    fn unit(name: &str, spread: Option<&str>) -> Unit {
        let mut u: Unit = serde_json::from_value(serde_json::json!({
            "name": name, "image": "img"
        }))
        .expect("a valid unit");
        u.placement.spread = spread.map(str::to_owned);
        u
    }

    #[test]
    fn counts_per_value_and_only_for_spreading_units() {
        let machines = [
            zoned("m1", Some("a")),
            zoned("m2", Some("b")),
            zoned("m3", Some("a")),
        ];
        let ms: Vec<&Machine> = machines.iter().collect();
        let units = [unit("web", Some("zone")), unit("db", None)];
        let us: Vec<&Unit> = units.iter().collect();
        let mut s = Spread::new(&us, &ms);
        s.adjust(0, 0, true);
        s.adjust(0, 2, true);
        s.adjust(1, 0, true);
        assert_eq!((s.count(0, 0), s.count(0, 1), s.count(0, 2)), (2, 0, 2));
        assert_eq!(s.count(1, 0), 0);
        s.adjust(0, 0, false);
        assert_eq!(s.count(0, 2), 1);
    }

    #[test]
    fn the_floor_looks_only_at_allowed_machines() {
        let machines = [
            zoned("m1", Some("a")),
            zoned("m2", Some("b")),
            zoned("m3", None),
        ];
        let ms: Vec<&Machine> = machines.iter().collect();
        let units = [unit("web", Some("zone")), unit("db", None)];
        let us: Vec<&Unit> = units.iter().collect();
        let mut s = Spread::new(&us, &ms);
        s.adjust(0, 0, true);
        assert_eq!(s.floor(0, |m| m == 0), 1);
        // Asked once: later calls reuse the first answer's machines.
        s.adjust(0, 0, true);
        assert_eq!(s.floor(0, |_| true), 2);
        assert_eq!(s.floor(1, |_| true), 0);
        let mut fresh = Spread::new(&us, &ms);
        fresh.adjust(0, 0, true);
        assert_eq!(fresh.floor(0, |_| true), 0);
    }
}
