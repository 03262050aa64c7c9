//! The rollout decision for one check-in: offer the channel's version or not,
//! may the machine reboot now, and must the rollout halt. Pure: a function of
//! the channel, the machines' last check-ins and the time.
//!
//! Rules, in order:
//! 1. No offer when the channel has no version or the machine runs it.
//! 2. Auto-halt: when the machines that failed or rolled back on the target
//!    version reach the failure threshold, the channel halts.
//! 3. No machine proceeds while the channel is paused or halted, nor a machine
//!    that itself failed on the target (until a resume forgives it), nor
//!    outside every reboot window. Failures reported before the channel's last
//!    resume count for nothing.
//! 4. Canaries: the first `canaries` machines in machine-id order that take
//!    part in the rollout go first; the others wait until every canary reports
//!    `updated` on the target. A machine takes part unless it reports the
//!    target version as `idle` (it was already there). The set is computed from
//!    the machines that have checked in so far, so a machine with a lower id
//!    that checks in later becomes a canary in place of a higher one.

use api::updates::{Channel, MachineUpdate, UpdateState};
use chrono::{DateTime, Utc};

use super::window;

/// What the server answers one check-in, and whether the channel must halt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Offer the channel's version.
    pub offer: bool,
    /// The machine may take the reboot lock and reboot now.
    pub proceed: bool,
    /// Why (not), in words.
    pub reason: String,
    /// Halt the channel with this reason (it is not halted yet).
    pub halt: Option<String>,
}

impl Decision {
    fn wait(offer: bool, reason: impl Into<String>) -> Self {
        Decision {
            offer,
            proceed: false,
            reason: reason.into(),
            halt: None,
        }
    }
}

/// True when `m` failed or rolled back while updating to `target`, after the
/// channel was last resumed (a resume forgives earlier failures).
pub fn failed_on(m: &MachineUpdate, target: &str, resumed_at: Option<DateTime<Utc>>) -> bool {
    m.state.is_failure()
        && m.target.as_deref() == Some(target)
        && resumed_at.is_none_or(|r| m.since > r)
}

/// True when `m` takes part in the rollout of `target` (needs or did the update).
fn takes_part(m: &MachineUpdate, target: &str) -> bool {
    m.version != target || m.state != UpdateState::Idle
}

