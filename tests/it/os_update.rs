//! The agents' update engine end to end: one server trusting an update key,
//! two `shoal-agent`s, each with its own disk image and a reboot command that
//! ends the agent (see `update_host`): this test starts it again whenever it
//! exited — that restart is the reboot, where the agent runs gptprio on its image.
//!
//! 1. Version 2 rolls out (one agent SIGKILLed and restarted on the way):
//!    both agents end on it with USR-B active and successful in their GPT,
//!    and the reboot semaphore (max_reboots = 1) never had two holders,
//!    neither when polled nor in the update history.
//! 2. A payload whose signature was tampered with in the store is refused by
//!    the agents (failed, the passive slot left invalid, not armed) and the
//!    rollout halts (threshold 1).
//! 3. Version 3 on an agent whose `--health-command false` never passes:
//!    the boot rolls back to USR-B and the rollout halts again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use node_agent::slots::SlotAttrs;
use serde_json::Value;

use crate::agents::{docker_ready, get, wait_machines, Agent};
use crate::harness::{shoalctl_ok, V2};
use crate::update_host::{attrs, machines, reboot_lock_holders, record, state_of, UpdateServer};

/// The longest any phase of the rollout may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

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

/// The most machines ever between `draining` and `updated`/`rolled_back` in the history.
async fn history_overlap(base: &str) -> Result<(usize, Vec<String>)> {
    let history = get(&format!("{base}/api/v1/updates/history?limit=1000")).await?;
    let mut inside = BTreeSet::new();
    let mut most = 0;
    let mut trail = Vec::new();
    for e in history.as_array().into_iter().flatten() {
        if e["kind"] != "machine_state" {
            continue;
        }
        let machine = e["machine"].as_str().unwrap_or("").to_owned();
        let detail = e["detail"].as_str().unwrap_or("");
        let to = detail
            .split(" -> ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("");
        trail.push(format!("{machine}: {detail}"));
        match to {
            "draining" | "rebooting" | "confirming" => {
                inside.insert(machine);
            }
            _ => {
                inside.remove(&machine);
            }
        }
        most = most.max(inside.len());
    }
    Ok((most, trail))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_update_through_ab_slots_one_reboot_at_a_time() -> Result<()> {
    if !docker_ready()? {
        eprintln!(
            "Docker is not available and SHOAL_REQUIRE_DOCKER is not 1: the health check needs it"
        );
        return Ok(());
    }
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let server = UpdateServer::start(dir.path()).await?;
    let base = server.base.clone();

    eprintln!("--- two agents, each with its own disk image");
    let mut agents = Vec::new();
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    for id in ["osa", "osb"] {
        let (mut agent, image) = server.disk_agent(dir.path(), id, &[])?;
        agent.spawn()?;
        agents.push(agent);
        images.insert(id.to_owned(), image);
    }
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_machines(&base, &refs).await?;

    // Poll the reboot semaphore throughout.
    let most_holders = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (most, stop, base) = (most_holders.clone(), stop.clone(), base.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(holders) = reboot_lock_holders(&base).await {
                    most.fetch_max(holders.len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    eprintln!("--- version 2 rolls out one reboot at a time");
    server.upload(dir.path(), "2", 2, "stable")?;
    // A crash somewhere in the middle (download, lock, drain or reboot) resumes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agents[0].kill();
    agents[0].spawn()?;
    run_until(&base, &mut agents, "both on version 2", |ms| {
        ["osa", "osb"]
            .iter()
            .all(|id| state_of(ms, id) == ("updated", "2", "2"))
    })
    .await?;
    let good = SlotAttrs {
        priority: 2,
        tries: 0,
        successful: true,
    };
    for (id, image) in &images {
        let (a, b) = attrs(image)?;
        ensure!(b == good, "{id}: USR-B is {b}, expected {good}");
        ensure!(a.bootable() && a.priority == 1, "{id}: USR-A is {a}");
        let m = record(&base, id).await?;
        ensure!(
            m["os_version"] == "2" && m["active_slot"] == "USR-B" && m["draining"] == false,
            "{id}: record {m}"
        );
    }
    let (overlap, trail) = history_overlap(&base).await?;
    ensure!(
        overlap == 1,
        "{overlap} machines rebooting at once:\n{}",
        trail.join("\n")
    );

    eprintln!("--- a payload whose signature was tampered with is refused and halts the rollout");
    let payloads = get(&format!("{base}/api/v1/updates/payloads")).await?;
    let mut meta = payloads
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["version"] == "2"))
        .cloned()
        .context("payload 2 listed")?;
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
    let ms = run_until(&base, &mut agents, "both refuse 2.9", |ms| {
        ["osa", "osb"]
            .iter()
            .all(|id| state_of(ms, id) == ("failed", "2", "2.9"))
    })
    .await?;
    for id in ["osa", "osb"] {
        let error = ms[id]["error"].as_str().unwrap_or("");
        ensure!(error.contains("signature"), "{id}: error {error:?}");
        let (a, b) = attrs(&images[id])?;
        ensure!(
            a == SlotAttrs::INVALID,
            "{id}: refused slot USR-A is {a}, not left invalid"
        );
        ensure!(b == good, "{id}: USR-B is {b}");
    }
    let channel = get(&format!("{base}/api/v1/updates/channels/stable")).await?;
    ensure!(channel["policy"]["halted"] == true, "not halted: {channel}");

    eprintln!("--- version 3 never becomes healthy on osb: it rolls back and halts the rollout");
    let osb = agents
        .iter_mut()
        .find(|a| a.id == "osb")
        .context("osb agent")?;
    osb.kill();
    osb.push_args(&["--health-command", "false"]);
    osb.spawn()?;
    server.upload(dir.path(), "3", 3, "stable")?;
    shoalctl_ok(&base, &["update", "resume", "stable"])?;
    run_until(&base, &mut agents, "osb rolls back 3", |ms| {
        state_of(ms, "osb") == ("rolled_back", "2", "3")
    })
    .await?;
    // The lock is released once osb runs USR-B again.
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        for a in agents.iter_mut() {
            if a.exited() {
                a.spawn()?;
            }
        }
        let holders = reboot_lock_holders(&base).await?;
        let m = record(&base, "osb").await;
        let back = m
            .as_ref()
            .is_ok_and(|m| m["active_slot"] == "USR-B" && m["os_version"] == "2");
        if back && !holders.iter().any(|h| h == "osb") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "osb did not come back on USR-B and release the lock: holders {holders:?} {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (a, b) = attrs(&images["osb"])?;
    ensure!(b.successful && b.priority > 0, "osb: USR-B is {b}");
    ensure!(a.priority == 0, "osb: rolled-back USR-A is {a}");
    let channel = get(&format!("{base}/api/v1/updates/channels/stable")).await?;
    ensure!(
        channel["policy"]["halted"] == true,
        "not halted after the rollback: {channel}"
    );

    stop.store(true, Ordering::Relaxed);
    let _ = poller.await;
    let most = most_holders.load(Ordering::Relaxed);
    ensure!(most <= 1, "the reboot lock had {most} holders at once");
    ensure!(most == 1, "the reboot lock was never seen held");
    let (overlap, trail) = history_overlap(&base).await?;
    ensure!(
        overlap <= 1,
        "{overlap} machines rebooting at once:\n{}",
        trail.join("\n")
    );
    eprintln!("--- done in {:?}", started.elapsed());
    Ok(())
}
