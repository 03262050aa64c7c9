//! One small test per placement rule, each a view and the exact actions expected.

use super::*;
use crate::engine::view::PlacementView;

const REV: u64 = 10;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time")
}

fn machine(id: &str) -> Machine {
    Machine {
        id: id.into(),
        hostname: id.into(),
        ..Machine::default()
    }
}

fn meta(mut m: Machine, key: &str, value: &str) -> Machine {
    m.metadata.insert(key.into(), value.into());
    m
}

fn sized(mut m: Machine, cpu: u64, mem: u64) -> Machine {
    m.cpu_millis = cpu;
    m.memory_mb = mem;
    m
}

fn unit(name: &str) -> Unit {
    serde_json::from_value(serde_json::json!({
        "name": name, "image": "img", "desired": "launched"
    }))
    .expect("a valid unit")
}

fn with(mut u: Unit, f: impl FnOnce(&mut Unit)) -> Unit {
    f(&mut u);
    u
}

fn fleet(machines: Vec<Machine>, units: Vec<Unit>) -> FleetView {
    FleetView {
        machines: machines.into_iter().map(|m| (m.id.clone(), m)).collect(),
        units: units
            .into_iter()
            .map(|u| {
                let name = u.name.clone();
                (
                    name,
                    UnitView {
                        unit: u,
                        revision: REV,
                    },
                )
            })
            .collect(),
        ..FleetView::default()
    }
}

fn assignment(instance: &str, machine: &str) -> Assignment {
    Assignment {
        unit: unit_of(instance).into(),
        instance: instance.into(),
        machine_id: machine.into(),
        revision: REV,
    }
}

/// Records an existing placement at modified index `index`.
fn placed(v: &mut FleetView, instance: &str, machine: &str, index: u64) {
    v.placements.insert(
        instance.into(),
        PlacementView {
            assignment: assignment(instance, machine),
            index,
        },
    );
}

fn place(instance: &str, machine: &str) -> Action {
    Action::Place {
        instance: instance.into(),
        assignment: assignment(instance, machine),
    }
}

fn mv(instance: &str, machine: &str, prev_index: u64) -> Action {
    Action::Move {
        instance: instance.into(),
        assignment: assignment(instance, machine),
        prev_index,
    }
}

fn rm(instance: &str, prev_index: u64) -> Action {
    Action::Remove {
        instance: instance.into(),
        prev_index,
    }
}

fn unplaceable(instance: &str, reason: &str) -> Action {
    Action::Unplaceable {
        instance: instance.into(),
        reason: reason.into(),
    }
}

fn cleared(instance: &str) -> Action {
    Action::Placed {
        instance: instance.into(),
    }
}

fn check(view: &FleetView, expected: &[Action]) {
    assert_eq!(plan(view, t0()), expected);
}

#[test]
fn a_single_unit_goes_to_the_smallest_id_among_equals() {
    let v = fleet(vec![machine("m2"), machine("m1")], vec![unit("web")]);
    check(&v, &[place("web", "m1")]);
}

#[test]
fn an_inactive_unit_is_not_placed_and_loses_its_placement() {
    let stopped = with(unit("web"), |u| u.desired = api::fleet::Desired::Inactive);
    let v = fleet(vec![machine("m1")], vec![stopped.clone()]);
    check(&v, &[]);
    let mut v = fleet(vec![machine("m1")], vec![stopped]);
    placed(&mut v, "web", "m1", 7);
    check(&v, &[rm("web", 7)]);
}

#[test]
fn a_destroyed_unit_loses_its_placements_and_its_reason() {
    let mut v = fleet(vec![machine("m1")], vec![]);
    placed(&mut v, "web@1", "m1", 7);
    v.unplaced.insert("web@2".into(), "no machine fits".into());
    check(&v, &[rm("web@1", 7), cleared("web@2")]);
}

#[test]
fn replicas_spread_over_the_least_loaded_machines() {
    let web = with(unit("web"), |u| u.placement.replicas = 3);
    let v = fleet(vec![machine("m1"), machine("m2"), machine("m3")], vec![web]);
    check(
        &v,
        &[
            place("web@1", "m1"),
            place("web@2", "m2"),
            place("web@3", "m3"),
        ],
    );
}

