//! The update engine survives a crash at every step of its state machine.
//!
//! The shoal-agent the tests start is built with the `failpoints` feature
//! (`cargo build --workspace --bins`: the tests crate enables it), so
//! FAILPOINTS makes it abort (`std::process::abort`: no cleanup, like a
//! SIGKILL or a power cut) at a chosen step, deterministically:
//!
//! - `update::saved=return(<phase>)`: right after persisting that phase,
//!   before acting on it;
//! - `update::piece_written`: after a payload piece is synced to the slot but
//!   before it is recorded (`1*off->return`: at the second piece, so the slot
//!   is half-written and holds more than the state says);
//! - `update::armed`: after arming the verified slot, before recording it.
//!
//! One agent per step, each on its own disk image, all updating at once
//! (max_reboots large enough). The test sees each die by SIGABRT with the
//! expected phase in `update.json` (a downloading or verifying slot still
//! invalid in the GPT), restarts it without FAILPOINTS (and restarts every
//! agent whose reboot command ended it), and waits until each converges:
//! on version 2 with USR-B active and successful, or — the agent whose
//! `--health-command false` never passes, on a channel of its own since its
//! rollback halts the rollout — back on USR-A with USR-B at priority 0. Either
//! way not draining and not holding the reboot lock, and no agent ever booted
//! USR-B without having verified the payload on it first.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::signal::Signal;
use node_agent::slots::SlotAttrs;
use node_agent::update::state::{Phase, StateStore};

use crate::agents::{docker_ready, get, wait_machines, Agent};
use crate::harness::{heavy_test_lock, shoalctl_ok};
use crate::update_host::{attrs, machines, reboot_lock_holders, state_of, UpdateServer};

/// How long all agents together may take to crash and converge.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The version rolled out.
const VERSION: &str = "2";
/// The version an agent reports for the slot of its first boot.
const FIRST: &str = node_agent::update::state::UNKNOWN_VERSION;

/// One agent crashing at one step.
struct Case {
    /// The machine id, after the step.
    id: &'static str,
    /// FAILPOINTS until the crash.
    failpoints: &'static str,
    /// The phase `update.json` holds when the process died.
    persisted: &'static str,
    /// `--health-command false` on channel `bad`: the new slot rolls back.
    unhealthy: bool,
}

const fn case(id: &'static str, failpoints: &'static str, persisted: &'static str) -> Case {
    Case {
        id,
        failpoints,
        persisted,
        unhealthy: false,
    }
}

/// Every step a crash is tried at.
const CASES: [Case; 10] = [
    case(
        "crash-mid-write",
        "update::piece_written=1*off->return",
        "downloading",
    ),
    case(
        "crash-verifying",
        "update::saved=return(verifying)",
        "verifying",
    ),
    case("crash-armed", "update::armed=return", "verifying"),
    case(
        "crash-verified",
        "update::saved=return(verified)",
        "verified",
    ),
    case(
        "crash-lock-wait",
        "update::saved=return(waiting_for_lock)",
        "waiting_for_lock",
    ),
    case(
        "crash-draining",
        "update::saved=return(draining)",
        "draining",
    ),
    case(
        "crash-rebooting",
        "update::saved=return(rebooting)",
        "rebooting",
    ),
    // Persisted at the start after the reboot into the new slot.
    case(
        "crash-confirming",
        "update::saved=return(confirming)",
        "confirming",
    ),
    // The new slot confirmed, the lock not released yet (the first save, at
    // the start of each process, is let through).
    case(
        "crash-confirmed",
        "update::saved=1*off->return(idle)",
        "idle",
    ),
    Case {
        id: "crash-rolling-back",
        failpoints: "update::saved=return(rolling_back)",
        persisted: "rolling_back",
        unhealthy: true,
    },
];

impl Case {
    /// True when the step comes after the first reboot (into the new slot).
    fn crashes_after_a_reboot(&self) -> bool {
        matches!(self.persisted, "confirming" | "idle" | "rolling_back")
    }
}

/// A case's running agent.
struct Run {
    case: &'static Case,
    agent: Agent,
    image: PathBuf,
    /// How long after the upload it died at its fail point.
    crashed: Option<Duration>,
}

