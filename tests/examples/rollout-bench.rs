//! OS update benchmarks against a real `shoal-server` (issue 4), in two modes.
//!
//! Both start one `target/release/shoal-server` member on loopback ports with a
//! temporary data dir and `--update-public-key` (a key pair made here with
//! `api::updates::generate_keypair`), upload a signed payload, print a
//! markdown table, are bounded by `--timeout`, SIGKILL the server on exit and
//! remove their data (the server log stays in the run dir they print).
//!
//! `--mode rollout` (default): `--hosts` simulated hosts (no Docker, no disk)
//! follow channel `stable` with `max_reboots = N`. Each host keeps a real
//! machine lease (`node_agent::lease::Lease`) and runs the agent's update loop
//! step for step: it checks in (`POST /api/v1/updates/checkin`), picks its step
//! with the agent's own `node_agent::update::decide::decide` from the agent's
//! `UpdateFile` phases, takes, renews and releases the `reboot` semaphore with
//! the agent's `RebootLock`, reports `downloading`, `verifying`, `verified`,
//! `waiting_for_lock`, `draining`, `rebooting`, `confirming` and `updated`,
//! "reboots" by sleeping `--reboot-ms` (no check-ins, no lock renewals, as a
//! host that is down) and passes its health checks `--health-ms` after the
//! boot (polled like the agent's confirm step). The payload bytes are not
//! downloaded (the signature is checked): `--mode download` measures that.
//! Prints the wall time of the rollout against the ideal
//! `ceil(hosts / N) × (reboot + health)`, where the overhead went, the most
//! holders `GET /api/v1/locks/reboot` ever showed, and the server's CPU time
//! per check-in (from `/proc/<pid>/stat`).
//!
//! `--mode download`: uploads a `--size-mib` payload, then `--clients`
//! downloaders at once stream `GET /api/v1/updates/payloads/{sha256}` with the
//! agent's own download code (`node_agent::update::download`), each into the
//! USR-B slot of its own sparse disk image file (that code writes only into a
//! slot: 1 MiB pieces, each fsynced, then the agent's state file saved), each in
//! its own thread and runtime like separate agents. Reference, same run, same
//! disk: the same bytes written to as many plain files in parallel with no
//! network, fsynced once at the end, and fsynced every 1 MiB like the agent;
//! and, to tell the network from the agent's write pattern, the same download
//! through the typed client streamed into plain files with one fsync at the end.
//! The four passes interleave over `--rounds` rounds; the median round counts.
//!
//! Run it with `bench/rollout.sh` / `bench/download.sh`, or
//! `cargo run --release -p tests --example rollout-bench -- --help`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use api::client::{GetOptions, ETCD_KEY_NOT_FOUND};
use api::error::error_chain;
use api::fleet::{Assignment, Machine, PLACEMENTS_DIR};
use api::updates::{
    self, ChannelUpdate, CheckIn, LockSpec, Offer, PayloadMeta, PublicKey, UpdateState,
    UploadQuery, REBOOT_LOCK,
};
use api::Client;
use clap::{Parser, ValueEnum};
use futures::stream::{self, StreamExt as _};
use node_agent::lease::{Lease, LeaseState};
use node_agent::slots::{create_image, ImageLayout, Slot};
use node_agent::update::decide::{self, Step};
use node_agent::update::lock::{Keeper, RebootLock};
use node_agent::update::state::{Outcome, Phase, StateStore, UpdateFile};
use node_agent::update::{download, Fault};
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

#[path = "common/cli.rs"]
mod cli;
#[path = "common/server.rs"]
mod server;
use server::{clock_ticks, proc_stats, Server};

/// The channel every simulated host follows.
const CHANNEL: &str = "stable";
/// The version the hosts run at the start.
const FROM_VERSION: &str = "1";
/// The version the rollout installs.
const TO_VERSION: &str = "2";
/// Size of the rollout's payload (its bytes are not downloaded in that mode).
const ROLLOUT_PAYLOAD: usize = 64 * 1024;
/// Lease TTL of a simulated host (renewed every third of it, as the agent does).
const LEASE_TTL: Duration = Duration::from_secs(30);
/// The agent's default health deadline, drain timeout and reboot allowance:
/// its reboot-lock TTL is their sum (720 s, so renewals every 30 s).
const LOCK_TTL: Duration = Duration::from_secs(120 + 300 + 300);
/// The agent's longest pause while a step is in progress.
const BUSY_PAUSE: Duration = Duration::from_secs(1);
/// Hosts registering their leases at once.
const REGISTER_CONCURRENCY: usize = 16;
/// One MiB.
const MIB: u64 = 1 << 20;
/// Bytes per write in the disk reference (the agent's slot writer uses the same).
const WRITE_CHUNK: usize = 256 * 1024;
/// The agent's download piece: fsynced and checkpointed each.
const PIECE: u64 = download::PIECE;

/// Which benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Rollout,
    Download,
}

/// OS update benchmarks against a real shoal-server.
#[derive(Debug, Clone, Parser)]
#[command(name = "rollout-bench", args_override_self = true)]
struct Opts {
    /// Which benchmark.
    #[arg(long, value_enum, default_value_t = Mode::Rollout)]
    mode: Mode,
    /// The shoal-server binary.
    #[arg(long, value_name = "PATH", default_value_os_t = cli::release_server())]
    server: PathBuf,
    /// Deadline for the whole run, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "170",
        value_parser = cli::duration(Duration::from_secs)
    )]
    timeout: Duration,
    /// Keep the server's data dir (its log is always kept).
    #[arg(long)]
    keep: bool,
    /// Simulated hosts.
    #[arg(long, value_name = "N", default_value_t = 50, help_heading = "Rollout")]
    hosts: usize,
    /// The channel's max_reboots, the reboot semaphore's limit.
    #[arg(long, value_name = "N", default_value_t = 5, help_heading = "Rollout")]
    max_reboots: u32,
    /// Simulated reboot time, in milliseconds.
    #[arg(
        long = "reboot-ms",
        value_name = "MS",
        default_value = "2000",
        value_parser = cli::duration(Duration::from_millis),
        help_heading = "Rollout"
    )]
    reboot: Duration,
    /// Health checks pass this many milliseconds after the boot.
    #[arg(
        long = "health-ms",
        value_name = "MS",
        default_value = "1000",
        value_parser = cli::duration(Duration::from_millis),
        help_heading = "Rollout"
    )]
    health: Duration,
    /// Check-in interval in milliseconds; busy steps poll every min(interval, 1 s).
    #[arg(
        long = "interval-ms",
        value_name = "MS",
        default_value = "250",
        value_parser = cli::duration(Duration::from_millis),
        help_heading = "Rollout"
    )]
    interval: Duration,
    /// How often GET /api/v1/locks/reboot is polled, in milliseconds.
    #[arg(
        long = "lock-poll-ms",
        value_name = "MS",
        default_value = "50",
        value_parser = cli::duration(Duration::from_millis),
        help_heading = "Rollout"
    )]
    lock_poll: Duration,
    /// Hosts check in this many seconds before the channel points at the new version.
    #[arg(
        long = "warmup-secs",
        value_name = "SECS",
        default_value = "2",
        value_parser = cli::duration(Duration::from_secs),
        help_heading = "Rollout"
    )]
    warmup: Duration,
    /// After the rollout, measure plain check-ins this many seconds.
    #[arg(
        long = "steady-secs",
        value_name = "SECS",
        default_value = "5",
        value_parser = cli::duration(Duration::from_secs),
        help_heading = "Rollout"
    )]
    steady: Duration,
    /// Concurrent downloaders.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        help_heading = "Download"
    )]
    clients: usize,
    /// Payload size in MiB.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 256,
        help_heading = "Download"
    )]
    size_mib: u64,
    /// Rounds of the four passes, interleaved.
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Download")]
    rounds: usize,
}

