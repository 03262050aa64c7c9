//! The pure part of a start: what the persisted phase means now that the
//! booted slot is known (after a reboot, or after a crash at any step).

use api::updates::UpdateState;
use chrono::{DateTime, Duration, Utc};

use super::state::{Outcome, Phase, UpdateFile};
use crate::slots::{Slot, SlotAttrs};

/// What a start must do before the loop runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The phase stands as it is.
    Keep,
    /// Booted the new slot: confirm it with this phase.
    Confirm(Phase),
    /// The phase cannot stand (the slot is not as it says): drop the update,
    /// releasing the lock and clearing draining if they were taken.
    Reset,
    /// Back on the old slot: the update of `version` rolled back. Lower the
    /// new slot's priority if `roll_back` names it, then release the lock.
    RolledBack {
        /// The version given up.
        version: String,
        /// The slot to roll back, if it is still bootable.
        roll_back: Option<Slot>,
        /// Why.
        reason: String,
    },
}

/// Decides how `state` resumes when `booted` runs (`fresh`: this start is a boot).
///
/// `attrs` gives a slot's current attributes; `deadline` is the health
/// deadline of a new slot booted now.
pub fn resume(
    state: &UpdateFile,
    booted: Slot,
    fresh: bool,
    attrs: impl Fn(Slot) -> SlotAttrs,
    deadline: DateTime<Utc>,
) -> Resume {
    let gone = |slot: Slot, reason: &str, version: &str| Resume::RolledBack {
        version: version.to_owned(),
        roll_back: attrs(slot).bootable().then_some(slot),
        reason: reason.to_owned(),
    };
    match &state.phase {
        Phase::Idle => Resume::Keep,
        Phase::Downloading { slot, .. } | Phase::Verifying { slot, .. } => {
            if *slot == booted || attrs(*slot) != SlotAttrs::INVALID {
                Resume::Reset
            } else {
                Resume::Keep
            }
        }
        Phase::Verified { slot, .. }
        | Phase::WaitingForLock { slot, .. }
        | Phase::Draining { slot, .. } => {
            if *slot == booted || !attrs(*slot).bootable() {
                Resume::Reset
            } else {
                Resume::Keep
            }
        }
        Phase::Rebooting { offer, slot, .. } => {
            if !fresh {
                Resume::Keep
            } else if *slot == booted {
                Resume::Confirm(Phase::Confirming {
                    offer: offer.clone(),
                    slot: *slot,
                    deadline,
                })
            } else {
                gone(*slot, "the new slot did not boot", &offer.version)
            }
        }
        Phase::Confirming { offer, slot, .. } => {
            if *slot == booted {
                Resume::Keep
            } else {
                gone(
                    *slot,
                    "rebooted before the new slot was confirmed",
                    &offer.version,
                )
            }
        }
        Phase::RollingBack {
            version,
            slot,
            reason,
            ..
        } => {
            if *slot == booted {
                Resume::Keep
            } else {
                Resume::RolledBack {
                    version: version.clone(),
                    roll_back: None,
                    reason: reason.clone(),
                }
            }
        }
    }
}

/// Applies a finished rollback to `state`: idle, reporting it, the version refused.
pub fn rolled_back(state: &mut UpdateFile, version: &str, reason: &str) {
    state.phase = Phase::Idle;
    state.last = Some(Outcome {
        state: UpdateState::RolledBack,
        version: version.to_owned(),
        error: reason.to_owned(),
    });
    state.refused = Some(version.to_owned());
}