#[test]
fn the_least_loaded_machine_wins() {
    let v = {
        let mut v = fleet(
            vec![machine("m1"), machine("m2")],
            vec![unit("a"), unit("b"), unit("c")],
        );
        placed(&mut v, "a", "m1", 5);
        placed(&mut v, "b", "m1", 6);
        v
    };
    check(&v, &[place("c", "m2")]);
}

#[test]
fn placed_instances_stay_put() {
    let mut v = fleet(
        vec![machine("m1"), machine("m2")],
        vec![unit("a"), unit("b")],
    );
    placed(&mut v, "a", "m1", 5);
    placed(&mut v, "b", "m1", 6);
    check(&v, &[]);
}

#[test]
fn a_new_revision_is_reassigned_on_the_same_machine() {
    let mut v = fleet(vec![machine("m1"), machine("m2")], vec![unit("a")]);
    placed(&mut v, "a", "m1", 5);
    v.placements
        .get_mut("a")
        .expect("placed")
        .assignment
        .revision = 3;
    check(&v, &[mv("a", "m1", 5)]);
}

#[test]
fn fewer_replicas_remove_the_extra_instances() {
    let web = with(unit("web"), |u| u.placement.replicas = 2);
    let mut v = fleet(vec![machine("m1")], vec![web]);
    placed(&mut v, "web@1", "m1", 5);
    placed(&mut v, "web@2", "m1", 6);
    placed(&mut v, "web@3", "m1", 7);
    check(&v, &[rm("web@3", 7)]);
}

#[test]
fn global_units_run_on_every_matching_machine() {
    let agent = with(unit("agent"), |u| {
        u.placement.global = true;
        u.placement
            .machine_metadata
            .insert("role".into(), vec!["worker".into()]);
    });
    let mut v = fleet(
        vec![
            meta(machine("m1"), "role", "worker"),
            meta(machine("m2"), "role", "db"),
            meta(machine("m3"), "role", "worker"),
        ],
        vec![agent],
    );
    placed(&mut v, "agent@m1", "m1", 5);
    placed(&mut v, "agent@gone", "gone", 6);
    check(&v, &[rm("agent@gone", 6), place("agent@m3", "m3")]);
}

#[test]
fn a_global_instance_that_does_not_fit_says_why() {
    let agent = with(unit("agent"), |u| {
        u.placement.global = true;
        u.memory_mb = 512;
    });
    let v = fleet(vec![sized(machine("m1"), 0, 256)], vec![agent]);
    check(
        &v,
        &[unplaceable(
            "agent@m1",
            "no machine fits: m1: not enough memory (need 512 MiB, free 256)",
        )],
    );
}

#[test]
fn required_metadata_picks_a_matching_machine() {
    let db = with(unit("db"), |u| {
        u.placement
            .machine_metadata
            .insert("region".into(), vec!["eu".into(), "us".into()]);
    });
    let v = fleet(
        vec![
            meta(machine("m1"), "region", "ap"),
            meta(machine("m2"), "region", "us"),
        ],
        vec![db],
    );
    check(&v, &[place("db", "m2")]);
}

#[test]
fn required_metadata_nowhere_is_unplaceable() {
    let db = with(unit("db"), |u| {
        u.placement
            .machine_metadata
            .insert("region".into(), vec!["eu".into()]);
    });
    let v = fleet(
        vec![meta(machine("m1"), "region", "us"), machine("m2")],
        vec![db],
    );
    check(
        &v,
        &[unplaceable(
            "db",
            "no machine fits: m1, m2: metadata region=eu required",
        )],
    );
}

#[test]
fn a_pin_places_on_that_machine_only() {
    let db = with(unit("db"), |u| u.placement.machine_id = Some("m2".into()));
    let v = fleet(vec![machine("m1"), machine("m2")], vec![db.clone()]);
    check(&v, &[place("db", "m2")]);
    let v = fleet(vec![machine("m1")], vec![db]);
    check(&v, &[unplaceable("db", "machine m2 is not in the fleet")]);
}