/// The options on the command line, checked where clap cannot.
fn parse_opts() -> Result<Opts> {
    let opts = Opts::parse();
    if opts.hosts == 0
        || opts.max_reboots == 0
        || opts.clients == 0
        || opts.size_mib == 0
        || opts.rounds == 0
    {
        bail!("--hosts, --max-reboots, --clients, --size-mib and --rounds must be at least 1");
    }
    if opts.interval.is_zero() || opts.lock_poll.is_zero() {
        bail!("--interval-ms and --lock-poll-ms must be at least 1");
    }
    Ok(opts)
}

/// Lines of the server log at WARN or ERROR (ANSI colours are off: `NO_COLOR`).
fn log_warnings(log: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
        .collect();
    let sample = bad.iter().take(5).map(|l| (*l).to_owned()).collect();
    (bad.len(), sample)
}

// ---------------------------------------------------------------------------
// Shared setup: keys and a signed upload.

/// The signing key of a run: its secret PEM (the public one is on disk for the server).
struct Signer {
    secret: String,
    public: PublicKey,
}

impl Signer {
    /// A new key pair; the public key is written to `dir/update-key.pub`.
    fn new(dir: &Path) -> Result<(Signer, PathBuf)> {
        let (secret, public_pem) = updates::generate_keypair().context("generate a key pair")?;
        let path = dir.join("update-key.pub");
        std::fs::write(&path, &public_pem).with_context(|| format!("write {}", path.display()))?;
        let public = updates::public_key(&public_pem).context("read the new public key")?;
        Ok((Signer { secret, public }, path))
    }

    /// Signs `data` as `version` and uploads it in 1 MiB chunks; returns its
    /// metadata and how long the upload took.
    async fn upload(
        &self,
        client: &Client,
        version: &str,
        data: Arc<bytes::Bytes>,
    ) -> Result<(PayloadMeta, Duration)> {
        let sha256 = hex(&Sha256::digest(data.as_ref()));
        let size = data.len() as u64;
        let signature =
            updates::sign(&self.secret, version, size, &sha256).context("sign the payload")?;
        let query = UploadQuery {
            version: version.to_owned(),
            signature,
            channel: None,
        };
        let t = Instant::now();
        let meta = client
            .upload_payload(
                &query,
                || {
                    let data = Arc::clone(&data);
                    let chunk = MIB as usize;
                    let pieces = data.len().div_ceil(chunk);
                    stream::iter((0..pieces).map(move |i| {
                        let end = data.len().min((i + 1) * chunk);
                        Ok::<_, std::io::Error>(data.slice(i * chunk..end))
                    }))
                },
                |_| {},
            )
            .await
            .with_context(|| format!("upload the payload of {version}"))?;
        let took = t.elapsed();
        if meta.sha256 != sha256 || meta.size != size {
            bail!("the server stored {meta:?}, not {size} bytes with SHA-256 {sha256}");
        }
        Ok((meta, took))
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `n` pseudo-random bytes (seeded: every run uploads the same payload).
fn random_bytes(n: usize, seed: u64) -> bytes::Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; n];
    rng.fill_bytes(&mut data);
    bytes::Bytes::from(data)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The `p`-th percentile (0..=100) of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Aborts a task however the scope ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------
// Rollout: the simulated hosts.

/// What one simulated host saw, with the time of each milestone.
#[derive(Debug, Default, Clone)]
struct HostLog {
    /// First check-in answered with an offer.
    offered: Option<Instant>,
    /// First attempt to take the reboot lock (allowed to proceed, slot verified).
    ready: Option<Instant>,
    /// The acquire that took the lock was answered.
    acquired: Option<Instant>,
    /// The simulated reboot began (the `rebooting` check-in was answered).
    reboot_start: Option<Instant>,
    /// The simulated reboot ended.
    booted: Option<Instant>,
    /// The health check that passed.
    healthy: Option<Instant>,
    /// The release was sent.
    release_sent: Option<Instant>,
    /// The release was answered.
    released: Option<Instant>,
    /// The `updated` check-in on the new version was answered.
    updated: Option<Instant>,
    /// Acquires answered `lock_busy`.
    busy_answers: u64,
    /// Acquires sent (take, renewals by hand, fencing); the keeper's are not counted.
    acquires: u64,
    /// Requests that failed, and the first few reasons.
    errors: u64,
    first_errors: Vec<String>,
    /// Every answered check-in: when it was sent and how long it took.
    checkins: Vec<(Instant, Duration)>,
}

impl HostLog {
    fn error(&mut self, what: &str, e: &dyn std::error::Error) {
        self.errors += 1;
        if self.first_errors.len() < 3 {
            self.first_errors
                .push(format!("{what}: {}", error_chain(e)));
        }
    }
}

/// The fixed times of the simulation.
#[derive(Debug, Clone, Copy)]
struct Timing {
    interval: Duration,
    reboot: Duration,
    health: Duration,
}

/// One simulated host: the agent's update loop with the reboot and the health checks faked.
struct Sim {
    id: String,
    client: Client,
    lease: Lease,
    lock: RebootLock,
    keeper: Option<Keeper>,
    state: UpdateFile,
    key: PublicKey,
    timing: Timing,
    /// When the simulated boot ended (health passes `timing.health` later).
    boot_at: Option<Instant>,
    log: Arc<Mutex<HostLog>>,
    checkins: Arc<AtomicU64>,
}

/// True while the agent keeps the machine marked draining (`Phase::drains`).
fn drains(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::Draining { .. } | Phase::Rebooting { .. } | Phase::RollingBack { .. }
    )
}

