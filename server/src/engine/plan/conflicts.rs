//! The `conflicts` rules of one plan, worked out once from the units: which
//! units name each other, and the few patterns that must still be tried on
//! instance names.
//!
//! A pattern without `*`, `?` or `@` matches a name only by being equal to it.
//! Instance names without `@` are their unit's name, so such a pattern names
//! whole units and is settled here once; the others (`web*`, `api@*`,
//! `api@2`) can tell instances apart and are kept for instance names.

use std::collections::HashMap;

use api::fleet::Unit;
use wildmatch::WildMatch;

/// Conflicts between units, by unit number (a unit's position in the plan's unit list).
#[derive(Debug)]
pub(super) struct Conflicts {
    /// Per unit: the units it conflicts with by name, either way, sorted.
    named: Vec<Vec<usize>>,
    /// Per unit: its patterns that can match an instance name that is not a unit name.
    by_instance: Vec<Vec<WildMatch>>,
}

/// True when `pattern` can only match a name equal to it, and no name with `@`.
fn names_units_only(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '@'])
}

impl Conflicts {
    /// Works out the conflicts among `units` (numbered by position).
    pub(super) fn new(units: &[&Unit]) -> Self {
        let numbers: HashMap<&str, usize> = units
            .iter()
            .enumerate()
            .map(|(n, u)| (u.name.as_str(), n))
            .collect();
        let mut named = vec![Vec::new(); units.len()];
        let mut by_instance = Vec::with_capacity(units.len());
        for (u, unit) in units.iter().enumerate() {
            let mut kept = Vec::new();
            for pattern in &unit.placement.conflicts {
                if names_units_only(pattern) {
                    if let Some(&v) = numbers.get(pattern.as_str()) {
                        link(&mut named, u, v);
                    }
                    continue;
                }
                let w = WildMatch::new(pattern);
                for (v, other) in units.iter().enumerate() {
                    if w.matches(&other.name) {
                        link(&mut named, u, v);
                    }
                }
                kept.push(w);
            }
            by_instance.push(kept);
        }
        for list in &mut named {
            list.sort_unstable();
            list.dedup();
        }
        Self { named, by_instance }
    }

    /// The units unit `u` conflicts with by name (either unit's patterns name the other).
    pub(super) fn named(&self, u: usize) -> &[usize] {
        self.named.get(u).map_or(&[], Vec::as_slice)
    }

    /// True when unit `u` has patterns that must be tried on instance names.
    pub(super) fn by_instance(&self, u: usize) -> bool {
        self.by_instance.get(u).is_some_and(|ps| !ps.is_empty())
    }

    /// True when either instance's instance-name patterns match the other
    /// instance: `a` of unit `u` and `b` of unit `v`.
    pub(super) fn instances_clash(&self, u: usize, a: &str, v: usize, b: &str) -> bool {
        let matches = |unit: usize, name: &str| {
            let patterns = self.by_instance.get(unit).into_iter().flatten();
            patterns.into_iter().any(|w| w.matches(name))
        };
        matches(u, b) || matches(v, a)
    }

    /// True when instance `a` of unit `u` and instance `b` of unit `v` may not
    /// share a machine: either unit's patterns match the other's unit or instance name.
    pub(super) fn clash(&self, u: usize, a: &str, v: usize, b: &str) -> bool {
        self.named(u).binary_search(&v).is_ok() || self.instances_clash(u, a, v, b)
    }
}

/// Records that units `u` and `v` conflict, both ways.
fn link(named: &mut [Vec<usize>], u: usize, v: usize) {
    if let Some(list) = named.get_mut(u) {
        list.push(v);
    }
    if let Some(list) = named.get_mut(v) {
        list.push(u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, conflicts: &[&str]) -> Unit {
        let mut u: Unit = serde_json::from_value(serde_json::json!({
            "name": name, "image": "img"
        }))
        .expect("a valid unit");
        u.placement.conflicts = conflicts.iter().map(|p| (*p).to_owned()).collect();
        u
    }

    /// The rule as the planner states it: either unit's patterns match the
    /// other's unit name or instance name.
    fn reference(u: &Unit, a: &str, v: &Unit, b: &str) -> bool {
        let names = |of: &Unit, unit: &str, instance: &str| {
            of.placement.conflicts.iter().any(|p| {
                let w = WildMatch::new(p);
                w.matches(unit) || w.matches(instance)
            })
        };
        names(u, &v.name, b) || names(v, &u.name, a)
    }

    #[test]
    fn literal_patterns_name_units_both_ways() {
        let units = [unit("web", &["db"]), unit("db", &[]), unit("x", &["x"])];
        let refs: Vec<&Unit> = units.iter().collect();
        let c = Conflicts::new(&refs);
        assert_eq!(c.named(0), [1]);
        assert_eq!(c.named(1), [0]);
        assert_eq!(c.named(2), [2]);
        assert!(!c.by_instance(0) && !c.by_instance(2));
        assert!(c.clash(1, "db", 0, "web"));
        assert!(c.clash(2, "x@1", 2, "x@2"));
        assert!(!c.clash(0, "web", 2, "x@1"));
    }

    #[test]
    fn globs_and_instance_names_are_kept_for_instances() {
        let units = [
            unit("api", &["api@*"]),
            unit("web", &["web*"]),
            unit("one", &["api@2"]),
        ];
        let refs: Vec<&Unit> = units.iter().collect();
        let c = Conflicts::new(&refs);
        assert!(c.named(0).is_empty());
        assert_eq!(c.named(1), [1]);
        assert!(c.by_instance(0) && c.by_instance(1) && c.by_instance(2));
        assert!(c.clash(0, "api@1", 0, "api@3"));
        assert!(c.clash(2, "one", 0, "api@2"));
        assert!(!c.clash(2, "one", 0, "api@1"));
    }

    #[test]
    fn agrees_with_the_rule_for_every_pair() {
        let units = [
            unit("web", &["db"]),
            unit("db", &[]),
            unit("api", &["api@*", "w?b"]),
            unit("svc", &["svc"]),
            unit("side", &["*@2"]),
            unit("solo", &["web@1", ""]),
        ];
        let refs: Vec<&Unit> = units.iter().collect();
        let c = Conflicts::new(&refs);
        let instances: Vec<(usize, String)> = units
            .iter()
            .enumerate()
            .flat_map(|(n, u)| {
                let names = [
                    u.name.clone(),
                    format!("{}@1", u.name),
                    format!("{}@2", u.name),
                ];
                names.into_iter().map(move |i| (n, i))
            })
            .collect();
        for (u, a) in &instances {
            for (v, b) in &instances {
                assert_eq!(
                    c.clash(*u, a, *v, b),
                    reference(&units[*u], a, &units[*v], b),
                    "{a} vs {b}"
                );
            }
        }
    }
}