/// Decides the answer to `me`'s check-in. `machines` are the last check-ins of
/// every machine on the channel, `me`'s current one included.
pub fn decide(
    channel: &Channel,
    machines: &[MachineUpdate],
    me: &MachineUpdate,
    now: DateTime<Utc>,
) -> Decision {
    let Some(target) = channel.version.as_deref() else {
        return Decision::wait(false, format!("channel {} has no version", channel.name));
    };
    let policy = &channel.policy;
    let on_channel = || machines.iter().filter(|m| m.channel == channel.name);
    let failures: Vec<&str> = on_channel()
        .filter(|m| failed_on(m, target, policy.resumed_at))
        .map(|m| m.machine_id.as_str())
        .collect();
    let mut halt = None;
    if !policy.halted && failures.len() >= policy.failure_threshold.max(1) as usize {
        halt = Some(format!(
            "{} machine(s) failed on {target} (threshold {}): {}",
            failures.len(),
            policy.failure_threshold,
            failures.join(", ")
        ));
    }
    if me.version == target {
        return Decision {
            halt,
            ..Decision::wait(false, format!("running {target}, the channel's version"))
        };
    }
    let waiting = |reason: String| Decision {
        halt: halt.clone(),
        ..Decision::wait(true, reason)
    };
    if let Some(why) = &halt {
        return waiting(format!("rollout halted: {why}"));
    }
    if policy.halted {
        return waiting(format!("rollout halted: {}", policy.halt_reason));
    }
    if policy.paused {
        return waiting("rollout paused".into());
    }
    if failed_on(me, target, policy.resumed_at) {
        return waiting(format!(
            "this machine failed on {target}; resume the channel to retry"
        ));
    }
    if !window::open_at(&policy.windows, &policy.timezone, now) {
        return waiting(format!(
            "outside the reboot windows ({} in {})",
            policy.windows.join(", "),
            policy.timezone
        ));
    }
    let mut part: Vec<&MachineUpdate> = on_channel().filter(|m| takes_part(m, target)).collect();
    part.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
    let canaries = &part[..part.len().min(policy.canaries as usize)];
    if canaries.iter().any(|c| c.machine_id == me.machine_id) {
        return Decision {
            offer: true,
            proceed: true,
            reason: format!("canary for {target}"),
            halt: None,
        };
    }
    let pending: Vec<&str> = canaries
        .iter()
        .filter(|c| !(c.version == target && c.state == UpdateState::Updated))
        .map(|c| c.machine_id.as_str())
        .collect();
    if !pending.is_empty() {
        return waiting(format!(
            "waiting for canaries to update: {}",
            pending.join(", ")
        ));
    }
    Decision {
        offer: true,
        proceed: true,
        reason: format!("update to {target}"),
        halt: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::updates::RolloutPolicy;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn now() -> DateTime<Utc> {
        at("2024-06-03T10:00:00Z")
    }

    fn channel(policy: RolloutPolicy) -> Channel {
        Channel {
            name: "stable".into(),
            version: Some("2.0".into()),
            policy,
        }
    }

    fn machine(id: &str, version: &str, state: UpdateState) -> MachineUpdate {
        MachineUpdate {
            machine_id: id.into(),
            channel: "stable".into(),
            version: version.into(),
            state,
            target: (state != UpdateState::Idle).then(|| "2.0".into()),
            error: String::new(),
            proceed: false,
            since: now(),
            last_checkin: now(),
        }
    }

    fn fleet() -> Vec<MachineUpdate> {
        ["m1", "m2", "m3"]
            .iter()
            .map(|id| machine(id, "1.0", UpdateState::Idle))
            .collect()
    }

    fn decide_for(c: &Channel, ms: &[MachineUpdate], id: &str, at: DateTime<Utc>) -> Decision {
        let me = ms
            .iter()
            .find(|m| m.machine_id == id)
            .unwrap_or_else(|| panic!("{id}"));
        decide(c, ms, me, at)
    }

    #[test]
    fn offers_only_what_the_machine_does_not_run() {
        let ms = fleet();
        let mut c = channel(RolloutPolicy::default());
        let d = decide_for(&c, &ms, "m1", now());
        assert!(d.offer && d.proceed, "{d:?}");
        c.version = None;
        let d = decide_for(&c, &ms, "m1", now());
        assert!(!d.offer && !d.proceed);
        let c = channel(RolloutPolicy::default());
        let done = vec![machine("m1", "2.0", UpdateState::Idle)];
        let d = decide_for(&c, &done, "m1", now());
        assert!(!d.offer && !d.proceed, "{d:?}");
    }

    #[test]
    fn paused_and_halted_channels_offer_but_hold() {
        let ms = fleet();
        let paused = channel(RolloutPolicy {
            paused: true,
            ..RolloutPolicy::default()
        });
        let d = decide_for(&paused, &ms, "m2", now());
        assert!(
            d.offer && !d.proceed && d.reason.contains("paused"),
            "{d:?}"
        );
        let halted = channel(RolloutPolicy {
            halted: true,
            halt_reason: "too many failures".into(),
            ..RolloutPolicy::default()
        });
        let d = decide_for(&halted, &ms, "m2", now());
        assert!(d.offer && !d.proceed && d.reason.contains("too many failures"));
        assert_eq!(d.halt, None, "already halted");
    }

    #[test]
    fn windows_are_judged_in_the_channel_time_zone() {
        let ms = fleet();
        let c = channel(RolloutPolicy {
            windows: vec!["Mon..Fri 04:00 2h".into()],
            timezone: "America/New_York".into(),
            ..RolloutPolicy::default()
        });
        // 04:30 in New York (UTC-4 in June) is 08:30 UTC.
        assert!(decide_for(&c, &ms, "m1", at("2024-06-03T08:30:00Z")).proceed);
        let d = decide_for(&c, &ms, "m1", at("2024-06-03T04:30:00Z"));
        assert!(
            d.offer && !d.proceed && d.reason.contains("outside"),
            "{d:?}"
        );
    }

    #[test]
    fn canaries_go_first_in_machine_id_order() {
        let c = channel(RolloutPolicy {
            canaries: 1,
            max_reboots: 2,
            ..RolloutPolicy::default()
        });
        let mut ms = fleet();
        // Check-ins arrive in any order: m1 is the canary all the same.
        assert!(decide_for(&c, &ms, "m3", now()).offer);
        assert!(!decide_for(&c, &ms, "m3", now()).proceed);
        assert!(decide_for(&c, &ms, "m1", now()).proceed);
        assert!(!decide_for(&c, &ms, "m2", now()).proceed);
        // The canary is mid-update: still waiting.
        ms[0] = machine("m1", "2.0", UpdateState::Confirming);
        let d = decide_for(&c, &ms, "m2", now());
        assert!(!d.proceed && d.reason.contains("m1"), "{d:?}");
        // The canary reports updated: everyone may go.
        ms[0] = machine("m1", "2.0", UpdateState::Updated);
        assert!(decide_for(&c, &ms, "m2", now()).proceed);
        assert!(decide_for(&c, &ms, "m3", now()).proceed);
        // A machine already on the target as idle was never part of the rollout.
        let mut ms = fleet();
        ms[0] = machine("m1", "2.0", UpdateState::Idle);
        assert!(decide_for(&c, &ms, "m2", now()).proceed, "m2 is the canary");
        assert!(!decide_for(&c, &ms, "m3", now()).proceed);
    }

    #[test]
    fn failures_reaching_the_threshold_halt_the_rollout() {
        let c = channel(RolloutPolicy {
            failure_threshold: 2,
            ..RolloutPolicy::default()
        });
        let mut ms = fleet();
        ms[0] = machine("m1", "1.0", UpdateState::RolledBack);
        let d = decide_for(&c, &ms, "m1", now());
        assert!(d.offer && !d.proceed && d.halt.is_none(), "{d:?}");
        assert!(decide_for(&c, &ms, "m2", now()).proceed, "one failure < 2");
        ms[1] = machine("m2", "1.0", UpdateState::Failed);
        let d = decide_for(&c, &ms, "m3", now());
        assert!(!d.proceed, "{d:?}");
        let why = d.halt.unwrap_or_default();
        assert!(why.contains("m1") && why.contains("m2"), "{why}");
        // Failures on another version do not count.
        let mut old = fleet();
        old[0] = machine("m1", "1.0", UpdateState::Failed);
        old[0].target = Some("1.5".into());
        old[1] = machine("m2", "1.0", UpdateState::Failed);
        old[1].target = Some("1.5".into());
        let d = decide_for(&c, &old, "m3", now());
        assert!(d.proceed && d.halt.is_none(), "{d:?}");
        // A resume forgives the failures reported before it: m1 may retry.
        let resumed = channel(RolloutPolicy {
            failure_threshold: 2,
            resumed_at: Some(at("2024-06-03T10:00:01Z")),
            ..RolloutPolicy::default()
        });
        let d = decide_for(&resumed, &ms, "m1", at("2024-06-03T10:00:02Z"));
        assert!(d.proceed && d.halt.is_none(), "{d:?}");
    }
}