impl Sim {
    fn log(&self) -> MutexGuard<'_, HostLog> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agent's loop: tidy, check in, decide, step, pause.
    async fn run(mut self) {
        // Real hosts check in at unrelated moments.
        let span = u64::try_from(self.timing.interval.as_micros()).unwrap_or(u64::MAX);
        let offset = rand::thread_rng().gen_range(0..span.max(1));
        tokio::time::sleep(Duration::from_micros(offset)).await;
        loop {
            self.tidy().await;
            let (state, target, error) = self.state.report();
            let report = CheckIn {
                machine_id: self.id.clone(),
                channel: CHANNEL.into(),
                version: self.state.version().to_owned(),
                state,
                target,
                error,
            };
            let sent = Instant::now();
            let step = match self.client.checkin(&report).await {
                Ok(reply) => {
                    let now = Instant::now();
                    self.checkins.fetch_add(1, Ordering::Relaxed);
                    let mut log = self.log();
                    log.checkins.push((sent, now - sent));
                    if reply.offer.is_some() && log.offered.is_none() {
                        log.offered = Some(now);
                    }
                    if report.state == UpdateState::Updated
                        && report.version == TO_VERSION
                        && log.updated.is_none()
                    {
                        log.updated = Some(now);
                    }
                    drop(log);
                    decide::decide(&self.state, &reply)
                }
                Err(e) => {
                    self.log().error("check-in", &e);
                    decide::without_server(&self.state)
                }
            };
            let before = self.state.report();
            self.execute(step).await;
            let pause = if self.state.report() != before {
                Duration::ZERO
            } else if matches!(
                self.state.phase,
                Phase::Downloading { .. }
                    | Phase::Verifying { .. }
                    | Phase::Draining { .. }
                    | Phase::Confirming { .. }
            ) {
                self.timing.interval.min(BUSY_PAUSE)
            } else {
                self.timing.interval
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// As the agent's `tidy`: keeps a held lock renewed, releases one no phase
    /// needs, and clears the draining mark when the phase no longer drains.
    async fn tidy(&mut self) {
        let holds = self.state.phase.holds_lock();
        let waiting = matches!(self.state.phase, Phase::WaitingForLock { .. });
        match (self.state.lock.clone(), holds) {
            (Some(spec), true) if self.keeper.is_none() => {
                self.keeper = Some(self.lock.keep(spec));
            }
            (Some(spec), false) if !waiting => {
                self.keeper = None;
                let sent = Instant::now();
                match self.lock.release(&spec).await {
                    Ok(()) => {
                        let mut log = self.log();
                        log.release_sent.get_or_insert(sent);
                        log.released.get_or_insert(Instant::now());
                        drop(log);
                        self.state.lock = None;
                    }
                    Err(e) => self.log().error("release", &e),
                }
            }
            _ => {}
        }
        if !drains(&self.state.phase) && self.lease.record().draining {
            if let Err(e) = self.lease.update(|m| m.draining = false).await {
                self.log().error("clear draining", &e);
            }
        }
    }

    async fn execute(&mut self, step: Step) {
        match step {
            Step::Wait => {}
            Step::Hold => {
                if let Phase::WaitingForLock { offer, slot } = &self.state.phase {
                    self.state.phase = Phase::Verified {
                        offer: offer.clone(),
                        slot: *slot,
                    };
                }
            }
            Step::Abandon => {
                let booted = self.booted_slot();
                if let Some(slot) = self.state.phase.slot().filter(|s| *s != booted) {
                    self.state.versions.remove(&slot);
                }
                self.state.phase = Phase::Idle;
            }
            Step::Download(offer) => {
                let slot = self.booted_slot().other();
                self.state.versions.remove(&slot);
                self.state.last = None;
                self.state.refused = None;
                self.state.phase = Phase::Downloading {
                    offer,
                    slot,
                    offset: 0,
                };
            }
            Step::TakeLock(spec) => self.take_lock(spec).await,
            Step::Continue => self.advance().await,
        }
    }

    fn booted_slot(&self) -> Slot {
        self.state.booted.unwrap_or(Slot::A)
    }

    /// As the agent: record the lock, try it without waiting; on success drain.
    async fn take_lock(&mut self, spec: LockSpec) {
        let (offer, slot) = match &self.state.phase {
            Phase::Verified { offer, slot } | Phase::WaitingForLock { offer, slot } => {
                (offer.clone(), *slot)
            }
            _ => return,
        };
        self.state.lock = Some(spec.clone());
        self.state.phase = Phase::WaitingForLock {
            offer: offer.clone(),
            slot,
        };
        {
            let mut log = self.log();
            log.ready.get_or_insert(Instant::now());
            log.acquires += 1;
        }
        match self.lock.acquire(&spec).await {
            Ok(true) => {
                self.log().acquired = Some(Instant::now());
                self.state.phase = Phase::Draining {
                    offer,
                    slot,
                    since: chrono::Utc::now(),
                };
                self.keeper = Some(self.lock.keep(spec));
                if let Err(e) = self.lease.update(|m| m.draining = true).await {
                    self.log().error("mark draining", &e);
                }
            }
            Ok(false) => self.log().busy_answers += 1,
            Err(e) => self.log().error("acquire", &e),
        }
    }

    async fn advance(&mut self) {
        match self.state.phase.clone() {
            // No bytes: the download throughput is `--mode download`'s business.
            Phase::Downloading { offer, slot, .. } => {
                self.state.phase = Phase::Verifying { offer, slot };
            }
            Phase::Verifying { offer, slot } => {
                match updates::verify_with(
                    &self.key,
                    &offer.version,
                    offer.size,
                    &offer.sha256,
                    &offer.signature,
                ) {
                    Ok(()) => {
                        self.state.versions.insert(slot, offer.version.clone());
                        self.state.phase = Phase::Verified { offer, slot };
                    }
                    Err(e) => {
                        self.log().error("verify", &e);
                        self.state.phase = Phase::Idle;
                        self.state.last = Some(Outcome {
                            state: UpdateState::Failed,
                            version: offer.version.clone(),
                            error: e.to_string(),
                        });
                        self.state.refused = Some(offer.version);
                    }
                }
            }
            Phase::Draining { offer, slot, .. } => self.drain(offer, slot).await,
            Phase::Rebooting { offer, slot, .. } => self.reboot(offer, slot).await,
            Phase::Confirming { offer, slot, .. } => self.confirm(offer, slot).await,
            Phase::Idle
            | Phase::Verified { .. }
            | Phase::WaitingForLock { .. }
            | Phase::RollingBack { .. } => {}
        }
    }

    /// As the agent's drain step: draining mark, a quorum read of the
    /// placements (none are on simulated hosts), the fencing re-acquire, then reboot.
    async fn drain(&mut self, offer: Offer, slot: Slot) {
        if !self.lease.record().draining {
            if let Err(e) = self.lease.update(|m| m.draining = true).await {
                self.log().error("mark draining", &e);
                return;
            }
        }
        match placed_here(&self.client, &self.id).await {
            Ok(0) => {}
            Ok(n) => {
                self.log().first_errors.push(format!("{n} placements here"));
                return;
            }
            Err(e) => {
                self.log().error("read placements", &e);
                return;
            }
        }
        let spec = self.state.lock.clone().unwrap_or(LockSpec {
            name: REBOOT_LOCK.into(),
            limit: 1,
        });
        self.log().acquires += 1;
        match self.lock.acquire(&spec).await {
            Ok(true) => {
                self.state.phase = Phase::Rebooting {
                    offer,
                    slot,
                    boot_id: None,
                };
                self.state.reboot_requested = true;
            }
            Ok(false) => {
                self.log()
                    .first_errors
                    .push("lost the reboot lock while draining".into());
                self.keeper = None;
                self.state.phase = Phase::WaitingForLock { offer, slot };
            }
            Err(e) => self.log().error("fencing acquire", &e),
        }
    }

    /// The host is down for `timing.reboot`: no check-ins, no renewals. Then it
    /// boots the new slot and confirms it, as the agent's start does.
    async fn reboot(&mut self, offer: Offer, slot: Slot) {
        self.keeper = None;
        self.log().reboot_start = Some(Instant::now());
        tokio::time::sleep(self.timing.reboot).await;
        let now = Instant::now();
        self.log().booted = Some(now);
        self.boot_at = Some(now);
        self.state.booted = Some(slot);
        self.state.reboot_requested = false;
        self.state.phase = Phase::Confirming {
            offer,
            slot,
            deadline: chrono::Utc::now() + chrono::Duration::seconds(120),
        };
    }

    /// One health round: healthy once `timing.health` has passed since the
    /// boot; then the outcome is recorded and the lock released (the agent's `tidy`).
    async fn confirm(&mut self, offer: Offer, slot: Slot) {
        let healthy_at = self.boot_at.map(|b| b + self.timing.health);
        if healthy_at.is_some_and(|h| Instant::now() < h) {
            return;
        }
        self.log().healthy = Some(Instant::now());
        self.state.versions.insert(slot, offer.version.clone());
        self.state.phase = Phase::Idle;
        self.state.last = Some(Outcome {
            state: UpdateState::Updated,
            version: offer.version,
            error: String::new(),
        });
        self.tidy().await;
    }
}

/// Placements on `machine_id`, from a quorum read (an absent directory is none).
async fn placed_here(client: &Client, machine_id: &str) -> Result<usize, api::ClientError> {
    let opts = GetOptions {
        recursive: true,
        sorted: false,
        quorum: true,
    };
    match client.get(PLACEMENTS_DIR, opts).await {
        Ok(answer) => Ok(answer
            .body
            .node
            .nodes
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.value.as_deref())
            .filter_map(|v| serde_json::from_str::<Assignment>(v).ok())
            .filter(|a| a.machine_id == machine_id)
            .count()),
        Err(e) if e.etcd_code() == Some(ETCD_KEY_NOT_FOUND) => Ok(0),
        Err(e) => Err(e),
    }
}

/// The machine record of simulated host `i`.
fn host(i: usize) -> Machine {
    Machine {
        id: host_id(i),
        hostname: format!("sim-host-{i:03}"),
        addresses: vec![format!("10.1.{}.{}", i / 256, i % 256)],
        cpu_millis: 8_000,
        memory_mb: 32_768,
        docker_version: "simulated".into(),
        os_version: FROM_VERSION.into(),
        active_slot: Slot::A.label().into(),
        ..Machine::default()
    }
}

fn host_id(i: usize) -> String {
    format!("host{i:03}")
}

/// What the lock poller saw.
#[derive(Debug, Default)]
struct LockPolls {
    polls: u64,
    errors: u64,
    max_holders: usize,
    /// The first poll that showed more holders than the limit, if any.
    over_limit: Option<(usize, Vec<String>)>,
}

/// Polls `GET /api/v1/locks/reboot` every `every` until `stop`.
async fn poll_lock(
    client: Client,
    every: Duration,
    limit: usize,
    stop: Arc<AtomicBool>,
) -> LockPolls {
    let mut seen = LockPolls::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        match client.lock(REBOOT_LOCK).await {
            Ok(state) => {
                seen.polls += 1;
                let n = state.holders.len();
                seen.max_holders = seen.max_holders.max(n);
                if n > limit && seen.over_limit.is_none() {
                    let who = state.holders.into_iter().map(|h| h.holder).collect();
                    seen.over_limit = Some((n, who));
                }
            }
            Err(_) => seen.errors += 1,
        }
    }
    seen
}

/// The most intervals of `spans` that overlap at one instant.
fn max_overlap(spans: &[(Instant, Instant)]) -> usize {
    let mut edges: Vec<(Instant, i32)> = spans
        .iter()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    // Ends before starts at the same instant.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Slot-seconds of free reboot slots over `[from, to]`, split into: free while
/// a host waited for the lock, and free with no host waiting before / after
/// `all_ready` (the moment the last host was ready to take the lock).
fn idle_slots(
    holds: &[(Instant, Instant)],
    waits: &[(Instant, Instant)],
    limit: usize,
    from: Instant,
    to: Instant,
    all_ready: Instant,
) -> (f64, f64, f64) {
    let mut cuts: Vec<Instant> = vec![from, to, all_ready.clamp(from, to)];
    for (a, b) in holds.iter().chain(waits) {
        cuts.push((*a).clamp(from, to));
        cuts.push((*b).clamp(from, to));
    }
    cuts.sort();
    cuts.dedup();
    let count = |spans: &[(Instant, Instant)], t: Instant| {
        spans.iter().filter(|(a, b)| *a <= t && t < *b).count()
    };
    let (mut handover, mut not_ready, mut tail) = (0.0, 0.0, 0.0);
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let dt = (b - a).as_secs_f64();
        let free = limit.saturating_sub(count(holds, a));
        let waiting = count(waits, a);
        let taken_by_wait = free.min(waiting);
        handover += taken_by_wait as f64 * dt;
        let rest = (free - taken_by_wait) as f64 * dt;
        if a < all_ready {
            not_ready += rest;
        } else {
            tail += rest;
        }
    }
    (handover, not_ready, tail)
}

async fn rollout(opts: &Opts, server: &mut Server, signer: &Signer) -> Result<String> {
    let deadline = Instant::now() + opts.timeout;
    let ticks = clock_ticks();
    let admin = server.client(Duration::from_secs(20))?;
    server.wait_healthy(&admin).await?;
    let n = opts.max_reboots as usize;

    // The channel with its policy, and the payload of the new version.
    admin
        .update_channel(
            CHANNEL,
            &ChannelUpdate {
                max_reboots: Some(opts.max_reboots),
                ..ChannelUpdate::default()
            },
        )
        .await
        .context("create the channel")?;
    let payload = Arc::new(random_bytes(ROLLOUT_PAYLOAD, 2));
    let (meta, _) = signer.upload(&admin, TO_VERSION, payload).await?;

    // Hosts: leases first (as agents register before updating), then the loops.
    let checkins = Arc::new(AtomicU64::new(0));
    let timing = Timing {
        interval: opts.interval,
        reboot: opts.reboot,
        health: opts.health,
    };
    let mut leases = Vec::new();
    for i in 0..opts.hosts {
        let client = server.client(Duration::from_secs(10))?;
        leases.push((
            client.clone(),
            Lease::new(client, host(i), LeaseState::new(LEASE_TTL)),
        ));
    }
    let registered: Vec<Result<()>> = stream::iter(&leases)
        .map(|(_, lease)| async move { lease.register().await.context("register a host") })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .collect()
        .await;
    for r in registered {
        r?;
    }
    let mut tasks = Vec::new();
    let mut logs = Vec::new();
    for (i, (client, lease)) in leases.into_iter().enumerate() {
        tasks.push(AbortOnDrop(tokio::spawn(
            lease.clone().run(std::future::pending()),
        )));
        let log = Arc::new(Mutex::new(HostLog::default()));
        logs.push(Arc::clone(&log));
        let sim = Sim {
            id: host_id(i),
            lock: RebootLock::new(client.clone(), host_id(i), LOCK_TTL),
            client,
            lease,
            keeper: None,
            state: UpdateFile {
                booted: Some(Slot::A),
                versions: BTreeMap::from([(Slot::A, FROM_VERSION.to_owned())]),
                ..UpdateFile::default()
            },
            key: signer.public,
            timing,
            boot_at: None,
            log,
            checkins: Arc::clone(&checkins),
        };
        tasks.push(AbortOnDrop(tokio::spawn(sim.run())));
    }
    eprintln!(
        "bench: {} hosts checking in every {} ms; warming up for {}",
        opts.hosts,
        opts.interval.as_millis(),
        secs(opts.warmup)
    );
    tokio::time::sleep(opts.warmup).await;
    server.check_alive()?;
    let warm = checkins.load(Ordering::Relaxed);
    if warm < opts.hosts as u64 {
        bail!(
            "only {warm} check-ins during the warm-up for {} hosts",
            opts.hosts
        );
    }

    // The rollout: from pointing the channel at the new version to the last `updated`.
    let stop_polls = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_lock(
        server.client(Duration::from_secs(10))?,
        opts.lock_poll,
        n,
        Arc::clone(&stop_polls),
    ));
    let cpu0 = proc_stats(server.pid(), ticks)?.cpu_secs;
    let ck0 = checkins.load(Ordering::Relaxed);
    let t0 = Instant::now();
    admin
        .update_channel(
            CHANNEL,
            &ChannelUpdate {
                version: Some(TO_VERSION.into()),
                ..ChannelUpdate::default()
            },
        )
        .await
        .context("point the channel at the new version")?;
    eprintln!("bench: channel {CHANNEL} points at {TO_VERSION}; rolling out");
    let mut last_print = Instant::now();
    let done = loop {
        server.check_alive()?;
        let updated = logs
            .iter()
            .filter(|l| {
                l.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .updated
                    .is_some()
            })
            .count();
        if updated == opts.hosts {
            break true;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "bench: deadline passed with {updated}/{} hosts updated",
                opts.hosts
            );
            break false;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "bench: {updated}/{} updated after {:.1} s",
                opts.hosts,
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rolled = proc_stats(server.pid(), ticks)?;
    let cpu1 = rolled.cpu_secs;
    let ck1 = checkins.load(Ordering::Relaxed);
    stop_polls.store(true, Ordering::Relaxed);
    let polls = poller.await.context("the lock poller")?;

    // Steady state: updated hosts checking in, nothing else but lease renewals.
    let mut steady = None;
    if done && !opts.steady.is_zero() {
        let wait = opts
            .steady
            .min(deadline.saturating_duration_since(Instant::now()));
        let (c0, k0, s0) = (
            proc_stats(server.pid(), ticks)?.cpu_secs,
            checkins.load(Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(wait).await;
        server.check_alive()?;
        let (c1, k1) = (
            proc_stats(server.pid(), ticks)?.cpu_secs,
            checkins.load(Ordering::Relaxed),
        );
        steady = Some((s0.elapsed(), c1 - c0, k1 - k0));
    }
    let machines = admin
        .update_machines(Some(CHANNEL))
        .await
        .context("GET /api/v1/updates/machines")?;
    let channel = admin.channel(CHANNEL).await.context("read the channel")?;
    drop(tasks);
    let logs: Vec<HostLog> = logs
        .iter()
        .map(|l| {
            l.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
        .collect();
    let (warn_count, warn_sample) = log_warnings(&server.log);

    // Figures.
    let step = opts.reboot + opts.health;
    let waves = opts.hosts.div_ceil(n);
    let ideal = step * u32::try_from(waves).context("too many waves")?;
    let t_end = logs.iter().filter_map(|l| l.updated).max().unwrap_or(t0);
    let wall = t_end - t0;
    let ratio = wall.as_secs_f64() / ideal.as_secs_f64();
    let holds: Vec<(Instant, Instant)> = logs
        .iter()
        .filter_map(|l| Some((l.acquired?, l.release_sent?)))
        .collect();
    let waits: Vec<(Instant, Instant)> = logs
        .iter()
        .filter_map(|l| Some((l.ready?, l.acquired?)))
        .collect();
    let all_ready = logs.iter().filter_map(|l| l.ready).max().unwrap_or(t0);
    let (handover, not_ready, tail) = idle_slots(&holds, &waits, n, t0, t_end, all_ready);
    let nf = n as f64;
    // Health rounds run every min(interval, 1 s) from the boot on, each after a
    // check-in: the grid alone puts the passing round ceil(H / I) × I − H after
    // the health time; what lies beyond that is the check-ins' own time.
    let round = opts.interval.min(BUSY_PAUSE).as_secs_f64();
    let health = opts.health.as_secs_f64();
    let grid = (health / round).ceil() * round - health;
    let (mut overshoot, mut on_grid) = (0.0, 0.0);
    for l in &logs {
        if let (Some(healthy), Some(booted)) = (l.healthy, l.booted) {
            let late = healthy.saturating_duration_since(booted).as_secs_f64() - health;
            overshoot += late;
            on_grid += late.clamp(0.0, grid);
        }
    }
    let drift = overshoot - on_grid;
    let held: f64 = holds.iter().map(|(a, b)| (*b - *a).as_secs_f64()).sum();
    let extra_hold = held - holds.len() as f64 * step.as_secs_f64();
    let protocol_hold = extra_hold - overshoot;
    let rounding = opts.hosts as f64 * step.as_secs_f64() / nf - ideal.as_secs_f64();
    let overhead = wall.as_secs_f64() - ideal.as_secs_f64();
    let by_interval = (not_ready + handover + on_grid) / nf;
    let mean = |f: &dyn Fn(&HostLog) -> Option<Duration>| -> (Duration, Duration) {
        let v: Vec<Duration> = logs.iter().filter_map(f).collect();
        let total: Duration = v.iter().sum();
        let avg = total / u32::try_from(v.len().max(1)).unwrap_or(1);
        (avg, v.into_iter().max().unwrap_or_default())
    };
    let noticed = mean(&|l| Some(l.offered? - t0));
    let readied = mean(&|l| Some(l.ready? - l.offered?));
    let to_reboot = mean(&|l| Some(l.reboot_start? - l.acquired?));
    let release_rtt = mean(&|l| Some(l.released? - l.release_sent?));
    let to_updated = mean(&|l| Some(l.updated? - l.released?));
    let mut lat: Vec<Duration> = logs
        .iter()
        .flat_map(|l| l.checkins.iter().filter(|(s, _)| *s >= t0 && *s <= t_end))
        .map(|(_, d)| *d)
        .collect();
    lat.sort();
    let rollout_checkins = ck1 - ck0;
    let cpu = cpu1 - cpu0;
    let errors: u64 = logs.iter().map(|l| l.errors).sum();
    let busy: u64 = logs.iter().map(|l| l.busy_answers).sum();
    let acquires: u64 = logs.iter().map(|l| l.acquires).sum();
    let updated_ok = machines
        .iter()
        .filter(|m| m.version == TO_VERSION && m.state == UpdateState::Updated)
        .count();

    let mut r = String::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    writeln!(r, "## Rollout benchmark\n")?;
    writeln!(
        r,
        "One shoal-server member (release build) on loopback, {} simulated hosts in the bench process \
         ({cores} cores shared by server and hosts). Each host runs the agent's update loop \
         (`decide::decide` on the agent's phases, the agent's `RebootLock` and `Lease`) against the real \
         protocol; only the reboot (a sleep, no check-ins or lock renewals meanwhile), the health checks \
         (they pass a fixed time after the boot) and the payload download are simulated. \
         **The hosts do not download the payload bytes** ({} KiB payload, signature checked): \
         download throughput is measured separately (`bench/download.sh`).\n",
        opts.hosts,
        meta.size / 1024
    )?;
    writeln!(r, "| measure | value |")?;
    writeln!(r, "| --- | --- |")?;
    writeln!(r, "| hosts | {} |", opts.hosts)?;
    writeln!(
        r,
        "| N = max concurrent reboots (channel `max_reboots`, `reboot` semaphore limit) | {n} |"
    )?;
    writeln!(r, "| simulated reboot time | {} |", secs(opts.reboot))?;
    writeln!(
        r,
        "| simulated health time (checks pass this long after the boot) | {} |",
        secs(opts.health)
    )?;
    writeln!(
        r,
        "| check-in interval (steps in progress poll every min(interval, 1 s), as the agent) | {} ms |",
        opts.interval.as_millis()
    )?;
    writeln!(
        r,
        "| ideal: ceil({}/{n}) × (reboot + health) | {} |",
        opts.hosts,
        secs(ideal)
    )?;
    if done {
        writeln!(
            r,
            "| measured wall time (channel pointed at {TO_VERSION} → last host's `updated` check-in answered) | {} |",
            secs(wall)
        )?;
        writeln!(r, "| **overhead ratio** (target < 1.10) | **{ratio:.3}** |")?;
    } else {
        let updated = logs.iter().filter(|l| l.updated.is_some()).count();
        writeln!(
            r,
            "| measured wall time | **not finished**: {updated}/{} updated by the deadline |",
            opts.hosts
        )?;
    }
    writeln!(
        r,
        "| max holders of `reboot` seen (`GET /api/v1/locks/reboot` every {} ms, {} polls, {} failed) | {} (limit {n}){} |",
        opts.lock_poll.as_millis(),
        polls.polls,
        polls.errors,
        polls.max_holders,
        match &polls.over_limit {
            Some((k, who)) => format!(" **EXCEEDED: {k} holders {}**", who.join(", ")),
            None => String::new(),
        }
    )?;
    writeln!(
        r,
        "| max hosts between lock taken and release sent at once (hosts' own clocks) | {} |",
        max_overlap(&holds)
    )?;
    writeln!(
        r,
        "| check-ins during the rollout | {rollout_checkins} ({:.0} /s) |",
        rollout_checkins as f64 / wall.as_secs_f64().max(1e-9)
    )?;
    writeln!(
        r,
        "| **server CPU per check-in, rollout** (all server CPU in the window ÷ check-ins; includes lock acquires/releases/renewals, draining marks, lease renewals, lock polls) | **{:.0} µs** ({:.2} s CPU) |",
        cpu * 1e6 / rollout_checkins.max(1) as f64,
        cpu
    )?;
    writeln!(
        r,
        "| server peak RSS (VmHWM) after the rollout | {:.1} MiB (now {:.1} MiB) |",
        rolled.hwm_kb as f64 / 1024.0,
        rolled.rss_kb as f64 / 1024.0
    )?;
    if let Some((d, c, k)) = steady {
        writeln!(
            r,
            "| **server CPU per check-in, steady state** (all hosts updated, {} of check-ins + lease renewals only) | **{:.0} µs** ({k} check-ins, {:.2} s CPU) |",
            secs(d),
            c * 1e6 / k.max(1) as f64,
            c
        )?;
    }
    writeln!(
        r,
        "| check-in latency during the rollout: p50 / p99 / max | {} / {} / {} |",
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default())
    )?;
    writeln!(r)?;
    if done {
        writeln!(r, "Where the overhead went (exact: N × wall = Σ lock holds + free slot time; each row is slot-seconds ÷ N):\n")?;
        writeln!(r, "| component | wall time | driven by |")?;
        writeln!(r, "| --- | --- | --- |")?;
        writeln!(
            r,
            "| slots free before the hosts were ready: offer noticed at the next check-in (mean {} after the channel change, max {}), then `downloading` → `verifying` → `verified` check-ins (mean {}) | {:.3} s | check-in interval |",
            ms(noticed.0),
            ms(noticed.1),
            ms(readied.0),
            not_ready / nf
        )?;
        writeln!(
            r,
            "| slots free while a host waited: waiting hosts retry the lock at their next check-in | {:.3} s | check-in interval |",
            handover / nf
        )?;
        writeln!(
            r,
            "| lock held after the health checks passed, until the next health round: the rounds' grid (every {} from the boot, so ceil(H / I) × I − H = {:.0} ms per host) | {:.3} s | check-in interval |",
            ms(opts.interval.min(BUSY_PAUSE)),
            grid * 1e3,
            on_grid / nf
        )?;
        writeln!(
            r,
            "| … and beyond the grid: the check-in before each health round (mean {:.1} ms per host over its rounds) | {:.3} s | check-in latency |",
            drift * 1e3 / logs.len().max(1) as f64,
            drift / nf
        )?;
        writeln!(
            r,
            "| lock held otherwise beyond reboot + health: lock taken → reboot (mean {}: keeper renewal, `draining` check-in, draining mark, quorum read, fencing acquire, `rebooting` check-in) and the release (mean {}) | {:.3} s | protocol + lock |",
            ms(to_reboot.0),
            ms(release_rtt.0),
            protocol_hold / nf
        )?;
        writeln!(
            r,
            "| slots free with no host left to take them, and the last `updated` check-in (mean {} after a release) | {:.3} s | protocol |",
            ms(to_updated.0),
            tail / nf
        )?;
        if rounding.abs() > 1e-9 {
            writeln!(
                r,
                "| the ideal's rounding ({} hosts are not a multiple of {n}) | {rounding:.3} s | arithmetic |",
                opts.hosts
            )?;
        }
        writeln!(
            r,
            "| **total = measured − ideal** | **{overhead:.3} s** (components sum to {:.3} s) | |",
            (not_ready + handover + extra_hold + tail) / nf + rounding
        )?;
        writeln!(r)?;
        writeln!(
            r,
            "Explained by the check-in interval: **{by_interval:.3} s of {overhead:.3} s ({:.0} %)**; \
             the protocol and lock work itself (check-in latency, lock and lease requests): {:.3} s.\n",
            100.0 * by_interval / overhead.max(1e-9),
            overhead - by_interval
        )?;
    }
    writeln!(r, "Checks:")?;
    writeln!(
        r,
        "- hosts reporting `updated` on {TO_VERSION} at the end (`GET /api/v1/updates/machines`): {updated_ok}/{}; channel halted: {}",
        opts.hosts, channel.policy.halted
    )?;
    writeln!(
        r,
        "- acquires sent by hosts (take + fencing, keeper renewals not counted): {acquires}, answered `lock_busy`: {busy}; failed requests: {errors}"
    )?;
    for l in logs.iter().filter(|l| !l.first_errors.is_empty()).take(3) {
        writeln!(r, "  - {}", l.first_errors.join("; "))?;
    }
    writeln!(
        r,
        "- server CPU = utime + stime of `/proc/{}/stat` at {ticks:.0} ticks/s (resolution {:.0} ms)",
        server.pid(),
        1e3 / ticks
    )?;
    writeln!(r, "- server log WARN/ERROR lines: {warn_count}")?;
    for l in warn_sample {
        writeln!(r, "  - `{}`", l.chars().take(240).collect::<String>())?;
    }
    if !done {
        bail!("the rollout did not finish before the deadline\n\n{r}");
    }
    if let Some((k, who)) = polls.over_limit {
        bail!(
            "the reboot semaphore had {k} holders ({}) with limit {n}\n\n{r}",
            who.join(", ")
        );
    }
    Ok(r)
}

// ---------------------------------------------------------------------------
// Download: the agent's download code against the disk's own write speed.

/// Start and end of one writer, on the bench's clock.
type Span = (std::time::Instant, std::time::Instant);

/// Aggregate MB/s, per-writer MB/s (sorted) and the wall time of a pass.
fn rates(spans: &[Span], bytes_each: u64) -> (f64, Vec<f64>, Duration) {
    let start = spans.iter().map(|s| s.0).min();
    let end = spans.iter().map(|s| s.1).max();
    let wall = match (start, end) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    let mb = bytes_each as f64 / 1e6;
    let mut each: Vec<f64> = spans
        .iter()
        .map(|(a, b)| mb / (*b - *a).as_secs_f64().max(1e-9))
        .collect();
    each.sort_by(f64::total_cmp);
    let total = mb * spans.len() as f64 / wall.as_secs_f64().max(1e-9);
    (total, each, wall)
}

/// Runs `work` on `count` threads released together; returns their spans.
async fn on_threads<F>(count: usize, work: F) -> Result<Vec<Span>>
where
    F: Fn(usize, &Barrier) -> Result<Span> + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(count));
    let mut answers = Vec::new();
    for i in 0..count {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (work, barrier) = (Arc::clone(&work), Arc::clone(&barrier));
        std::thread::Builder::new()
            .name(format!("bench-{i}"))
            .spawn(move || {
                let _ = tx.send(work(i, &barrier));
            })
            .context("spawn a thread")?;
        answers.push(rx);
    }
    let mut spans = Vec::new();
    for (i, rx) in answers.into_iter().enumerate() {
        spans.push(
            rx.await
                .map_err(|_| anyhow!("writer {i} died"))?
                .with_context(|| format!("writer {i}"))?,
        );
    }
    Ok(spans)
}

/// Writes `data` to `count` new files in `dir` at once, fsyncing every `sync_every` bytes and at the end.
async fn disk_pass(
    dir: &Path,
    count: usize,
    data: Arc<bytes::Bytes>,
    sync_every: Option<u64>,
) -> Result<Vec<Span>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir.to_path_buf();
    let spans = on_threads(count, move |i, barrier| {
        let path = dir.join(format!("file-{i}"));
        let file = File::create(&path).with_context(|| format!("create {}", path.display()));
        barrier.wait();
        let mut file = file?;
        let start = std::time::Instant::now();
        let mut since_sync = 0u64;
        for chunk in data.chunks(WRITE_CHUNK) {
            file.write_all(chunk)
                .with_context(|| format!("write {}", path.display()))?;
            since_sync += chunk.len() as u64;
            if sync_every.is_some_and(|every| since_sync >= every) {
                file.sync_data()
                    .with_context(|| format!("fsync {}", path.display()))?;
                since_sync = 0;
            }
        }
        file.sync_data()
            .with_context(|| format!("fsync {}", path.display()))?;
        Ok((start, std::time::Instant::now()))
    })
    .await?;
    Ok(spans)
}

/// `count` agents download `offer` at once with the agent's download code, each
/// into the USR-B slot of its own disk image under `dir`, in its own thread and
/// runtime. The first one's slot is then verified (SHA-256) with the agent's code.
async fn download_pass(
    dir: &Path,
    count: usize,
    url: reqwest::Url,
    offer: Offer,
) -> Result<Vec<Span>> {
    let layout = ImageLayout {
        efi_size: MIB,
        bios_boot_size: None,
        usr_size: offer.size.div_ceil(MIB) * MIB,
        root_size: MIB,
    };
    for i in 0..count {
        let d = dir.join(format!("agent-{i}"));
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        create_image(d.join("disk.img"), &layout).context("create a disk image")?;
    }
    let dir = dir.to_path_buf();
    on_threads(count, move |i, barrier| {
        let d = dir.join(format!("agent-{i}"));
        let setup = || -> Result<_> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("build a runtime")?;
            let disk =
                node_agent::slots::SlotDisk::open(d.join("disk.img")).context("open the image")?;
            let client = Client::with_timeouts(
                vec![url.clone()],
                Duration::from_secs(3),
                Duration::from_secs(30),
            )
            .context("build a client")?;
            let store = StateStore::new(&d);
            let state = UpdateFile {
                booted: Some(Slot::A),
                versions: BTreeMap::from([(Slot::A, FROM_VERSION.to_owned())]),
                phase: Phase::Downloading {
                    offer: offer.clone(),
                    slot: Slot::B,
                    offset: 0,
                },
                ..UpdateFile::default()
            };
            store.save(&state).context("save the state")?;
            Ok((rt, disk, client, store, state))
        };
        let ready = setup();
        barrier.wait();
        let (rt, disk, client, store, mut state) = ready?;
        let start = std::time::Instant::now();
        let result = rt.block_on(download::download(
            &client,
            &disk,
            Slot::B,
            &offer,
            0,
            |at| {
                state.phase = Phase::Downloading {
                    offer: offer.clone(),
                    slot: Slot::B,
                    offset: at,
                };
                store.save(&state).map_err(Fault::from)
            },
        ));
        let end = std::time::Instant::now();
        result.map_err(|f| anyhow!("download failed: {f:?}"))?;
        if i == 0 {
            rt.block_on(disk.verify(Slot::B, offer.size, &offer.sha256))
                .context("the downloaded slot does not verify")?;
        }
        Ok((start, end))
    })
    .await
}

