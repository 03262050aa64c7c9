//! The pure part of the update loop: what to do next, from the persisted
//! phase and the server's answer to a check-in.

use api::updates::{CheckInReply, LockSpec, Offer};

use super::state::{Phase, UpdateFile};

/// The next thing the loop does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until the next check-in.
    Wait,
    /// Start installing this offer from scratch (invalidate the passive slot first).
    Download(Offer),
    /// Keep working on the current phase (download, verify, drain, reboot, confirm).
    Continue,
    /// Not allowed to proceed (any more): go back to `Verified` and wait.
    Hold,
    /// Allowed to proceed: take the reboot lock described.
    TakeLock(LockSpec),
    /// The offer went away before the reboot: invalidate the slot and go idle.
    Abandon,
}

/// Decides the next step for `state` after the server answered `reply`.
pub fn decide(state: &UpdateFile, reply: &CheckInReply) -> Step {
    let offered = reply.offer.as_ref();
    match &state.phase {
        Phase::Idle => match offered {
            None => Step::Wait,
            Some(o) if o.version == state.version() => Step::Wait,
            // A refused version is retried only once the server lets this
            // machine proceed again (an operator resumed the rollout).
            Some(o) if state.refused.as_deref() == Some(o.version.as_str()) && !reply.proceed => {
                Step::Wait
            }
            Some(o) => Step::Download(o.clone()),
        },
        Phase::Downloading { offer, .. } | Phase::Verifying { offer, .. } => match offered {
            None => Step::Abandon,
            Some(o) if o != offer => Step::Download(o.clone()),
            Some(_) => Step::Continue,
        },
        Phase::Verified { offer, .. } | Phase::WaitingForLock { offer, .. } => match offered {
            None => Step::Abandon,
            Some(o) if o != offer => Step::Download(o.clone()),
            Some(_) if reply.proceed => Step::TakeLock(reply.lock.clone()),
            Some(_) if matches!(state.phase, Phase::WaitingForLock { .. }) => Step::Hold,
            Some(_) => Step::Wait,
        },
        // With the lock taken the update is committed: finish it whatever the server says.
        Phase::Draining { .. }
        | Phase::Rebooting { .. }
        | Phase::Confirming { .. }
        | Phase::RollingBack { .. } => Step::Continue,
    }
}

/// What the loop may do without a check-in answer (the server is unreachable).
pub fn without_server(state: &UpdateFile) -> Step {
    match state.phase {
        Phase::Downloading { .. } | Phase::Verifying { .. } => Step::Continue,
        _ if state.phase.holds_lock() => Step::Continue,
        _ => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::Slot;
    use api::updates::UpdateState;
    use chrono::Utc;

    use crate::update::state::Outcome;

    fn offer(version: &str) -> Offer {
        Offer {
            version: version.into(),
            sha256: format!("{:0>64}", version),
            size: 1000,
            signature: "sig".into(),
            url: format!("/api/v1/updates/payloads/{version}"),
        }
    }

    fn reply(offer: Option<Offer>, proceed: bool) -> CheckInReply {
        CheckInReply {
            offer,
            proceed,
            reason: String::new(),
            lock: LockSpec {
                name: "reboot".into(),
                limit: 2,
            },
        }
    }

    fn on(version: &str, phase: Phase) -> UpdateFile {
        UpdateFile {
            booted: Some(Slot::A),
            versions: [(Slot::A, version.to_owned())].into(),
            phase,
            ..UpdateFile::default()
        }
    }

    #[test]
    fn idle_downloads_a_new_version_even_before_it_may_proceed() {
        let s = on("1", Phase::Idle);
        assert_eq!(decide(&s, &reply(None, false)), Step::Wait);
        assert_eq!(
            decide(&s, &reply(Some(offer("2")), false)),
            Step::Download(offer("2"))
        );
        assert_eq!(decide(&s, &reply(Some(offer("1")), true)), Step::Wait);
    }

    #[test]
    fn a_refused_version_waits_until_the_server_lets_it_proceed() {
        let mut s = on("1", Phase::Idle);
        s.refused = Some("2".into());
        s.last = Some(Outcome {
            state: UpdateState::Failed,
            version: "2".into(),
            error: "bad signature".into(),
        });
        assert_eq!(decide(&s, &reply(Some(offer("2")), false)), Step::Wait);
        assert_eq!(
            decide(&s, &reply(Some(offer("3")), false)),
            Step::Download(offer("3"))
        );
        assert_eq!(
            decide(&s, &reply(Some(offer("2")), true)),
            Step::Download(offer("2"))
        );
    }

    #[test]
    fn downloads_continue_restart_on_a_new_offer_and_stop_without_one() {
        for phase in [
            Phase::Downloading {
                offer: offer("2"),
                slot: Slot::B,
                offset: 10,
            },
            Phase::Verifying {
                offer: offer("2"),
                slot: Slot::B,
            },
        ] {
            let s = on("1", phase);
            assert_eq!(decide(&s, &reply(Some(offer("2")), false)), Step::Continue);
            assert_eq!(
                decide(&s, &reply(Some(offer("3")), true)),
                Step::Download(offer("3"))
            );
            assert_eq!(decide(&s, &reply(None, true)), Step::Abandon);
        }
    }

    #[test]
    fn a_verified_slot_takes_the_lock_only_when_allowed() {
        let verified = on(
            "1",
            Phase::Verified {
                offer: offer("2"),
                slot: Slot::B,
            },
        );
        assert_eq!(
            decide(&verified, &reply(Some(offer("2")), false)),
            Step::Wait
        );
        let lock = reply(None, true).lock;
        assert_eq!(
            decide(&verified, &reply(Some(offer("2")), true)),
            Step::TakeLock(lock.clone())
        );
        assert_eq!(decide(&verified, &reply(None, true)), Step::Abandon);
        let waiting = on(
            "1",
            Phase::WaitingForLock {
                offer: offer("2"),
                slot: Slot::B,
            },
        );
        assert_eq!(
            decide(&waiting, &reply(Some(offer("2")), true)),
            Step::TakeLock(lock)
        );
        assert_eq!(
            decide(&waiting, &reply(Some(offer("2")), false)),
            Step::Hold
        );
        assert_eq!(
            decide(&waiting, &reply(Some(offer("3")), false)),
            Step::Download(offer("3"))
        );
    }

    #[test]
    fn with_the_lock_taken_the_update_runs_to_its_end() {
        for phase in [
            Phase::Draining {
                offer: offer("2"),
                slot: Slot::B,
                since: Utc::now(),
            },
            Phase::Rebooting {
                offer: offer("2"),
                slot: Slot::B,
                boot_id: None,
            },
            Phase::Confirming {
                offer: offer("2"),
                slot: Slot::B,
                deadline: Utc::now(),
            },
            Phase::RollingBack {
                version: "2".into(),
                slot: Slot::B,
                reason: "unhealthy".into(),
                boot_id: None,
            },
        ] {
            let s = on("1", phase);
            assert!(s.phase.holds_lock());
            assert_eq!(decide(&s, &reply(None, false)), Step::Continue);
            assert_eq!(decide(&s, &reply(Some(offer("9")), false)), Step::Continue);
            assert_eq!(without_server(&s), Step::Continue);
        }
        assert_eq!(without_server(&on("1", Phase::Idle)), Step::Wait);
    }
}