#[test]
fn machine_of_follows_its_target() {
    let side = with(unit("side"), |u| u.placement.machine_of = Some("db".into()));
    let mut v = fleet(
        vec![machine("m1"), machine("m2")],
        vec![unit("db"), side.clone()],
    );
    placed(&mut v, "db", "m2", 5);
    check(&v, &[place("side", "m2")]);
    // Placed in the same plan: the target goes first.
    let v = fleet(
        vec![machine("m1"), machine("m2")],
        vec![side.clone(), unit("db")],
    );
    check(&v, &[place("db", "m1"), place("side", "m1")]);
    // No target.
    let v = fleet(vec![machine("m1")], vec![side]);
    check(
        &v,
        &[unplaceable("side", "machine_of db: db is not placed")],
    );
}

#[test]
fn machine_of_moves_with_its_target() {
    let side = with(unit("side"), |u| u.placement.machine_of = Some("db".into()));
    let mut v = fleet(vec![machine("m1"), machine("m2")], vec![unit("db"), side]);
    placed(&mut v, "db", "m2", 5);
    placed(&mut v, "side", "m1", 6);
    check(&v, &[mv("side", "m2", 6)]);
}

#[test]
fn machine_of_a_replicated_unit_is_refused() {
    let web = with(unit("web"), |u| u.placement.replicas = 2);
    let side = with(unit("side"), |u| {
        u.placement.machine_of = Some("web".into())
    });
    let mut v = fleet(vec![machine("m1")], vec![web, side]);
    placed(&mut v, "web@1", "m1", 5);
    placed(&mut v, "web@2", "m1", 6);
    check(
        &v,
        &[unplaceable(
            "side",
            "machine_of web: web has several instances; it must be a single-instance unit",
        )],
    );
}

#[test]
fn conflicts_by_glob_keep_units_apart() {
    let db = with(unit("db"), |u| u.placement.conflicts = vec!["web*".into()]);
    let mut v = fleet(vec![machine("m1"), machine("m2")], vec![unit("web"), db]);
    placed(&mut v, "web", "m1", 5);
    placed(&mut v, "x", "m2", 6); // not a unit: makes m2 the busier machine
    check(&v, &[rm("x", 6), place("db", "m2")]);
}

#[test]
fn conflicts_hold_both_ways() {
    // The placed unit names the newcomer.
    let web = with(unit("web"), |u| u.placement.conflicts = vec!["db".into()]);
    let mut v = fleet(
        vec![machine("m1"), machine("m2")],
        vec![web, unit("db"), unit("a")],
    );
    placed(&mut v, "web", "m1", 5);
    placed(&mut v, "a", "m2", 6);
    check(&v, &[place("db", "m2")]);
}

#[test]
fn replicas_conflicting_with_themselves_get_one_machine_each() {
    let api = with(unit("api"), |u| {
        u.placement.replicas = 3;
        u.placement.conflicts = vec!["api@*".into()];
    });
    let v = fleet(vec![machine("m1"), machine("m2")], vec![api]);
    check(
        &v,
        &[
            place("api@1", "m1"),
            place("api@2", "m2"),
            unplaceable(
                "api@3",
                "no machine fits: m1: conflicts with api@1; m2: conflicts with api@2",
            ),
        ],
    );
}

#[test]
fn a_new_conflict_moves_one_of_two_placed_instances() {
    let api = with(unit("api"), |u| {
        u.placement.replicas = 2;
        u.placement.conflicts = vec!["api".into()];
    });
    let mut v = fleet(vec![machine("m1"), machine("m2")], vec![api]);
    placed(&mut v, "api@1", "m1", 5);
    placed(&mut v, "api@2", "m1", 6);
    check(&v, &[mv("api@1", "m2", 5)]);
}

