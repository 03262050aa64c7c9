//! Unit tests of etcd v2 semantics on the key space, without raft or IO.

use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: Some(value.into()),
        ttl: None,
        refresh: false,
        cond: Precondition::default(),
    }
}

fn run(ks: &mut KeySpace, op: Op) -> Result<Event, KeyError> {
    ks.apply(&Command { now: t0(), op })
}

fn code(r: Result<Event, KeyError>) -> Option<u32> {
    r.err().map(|e| e.code.code())
}

#[test]
fn set_get_and_indexes() {
    let mut ks = KeySpace::default();
    let e = run(&mut ks, put("/a/b", "1")).expect("set");
    assert_eq!(e.index, 1);
    assert_eq!(e.body.action, "set");
    assert_eq!(e.body.node.created_index, 1);
    let e = run(&mut ks, put("/a/b", "2")).expect("set again");
    assert_eq!(e.body.node.created_index, 2, "set replaces the node");
    assert_eq!(e.body.prev_node.and_then(|n| n.value).as_deref(), Some("1"));
    let got = ks.get("/a", ReadOptions::default(), t0()).expect("get dir");
    assert!(got.node.dir);
    let kids = got.node.nodes.unwrap_or_default();
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0].value.as_deref(), Some("2"));
    assert_eq!(ks.index(), 2);
}

#[test]
fn errors_have_etcd_codes() {
    let mut ks = KeySpace::default();
    run(&mut ks, put("/f", "v")).expect("set");
    assert_eq!(
        ks.get("/missing", ReadOptions::default(), t0())
            .err()
            .map(|e| e.code.code()),
        Some(100)
    );
    assert_eq!(
        ks.get("/f/x", ReadOptions::default(), t0())
            .err()
            .map(|e| e.code.code()),
        Some(104)
    );
    assert_eq!(code(run(&mut ks, put("/f/x", "v"))), Some(104));
    assert_eq!(code(run(&mut ks, put("/", "v"))), Some(107));
    let create = Op::Put {
        key: "/f".into(),
        value: Some("w".into()),
        ttl: None,
        refresh: false,
        cond: Precondition {
            prev_exist: Some(false),
            ..Default::default()
        },
    };
    assert_eq!(code(run(&mut ks, create)), Some(105));
    run(&mut ks, put("/d/x", "v")).expect("set");
    let rm_dir = Op::Delete {
        key: "/d".into(),
        dir: true,
        recursive: false,
        cond: Precondition::default(),
    };
    assert_eq!(code(run(&mut ks, rm_dir)), Some(108));
    let rm_file_as_dir = Op::Delete {
        key: "/d".into(),
        dir: false,
        recursive: false,
        cond: Precondition::default(),
    };
    assert_eq!(code(run(&mut ks, rm_file_as_dir)), Some(102));
    let err = run(&mut ks, put("/", "x")).expect_err("root");
    assert_eq!(err.index, ks.index(), "errors carry the current index");
}

#[test]
fn compare_and_swap_and_delete() {
    let mut ks = KeySpace::default();
    run(&mut ks, put("/k", "one")).expect("set");
    let cas = |v: &str, pv: Option<&str>, pi: Option<u64>| Op::Put {
        key: "/k".into(),
        value: Some(v.into()),
        ttl: None,
        refresh: false,
        cond: Precondition {
            prev_exist: None,
            prev_value: pv.map(Into::into),
            prev_index: pi,
        },
    };
    let err = run(&mut ks, cas("two", Some("nope"), None)).expect_err("fails");
    assert_eq!(
        (err.code.code(), err.cause.as_str()),
        (101, "[nope != one]")
    );
    let err = run(&mut ks, cas("two", Some("nope"), Some(9))).expect_err("fails");
    assert_eq!(err.cause, "[nope != one] [9 != 1]");
    let e = run(&mut ks, cas("two", Some("one"), Some(1))).expect("swaps");
    assert_eq!(e.body.action, "compareAndSwap");
    assert_eq!(e.body.node.created_index, 1);
    assert_eq!(e.body.node.modified_index, 2);
    let cad = Op::Delete {
        key: "/k".into(),
        dir: false,
        recursive: false,
        cond: Precondition {
            prev_index: Some(1),
            ..Default::default()
        },
    };
    assert_eq!(code(run(&mut ks, cad)), Some(101));
    let cad = Op::Delete {
        key: "/k".into(),
        dir: false,
        recursive: false,
        cond: Precondition {
            prev_value: Some("two".into()),
            ..Default::default()
        },
    };
    assert_eq!(
        run(&mut ks, cad).expect("cad").body.action,
        "compareAndDelete"
    );
}

