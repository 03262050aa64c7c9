//! A linearizability checker for etcd v2 keys used as registers: the
//! Wing–Gong search with memoisation of visited (linearized set, state)
//! pairs, as in Lowe's and porcupine's checkers, run per key (keys are
//! independent objects, so a history is linearizable iff each key's is).
//!
//! An operation whose outcome is unknown (a timeout, a 5xx, a lost
//! connection) completes "at infinity": it may take effect at any point after
//! its invocation, or never (which is the same as taking effect after every
//! other operation).

use std::collections::{BTreeMap, HashSet};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A linearizable (quorum) read.
    Read,
    /// An unconditional write.
    Write(String),
    /// Compare-and-swap on the value.
    Cas {
        /// The value required.
        expect: String,
        /// The value written when it matches.
        new: String,
    },
    /// A delete.
    Delete,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// A read saw this value (`None`: key not found).
    Read(Option<String>),
    /// A write, successful CAS or delete.
    Ok,
    /// The CAS compare failed (etcd 101).
    CasFailed,
    /// The delete found no key (etcd 100).
    NotFound,
    /// Unknown outcome.
    Unknown,
}

/// One operation of the history, times in nanoseconds since the run began.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client ran it.
    pub client: usize,
    /// The key.
    pub key: String,
    /// The request.
    pub call: Call,
    /// The answer.
    pub ret: Ret,
    /// When it was sent.
    pub invoke: u64,
    /// When the answer arrived (`None` when unknown).
    pub complete: Option<u64>,
}

/// The register's state after `call` answered `ret` in `state`, if that
/// answer is possible there.
fn step(state: &Option<String>, call: &Call, ret: &Ret) -> Option<Option<String>> {
    match (call, ret) {
        (Call::Read, Ret::Read(v)) => (v == state).then(|| state.clone()),
        (Call::Read, Ret::Unknown) => Some(state.clone()),
        (Call::Write(v), Ret::Ok | Ret::Unknown) => Some(Some(v.clone())),
        (Call::Cas { expect, new }, Ret::Ok) => {
            (state.as_ref() == Some(expect)).then(|| Some(new.clone()))
        }
        (Call::Cas { expect, .. }, Ret::CasFailed) => {
            (state.as_ref() != Some(expect)).then(|| state.clone())
        }
        (Call::Cas { expect, new }, Ret::Unknown) => Some(if state.as_ref() == Some(expect) {
            Some(new.clone())
        } else {
            state.clone()
        }),
        (Call::Delete, Ret::Ok) => state.is_some().then_some(None),
        (Call::Delete, Ret::NotFound) => state.is_none().then_some(None),
        (Call::Delete, Ret::Unknown) => Some(None),
        _ => None,
    }
}

/// Why a key's history is not linearizable.
#[derive(Debug)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The operations around the point the search could not pass, by invocation.
    pub window: Vec<Op>,
    /// How many operations the longest linearization found covered.
    pub longest: usize,
    /// How many operations the key has.
    pub total: usize,
    /// A subset of the key's operations that is still not linearizable and
    /// from which no single operation can be dropped (or the smallest found
    /// within [`SHRINK_BUDGET`] checks), by invocation.
    pub minimal: Vec<Op>,
}

/// The most searches spent shrinking a violation to a minimal history.
pub const SHRINK_BUDGET: usize = 2000;

/// One operation as a report line.
fn write_op(f: &mut std::fmt::Formatter<'_>, op: &Op) -> std::fmt::Result {
    let end = op
        .complete
        .map_or("?".to_owned(), |c| format!("{:.3}", c as f64 / 1e9));
    writeln!(
        f,
        "  client {:>2}  [{:.3} .. {end}]  {:?} -> {:?}",
        op.client,
        op.invoke as f64 / 1e9,
        op.call,
        op.ret
    )
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {}: not linearizable (longest linearization: {} of {} operations); around the failure:",
            self.key, self.longest, self.total
        )?;
        for op in &self.window {
            write_op(f, op)?;
        }
        writeln!(
            f,
            "a minimal history that is not linearizable ({} operations):",
            self.minimal.len()
        )?;
        for op in &self.minimal {
            write_op(f, op)?;
        }
        Ok(())
    }
}

/// Checks every key of `history` (its initial value absent); the first
/// violation found, if any.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        if let Err(mut v) = check_key(key, ops.clone()) {
            v.minimal = shrink(key, ops);
            return Err(v);
        }
    }
    Ok(())
}

/// Drops operations one at a time while the rest stays non-linearizable,
/// within [`SHRINK_BUDGET`] searches; `ops` must fail [`check_key`]. A write
/// whose value a remaining read saw or a CAS expected is kept, so the
/// history shows where each value came from rather than shrinking to a read
/// of a value nobody wrote.
fn shrink(key: &str, mut ops: Vec<Op>) -> Vec<Op> {
    ops.sort_by_key(|o| o.invoke);
    let mut at = 0;
    for _ in 0..SHRINK_BUDGET {
        if at >= ops.len() {
            break;
        }
        if sources_a_value(&ops, at) {
            at += 1;
            continue;
        }
        let mut fewer = ops.clone();
        fewer.remove(at);
        if check_key(key, fewer.clone()).is_err() {
            ops = fewer;
        } else {
            at += 1;
        }
    }
    ops
}

