//! The fleet under faults: one server, three `shoal-agent`s each reaching it
//! through its own partitionable proxy, a replicated unit (2 instances that
//! conflict with each other) and an exclusive unit, while a seeded nemesis
//! crashes machines (agent SIGKILLed and its containers killed, as a power
//! cut would) and partitions agents from the cluster, one fault at a time.
//! Docker is sampled throughout.
//!
//! Proves: the exclusive instance never runs on two machines at once; a
//! replicated instance runs twice only while a fault lasts and for at most
//! one lease TTL (plus a reconcile pass) after it ended; once the faults
//! stop, every instance runs exactly once. A run that moved nothing or
//! injected too few faults proved nothing and fails. `SHOAL_NEMESIS_SEED`
//! replays a schedule; the seed is printed and in every failure.
//! Needs Docker: fails (does not skip) when `SHOAL_REQUIRE_DOCKER=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use crate::agents::{
    containers, destroy_all, remove_containers, submit, wait_containers, wait_machines, Agent,
    FleetRun, IMAGE, LEASE_TTL,
};
use crate::proxy::Proxy;

/// How long the nemesis injects faults.
const FAULT_PHASE: Duration = Duration::from_secs(40);
/// How often Docker is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(150);
/// Grace after a fault ends for a returning agent to remove a moved copy:
/// its lease TTL, then a reconcile pass.
const SLACK: Duration = Duration::from_secs(3);

/// One fault of the schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The machine loses power: agent and containers die; it boots again later.
    Crash(usize),
    /// The agent is cut off from the cluster; its containers keep running.
    Partition(usize),
}

/// Kills every running container of machine `id`, as a power cut would.
fn kill_containers(id: &str) -> Result<()> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=shoal.machine={id}")])
        .output()?;
    for container in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        Command::new("docker")
            .args(["kill", container])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
    }
    Ok(())
}