#[test]
fn spread_prefers_the_value_with_fewest_instances() {
    let web = with(unit("web"), |u| {
        u.placement.replicas = 3;
        u.placement.spread = Some("zone".into());
    });
    let v = fleet(
        vec![
            meta(machine("m1"), "zone", "a"),
            meta(machine("m2"), "zone", "a"),
            meta(machine("m3"), "zone", "b"),
        ],
        vec![web],
    );
    check(
        &v,
        &[
            place("web@1", "m1"),
            place("web@2", "m3"),
            place("web@3", "m2"),
        ],
    );
}

#[test]
fn spread_counts_only_the_units_own_instances() {
    let web = with(unit("web"), |u| u.placement.spread = Some("zone".into()));
    let mut v = fleet(
        vec![
            meta(machine("m1"), "zone", "a"),
            meta(machine("m2"), "zone", "b"),
        ],
        vec![web, unit("x"), unit("y")],
    );
    placed(&mut v, "x", "m2", 5);
    placed(&mut v, "y", "m2", 6);
    check(&v, &[place("web", "m1")]);
}

#[test]
fn capacity_must_fit() {
    let big = with(unit("big"), |u| {
        u.memory_mb = 512;
        u.cpu_millis = 500;
    });
    let small = with(unit("small"), |u| u.memory_mb = 896);
    let mut v = fleet(
        vec![
            sized(machine("m1"), 1000, 1024),
            sized(machine("m2"), 400, 4096),
        ],
        vec![big, small],
    );
    placed(&mut v, "small", "m1", 5);
    check(
        &v,
        &[unplaceable(
            "big",
            "no machine fits: m1: not enough memory (need 512 MiB, free 128); m2: not enough cpu (need 500m, free 400m)",
        )],
    );
}

#[test]
fn zero_capacity_means_unlimited() {
    let big = with(unit("big"), |u| {
        u.memory_mb = 1 << 20;
        u.cpu_millis = 64_000;
    });
    let v = fleet(vec![machine("m1")], vec![big]);
    check(&v, &[place("big", "m1")]);
}

#[test]
fn requests_add_up_within_one_plan() {
    let web = with(unit("web"), |u| {
        u.placement.replicas = 3;
        u.memory_mb = 400;
    });
    let v = fleet(vec![sized(machine("m1"), 0, 1000)], vec![web]);
    check(
        &v,
        &[
            place("web@1", "m1"),
            place("web@2", "m1"),
            unplaceable(
                "web@3",
                "no machine fits: m1: not enough memory (need 400 MiB, free 200)",
            ),
        ],
    );
}

#[test]
fn the_reason_names_every_rule_and_machine() {
    let web = with(unit("web"), |u| u.placement.replicas = 1);
    let api = with(unit("api"), |u| {
        u.memory_mb = 512;
        u.placement.conflicts = vec!["web*".into()];
        u.placement
            .machine_metadata
            .insert("region".into(), vec!["eu".into()]);
    });
    let hog = with(unit("hog"), |u| u.memory_mb = 896);
    let mut v = fleet(
        vec![
            meta(machine("m1"), "region", "us"),
            meta(machine("m2"), "region", "eu"),
            sized(meta(machine("m3"), "region", "eu"), 0, 1024),
        ],
        vec![web, api, hog],
    );
    placed(&mut v, "web", "m2", 5);
    placed(&mut v, "hog", "m3", 6);
    check(
        &v,
        &[unplaceable(
            "api",
            "no machine fits: m1: metadata region=eu required; m2: conflicts with web; m3: not enough memory (need 512 MiB, free 128)",
        )],
    );
}

#[test]
fn draining_machines_get_nothing_new_and_are_emptied() {
    let mut drained = machine("m1");
    drained.draining = true;
    let mut v = fleet(vec![drained, machine("m2")], vec![unit("a"), unit("b")]);
    placed(&mut v, "a", "m1", 5);
    check(&v, &[mv("a", "m2", 5), place("b", "m2")]);
}

#[test]
fn draining_with_nowhere_to_go_removes_and_says_why() {
    let mut drained = machine("m1");
    drained.draining = true;
    let mut v = fleet(vec![drained], vec![unit("a")]);
    placed(&mut v, "a", "m1", 5);
    check(
        &v,
        &[
            rm("a", 5),
            unplaceable("a", "no machine fits: m1: draining"),
        ],
    );
}

