//! The update engine: installs the OS versions the server offers into the
//! passive A/B slot and reboots into them, one step at a time, each step
//! persisted first so a kill at any instant resumes or rolls back.
//!
//! ```text
//! Idle ─offer─► Downloading ─► Verifying ─► Verified ─proceed─► WaitingForLock
//!   ▲              │ (bad)          │ (bad: failed, slot left invalid)  │ lock taken
//!   │              └────────────────┴──► Idle (failed)                  ▼
//!   │                                                               Draining
//!   │                                                                   │ units run elsewhere / timeout
//!   │   healthy: mark successful, release          boot new slot        ▼
//!   ├──────────────────────────────── Confirming ◄──────────────── Rebooting
//!   │                                     │ unhealthy by the deadline
//!   │   old slot booted: release          ▼
//!   └──────────────────────────────── RollingBack (reboot into the old slot)
//! ```
//!
//! Every loop checks in with the phase's state (so each step is reported),
//! then takes the step [`decide::decide`] picks from the phase and the reply.
//! The passive slot is invalidated before its first byte is written and armed
//! only after size, SHA-256 and signature are checked, so a half-written or
//! unverified slot never boots. The reboot lock is held from `Draining` to the
//! end (renewed, TTL-backed); a lock recorded in the state but no longer
//! needed is released at the next loop, also after a crash.
//!
//! | module | holds |
//! | --- | --- |
//! | `state` | the persisted phases and the atomic state file |
//! | `decide` | the pure next step from the phase and a check-in reply |
//! | `boot` | which slot booted: the kernel command line, or gptprio on a test host |
//! | `resume` | the pure reconciliation of the phase with the booted slot at start |
//! | `download` | the resumable payload download into the slot |
//! | `drain` | what a draining machine still waits for before its reboot |
//! | `lock` | the reboot semaphore: take, renew, release |
//! | `health` | the post-boot health checks |
//! | `disk_init` | `shoal-agent disk init` |

pub mod boot;
pub mod decide;
mod disk_init;
pub mod download;
pub mod drain;
pub mod health;
pub mod lock;
pub mod resume;
pub mod state;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use api::updates::{CheckIn, CheckInReply, LockSpec, Offer, PublicKey, SignError, UpdateState};
use api::{Client, ClientError};
use chrono::Utc;
use tokio::time::Instant;

use crate::config::UpdateSettings;
use crate::lease::{error_chain, Lease, LeaseError};
use crate::slots::{Slot, SlotDisk, SlotError};
use decide::Step;
pub use disk_init::{describe as describe_disk, run as disk_command, DiskAction, DiskArgs};
use health::Health;
use lock::{Keeper, RebootLock};
use resume::Resume;
use state::{Outcome, Phase, StateStore, UpdateFile};

/// Time allowed for the reboot itself (the agent is down) on top of drain and health.
const REBOOT_ALLOWANCE: Duration = Duration::from_secs(300);
/// How long after running the reboot command it is run again if the host is still up.
const REBOOT_RETRY: Duration = Duration::from_secs(60);
/// How long the reboot command may run.
const REBOOT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest pause between loops while a step is in progress.
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// Why the update engine could not start or save its state.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The state file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The state file holds something else than a state.
    #[error("corrupt update state {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A slot operation failed.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The trusted public key is unusable.
    #[error(transparent)]
    Key(#[from] SignError),
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The machine record could not be written.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// How a step went wrong: worth retrying, or a failure of this version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Transient (network, IO): the step runs again at the next loop.
    Retry(String),
    /// The payload is bad: report `failed` and refuse the version.
    Fail(String),
}

impl From<UpdateError> for Fault {
    fn from(e: UpdateError) -> Self {
        Fault::Retry(error_chain(&e))
    }
}

/// The engine after its start: the disk opened, the booted slot known and the state reconciled.
#[derive(Debug)]
pub struct Booted {
    settings: UpdateSettings,
    key: PublicKey,
    disk: SlotDisk,
    store: StateStore,
    state: UpdateFile,
    slot: Slot,
}