/// `instance -> machines running it` in one Docker sample.
fn running_on(run: &str) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (instance, machine, state) in containers(run)? {
        if state == "running" {
            on.entry(instance).or_default().insert(machine);
        }
    }
    Ok(on)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_survive_crashes_and_partitions_without_lasting_duplicates() -> Result<()> {
    let Some(fleet) = FleetRun::start("ff").await? else {
        return Ok(());
    };
    let (run, base) = (fleet.run.clone(), fleet.base.clone());
    let seed: u64 = match std::env::var("SHOAL_NEMESIS_SEED") {
        Ok(s) => s.parse().context("SHOAL_NEMESIS_SEED")?,
        Err(_) => rand::random(),
    };
    eprintln!("--- seed {seed} (SHOAL_NEMESIS_SEED={seed} replays this schedule)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server: std::net::SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .context("server address")?;
    let dir = tempfile::tempdir()?;

    eprintln!("--- three agents, each behind its own proxy");
    let mut proxies = Vec::new();
    let mut agents = Vec::new();
    for i in 1..=3 {
        let proxy = Proxy::start(server).await?;
        let via = format!("http://{}", proxy.addr);
        agents.push(Agent::start(
            dir.path(),
            &via,
            &format!("{run}-m{i}"),
            "role=any",
        )?);
        proxies.push(proxy);
    }
    wait_machines(&base, &agents.iter().collect::<Vec<_>>()).await?;
    let sleep = json!(["sleep", "3600"]);
    submit(
        &base,
        &json!({"name": "web", "image": IMAGE, "command": sleep, "desired": "launched",
                "placement": {"replicas": 2, "conflicts": ["web*"]}}),
    )
    .await?;
    submit(
        &base,
        &json!({"name": "solo", "image": IMAGE, "command": sleep, "desired": "launched",
                "kind": "exclusive"}),
    )
    .await?;
    let instances = ["solo", "web@1", "web@2"];
    let each_once = |on: &BTreeMap<String, BTreeSet<String>>| {
        instances
            .iter()
            .all(|i| on.get(*i).is_some_and(|m| m.len() == 1))
            && on.len() == instances.len()
    };
    wait_containers(&run, "every instance running once", |c| {
        c.len() == 3 && c.iter().all(|(_, _, s)| s == "running")
    })
    .await?;

    eprintln!("--- nemesis for {FAULT_PHASE:?}: crashes and partitions, one at a time");
    let ttl = Duration::from_secs(LEASE_TTL.parse()?);
    let started = Instant::now();
    let mut fault: Option<(Fault, Instant)> = None;
    let mut next_change = Instant::now() + Duration::from_secs(2);
    let mut quiet_since = Instant::now();
    let mut faults = Vec::new();
    let mut seen_on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut twice_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest_twice = Duration::ZERO;
    let mut samples = 0usize;
    loop {
        let now = Instant::now();
        if now >= next_change {
            match fault.take() {
                Some((f, _)) => {
                    match f {
                        Fault::Crash(i) => agents[i].spawn()?,
                        Fault::Partition(i) => proxies[i].heal(),
                    }
                    eprintln!("    {:>5.1}s end {f:?}", started.elapsed().as_secs_f64());
                    quiet_since = now;
                    next_change = now + Duration::from_millis(rng.gen_range(2000..4000));
                }
                None if now - started < FAULT_PHASE => {
                    let i = rng.gen_range(0..agents.len());
                    let f = if rng.gen_bool(0.5) {
                        agents[i].kill();
                        kill_containers(&agents[i].id)?;
                        Fault::Crash(i)
                    } else {
                        proxies[i].cut();
                        Fault::Partition(i)
                    };
                    eprintln!("    {:>5.1}s {f:?}", started.elapsed().as_secs_f64());
                    faults.push(f);
                    fault = Some((f, now));
                    next_change = now + Duration::from_millis(rng.gen_range(2000..8000));
                }
                None => break,
            }
        }
        let on = running_on(&run)?;
        samples += 1;
        let solo = on.get("solo").map_or(0, BTreeSet::len);
        ensure!(
            solo <= 1,
            "seed {seed}: the exclusive unit runs on {:?} at once",
            on.get("solo")
        );
        for (instance, machines) in &on {
            seen_on
                .entry(instance.clone())
                .or_default()
                .extend(machines.iter().cloned());
            if machines.len() > 1 {
                let since = *twice_since.entry(instance.clone()).or_insert(now);
                // Twice is allowed while a fault lasts and for a grace after it.
                let allowed_from = if fault.is_some() {
                    now
                } else {
                    since.max(quiet_since)
                };
                let lasting = now.saturating_duration_since(allowed_from);
                longest_twice = longest_twice.max(lasting);
                ensure!(
                    lasting <= ttl + SLACK,
                    "seed {seed}: {instance} runs on {machines:?} {lasting:?} after the \
                     fault ended (faults so far {faults:?})"
                );
            } else {
                twice_since.remove(instance);
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }

    eprintln!("--- faults over: every instance must end running exactly once");
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let on = running_on(&run)?;
        if each_once(&on) {
            break on;
        }
        ensure!(
            Instant::now() < deadline,
            "seed {seed}: not converged to one copy each: {on:?}\n{}",
            agents
                .iter()
                .map(|a| format!("--- {}:\n{}", a.id, a.log_tail(20)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let moved = seen_on.values().filter(|m| m.len() > 1).count();
    eprintln!(
        "    {} faults, {samples} samples, {moved} instances moved, longest duplicate after a \
         fault {longest_twice:?}; now {last:?}",
        faults.len()
    );
    ensure!(
        faults.len() >= 4 && moved >= 1,
        "seed {seed}: the run proved nothing ({} faults, {moved} moves)",
        faults.len()
    );
    destroy_all(&base, &run, &["web", "solo"]).await?;
    drop(agents);
    remove_containers(&run);
    Ok(())
}