#[test]
fn a_replicated_instance_leaves_a_gone_machine_at_once() {
    let mut v = fleet(vec![machine("m2")], vec![unit("a")]);
    placed(&mut v, "a", "m1", 5);
    v.missing_since.insert("m1".into(), t0());
    check(&v, &[mv("a", "m2", 5)]);
}

#[test]
fn an_exclusive_instance_waits_out_the_grace_period() {
    let db = with(unit("db"), |u| u.kind = UnitKind::Exclusive);
    let mut v = fleet(vec![machine("m2")], vec![db]);
    placed(&mut v, "db", "m1", 5);
    // Not yet noticed missing: counts from now.
    check(&v, &[]);
    v.missing_since
        .insert("m1".into(), t0() - Duration::seconds(29));
    check(&v, &[]);
    v.missing_since
        .insert("m1".into(), t0() - Duration::seconds(30));
    check(&v, &[mv("db", "m2", 5)]);
    let short = Params {
        exclusive_grace: Duration::seconds(5),
    };
    v.missing_since
        .insert("m1".into(), t0() - Duration::seconds(6));
    assert_eq!(plan_with(&v, t0(), &short), [mv("db", "m2", 5)]);
}

#[test]
fn a_gone_machine_with_nowhere_to_go_removes_the_placement() {
    let mut v = fleet(vec![], vec![unit("a")]);
    placed(&mut v, "a", "m1", 5);
    check(
        &v,
        &[rm("a", 5), unplaceable("a", "no machines in the fleet")],
    );
}

#[test]
fn a_recorded_reason_is_not_written_again_and_is_cleared_once_placed() {
    let mut v = fleet(vec![], vec![unit("a")]);
    v.unplaced
        .insert("a".into(), "no machines in the fleet".into());
    check(&v, &[]);
    v.machines.insert("m1".into(), machine("m1"));
    check(&v, &[place("a", "m1"), cleared("a")]);
}

#[test]
fn many_machines_are_summarised_in_the_reason() {
    let db = with(unit("db"), |u| {
        u.placement
            .machine_metadata
            .insert("disk".into(), vec!["ssd".into()]);
    });
    let machines = (1..=5).map(|i| machine(&format!("m{i}"))).collect();
    let v = fleet(machines, vec![db]);
    check(
        &v,
        &[unplaceable(
            "db",
            "no machine fits: m1, m2, m3 (+2 more): metadata disk=ssd required",
        )],
    );
}

/// At fleet scale (1,000 machines, 14,500 instances with conflicts, spread
/// and global units) every instance is placed in one plan, and a fleet that
/// is fully placed plans nothing (no churn). Speed is measured by the bench,
/// not here.
#[test]
fn plans_everything_at_scale_then_nothing() {
    let machines: Vec<Machine> = (0..1000)
        .map(|i| {
            let m = meta(machine(&format!("m{i:04}")), "zone", &format!("z{}", i % 5));
            sized(m, 16_000, 65_536)
        })
        .collect();
    let mut units: Vec<Unit> = (0..95)
        .map(|i| {
            with(unit(&format!("svc{i}")), |u| {
                u.placement.replicas = 100;
                u.memory_mb = 64;
                if i % 3 == 0 {
                    u.placement.conflicts = vec![format!("svc{i}@*")];
                }
                if i % 4 == 0 {
                    u.placement.spread = Some("zone".into());
                }
            })
        })
        .collect();
    units.extend((0..5).map(|i| with(unit(&format!("g{i}")), |u| u.placement.global = true)));
    let v = fleet(machines, units);
    let actions = plan(&v, t0());
    let placements = actions
        .iter()
        .filter(|a| matches!(a, Action::Place { .. }))
        .count();
    assert_eq!(placements, 14_500);
    let mut v = v;
    for (i, a) in (100..).zip(&actions) {
        if let Action::Place {
            instance,
            assignment,
        } = a
        {
            placed(&mut v, instance, &assignment.machine_id, i);
        }
    }
    let again = plan(&v, t0());
    assert_eq!(again, []);
}
