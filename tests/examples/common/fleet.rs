//! Simulated machines for the one-member benchmarks (`placement-bench`,
//! `dashboard-bench`): machine records written with a lease TTL
//! (`PUT /v2/keys/_shoal/machines/<id>?ttl=30`, no Docker) and renewed the way
//! `shoal-agent` does, the units they run, and the placements read back.
//! Included with `#[path = "common/fleet.rs"] mod fleet;`.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use api::client::{GetOptions, SetOptions};
use api::fleet::{Assignment, Machine, Unit, MACHINES_DIR, PLACEMENTS_DIR};
use api::Client;
use futures::stream::{self, StreamExt as _};
use tokio::time::Instant;

/// etcd's "key not found" error code.
const KEY_NOT_FOUND: u32 = 100;
/// Lease TTL of a simulated machine, in seconds.
pub const LEASE_TTL: u64 = 30;
/// How often the simulated machines renew their leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Requests in flight while registering, renewing or deleting machines.
pub const WRITE_CONCURRENCY: usize = 32;
/// The simulated machine number `i`.
pub fn machine(i: usize) -> Machine {
    let mut metadata = BTreeMap::new();
    metadata.insert("zone".to_owned(), format!("z{}", i % 5));
    let disk = if (i / 5) % 2 == 1 { "hdd" } else { "ssd" };
    metadata.insert("disk".to_owned(), disk.to_owned());
    metadata.insert("rack".to_owned(), format!("r{}", i % 40));
    Machine {
        id: machine_id(i),
        hostname: format!("sim-{i:04}"),
        addresses: vec![format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)],
        metadata,
        cpu_millis: 16_000,
        memory_mb: 65_536,
        docker_version: "simulated".into(),
        ..Machine::default()
    }
}

/// The id of simulated machine number `i`.
pub fn machine_id(i: usize) -> String {
    format!("sim{i:04}")
}

/// A unit that asks for 100m CPU and 128 MiB (`sleep 3600` in a busybox image).
pub fn base_unit(name: String) -> Unit {
    Unit {
        command: vec!["sleep".into(), "3600".into()],
        restart: api::fleet::RestartPolicy::Always,
        cpu_millis: 100,
        memory_mb: 128,
        ..Unit::new(name, "shoal-test/busybox")
    }
}

/// One placement as read back: machine and modified index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The machine's id.
    pub machine: String,
    /// The placement's modified index.
    pub index: u64,
}

/// Every key under a fleet directory, by base name (empty when the directory does not exist).
pub async fn list_dir(client: &Client, dir: &str) -> Result<Vec<(String, String, u64)>> {
    let opts = GetOptions {
        recursive: true,
        ..GetOptions::default()
    };
    let answer = match client.get(dir, opts).await {
        Ok(a) => a,
        Err(e) if e.etcd_code() == Some(KEY_NOT_FOUND) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("GET {dir}?recursive=true")),
    };
    let nodes = answer.body.node.nodes.unwrap_or_default();
    Ok(nodes
        .into_iter()
        .filter(|n| !n.dir)
        .filter_map(|n| {
            let key = n.key?;
            let base = key.rsplit('/').next().unwrap_or_default().to_owned();
            Some((base, n.value.unwrap_or_default(), n.modified_index))
        })
        .collect())
}

/// Every placement, by instance.
pub async fn placements(client: &Client) -> Result<BTreeMap<String, Placed>> {
    let mut out = BTreeMap::new();
    for (instance, value, index) in list_dir(client, PLACEMENTS_DIR).await? {
        let a: Assignment = serde_json::from_str(&value)
            .with_context(|| format!("placement {instance} is not an assignment: {value}"))?;
        out.insert(
            instance,
            Placed {
                machine: a.machine_id,
                index,
            },
        );
    }
    Ok(out)
}

/// Writes every machine record with a TTL; returns how many writes failed.
pub async fn register(client: &Client, machines: &[Machine]) -> Result<usize> {
    let results: Vec<Result<()>> = stream::iter(machines)
        .map(|m| async move {
            let value = serde_json::to_string(m).context("encode a machine")?;
            let opts = SetOptions {
                ttl: Some(LEASE_TTL),
                ..SetOptions::default()
            };
            client
                .set(&format!("{MACHINES_DIR}/{}", m.id), &value, opts)
                .await
                .with_context(|| format!("register {}", m.id))?;
            Ok(())
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut failed = 0;
    for r in results {
        if let Err(e) = r {
            failed += 1;
            if failed <= 3 {
                eprintln!("bench: {e:#}");
            }
        }
    }
    Ok(failed)
}

/// What the renewer saw.
#[derive(Debug, Default)]
pub struct RenewStats {
    /// Rounds done.
    pub rounds: AtomicU64,
    /// Renewals that failed.
    pub failures: AtomicU64,
    /// Slowest round, in milliseconds.
    pub slowest_ms: AtomicU64,
}

/// Renews every machine not in `dead` every [`RENEW_EVERY`], as the agent does:
/// `refresh=true&prevExist=true`, registering again only if the key is gone
/// and the machine is still meant to be alive.
pub async fn renew_forever(
    client: Client,
    machines: Arc<Vec<Machine>>,
    dead: Arc<Mutex<HashSet<String>>>,
    stats: Arc<RenewStats>,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + RENEW_EVERY, RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let alive: Vec<usize> = {
            let dead = dead
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (0..machines.len())
                .filter(|i| !dead.contains(&machines[*i].id))
                .collect()
        };
        let failures: usize = stream::iter(alive)
            .map(|i| {
                let (client, machines, dead) =
                    (client.clone(), Arc::clone(&machines), Arc::clone(&dead));
                async move { usize::from(renew_one(&client, &machines[i], &dead).await.is_err()) }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .fold(0, |acc, f| async move { acc + f })
            .await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        stats.failures.fetch_add(failures as u64, Ordering::Relaxed);
        stats.slowest_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// Renews (or re-registers) one machine's lease.
async fn renew_one(client: &Client, m: &Machine, dead: &Mutex<HashSet<String>>) -> Result<()> {
    let key = format!("{MACHINES_DIR}/{}", m.id);
    let opts = SetOptions {
        ttl: Some(LEASE_TTL),
        prev_exist: Some(true),
        refresh: true,
        ..SetOptions::default()
    };
    match client.set(&key, "", opts).await {
        Ok(_) => Ok(()),
        Err(e) if e.etcd_code() == Some(KEY_NOT_FOUND) => {
            let is_dead = dead
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&m.id);
            if is_dead {
                return Ok(());
            }
            let value = serde_json::to_string(m).context("encode a machine")?;
            let opts = SetOptions {
                ttl: Some(LEASE_TTL),
                ..SetOptions::default()
            };
            client.set(&key, &value, opts).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Aborts a background task when dropped, however the caller ends.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