impl Booted {
    /// Opens the disk, loads the state, finds the booted slot (running gptprio
    /// on a test host when this start is a boot) and reconciles the phase with it.
    pub fn start(
        settings: UpdateSettings,
        state_dir: &std::path::Path,
    ) -> Result<Booted, UpdateError> {
        let key = api::updates::public_key(&settings.public_key)?;
        let mut disk = SlotDisk::open(&settings.disk)?;
        let store = StateStore::new(state_dir);
        let loaded = store.load()?;
        let cmdline = std::fs::read_to_string(boot::CMDLINE).ok();
        let boot_id = boot::boot_id();
        let booted = boot::booted_slot(
            &mut disk,
            cmdline.as_deref(),
            boot_id.as_deref(),
            loaded.as_ref(),
        )?;
        let mut state = loaded.unwrap_or_default();
        let deadline = resume::deadline_from(Utc::now(), settings.health_deadline);
        let decision = resume::resume(
            &state,
            booted.slot,
            booted.fresh,
            |s| disk.attrs(s),
            deadline,
        );
        tracing::info!(slot = %booted.slot, fresh = booted.fresh, phase = ?state.phase, resume = ?decision, "booted");
        match decision {
            Resume::Keep => {}
            Resume::Confirm(phase) => state.phase = phase,
            Resume::Reset => {
                if let Some(slot) = state.phase.slot().filter(|s| *s != booted.slot) {
                    if disk.attrs(slot).bootable() && !disk.attrs(slot).successful {
                        if let Err(e) = disk.invalidate(slot) {
                            tracing::warn!(%slot, error = %error_chain(&e), "cannot invalidate");
                        }
                    }
                    state.versions.remove(&slot);
                }
                state.phase = Phase::Idle;
            }
            Resume::RolledBack {
                version,
                roll_back,
                reason,
            } => {
                if let Some(slot) = roll_back {
                    disk.roll_back(slot)?;
                }
                resume::rolled_back(&mut state, &version, &reason);
            }
        }
        state.booted = Some(booted.slot);
        state.reboot_requested = false;
        store.save(&state)?;
        saved_point(&state.phase);
        Ok(Booted {
            settings,
            key,
            disk,
            store,
            state,
            slot: booted.slot,
        })
    }

    /// The OS version this boot runs.
    pub fn os_version(&self) -> &str {
        self.state.version()
    }

    /// The booted slot.
    pub fn active_slot(&self) -> Slot {
        self.slot
    }

    /// True while the machine must stay drained (see [`Phase::drains`]).
    pub fn draining(&self) -> bool {
        self.state.phase.drains()
    }

    /// The running engine for `machine_id`.
    pub fn engine(
        self,
        machine_id: String,
        client: Client,
        lease: Lease,
        health: Health,
    ) -> Updater {
        let ttl = self.settings.health_deadline + self.settings.drain_timeout + REBOOT_ALLOWANCE;
        Updater {
            lock: RebootLock::new(client.clone(), machine_id.clone(), ttl),
            machine_id,
            client,
            lease,
            health,
            booted: self,
            keeper: None,
            reboot_ran: None,
        }
    }
}

/// The update loop of one machine.
#[derive(Debug)]
pub struct Updater {
    booted: Booted,
    machine_id: String,
    client: Client,
    lease: Lease,
    health: Health,
    lock: RebootLock,
    /// Renews the reboot lock while a phase holds it.
    keeper: Option<Keeper>,
    /// When the reboot command last ran in this process.
    reboot_ran: Option<Instant>,
}

