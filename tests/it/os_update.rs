//! The agents' update engine end to end: one server trusting an update key,
//! six `shoal-agent`s, each with its own disk image and a reboot command that
//! kills the machine's containers and ends the agent (see `update_host`):
//! this test starts it again whenever it exited — that restart is the
//! reboot, where the agent runs gptprio on its image. A unit of 4 replicas
//! (one per machine: the engine spreads them) runs on the real Docker engine
//! throughout.
//!
//! 1. Version 2 rolls out with `max_reboots = 2` (one agent SIGKILLed and
//!    restarted on the way): all six end on it with USR-B active and
//!    successful in their GPT, every machine took the reboot lock, and the
//!    lock's history in the key space (every take, release and expiry, in
//!    raft order) never has more than 2 holders, and does reach 2.
//! 2. A payload with one corrupted byte in the server's store (signature
//!    and record intact, SHA-256 of the bytes wrong) is refused by every
//!    agent, naming the hash (failed, the passive slot left invalid, not
//!    armed), and the rollout halts (threshold 1).
//! 3. A payload whose signature was tampered with in the store is refused
//!    the same way after a resume, and halts the rollout again.
//! 4. Version 3 with one canary whose `--health-command false` never
//!    passes: its boot rolls back to USR-B, the rollout halts, and the other
//!    five never reboot into 3.
//!
//! Capacity: Docker is polled throughout; at every poll at least
//! `replicas - max_reboots` instances run. That is the drain policy's bound:
//! only a machine holding the reboot lock drains, a draining machine loses
//! its instances (stopped here before they start elsewhere: at most one
//! each, as the engine spreads 4 replicas over the 4 or more machines not
//! draining), and it reboots only once they run elsewhere (or its drain
//! times out, which the logs must not show). Every instance must be seen
//! running on more than one machine: each one's machine drained, so each moved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use node_agent::slots::SlotAttrs;
use serde_json::{json, Value};

use crate::agents::{
    containers, destroy_all, docker_ready, ensure_image, get, remove_containers, submit,
    wait_containers, wait_machines, Agent, IMAGE,
};
use crate::harness::{heavy_test_lock, shoalctl_ok, V2};
use crate::update_host::{
    attrs, follow_reboot_lock, machines, most_held, reboot_lock_holders, record, state_of,
    LockEvent, UpdateServer,
};

/// The longest any phase of the rollout may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Machines in the rollout.
const MACHINES: usize = 6;
/// The channel's reboot semaphore size.
const MAX_REBOOTS: usize = 2;
/// Replicas of the unit that must stay running.
const REPLICAS: usize = 4;
/// The unit.
const UNIT: &str = "web";
/// The slot attributes of a confirmed USR-B booted once.
const GOOD: SlotAttrs = SlotAttrs {
    priority: 2,
    tries: 0,
    successful: true,
};

