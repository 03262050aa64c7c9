//! The update engine's persisted state (`<state-dir>/update.json`) and its
//! crash-safe file: written to a temporary file, fsynced, renamed over the
//! old one, and the directory fsynced, so a kill at any instant leaves either
//! the old or the new state on disk, never a torn one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use api::updates::{LockSpec, Offer, UpdateState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::UpdateError;
use crate::slots::Slot;

/// The file name of the state inside the state directory.
pub const STATE_FILE: &str = "update.json";

/// The version reported for a slot the agent never installed (e.g. the first boot).
pub const UNKNOWN_VERSION: &str = "0";

/// Where the update is; every variant but `Idle` names the offer and the passive slot it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Nothing in progress.
    #[default]
    Idle,
    /// The slot is invalidated; payload bytes before `offset` are on it and synced.
    Downloading {
        /// What is installed.
        offer: Offer,
        /// The passive slot written.
        slot: Slot,
        /// Payload bytes durably written so far: where a download resumes.
        offset: u64,
    },
    /// The whole payload is on the slot; size, hash and signature are being checked.
    Verifying {
        /// What is installed.
        offer: Offer,
        /// The passive slot written.
        slot: Slot,
    },
    /// The slot holds the verified payload and is armed for the next boot.
    Verified {
        /// What is installed.
        offer: Offer,
        /// The armed slot.
        slot: Slot,
    },
    /// Allowed to proceed; trying to take the reboot lock.
    WaitingForLock {
        /// What is installed.
        offer: Offer,
        /// The armed slot.
        slot: Slot,
    },
    /// The reboot lock is held; the machine is marked draining since `since`.
    Draining {
        /// What is installed.
        offer: Offer,
        /// The armed slot.
        slot: Slot,
        /// When draining began (bounds the wait across restarts).
        since: DateTime<Utc>,
    },
    /// The reboot into the armed slot was requested.
    Rebooting {
        /// What is installed.
        offer: Offer,
        /// The armed slot.
        slot: Slot,
        /// The kernel boot id when the reboot was requested (real hosts: tells a reboot happened).
        boot_id: Option<String>,
    },
    /// Booted the new slot; health checks run until `deadline`.
    Confirming {
        /// What was installed.
        offer: Offer,
        /// The booted new slot.
        slot: Slot,
        /// When the boot counts as unhealthy.
        deadline: DateTime<Utc>,
    },
    /// The new slot was given up; rebooting into the old one, then the lock is released.
    RollingBack {
        /// The version that failed.
        version: String,
        /// The slot given up.
        slot: Slot,
        /// Why.
        reason: String,
        /// The kernel boot id when the reboot was requested.
        boot_id: Option<String>,
    },
}

impl Phase {
    /// The offer being installed, if any.
    pub fn offer(&self) -> Option<&Offer> {
        match self {
            Phase::Idle | Phase::RollingBack { .. } => None,
            Phase::Downloading { offer, .. }
            | Phase::Verifying { offer, .. }
            | Phase::Verified { offer, .. }
            | Phase::WaitingForLock { offer, .. }
            | Phase::Draining { offer, .. }
            | Phase::Rebooting { offer, .. }
            | Phase::Confirming { offer, .. } => Some(offer),
        }
    }

    /// The slot the update writes or booted, if any.
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Phase::Idle => None,
            Phase::Downloading { slot, .. }
            | Phase::Verifying { slot, .. }
            | Phase::Verified { slot, .. }
            | Phase::WaitingForLock { slot, .. }
            | Phase::Draining { slot, .. }
            | Phase::Rebooting { slot, .. }
            | Phase::Confirming { slot, .. }
            | Phase::RollingBack { slot, .. } => Some(*slot),
        }
    }

    /// True from the moment the reboot lock is taken until it is released.
    pub fn holds_lock(&self) -> bool {
        matches!(
            self,
            Phase::Draining { .. }
                | Phase::Rebooting { .. }
                | Phase::Confirming { .. }
                | Phase::RollingBack { .. }
        )
    }

    /// True while the machine must be marked draining: from taking the lock
    /// until the new slot boots, and again while rolling back. While the new
    /// slot is confirmed it is not, so its units can come back and be checked.
    pub fn drains(&self) -> bool {
        matches!(
            self,
            Phase::Draining { .. } | Phase::Rebooting { .. } | Phase::RollingBack { .. }
        )
    }

    /// The update state reported for this phase.
    pub fn reported(&self) -> UpdateState {
        match self {
            Phase::Idle => UpdateState::Idle,
            Phase::Downloading { .. } => UpdateState::Downloading,
            Phase::Verifying { .. } => UpdateState::Verifying,
            Phase::Verified { .. } => UpdateState::Verified,
            Phase::WaitingForLock { .. } => UpdateState::WaitingForLock,
            Phase::Draining { .. } => UpdateState::Draining,
            Phase::Rebooting { .. } => UpdateState::Rebooting,
            Phase::Confirming { .. } => UpdateState::Confirming,
            Phase::RollingBack { .. } => UpdateState::RolledBack,
        }
    }
}

/// How the last update ended: reported while idle, until the next update starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `updated`, `rolled_back` or `failed`.
    pub state: UpdateState,
    /// The version it was about.
    pub version: String,
    /// Why it failed, in words (empty when it did not).
    #[serde(default)]
    pub error: String,
}