/// `count` clients download `url_path` at once with the typed client, each
/// streaming into a plain file under `dir` (one fsync at the end), each in its
/// own thread and runtime.
async fn stream_pass(
    dir: &Path,
    count: usize,
    url: reqwest::Url,
    url_path: String,
) -> Result<Vec<Span>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir.to_path_buf();
    on_threads(count, move |i, barrier| {
        let path = dir.join(format!("payload-{i}"));
        let setup = || -> Result<_> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("build a runtime")?;
            let client = Client::with_timeouts(
                vec![url.clone()],
                Duration::from_secs(3),
                Duration::from_secs(30),
            )
            .context("build a client")?;
            let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
            Ok((rt, client, file))
        };
        let ready = setup();
        barrier.wait();
        let (rt, client, mut file) = ready?;
        let start = std::time::Instant::now();
        rt.block_on(async {
            let mut response = client
                .download_payload(&url_path, 0)
                .await
                .context("GET the payload")?;
            while let Some(chunk) = response.chunk().await.context("read the payload")? {
                file.write_all(&chunk)
                    .with_context(|| format!("write {}", path.display()))?;
            }
            file.sync_data()
                .with_context(|| format!("fsync {}", path.display()))
        })?;
        Ok((start, std::time::Instant::now()))
    })
    .await
}