impl Updater {
    /// Checks in, steps, and pauses, until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.tidy().await;
            let step = match self.checkin().await {
                Ok(reply) => decide::decide(&self.booted.state, &reply),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "update check-in failed");
                    decide::without_server(&self.booted.state)
                }
            };
            let before = self.booted.state.clone();
            if let Err(e) = self.execute(step).await {
                tracing::warn!(error = %error_chain(&e), phase = ?self.booted.state.phase, "update step failed");
            }
            let pause = if self.booted.state.report() != before.report() {
                Duration::ZERO
            } else if self.busy() {
                self.booted.settings.interval.min(BUSY_PAUSE)
            } else {
                self.booted.settings.interval
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// True while a step is in progress that the loop should come back to soon.
    fn busy(&self) -> bool {
        matches!(
            self.booted.state.phase,
            Phase::Downloading { .. }
                | Phase::Verifying { .. }
                | Phase::Draining { .. }
                | Phase::Confirming { .. }
        )
    }

    /// Reports the state; the reply says what to do.
    async fn checkin(&self) -> Result<CheckInReply, ClientError> {
        let state = &self.booted.state;
        let (reported, target, error) = state.report();
        let report = CheckIn {
            machine_id: self.machine_id.clone(),
            channel: self.booted.settings.channel.clone(),
            version: state.version().to_owned(),
            state: reported,
            target,
            error,
        };
        self.client.checkin(&report).await
    }

    /// Persists the state.
    fn save(&self) -> Result<(), UpdateError> {
        self.booted.store.save(&self.booted.state)?;
        saved_point(&self.booted.state.phase);
        Ok(())
    }

    /// Keeps the lock renewed while the phase holds it, and releases a lock
    /// and a draining mark the phase no longer needs.
    async fn tidy(&mut self) {
        let holds = self.booted.state.phase.holds_lock();
        // Between recording and taking the lock, it is kept: the next try renews it.
        let waiting = matches!(self.booted.state.phase, Phase::WaitingForLock { .. });
        match (self.booted.state.lock.clone(), holds) {
            (Some(spec), true) if self.keeper.is_none() => {
                self.keeper = Some(self.lock.keep(spec));
            }
            (Some(spec), false) if !waiting => {
                self.keeper = None;
                match self.lock.release(&spec).await {
                    Ok(()) => {
                        tracing::info!(lock = %spec.name, "reboot lock given back (or no longer held)");
                        self.booted.state.lock = None;
                        if let Err(e) = self.save() {
                            tracing::warn!(error = %error_chain(&e), "cannot save the update state");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "reboot lock release failed")
                    }
                }
            }
            _ => {}
        }
        if !self.booted.state.phase.drains() && self.lease.record().draining {
            if let Err(e) = self.lease.update(|m| m.draining = false).await {
                tracing::warn!(error = %error_chain(&e), "cannot clear draining");
            }
        }
    }

    /// Takes one step.
    async fn execute(&mut self, step: Step) -> Result<(), UpdateError> {
        match step {
            Step::Wait => Ok(()),
            Step::Hold => {
                if let Phase::WaitingForLock { offer, slot } = &self.booted.state.phase {
                    self.booted.state.phase = Phase::Verified {
                        offer: offer.clone(),
                        slot: *slot,
                    };
                    self.save()?;
                }
                Ok(())
            }
            Step::Abandon => self.abandon(),
            Step::Download(offer) => self.begin(offer),
            Step::TakeLock(spec) => self.take_lock(spec).await,
            Step::Continue => self.advance().await,
        }
    }

    /// Drops an update that has not rebooted: the slot is made unbootable.
    fn abandon(&mut self) -> Result<(), UpdateError> {
        let state = &mut self.booted.state;
        if let Some(slot) = state.phase.slot().filter(|s| *s != self.booted.slot) {
            tracing::info!(%slot, "the offer is gone: abandoning the update");
            self.booted.disk.invalidate(slot)?;
            state.versions.remove(&slot);
        }
        state.phase = Phase::Idle;
        self.save()
    }

    /// Starts installing `offer`: invalidate the passive slot first, then record the download.
    fn begin(&mut self, offer: Offer) -> Result<(), UpdateError> {
        let slot = self.booted.slot.other();
        tracing::info!(version = %offer.version, %slot, "installing a new version");
        self.booted.disk.invalidate(slot)?;
        let state = &mut self.booted.state;
        state.versions.remove(&slot);
        state.last = None;
        state.refused = None;
        state.phase = Phase::Downloading {
            offer,
            slot,
            offset: 0,
        };
        self.save()
    }

    /// Reports a failure of `version`: idle, the version refused, the slot left invalid.
    fn fail(&mut self, version: &str, reason: String) -> Result<(), UpdateError> {
        tracing::warn!(%version, %reason, "update failed");
        let state = &mut self.booted.state;
        state.phase = Phase::Idle;
        state.last = Some(Outcome {
            state: UpdateState::Failed,
            version: version.to_owned(),
            error: reason,
        });
        state.refused = Some(version.to_owned());
        self.save()
    }

    /// Tries to take the reboot lock; on success the machine starts draining.
    async fn take_lock(&mut self, spec: LockSpec) -> Result<(), UpdateError> {
        let (offer, slot) = match &self.booted.state.phase {
            Phase::Verified { offer, slot } | Phase::WaitingForLock { offer, slot } => {
                (offer.clone(), *slot)
            }
            _ => return Ok(()),
        };
        // Record the lock first: a crash right after the acquire then releases it.
        self.booted.state.lock = Some(spec.clone());
        self.booted.state.phase = Phase::WaitingForLock {
            offer: offer.clone(),
            slot,
        };
        self.save()?;
        if !self.lock.acquire(&spec).await? {
            return Ok(());
        }
        // What runs here now, read before the machine is marked draining, so
        // an instance the engine moves at once is still waited for.
        let fleet = drain::read(&self.client).await?;
        let here = drain::pending(&self.machine_id, &BTreeSet::new(), &fleet).here;
        tracing::info!(lock = %spec.name, instances = ?here, "reboot lock taken; draining");
        self.booted.state.drained = here;
        self.booted.state.phase = Phase::Draining {
            offer,
            slot,
            since: Utc::now(),
        };
        self.save()?;
        self.keeper = Some(self.lock.keep(spec));
        self.lease.update(|m| m.draining = true).await?;
        Ok(())
    }

    /// Works on the current phase.
    async fn advance(&mut self) -> Result<(), UpdateError> {
        match self.booted.state.phase.clone() {
            Phase::Downloading {
                offer,
                slot,
                offset,
            } => self.download(offer, slot, offset).await,
            Phase::Verifying { offer, slot } => self.verify(offer, slot).await,
            Phase::Draining { offer, slot, since } => self.drain(offer, slot, since).await,
            Phase::Rebooting { .. } | Phase::RollingBack { .. } => self.reboot().await,
            Phase::Confirming {
                offer,
                slot,
                deadline,
            } => self.confirm(offer, slot, deadline).await,
            Phase::Idle | Phase::Verified { .. } | Phase::WaitingForLock { .. } => Ok(()),
        }
    }

    /// Downloads (the rest of) the payload, recording progress piece by piece.
    async fn download(&mut self, offer: Offer, slot: Slot, offset: u64) -> Result<(), UpdateError> {
        let store = self.booted.store.clone();
        let mut state = self.booted.state.clone();
        let result = download::download(
            &self.client,
            &self.booted.disk,
            slot,
            &offer,
            offset,
            |at| {
                state.phase = Phase::Downloading {
                    offer: offer.clone(),
                    slot,
                    offset: at,
                };
                store.save(&state).map_err(Fault::from)
            },
        )
        .await;
        self.booted.state = state;
        match result {
            Ok(()) => {
                self.booted.state.phase = Phase::Verifying { offer, slot };
                self.save()
            }
            Err(Fault::Retry(why)) => {
                tracing::warn!(version = %offer.version, %why, "download interrupted; resuming later");
                Ok(())
            }
            Err(Fault::Fail(why)) => self.fail(&offer.version, why),
        }
    }

    /// Checks signature, size and SHA-256; arms the slot only when all hold.
    async fn verify(&mut self, offer: Offer, slot: Slot) -> Result<(), UpdateError> {
        let key = &self.booted.key;
        if let Err(e) = api::updates::verify_with(
            key,
            &offer.version,
            offer.size,
            &offer.sha256,
            &offer.signature,
        ) {
            return self.fail(&offer.version, format!("payload {}: {e}", offer.version));
        }
        let verified = match self
            .booted
            .disk
            .verify(slot, offer.size, &offer.sha256)
            .await
        {
            Ok(v) => v,
            Err(
                e @ (SlotError::DigestMismatch { .. }
                | SlotError::BadDigest(_)
                | SlotError::TooLarge { .. }),
            ) => {
                return self.fail(&offer.version, error_chain(&e));
            }
            Err(e) => return Err(e.into()),
        };
        self.booted.disk.arm(verified)?;
        // A crash here leaves the slot armed while the state still says verifying.
        fail::fail_point!("update::armed", |_| crash("update::armed"));
        tracing::info!(version = %offer.version, %slot, "payload verified; slot armed");
        let state = &mut self.booted.state;
        state.versions.insert(slot, offer.version.clone());
        state.phase = Phase::Verified { offer, slot };
        self.save()
    }

    /// Waits (bounded) until the engine moved the units away and they run
    /// on their new machines, then requests the reboot.
    async fn drain(
        &mut self,
        offer: Offer,
        slot: Slot,
        since: chrono::DateTime<Utc>,
    ) -> Result<(), UpdateError> {
        if !self.lease.record().draining {
            self.lease.update(|m| m.draining = true).await?;
        }
        let waited = (Utc::now() - since).to_std().unwrap_or_default();
        let fleet = drain::read(&self.client).await?;
        let pending = drain::pending(&self.machine_id, &self.booted.state.drained, &fleet);
        if !pending.here.is_subset(&self.booted.state.drained) {
            self.booted
                .state
                .drained
                .extend(pending.here.iter().cloned());
            self.save()?;
        }
        if !pending.done() && waited < self.booted.settings.drain_timeout {
            tracing::info!(here = ?pending.here, starting = ?pending.starting, "draining: waiting for units to run elsewhere");
            return Ok(());
        }
        if !pending.done() {
            tracing::warn!(
                here = ?pending.here,
                starting = ?pending.starting,
                "drain timeout: rebooting before every unit runs elsewhere"
            );
        }
        // Fencing: the slot must still be ours right before the reboot.
        let spec = self.booted.state.lock.clone().unwrap_or_else(default_lock);
        if !self.lock.acquire(&spec).await? {
            tracing::warn!("lost the reboot lock while draining; waiting for it again");
            self.keeper = None;
            self.booted.state.phase = Phase::WaitingForLock { offer, slot };
            return self.save();
        }
        self.booted.state.phase = Phase::Rebooting {
            offer,
            slot,
            boot_id: boot::boot_id(),
        };
        self.booted.state.drained.clear();
        self.booted.state.reboot_requested = true;
        self.save()
    }

    /// Runs the reboot command (again, if the host is still up long after).
    async fn reboot(&mut self) -> Result<(), UpdateError> {
        if self.reboot_ran.is_some_and(|t| t.elapsed() < REBOOT_RETRY) {
            return Ok(());
        }
        self.reboot_ran = Some(Instant::now());
        let cmd = &self.booted.settings.reboot_command;
        tracing::info!(command = %cmd, "rebooting");
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .status();
        match tokio::time::timeout(REBOOT_COMMAND_TIMEOUT, status).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => tracing::warn!(command = %cmd, status = %s, "reboot command failed"),
            Ok(Err(e)) => {
                tracing::warn!(command = %cmd, error = %e, "cannot run the reboot command")
            }
            Err(_) => tracing::warn!(command = %cmd, "reboot command timed out"),
        }
        Ok(())
    }

    /// Runs the health checks on the new slot: healthy marks it good,
    /// unhealthy past the deadline rolls it back.
    async fn confirm(
        &mut self,
        offer: Offer,
        slot: Slot,
        deadline: chrono::DateTime<Utc>,
    ) -> Result<(), UpdateError> {
        let why = match self.health.check().await {
            Ok(()) => {
                self.booted.disk.mark_successful(slot)?;
                tracing::info!(version = %offer.version, %slot, "new slot healthy: marked successful");
                let state = &mut self.booted.state;
                state.versions.insert(slot, offer.version.clone());
                state.phase = Phase::Idle;
                state.last = Some(Outcome {
                    state: UpdateState::Updated,
                    version: offer.version,
                    error: String::new(),
                });
                self.save()?;
                self.tidy().await;
                return Ok(());
            }
            Err(why) => why,
        };
        if Utc::now() < deadline {
            tracing::info!(%why, "new slot not healthy yet");
            return Ok(());
        }
        let reason = format!("unhealthy after boot: {why}");
        tracing::warn!(version = %offer.version, %slot, %reason, "rolling back");
        self.booted.disk.roll_back(slot)?;
        self.booted.state.phase = Phase::RollingBack {
            version: offer.version,
            slot,
            reason,
            boot_id: boot::boot_id(),
        };
        self.booted.state.reboot_requested = true;
        self.save()
    }
}

/// The lock to use when the state recorded none (an older state file).
fn default_lock() -> LockSpec {
    LockSpec {
        name: api::updates::REBOOT_LOCK.into(),
        limit: 1,
    }
}

/// Fail point `update::saved`: configured `return(<phase>)` (the phase as
/// `update.json` names it, e.g. `draining`), it crashes the process right
/// after that phase was persisted, before anything acts on it.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn saved_point(phase: &Phase) {
    fail::fail_point!("update::saved", |name: Option<String>| {
        let persisted = serde_json::to_value(phase).ok();
        let persisted = persisted.as_ref().and_then(|p| p["phase"].as_str());
        if let Some(name) = name.filter(|n| Some(n.as_str()) == persisted) {
            crash(&format!("update::saved({name})"));
        }
    });
}

/// Ends the process at once, as SIGKILL or a power cut would (no destructors,
/// nothing flushed): what the fail points do when they fire.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn crash(point: &str) -> ! {
    eprintln!("fail point {point}: aborting the process");
    std::process::abort()
}