/// Everything the update engine keeps across restarts and reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UpdateFile {
    /// The slot this boot runs from.
    #[serde(default)]
    pub booted: Option<Slot>,
    /// The OS version each slot holds, when known.
    #[serde(default)]
    pub versions: BTreeMap<Slot, String>,
    /// Where the update is.
    #[serde(default)]
    pub phase: Phase,
    /// A reboot was requested: the next start is a boot (test hosts run gptprio then).
    #[serde(default)]
    pub reboot_requested: bool,
    /// How the last update ended.
    #[serde(default)]
    pub last: Option<Outcome>,
    /// A version refused (failed or rolled back): not retried until the server lets it proceed.
    #[serde(default)]
    pub refused: Option<String>,
    /// The reboot lock this machine may hold: recorded before acquiring, cleared after release.
    #[serde(default)]
    pub lock: Option<LockSpec>,
    /// While draining: the instances placed on this machine since draining
    /// began; the reboot waits until each runs where it moved (`super::drain`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub drained: BTreeSet<String>,
}

impl UpdateFile {
    /// The version of the booted slot.
    pub fn version(&self) -> &str {
        self.booted
            .and_then(|s| self.versions.get(&s))
            .map_or(UNKNOWN_VERSION, String::as_str)
    }

    /// The state, target and error to report in a check-in.
    pub fn report(&self) -> (UpdateState, Option<String>, String) {
        match (&self.phase, &self.last) {
            (Phase::Idle, Some(last)) => {
                (last.state, Some(last.version.clone()), last.error.clone())
            }
            (Phase::Idle, None) => (UpdateState::Idle, None, String::new()),
            (
                Phase::RollingBack {
                    version, reason, ..
                },
                _,
            ) => (
                UpdateState::RolledBack,
                Some(version.clone()),
                reason.clone(),
            ),
            (phase, _) => (
                phase.reported(),
                phase.offer().map(|o| o.version.clone()),
                String::new(),
            ),
        }
    }
}

/// The state file in a state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    /// `<state-dir>/update.json`.
    path: PathBuf,
}

impl StateStore {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> StateStore {
        StateStore {
            path: state_dir.join(STATE_FILE),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; `None` when there is none yet (the very first start).
    pub fn load(&self) -> Result<Option<UpdateFile>, UpdateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| UpdateError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(UpdateError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the state atomically and durably (tmp file, fsync, rename, fsync dir).
    pub fn save(&self, state: &UpdateFile) -> Result<(), UpdateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| UpdateError::Io {
                action,
                path,
                source,
            }
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| UpdateError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io("rename", &self.path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(version: &str) -> Offer {
        Offer {
            version: version.into(),
            sha256: "ab".repeat(32),
            size: 10,
            signature: "sig".into(),
            url: "/p".into(),
        }
    }

    #[test]
    fn a_missing_file_is_no_state_and_saves_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        assert_eq!(store.load().expect("load"), None);
        let state = UpdateFile {
            booted: Some(Slot::A),
            versions: BTreeMap::from([(Slot::A, "1".into()), (Slot::B, "2".into())]),
            phase: Phase::Downloading {
                offer: offer("2"),
                slot: Slot::B,
                offset: 4096,
            },
            reboot_requested: true,
            last: None,
            refused: Some("3".into()),
            lock: None,
            drained: BTreeSet::from(["web@1".to_owned()]),
        };
        store.save(&state).expect("save");
        assert_eq!(store.load().expect("load"), Some(state.clone()));
        // Overwrite leaves no temporary file behind.
        store.save(&UpdateFile::default()).expect("save");
        assert_eq!(store.load().expect("load"), Some(UpdateFile::default()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        // Slots are written as their labels.
        store.save(&state).expect("save");
        let text = std::fs::read_to_string(store.path()).expect("read");
        assert!(
            text.contains("\"USR-B\"") && text.contains("\"downloading\""),
            "{text}"
        );
    }

    #[test]
    fn a_torn_temporary_file_does_not_matter_but_a_corrupt_state_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        store.save(&UpdateFile::default()).expect("save");
        // A crash while writing the temporary file leaves the state intact.
        std::fs::write(dir.path().join("update.json.tmp"), b"{\"boo").expect("write");
        assert_eq!(store.load().expect("load"), Some(UpdateFile::default()));
        store
            .save(&UpdateFile::default())
            .expect("save over a stale tmp");
        std::fs::write(store.path(), b"not json").expect("write");
        assert!(matches!(store.load(), Err(UpdateError::Corrupt { .. })));
    }

    #[test]
    fn reports_follow_the_phase_then_the_last_outcome() {
        let mut s = UpdateFile::default();
        assert_eq!(s.report(), (UpdateState::Idle, None, String::new()));
        assert_eq!(s.version(), UNKNOWN_VERSION);
        s.phase = Phase::Verified {
            offer: offer("2"),
            slot: Slot::B,
        };
        assert_eq!(
            s.report(),
            (UpdateState::Verified, Some("2".into()), String::new())
        );
        s.phase = Phase::RollingBack {
            version: "2".into(),
            slot: Slot::B,
            reason: "unhealthy".into(),
            boot_id: None,
        };
        assert_eq!(
            s.report(),
            (
                UpdateState::RolledBack,
                Some("2".into()),
                "unhealthy".into()
            )
        );
        s.phase = Phase::Idle;
        s.last = Some(Outcome {
            state: UpdateState::Updated,
            version: "2".into(),
            error: String::new(),
        });
        s.booted = Some(Slot::B);
        s.versions.insert(Slot::B, "2".into());
        assert_eq!(
            s.report(),
            (UpdateState::Updated, Some("2".into()), String::new())
        );
        assert_eq!(s.version(), "2");
    }
}