/// Flushes the page cache's dirty data so one pass does not pay for another's.
fn sync_all() {
    let _ = Command::new("sync").status();
}

async fn download_bench(
    opts: &Opts,
    server: &mut Server,
    signer: &Signer,
    run_dir: &Path,
) -> Result<String> {
    let ticks = clock_ticks();
    let admin = server.client(Duration::from_secs(20))?;
    server.wait_healthy(&admin).await?;
    let size = opts.size_mib * MIB;
    eprintln!("bench: making a {} MiB payload", opts.size_mib);
    let data = Arc::new(random_bytes(
        usize::try_from(size).context("payload too large")?,
        4,
    ));
    let (meta, upload_time) = signer.upload(&admin, TO_VERSION, Arc::clone(&data)).await?;
    eprintln!("bench: uploaded in {}", secs(upload_time));
    let offer = Offer {
        url: format!("/api/v1/updates/payloads/{}", meta.sha256),
        version: meta.version.clone(),
        sha256: meta.sha256.clone(),
        size: meta.size,
        signature: meta.signature.clone(),
    };
    let work = run_dir.join("work");
    let total_gb = (size * opts.clients as u64) as f64 / 1e9;
    let url: reqwest::Url = server.url.parse().context("server URL")?;
    // The passes interleave, `--rounds` times, so drift of the disk (a VM's
    // write cache, other tenants) spreads over all three.
    let mut passes: [Vec<Vec<Span>>; 4] = Default::default();
    // Server CPU, and server + bench CPU, over the two download passes.
    let (mut server_cpu, mut all_cpu, mut cpu_wall) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    let me = std::process::id();
    for round in 1..=opts.rounds {
        sync_all();
        eprintln!(
            "bench: round {round}: disk alone, {} files, fsync at the end",
            opts.clients
        );
        let dir = work.join("plain");
        passes[0].push(disk_pass(&dir, opts.clients, Arc::clone(&data), None).await?);
        std::fs::remove_dir_all(&dir).context("remove the reference files")?;

        for (k, agent_code) in [(0, true), (1, false)] {
            sync_all();
            eprintln!(
                "bench: round {round}: {} clients downloading at once ({})",
                opts.clients,
                if agent_code {
                    "the agent's code"
                } else {
                    "plain streaming"
                }
            );
            let dir = work.join("downloads");
            let (s0, b0, t) = (
                proc_stats(server.pid(), ticks)?.cpu_secs,
                proc_stats(me, ticks)?.cpu_secs,
                Instant::now(),
            );
            let spans = if agent_code {
                download_pass(&dir, opts.clients, url.clone(), offer.clone()).await?
            } else {
                stream_pass(&dir, opts.clients, url.clone(), offer.url.clone()).await?
            };
            let (s1, b1) = (
                proc_stats(server.pid(), ticks)?.cpu_secs,
                proc_stats(me, ticks)?.cpu_secs,
            );
            cpu_wall[k] += t.elapsed().as_secs_f64();
            server_cpu[k] += s1 - s0;
            all_cpu[k] += (s1 - s0) + (b1 - b0);
            passes[1 + k].push(spans);
            std::fs::remove_dir_all(&dir).context("remove the downloaded files")?;
        }
        sync_all();

        eprintln!(
            "bench: round {round}: disk alone, {} files, fsync every 1 MiB",
            opts.clients
        );
        let dir = work.join("pieces");
        passes[3].push(disk_pass(&dir, opts.clients, Arc::clone(&data), Some(PIECE)).await?);
        std::fs::remove_dir_all(&dir).context("remove the reference files")?;
    }
    std::fs::remove_dir_all(&work).context("remove the work dir")?;
    let (warn_count, warn_sample) = log_warnings(&server.log);

    // Per pass: the median round's aggregate, every round's, and the clients of all rounds.
    let row = |r: &mut String, what: &str, rounds: &[Vec<Span>]| -> Result<f64> {
        let mut totals = Vec::new();
        let mut walls = Vec::new();
        let mut each = Vec::new();
        for spans in rounds {
            let (total, clients, wall) = rates(spans, size);
            totals.push(total);
            walls.push(wall);
            each.extend(clients);
        }
        let listed: Vec<String> = totals.iter().map(|t| format!("{t:.0}")).collect();
        let mut sorted = totals.clone();
        sorted.sort_by(f64::total_cmp);
        each.sort_by(f64::total_cmp);
        walls.sort();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        writeln!(
            r,
            "| {what} | **{median:.0} MB/s** | {} | {:.1} / {:.1} / {:.1} MB/s | {} |",
            listed.join(", "),
            each.first().copied().unwrap_or_default(),
            each.get(each.len() / 2).copied().unwrap_or_default(),
            each.last().copied().unwrap_or_default(),
            secs(walls.get(walls.len() / 2).copied().unwrap_or_default())
        )?;
        Ok(median)
    };
    let fs = Command::new("df")
        .arg("--output=source,fstype")
        .arg(run_dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "?".into());
    let mut r = String::new();
    writeln!(r, "## Payload download benchmark\n")?;
    writeln!(
        r,
        "One shoal-server member (release build) on loopback; a {} MiB signed payload of random bytes; \
         {} clients at once, {total_gb:.2} GB in total per pass; every file (server data dir, disk images, \
         downloaded and reference files) on the same disk ({fs}). MB = 10^6 bytes. {} rounds, each running the four \
         passes in the order listed with `sync` between passes; a pass's aggregate is its bytes over the \
         time from the first client's start to the last one's end.\n",
        opts.size_mib, opts.clients, opts.rounds
    )?;
    writeln!(
        r,
        "| pass | aggregate (median round) | every round | per client, all rounds: min / median / max | wall (median) |"
    )?;
    writeln!(r, "| --- | --- | --- | --- | --- |")?;
    let disk_end = row(
        &mut r,
        "disk alone: plain files written in parallel from memory, one fsync each at the end",
        &passes[0],
    )?;
    let dl = row(
        &mut r,
        "download: `GET /api/v1/updates/payloads/{sha256}` with the agent's own code \
         (`node_agent::update::download`) into the USR-B slot of a sparse disk image per client, \
         fsync every 1 MiB piece + the agent's state file saved (fsync, rename, dir fsync) per piece; \
         one thread and runtime per client",
        &passes[1],
    )?;
    let streamed = row(
        &mut r,
        "download, plain: the same request through the typed client, streamed into a plain file, \
         one fsync at the end (no slot, no pieces, no state file); one thread and runtime per client",
        &passes[2],
    )?;
    let disk_pieces = row(
        &mut r,
        "disk alone: plain files in parallel, fsync every 1 MiB (the agent's piece), no state file",
        &passes[3],
    )?;
    writeln!(r)?;
    writeln!(
        r,
        "- **agent download ÷ disk alone (fsync at end): {:.2}**; agent download ÷ disk alone (fsync every 1 MiB): {:.2}",
        dl / disk_end.max(1e-9),
        dl / disk_pieces.max(1e-9)
    )?;
    writeln!(
        r,
        "- plain download ÷ disk alone (fsync at end): {:.2}; agent download ÷ plain download: {:.2}",
        streamed / disk_end.max(1e-9),
        dl / streamed.max(1e-9)
    )?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for (k, what) in [(0, "agent download"), (1, "plain download")] {
        let wall = cpu_wall[k];
        writeln!(
            r,
            "- CPU during the {what} passes: server {:.2} s ({:.2} ms per MB served), server + clients {:.2} s \
             over {wall:.2} s (whole passes, with their setup) = {:.2} of {cores} cores busy (kernel writeback threads not counted)",
            server_cpu[k],
            server_cpu[k] * 1e3 / (total_gb * 1e3 * opts.rounds as f64).max(1e-9),
            all_cpu[k],
            all_cpu[k] / wall.max(1e-9)
        )?;
    }
    writeln!(
        r,
        "- upload of the payload (one client, `POST /api/v1/updates/payloads`): {} ({:.0} MB/s)",
        secs(upload_time),
        size as f64 / 1e6 / upload_time.as_secs_f64().max(1e-9)
    )?;
    writeln!(
        r,
        "- client 0's slot verified with the agent's `SlotDisk::verify` after every download pass: SHA-256 matches"
    )?;
    writeln!(r, "- server log WARN/ERROR lines: {warn_count}")?;
    for l in warn_sample {
        writeln!(r, "  - `{}`", l.chars().take(240).collect::<String>())?;
    }
    Ok(r)
}

// ---------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let opts = parse_opts()?;
    let prefix = match opts.mode {
        Mode::Rollout => "shoal-rollout.",
        Mode::Download => "shoal-download.",
    };
    let run_dir = server::run_dir(prefix)?;
    let (signer, public_key) = Signer::new(&run_dir)?;
    let mut server = Server::start(
        &opts.server,
        &run_dir,
        "rollout-bench",
        &[
            std::ffi::OsStr::new("--update-public-key"),
            public_key.as_os_str(),
        ],
    )?;
    eprintln!("bench: shoal-server pid {} on {}", server.pid(), server.url);
    let hard_stop = opts.timeout + Duration::from_secs(10);
    let run = async {
        match opts.mode {
            Mode::Rollout => rollout(&opts, &mut server, &signer).await,
            Mode::Download => download_bench(&opts, &mut server, &signer, &run_dir).await,
        }
    };
    let outcome = server::bounded(hard_stop, run).await;
    let dirs: &[&str] = if opts.keep {
        &["work"]
    } else {
        &["data", "work"]
    };
    server::finish(server, &run_dir, dirs);
    let report = outcome?;
    println!("{report}");
    Ok(())
}