/// The health deadline of a slot booted at `now`.
pub fn deadline_from(now: DateTime<Utc>, health_deadline: std::time::Duration) -> DateTime<Utc> {
    let span = Duration::from_std(health_deadline).unwrap_or(Duration::days(365));
    now.checked_add_signed(span)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::updates::Offer;

    fn offer() -> Offer {
        Offer {
            version: "2".into(),
            sha256: "ab".repeat(32),
            size: 10,
            signature: "sig".into(),
            url: "/p".into(),
        }
    }

    const GOOD: SlotAttrs = SlotAttrs {
        priority: 1,
        tries: 0,
        successful: true,
    };
    const ARMED: SlotAttrs = SlotAttrs {
        priority: 2,
        tries: 1,
        successful: false,
    };

    fn with(phase: Phase) -> UpdateFile {
        UpdateFile {
            booted: Some(Slot::A),
            phase,
            ..UpdateFile::default()
        }
    }

    fn attrs(b: SlotAttrs) -> impl Fn(Slot) -> SlotAttrs {
        move |s| if s == Slot::A { GOOD } else { b }
    }

    #[test]
    fn a_reboot_into_the_new_slot_confirms_it() {
        let now = Utc::now();
        let s = with(Phase::Rebooting {
            offer: offer(),
            slot: Slot::B,
            boot_id: None,
        });
        let r = resume(&s, Slot::B, true, attrs(ARMED), now);
        assert_eq!(
            r,
            Resume::Confirm(Phase::Confirming {
                offer: offer(),
                slot: Slot::B,
                deadline: now
            })
        );
        // Not a boot yet (a crash before the reboot happened): keep rebooting.
        assert_eq!(resume(&s, Slot::A, false, attrs(ARMED), now), Resume::Keep);
        // Booted the old slot: the new one never came up.
        let r = resume(&s, Slot::A, true, attrs(ARMED), now);
        assert!(
            matches!(&r, Resume::RolledBack { roll_back: Some(Slot::B), version, .. } if version == "2"),
            "{r:?}"
        );
    }

    #[test]
    fn confirming_survives_a_crash_but_not_a_reboot_into_the_old_slot() {
        let now = Utc::now();
        let s = with(Phase::Confirming {
            offer: offer(),
            slot: Slot::B,
            deadline: now,
        });
        assert_eq!(resume(&s, Slot::B, false, attrs(ARMED), now), Resume::Keep);
        let spent = SlotAttrs { tries: 0, ..ARMED };
        let r = resume(&s, Slot::A, true, attrs(spent), now);
        assert!(
            matches!(
                r,
                Resume::RolledBack {
                    roll_back: None,
                    ..
                }
            ),
            "{r:?}"
        );
    }

    #[test]
    fn a_rollback_finishes_once_the_old_slot_runs() {
        let now = Utc::now();
        let s = with(Phase::RollingBack {
            version: "2".into(),
            slot: Slot::B,
            reason: "unhealthy".into(),
            boot_id: None,
        });
        assert_eq!(resume(&s, Slot::B, false, attrs(ARMED), now), Resume::Keep);
        assert_eq!(
            resume(&s, Slot::A, true, attrs(SlotAttrs::INVALID), now),
            Resume::RolledBack {
                version: "2".into(),
                roll_back: None,
                reason: "unhealthy".into()
            }
        );
        let mut done = s.clone();
        rolled_back(&mut done, "2", "unhealthy");
        assert_eq!(done.phase, Phase::Idle);
        assert_eq!(done.refused.as_deref(), Some("2"));
        assert_eq!(done.report().0, UpdateState::RolledBack);
    }

    #[test]
    fn phases_whose_slot_is_not_as_recorded_reset() {
        let now = Utc::now();
        let downloading = with(Phase::Downloading {
            offer: offer(),
            slot: Slot::B,
            offset: 5,
        });
        assert_eq!(
            resume(&downloading, Slot::A, false, attrs(SlotAttrs::INVALID), now),
            Resume::Keep
        );
        // Armed behind the state's back (a crash between arm and save): start over.
        assert_eq!(
            resume(&downloading, Slot::A, false, attrs(ARMED), now),
            Resume::Reset
        );
        let draining = with(Phase::Draining {
            offer: offer(),
            slot: Slot::B,
            since: now,
        });
        assert_eq!(
            resume(&draining, Slot::A, false, attrs(ARMED), now),
            Resume::Keep
        );
        // Invalidated behind the state's back (a crash while restarting a download).
        assert_eq!(
            resume(&draining, Slot::A, false, attrs(SlotAttrs::INVALID), now),
            Resume::Reset
        );
        assert_eq!(
            resume(&with(Phase::Idle), Slot::A, true, attrs(ARMED), now),
            Resume::Keep
        );
    }
}