impl Run {
    /// What it reports, runs and boots once it converged: `(check-in state, version, slot)`.
    fn expected(&self) -> (&'static str, &'static str, &'static str) {
        if self.case.unhealthy {
            ("rolled_back", FIRST, "USR-A")
        } else {
            ("updated", VERSION, "USR-B")
        }
    }

    /// The end of the log, for failure messages.
    fn tail(&self) -> String {
        format!("--- {} log:\n{}", self.case.id, self.agent.log_tail(30))
    }
}

/// The persisted phase's name as `update.json` spells it.
fn phase_name(phase: &Phase) -> Result<String> {
    let v = serde_json::to_value(phase)?;
    Ok(v["phase"]
        .as_str()
        .context("phase without a name")?
        .to_owned())
}

/// Checks what a crashed agent left on disk: the phase its fail point names,
/// and a slot that is invalid for as long as it is not verified. Describes it.
fn check_crash(run: &Run, state_dir: &Path) -> Result<String> {
    let id = run.case.id;
    let log = || run.tail();
    ensure!(
        run.agent.log_tail(5).contains("fail point"),
        "{id} aborted, but not at a fail point\n{}",
        log()
    );
    let state = StateStore::new(state_dir)
        .load()?
        .with_context(|| format!("{id}: no update.json after the crash"))?;
    let phase = phase_name(&state.phase)?;
    ensure!(
        phase == run.case.persisted,
        "{id}: {phase} persisted at the crash, expected {}: {:?}\n{}",
        run.case.persisted,
        state.phase,
        log()
    );
    let (_, b) = attrs(&run.image)?;
    match &state.phase {
        Phase::Downloading { offer, offset, .. } => {
            ensure!(
                *offset < offer.size,
                "{id}: crashed with the whole payload recorded ({offset})"
            );
            ensure!(b == SlotAttrs::INVALID, "{id}: half-written USR-B is {b}");
        }
        Phase::Verifying { .. } if id == "crash-armed" => {
            ensure!(
                b.bootable() && !b.successful,
                "{id}: USR-B is {b}, not armed at the crash"
            );
        }
        Phase::Verifying { .. } => {
            ensure!(b == SlotAttrs::INVALID, "{id}: unverified USR-B is {b}");
        }
        Phase::Idle => {
            ensure!(
                state.lock.is_some(),
                "{id}: the lock was released before the crash"
            );
        }
        _ => {}
    }
    let at = match &state.phase {
        Phase::Downloading { offset, .. } => format!(" (byte {offset} recorded)"),
        _ => String::new(),
    };
    Ok(format!("{phase}{at}, USR-B {b}"))
}

/// Why `run` has not converged yet, given the check-ins, the machine records
/// (`/api/v1/machines`) and the reboot lock's holders; `None` once it has.
fn pending(
    run: &Run,
    checkins: &std::collections::BTreeMap<String, serde_json::Value>,
    records: &serde_json::Value,
    holders: &[String],
) -> Option<String> {
    let id = run.case.id;
    if run.crashed.is_none() {
        return Some(format!("{id}: not crashed yet"));
    }
    let (state, version, slot) = run.expected();
    let got = state_of(checkins, id);
    if got != (state, version, VERSION) {
        return Some(format!(
            "{id}: checks in {got:?}, expected {:?}",
            (state, version, VERSION)
        ));
    }
    if holders.iter().any(|h| h == id) {
        return Some(format!("{id}: still holds the reboot lock"));
    }
    let m = records
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"] == id);
    match m {
        Some(m)
            if m["os_version"] == version && m["active_slot"] == slot && m["draining"] == false =>
        {
            None
        }
        _ => Some(format!("{id}: machine record {m:?}")),
    }
}

/// Checks the agent's log: every boot of USR-B follows a verification of the
/// payload written since the last download began; `Err` otherwise.
fn check_boots(run: &Run, log: &str) -> Result<()> {
    let id = run.case.id;
    let mut verified = false;
    let mut boots = 0;
    for line in log.lines().map(plain) {
        if line.contains("installing a new version") {
            verified = false;
        } else if line.contains("payload verified; slot armed") {
            verified = true;
        } else if line.contains("booted slot=USR-B") {
            ensure!(
                verified,
                "{id} booted USR-B before verifying it:\n{line}\n{}",
                run.tail()
            );
            boots += 1;
        }
    }
    ensure!(
        boots > 0,
        "{id}: no `booted slot=USR-B` line in the log (did the format change?)\n{}",
        run.tail()
    );
    Ok(())
}