/// Restarts agents that exited (their "reboot") until `done` holds for the check-ins.
async fn run_until(
    base: &str,
    agents: &mut [Agent],
    what: &str,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> Result<BTreeMap<String, Value>> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        for a in agents.iter_mut() {
            if a.exited() {
                eprintln!("    {} exited (rebooted): starting it again", a.id);
                a.spawn()?;
            }
        }
        let ms = machines(base).await?;
        if done(&ms) {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = agents
                .iter()
                .map(|a| format!("--- {}:\n{}", a.id, a.log_tail(40)))
                .collect();
            bail!(
                "{what}: not reached in {PHASE_TIMEOUT:?}; check-ins {ms:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until channel `stable` is halted by failures on `version`.
async fn wait_halted(base: &str, version: &str) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let channel = get(&format!("{base}/api/v1/updates/channels/stable")).await?;
        let policy = &channel["policy"];
        let reason = policy["halt_reason"].as_str().unwrap_or_default();
        if policy["halted"] == true && reason.contains(&format!("failed on {version}")) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not halted by {version}: {channel}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every agent reports `failed` on `target` from version 2, and
/// checks each one's reason contains `why`, USR-A is left invalid and USR-B
/// is still the confirmed slot.
async fn all_refuse(
    base: &str,
    agents: &mut [Agent],
    images: &BTreeMap<String, PathBuf>,
    target: &str,
    why: &str,
) -> Result<()> {
    let ids: Vec<String> = images.keys().cloned().collect();
    let ms = run_until(base, agents, &format!("all refuse {target}"), |ms| {
        ids.iter()
            .all(|id| state_of(ms, id) == ("failed", "2", target))
    })
    .await?;
    for (id, image) in images {
        let error = ms[id]["error"].as_str().unwrap_or("");
        ensure!(
            error.contains(why),
            "{id}: error {error:?}, not naming {why}"
        );
        let (a, b) = attrs(image)?;
        ensure!(
            a == SlotAttrs::INVALID,
            "{id}: refused slot USR-A is {a}, not left invalid"
        );
        ensure!(b == GOOD, "{id}: USR-B is {b}");
    }
    wait_halted(base, target).await
}

/// What Docker showed of the unit's instances over the polls.
struct Capacity {
    /// How many polls there were.
    polls: usize,
    /// The fewest running at one poll, and what ran then.
    fewest: (usize, BTreeSet<(String, String)>),
    /// Every machine each instance was seen running on.
    homes: BTreeMap<String, BTreeSet<String>>,
}

/// Polls Docker for the running instances of [`UNIT`] in `run` until `stop` is set.
fn watch_capacity(run: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Result<Capacity>> {
    tokio::task::spawn_blocking(move || {
        let mut seen = Capacity {
            polls: 0,
            fewest: (usize::MAX, BTreeSet::new()),
            homes: BTreeMap::new(),
        };
        while !stop.load(Ordering::Relaxed) {
            let now: BTreeSet<(String, String)> = containers(&run)?
                .into_iter()
                .filter(|(i, _, state)| state == "running" && i.starts_with(&format!("{UNIT}@")))
                .map(|(i, m, _)| (i, m))
                .collect();
            let distinct = now.iter().map(|(i, _)| i).collect::<BTreeSet<_>>().len();
            for (i, m) in &now {
                seen.homes.entry(i.clone()).or_default().insert(m.clone());
            }
            if distinct < seen.fewest.0 {
                seen.fewest = (distinct, now);
            }
            seen.polls += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(seen)
    })
}

/// The lock history as lines, for failure messages.
fn trail(events: &[LockEvent]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {}", e.index, e.action, e.holder))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_agents_update_through_ab_slots_two_reboots_at_a_time() -> Result<()> {
    if !docker_ready()? {
        eprintln!(
            "Docker is not available and SHOAL_REQUIRE_DOCKER is not 1: the health check needs it"
        );
        return Ok(());
    }
    let _serial = heavy_test_lock().await;
    ensure_image()?;
    let started = Instant::now();
    let run = format!("os{}", std::process::id());
    remove_containers(&run);
    let dir = tempfile::tempdir()?;
    let server = UpdateServer::start(dir.path()).await?;
    let base = server.base.clone();
    shoalctl_ok(
        &base,
        &[
            "update",
            "channel",
            "stable",
            "--max-reboots",
            &MAX_REBOOTS.to_string(),
        ],
    )?;

    eprintln!("--- {MACHINES} agents, each with its own disk image; {REPLICAS} replicas of {UNIT}");
    let mut agents = Vec::new();
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    for n in 0..MACHINES {
        let id = format!("{run}-{}", char::from(b'a' + n as u8));
        // Room for a moved instance to start: on the machine it left (drain)
        // and on a machine just booted that the engine gives it to (health).
        let timing = ["--health-deadline", "10", "--drain-timeout", "20"];
        let (mut agent, image) = server.disk_agent(dir.path(), &id, &timing)?;
        agent.spawn()?;
        agents.push(agent);
        images.insert(id, image);
    }
    let ids: Vec<String> = images.keys().cloned().collect();
    wait_machines(&base, &agents.iter().collect::<Vec<_>>()).await?;
    submit(
        &base,
        &json!({"name": UNIT, "image": IMAGE, "command": ["sleep", "3600"],
                "desired": "launched", "placement": {"replicas": REPLICAS}}),
    )
    .await?;
    wait_containers(&run, "every replica running", |cs| {
        cs.iter()
            .filter(|(_, _, s)| s == "running")
            .map(|(_, m, _)| m)
            .collect::<BTreeSet<_>>()
            .len()
            == REPLICAS
    })
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let lock_history = follow_reboot_lock(&base, stop.clone());
    let capacity = watch_capacity(run.clone(), stop.clone());

    eprintln!("--- version 2 rolls out, {MAX_REBOOTS} reboots at a time");
    let rollout = Instant::now();
    server.upload(dir.path(), "2", 2, "stable")?;
    // A crash somewhere in the middle (download, lock, drain or reboot) resumes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agents[0].kill();
    agents[0].spawn()?;
    run_until(&base, &mut agents, "all on version 2", |ms| {
        ids.iter()
            .all(|id| state_of(ms, id) == ("updated", "2", "2"))
    })
    .await?;
    for (id, image) in &images {
        let (a, b) = attrs(image)?;
        ensure!(b == GOOD, "{id}: USR-B is {b}, expected {GOOD}");
        ensure!(a.bootable() && a.priority == 1, "{id}: USR-A is {a}");
        let m = record(&base, id).await?;
        ensure!(
            m["os_version"] == "2" && m["active_slot"] == "USR-B" && m["draining"] == false,
            "{id}: record {m}"
        );
    }
    let rollout_secs = rollout.elapsed().as_secs_f64();

    eprintln!("--- a payload with a corrupted byte is refused everywhere and halts the rollout");
    server.upload_to(dir.path(), "2.1", 21, None)?;
    let payloads = get(&format!("{base}/api/v1/updates/payloads")).await?;
    let payload = |version: &str| {
        payloads
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["version"] == version))
            .cloned()
            .with_context(|| format!("payload {version} listed: {payloads}"))
    };
    let sha = payload("2.1")?["sha256"]
        .as_str()
        .context("sha256 of 2.1")?
        .to_owned();
    let file = server.payload_file(&sha);
    let mut bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes)?;
    shoalctl_ok(&base, &["update", "channel", "stable", "--version", "2.1"])?;
    all_refuse(
        &base,
        &mut agents,
        &images,
        "2.1",
        &format!("expected {sha}"),
    )
    .await?;

    eprintln!("--- a payload whose signature was tampered with is refused and halts it again");
    let mut meta = payload("2")?;
    let sig = meta["signature"].as_str().context("signature")?.to_owned();
    let mut chars: Vec<char> = sig.chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    meta["version"] = "2.9".into();
    meta["signature"] = chars.into_iter().collect::<String>().into();
    V2::new(base.clone())
        .put(
            "/_shoal/updates/payloads/2.9",
            &[("value", &meta.to_string())],
        )
        .await?;
    shoalctl_ok(&base, &["update", "channel", "stable", "--version", "2.9"])?;
    shoalctl_ok(&base, &["update", "resume", "stable"])?;
    all_refuse(&base, &mut agents, &images, "2.9", "signature").await?;

    eprintln!("--- version 3 never becomes healthy on the canary: it rolls back and halts");
    let canary = ids[0].clone();
    let agent = agents
        .iter_mut()
        .find(|a| a.id == canary)
        .context("canary agent")?;
    agent.kill();
    agent.push_args(&["--health-command", "false"]);
    agent.spawn()?;
    shoalctl_ok(&base, &["update", "channel", "stable", "--canaries", "1"])?;
    server.upload(dir.path(), "3", 3, "stable")?;
    shoalctl_ok(&base, &["update", "resume", "stable"])?;
    run_until(&base, &mut agents, "the canary rolls back 3", |ms| {
        state_of(ms, &canary) == ("rolled_back", "2", "3")
    })
    .await?;
    // The lock is released once the canary runs USR-B again.
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        for a in agents.iter_mut() {
            if a.exited() {
                a.spawn()?;
            }
        }
        let holders = reboot_lock_holders(&base).await?;
        let m = record(&base, &canary).await;
        let back = m
            .as_ref()
            .is_ok_and(|m| m["active_slot"] == "USR-B" && m["os_version"] == "2");
        if back && holders.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{canary} did not come back on USR-B and release the lock: holders {holders:?} {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (a, b) = attrs(&images[&canary])?;
    ensure!(b.successful && b.priority > 0, "{canary}: USR-B is {b}");
    ensure!(a.priority == 0, "{canary}: rolled-back USR-A is {a}");
    wait_halted(&base, "3").await?;
    for id in &ids[1..] {
        let m = record(&base, id).await?;
        ensure!(
            m["os_version"] == "2" && m["active_slot"] == "USR-B",
            "{id} rebooted although the canary failed: {m}"
        );
    }
    wait_containers(&run, "every replica running again", |cs| {
        cs.iter()
            .filter(|(_, _, s)| s == "running")
            .map(|(i, _, _)| i)
            .collect::<BTreeSet<_>>()
            .len()
            == REPLICAS
    })
    .await?;

    stop.store(true, Ordering::Relaxed);
    let events = lock_history.await??;
    let capacity = capacity.await??;
    let most = most_held(&events);
    ensure!(
        most <= MAX_REBOOTS,
        "the reboot lock had {most} holders at once:\n{}",
        trail(&events)
    );
    ensure!(
        most == MAX_REBOOTS,
        "the reboot lock never had {MAX_REBOOTS} holders: the bound was not tested\n{}",
        trail(&events)
    );
    let took: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.action == "create")
        .map(|e| e.holder.as_str())
        .collect();
    ensure!(
        ids.iter().all(|id| took.contains(id.as_str())),
        "not every machine took the reboot lock: {took:?}\n{}",
        trail(&events)
    );
    let (fewest, then) = &capacity.fewest;
    ensure!(
        *fewest >= REPLICAS - MAX_REBOOTS,
        "only {fewest} of {REPLICAS} instances ran at one poll ({then:?}), below the drain bound {}",
        REPLICAS - MAX_REBOOTS
    );
    // Every machine drained once, so every instance moved at least once.
    ensure!(
        capacity.homes.len() == REPLICAS && capacity.homes.values().all(|ms| ms.len() > 1),
        "not every instance moved while its machine drained: {:?}",
        capacity.homes
    );
    let moves: usize = capacity.homes.values().map(|ms| ms.len() - 1).sum();
    for a in &agents {
        let log = a.log_tail(100_000);
        ensure!(
            !log.contains("drain timeout"),
            "{} rebooted before its units ran elsewhere:\n{}",
            a.id,
            a.log_tail(40)
        );
    }
    destroy_all(&base, &run, &[UNIT]).await?;
    eprintln!(
        "--- done in {:.1} s (rollout of 2 across {MACHINES}: {rollout_secs:.1} s); \
         lock history {} events, most holders {most}; \
         fewest running {fewest} of {REPLICAS} over {} Docker polls, \
         instances seen on {moves} machines beyond their first",
        started.elapsed().as_secs_f64(),
        events.len(),
        capacity.polls
    );
    Ok(())
}