#[test]
fn in_order_keys_are_named_by_index() {
    let mut ks = KeySpace::default();
    let a = run(
        &mut ks,
        Op::CreateInOrder {
            dir: "/q".into(),
            value: Some("a".into()),
            ttl: None,
        },
    )
    .expect("post");
    let b = run(
        &mut ks,
        Op::CreateInOrder {
            dir: "/q".into(),
            value: Some("b".into()),
            ttl: None,
        },
    )
    .expect("post");
    assert_eq!(a.body.node.key.as_deref(), Some("/q/00000000000000000001"));
    assert_eq!(b.body.node.key.as_deref(), Some("/q/00000000000000000002"));
}

#[test]
fn ttl_expiry_is_decided_by_the_command_clock() {
    let mut ks = KeySpace::default();
    let op = Op::Put {
        key: "/t".into(),
        value: Some("v".into()),
        ttl: Some(5),
        refresh: false,
        cond: Precondition::default(),
    };
    let e = run(&mut ks, op).expect("set");
    assert_eq!(e.body.node.ttl, Some(5));
    assert!(ks.expired(t0() + Duration::seconds(4), 10).is_empty());
    let due = ks.expired(t0() + Duration::seconds(5), 10);
    assert_eq!(due, vec!["/t".to_owned()]);
    let too_early = Command {
        now: t0() + Duration::seconds(1),
        op: Op::Expire { keys: due.clone() },
    };
    assert!(
        ks.apply(&too_early).is_err(),
        "not expired yet at the proposer's clock"
    );
    let on_time = Command {
        now: t0() + Duration::seconds(6),
        op: Op::Expire { keys: due },
    };
    let ev = ks.apply(&on_time).expect("expire");
    assert_eq!(ev.body.action, "expire");
    assert_eq!(
        ks.get("/t", ReadOptions::default(), t0())
            .err()
            .map(|e| e.code.code()),
        Some(100)
    );
    assert!(ks.expired(t0() + Duration::seconds(60), 10).is_empty());
}

#[test]
fn refresh_keeps_value_and_does_not_wake_watchers() {
    let mut ks = KeySpace::default();
    run(&mut ks, put("/r", "v")).expect("set");
    let op = Op::Put {
        key: "/r".into(),
        value: None,
        ttl: Some(9),
        refresh: true,
        cond: Precondition {
            prev_exist: Some(true),
            ..Default::default()
        },
    };
    let e = run(&mut ks, op).expect("refresh");
    assert!(e.refresh);
    assert_eq!(e.body.node.value.as_deref(), Some("v"));
    assert_eq!(e.body.node.ttl, Some(9));
}

#[test]
fn hidden_keys_are_not_listed() {
    let mut ks = KeySpace::default();
    run(&mut ks, put("/_h", "x")).expect("set");
    run(&mut ks, put("/v", "y")).expect("set");
    let root = ks
        .get("/", ReadOptions { recursive: true }, t0())
        .expect("root");
    assert_eq!(root.node.key, None);
    let keys: Vec<_> = root
        .node
        .nodes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.key)
        .collect();
    assert_eq!(keys, vec!["/v".to_owned()]);
    assert_eq!(
        ks.get("/_h", ReadOptions::default(), t0())
            .expect("direct")
            .node
            .value
            .as_deref(),
        Some("x")
    );
}

#[test]
fn semaphore_admits_at_most_limit_and_is_owned() {
    let mut ks = KeySpace::default();
    let acq = |h: &str| Op::Acquire {
        dir: "/_shoal/locks/reboot".into(),
        holder: h.into(),
        limit: 2,
        ttl: 10,
        value: String::new(),
    };
    run(&mut ks, acq("a")).expect("a");
    run(&mut ks, acq("b")).expect("b");
    assert_eq!(code(run(&mut ks, acq("c"))), Some(101));
    assert!(
        run(&mut ks, acq("a")).is_ok(),
        "the same holder renews its one slot"
    );
    let at_expiry = Command {
        now: t0() + Duration::seconds(11),
        op: acq("c"),
    };
    assert!(
        ks.apply(&at_expiry).is_ok(),
        "lapsed holders free their slots"
    );
    run(
        &mut ks,
        Op::Release {
            dir: "/_shoal/locks/reboot".into(),
            holder: "a".into(),
        },
    )
    .expect("release");
    assert_eq!(
        code(run(
            &mut ks,
            Op::Release {
                dir: "/_shoal/locks/reboot".into(),
                holder: "a".into()
            }
        )),
        Some(100)
    );
}

#[test]
fn image_round_trips() {
    let mut ks = KeySpace::default();
    run(&mut ks, put("/a/b", "1")).expect("set");
    let again = KeySpace::from_image(ks.image());
    assert_eq!(again.index(), ks.index());
    assert_eq!(again.image(), ks.image());
    assert_eq!(
        ks.take_changes().len(),
        2,
        "parent dir and key were recorded for persistence"
    );
}