/// `line` without ANSI colour escapes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_engine_recovers_from_a_crash_at_every_step() -> Result<()> {
    if !docker_ready()? {
        eprintln!(
            "Docker is not available and SHOAL_REQUIRE_DOCKER is not 1: the health check needs it"
        );
        return Ok(());
    }
    let _serial = heavy_test_lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let server = UpdateServer::start(dir.path()).await?;
    let base = server.base.clone();
    for channel in ["crash", "bad"] {
        shoalctl_ok(
            &base,
            &["update", "channel", channel, "--max-reboots", "20"],
        )?;
    }

    eprintln!(
        "--- {} agents, each set to crash at another step",
        CASES.len()
    );
    let mut runs = Vec::new();
    for case in &CASES {
        let mut flags = vec!["--channel", if case.unhealthy { "bad" } else { "crash" }];
        if case.unhealthy {
            flags.extend(["--health-command", "false"]);
        }
        let (mut agent, image) = server.disk_agent(dir.path(), case.id, &flags)?;
        agent.set_env("FAILPOINTS", Some(case.failpoints));
        agent.spawn()?;
        runs.push(Run {
            case,
            agent,
            image,
            crashed: None,
        });
    }
    let refs: Vec<&Agent> = runs.iter().map(|r| &r.agent).collect();
    wait_machines(&base, &refs).await?;

    eprintln!("--- version {VERSION} on both channels");
    server.upload(dir.path(), VERSION, 2, "crash")?;
    shoalctl_ok(&base, &["update", "channel", "bad", "--version", VERSION])?;
    let rollout = Instant::now();
    let deadline = rollout + TIMEOUT;
    loop {
        for run in runs.iter_mut() {
            let Some(status) = run.agent.exit_status() else {
                continue;
            };
            let id = run.case.id;
            if status.signal() == Some(Signal::SIGABRT as i32) {
                ensure!(
                    run.crashed.is_none(),
                    "{id} aborted again without fail points\n{}",
                    run.tail()
                );
                let left = check_crash(run, &dir.path().join(id))?;
                let at = rollout.elapsed();
                eprintln!(
                    "    {id} died after {at:?}, leaving {left}: restarting it without fail points"
                );
                run.crashed = Some(at);
                run.agent.set_env("FAILPOINTS", None);
            } else if !status.success() {
                bail!("{id} exited with {status}\n{}", run.tail());
            } else if run.crashed.is_none() && !run.case.crashes_after_a_reboot() {
                bail!(
                    "{id} rebooted without crashing at its fail point ({}): is target/debug/shoal-agent built with the `failpoints` feature (cargo build --workspace --bins)?\n{}",
                    run.case.failpoints,
                    run.tail()
                );
            }
            run.agent.spawn()?;
        }
        let checkins = machines(&base).await?;
        let records = get(&format!("{base}/api/v1/machines")).await?;
        let holders = reboot_lock_holders(&base).await?;
        let waiting: Vec<(String, &Run)> = runs
            .iter()
            .filter_map(|r| Some((pending(r, &checkins, &records, &holders)?, r)))
            .collect();
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let why: Vec<String> = waiting
                .iter()
                .map(|(why, r)| format!("{why}\n{}", r.tail()))
                .collect();
            bail!(
                "not converged in {TIMEOUT:?} (reboot lock held by {holders:?}):\n{}",
                why.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("--- all converged after {:?}", rollout.elapsed());

    let good = SlotAttrs {
        priority: 2,
        tries: 0,
        successful: true,
    };
    for run in &runs {
        let id = run.case.id;
        let (a, b) = attrs(&run.image)?;
        if run.case.unhealthy {
            ensure!(
                a.bootable() && a.successful,
                "{id}: USR-A is {a} after the rollback"
            );
            ensure!(b.priority == 0, "{id}: rolled-back USR-B is {b}");
        } else {
            ensure!(b == good, "{id}: USR-B is {b}, expected {good}");
            ensure!(a.bootable() && a.priority == 1, "{id}: USR-A is {a}");
        }
        let log = std::fs::read_to_string(dir.path().join(format!("{id}.log")))?;
        check_boots(run, &log)?;
    }
    eprintln!("--- done in {:?}", started.elapsed());
    Ok(())
}