/// One call or return in the time-ordered list the search walks.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    prev: Option<usize>,
    next: Option<usize>,
    /// For a call: the index of its return entry.
    ret: usize,
}

/// The Wing–Gong search over one key's operations.
fn check_key(key: &str, ops: Vec<Op>) -> Result<(), Violation> {
    // Reads that did not complete tell nothing.
    let ops: Vec<Op> = ops
        .into_iter()
        .filter(|o| !(o.call == Call::Read && o.ret == Ret::Unknown))
        .collect();
    let n = ops.len();
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, true, i));
        events.push((op.complete.unwrap_or(u64::MAX), false, i));
    }
    // At equal times calls come first: the operations overlap (the lenient reading).
    events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    let mut entries: Vec<Entry> = events
        .iter()
        .enumerate()
        .map(|(pos, &(_, is_call, op))| Entry {
            op,
            is_call,
            prev: pos.checked_sub(1),
            next: (pos + 1 < events.len()).then_some(pos + 1),
            ret: 0,
        })
        .collect();
    let mut ret_of = vec![0; n];
    for (pos, e) in entries.iter().enumerate() {
        if !e.is_call {
            ret_of[e.op] = pos;
        }
    }
    for e in entries.iter_mut().filter(|e| e.is_call) {
        e.ret = ret_of[e.op];
    }

    let mut head = (!entries.is_empty()).then_some(0);
    let mut state: Option<String> = None;
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // (call entry, state before it) of each operation linearized so far.
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut longest: Vec<u64> = linearized.clone();
    let mut longest_len = 0;
    let mut cursor = head;
    while head.is_some() {
        // Every call's return follows it, so the walk meets a return before
        // the end of the list; running off the end would be a bug here.
        let Some(at) = cursor else {
            return Err(violation(key, &ops, &longest, longest_len));
        };
        let e = entries[at];
        if e.is_call {
            let op = &ops[e.op];
            if let Some(next) = step(&state, &op.call, &op.ret) {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if seen.insert((linearized.clone(), next.clone())) {
                    stack.push((at, state.clone()));
                    state = next;
                    lift(&mut entries, &mut head, at);
                    if stack.len() > longest_len {
                        longest_len = stack.len();
                        longest = linearized.clone();
                    }
                    cursor = head;
                    continue;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            cursor = e.next;
        } else {
            // A return whose call is not linearized yet: undo the last choice.
            let Some((call, before)) = stack.pop() else {
                return Err(violation(key, &ops, &longest, longest_len));
            };
            let op = entries[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            unlift(&mut entries, &mut head, call);
            cursor = entries[call].next;
        }
    }
    Ok(())
}

/// Removes a call entry and its return from the list.
fn lift(entries: &mut [Entry], head: &mut Option<usize>, call: usize) {
    let ret = entries[call].ret;
    for at in [call, ret] {
        let Entry { prev, next, .. } = entries[at];
        match prev {
            Some(p) => entries[p].next = next,
            None => *head = next,
        }
        if let Some(nx) = next {
            entries[nx].prev = prev;
        }
    }
}

/// Puts a lifted call entry and its return back (in reverse order of removal).
fn unlift(entries: &mut [Entry], head: &mut Option<usize>, call: usize) {
    let ret = entries[call].ret;
    for at in [ret, call] {
        let Entry { prev, next, .. } = entries[at];
        match prev {
            Some(p) => entries[p].next = Some(at),
            None => *head = Some(at),
        }
        if let Some(nx) = next {
            entries[nx].prev = Some(at);
        }
    }
}

/// True when `ops[at]` writes a value another operation of `ops` read or
/// compared against.
fn sources_a_value(ops: &[Op], at: usize) -> bool {
    let written = match &ops[at].call {
        Call::Write(v) | Call::Cas { new: v, .. } => v,
        Call::Read | Call::Delete => return false,
    };
    ops.iter().enumerate().any(|(i, o)| {
        i != at
            && (o.ret == Ret::Read(Some(written.clone()))
                || matches!(&o.call, Call::Cas { expect, .. } if expect == written))
    })
}

/// The violation report: the operations around the first one (by
/// invocation) that the longest linearization could not include.
fn violation(key: &str, ops: &[Op], longest: &[u64], longest_len: usize) -> Violation {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops[i].invoke);
    let stuck = order
        .iter()
        .position(|&i| longest[i / 64] & (1 << (i % 64)) == 0)
        .unwrap_or(0);
    let from = stuck.saturating_sub(8);
    let to = (stuck + 8).min(order.len());
    Violation {
        key: key.to_owned(),
        window: order[from..to].iter().map(|&i| ops[i].clone()).collect(),
        longest: longest_len,
        total: ops.len(),
        minimal: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: Call, ret: Ret, invoke: u64, complete: Option<u64>) -> Op {
        Op {
            client,
            key: "/k".into(),
            call,
            ret,
            invoke,
            complete,
        }
    }

    fn w(v: &str) -> Call {
        Call::Write(v.into())
    }

    fn r(v: Option<&str>) -> Ret {
        Ret::Read(v.map(str::to_owned))
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(0, Call::Read, r(None), 0, Some(1)),
            op(0, w("a"), Ret::Ok, 2, Some(3)),
            op(1, Call::Read, r(Some("a")), 4, Some(5)),
            op(
                1,
                Call::Cas {
                    expect: "a".into(),
                    new: "b".into(),
                },
                Ret::Ok,
                6,
                Some(7),
            ),
            op(0, Call::Delete, Ret::Ok, 8, Some(9)),
            op(0, Call::Delete, Ret::NotFound, 10, Some(11)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = vec![
            op(0, w("a"), Ret::Ok, 0, Some(10)),
            op(1, w("b"), Ret::Ok, 1, Some(9)),
            op(2, Call::Read, r(Some("a")), 11, Some(12)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = vec![
            op(0, w("a"), Ret::Ok, 0, Some(1)),
            op(0, w("b"), Ret::Ok, 2, Some(3)),
            op(1, Call::Read, r(Some("a")), 4, Some(5)),
        ];
        let v = check(&h).expect_err("stale read");
        assert_eq!(v.key, "/k");
        assert!(v.to_string().contains("not linearizable"), "{v}");
    }

    #[test]
    fn a_violation_shrinks_to_the_operations_that_show_it() {
        let mut h: Vec<Op> = (0..40u64)
            .map(|i| op(2, Call::Read, r(None), i * 2, Some(i * 2 + 1)))
            .collect();
        h.extend([
            op(0, w("a"), Ret::Ok, 100, Some(101)),
            op(3, Call::Read, r(Some("a")), 102, Some(103)),
            op(0, w("b"), Ret::Ok, 104, Some(105)),
            op(1, Call::Read, r(Some("a")), 106, Some(107)),
            op(3, Call::Read, r(Some("b")), 108, Some(109)),
        ]);
        let v = check(&h).expect_err("stale read");
        let calls: Vec<(Call, Ret)> = v
            .minimal
            .iter()
            .map(|o| (o.call.clone(), o.ret.clone()))
            .collect();
        assert_eq!(
            calls,
            vec![
                (w("a"), Ret::Ok),
                (w("b"), Ret::Ok),
                (Call::Read, r(Some("a"))),
            ],
            "{v}"
        );
        assert!(v.to_string().contains("a minimal history"), "{v}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = vec![
            op(0, w("a"), Ret::Ok, 0, Some(1)),
            op(1, Call::Read, r(None), 2, Some(3)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        let late = vec![
            op(0, w("a"), Ret::Unknown, 0, None),
            op(1, Call::Read, r(None), 5, Some(6)),
            op(1, Call::Read, r(Some("a")), 7, Some(8)),
        ];
        assert!(check(&late).is_ok());
        let never = vec![
            op(0, w("a"), Ret::Unknown, 0, None),
            op(1, Call::Read, r(None), 5, Some(6)),
        ];
        assert!(check(&never).is_ok());
        let flicker = vec![
            op(0, w("a"), Ret::Unknown, 0, None),
            op(1, Call::Read, r(Some("a")), 5, Some(6)),
            op(1, Call::Read, r(None), 7, Some(8)),
        ];
        assert!(check(&flicker).is_err(), "an applied write cannot vanish");
    }

    #[test]
    fn a_failed_cas_must_see_another_value() {
        let cas = |ret| {
            op(
                1,
                Call::Cas {
                    expect: "a".into(),
                    new: "b".into(),
                },
                ret,
                2,
                Some(3),
            )
        };
        let ok = vec![op(0, w("a"), Ret::Ok, 0, Some(1)), cas(Ret::Ok)];
        assert!(check(&ok).is_ok());
        let wrong = vec![op(0, w("a"), Ret::Ok, 0, Some(1)), cas(Ret::CasFailed)];
        assert!(check(&wrong).is_err());
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = op(1, Call::Read, r(Some("x")), 0, Some(1));
        other.key = "/other".into();
        let h = vec![op(0, w("a"), Ret::Ok, 0, Some(1)), other];
        let v = check(&h).expect_err("/other was never written");
        assert_eq!(v.key, "/other");
    }

    #[test]
    fn many_concurrent_clients_stay_tractable() {
        // 8 clients, 40 rounds of overlapping writes and reads of the last value.
        let mut h = Vec::new();
        for round in 0..40u64 {
            let t = round * 100;
            for c in 0..8usize {
                h.push(op(c, w(&format!("{round}-{c}")), Ret::Ok, t, Some(t + 50)));
            }
            h.push(op(
                9,
                Call::Read,
                r(Some(&format!("{round}-7"))),
                t + 60,
                Some(t + 70),
            ));
        }
        assert!(check(&h).is_ok());
    }
}
