//! Recovery: load a 3-member cluster with many keys (concurrent PUTs; the v2
//! API writes one key per request), SIGKILL a follower, wipe its data dir,
//! start it again with `--initial-cluster-state existing` and time until it
//! has caught up: its `X-Etcd-Index` equals the leader's and a plain (local)
//! read of the last key written answers on it.
//!
//! Both systems go through the documented replacement of a member that lost
//! its data: `DELETE /v2/members/<id>`, `POST /v2/members` with the same peer
//! URL, then the start; the clock starts at the removal. (Restarting a wiped
//! member that is still listed does not work on either: etcd panics,
//! "tocommit is out of range"; Shoal's leader keeps failing to replicate to it.)
//! The log is compacted by then, so catching up means installing a snapshot.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use futures::stream::{self, StreamExt as _};
use serde::Serialize;
use tokio::time::Instant;

use crate::cli;
use crate::cluster::{get_json, is_healthy, put_value, Cluster, System};

/// The key written after the load, read on the recovered member.
const LAST_KEY: &str = "/recovery/last";
/// Keys per directory of the loaded tree.
const PER_DIR: usize = 1000;
/// Tries per key before the load counts it as failed.
const TRIES: usize = 3;
/// Failed keys whose last error the load prints.
const MAX_REPORTED: usize = 5;
/// How often catch-up is polled.
const POLL: Duration = Duration::from_millis(50);

/// How big the load is.
#[derive(Debug, Clone, Args)]
pub struct RecoveryOpts {
    /// Keys to load.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub keys: usize,
    /// PUTs in flight during the load.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub concurrency: usize,
    /// Bytes per value.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub value_bytes: usize,
    /// Longest wait for the wiped member to catch up, in seconds.
    #[arg(
        long = "catch-up-secs",
        value_name = "SECS",
        default_value = "600",
        value_parser = cli::duration(Duration::from_secs)
    )]
    pub catch_up_timeout: Duration,
}

/// The figures.
#[derive(Debug, Default, Serialize)]
pub struct RecoveryResult {
    /// `shoal` or `etcd`.
    pub system: &'static str,
    /// Keys loaded.
    pub keys: usize,
    /// Keys whose PUT failed every try.
    pub load_failed: usize,
    /// Seconds the load took.
    pub load_secs: f64,
    /// Keys per second during the load.
    pub load_rate: f64,
    /// The leader's etcd index after the load.
    pub leader_index: u64,
    /// Size of the leader's latest snapshot (Shoal: in state.db; etcd: the newest .snap file), bytes.
    pub snapshot_bytes: Option<u64>,
    /// Seconds from restart until the wiped member answers `/health` true.
    pub healthy_secs: Option<f64>,
    /// Seconds from restart until the wiped member reports an installed snapshot.
    pub snapshot_installed_secs: Option<f64>,
    /// Seconds from restart until it has caught up (index equal, last key read).
    pub caught_up_secs: Option<f64>,
    /// The leader's snapshot index after the load (`/v2/stats/self`, Shoal only).
    pub leader_snapshot_index: Option<u64>,
    /// Keys the leader counts (`/v2/stats/store`, Shoal only).
    pub leader_keys: Option<u64>,
    /// Keys the recovered member counts.
    pub member_keys: Option<u64>,
    /// Resident set of the leader after the load, MiB.
    pub leader_rss_mib: f64,
    /// Resident set of the recovered member once caught up, MiB.
    pub member_rss_mib: f64,
    /// Size of the recovered member's data dir at the end, bytes.
    pub member_data_bytes: u64,
    /// The recovered member's raft applied index at the end (`/v2/stats/self`).
    pub member_applied: Option<u64>,
}

/// Path of key `i` of the load: 1,000 keys per directory.
fn key_path(i: usize) -> String {
    format!("/recovery/d{:04}/k{i:07}", i / PER_DIR)
}

/// PUTs `opts.keys` keys through `url`; returns how many failed every try.
async fn load(http: &reqwest::Client, url: &str, opts: &RecoveryOpts) -> usize {
    let value = "v".repeat(opts.value_bytes);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let step = (opts.keys / 10).max(1);
    let started = Instant::now();
    stream::iter(0..opts.keys)
        .map(|i| {
            let (value, done, failed) = (&value, &done, &failed);
            async move {
                let target = format!("{url}/v2/keys{}", key_path(i));
                let mut last_error = None;
                for _ in 0..TRIES {
                    let put = put_value(http, &target, value).await;
                    if let Err(e) = put {
                        last_error = Some(e);
                    } else {
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n % step == 0 {
                            eprintln!(
                                "recovery-bench: {n} keys loaded in {:.1} s",
                                started.elapsed().as_secs_f64()
                            );
                        }
                        return 0;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The first few failures say why.
                if failed.fetch_add(1, Ordering::Relaxed) < MAX_REPORTED {
                    if let Some(e) = last_error {
                        eprintln!("recovery-bench: {TRIES} tries failed, the last: {e:#}");
                    }
                }
                1
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .fold(0, |failed, f| async move { failed + f })
        .await
}

/// Size of the latest snapshot in the data dir `dir` of a `system` member.
fn snapshot_bytes(system: System, dir: &Path) -> Option<u64> {
    if system == System::Etcd {
        let snaps = std::fs::read_dir(dir.join("member/snap")).ok()?;
        return snaps
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
            .max_by_key(|e| e.file_name())
            .and_then(|e| e.metadata().ok())
            .map(|m| m.len());
    }
    // The snapshot of `dir/state.db`, through the sqlite3 CLI.
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(dir.join("state.db"))
        .arg("SELECT length(data) FROM snapshot WHERE id = 1")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The `X-Etcd-Index` and body value of a local `GET` of [`LAST_KEY`] on `url`.
async fn last_key(http: &reqwest::Client, url: &str) -> Option<(u64, String)> {
    let resp = http
        .get(format!("{url}/v2/keys{LAST_KEY}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let index = resp
        .headers()
        .get("x-etcd-index")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let body: serde_json::Value = resp.json().await.ok()?;
    Some((index, body["node"]["value"].as_str()?.to_owned()))
}

/// Keys a member counts in `/v2/stats/store`.
async fn key_count(http: &reqwest::Client, url: &str) -> Option<u64> {
    get_json(http, &format!("{url}/v2/stats/store"))
        .await
        .ok()
        .and_then(|v| v["keys"].as_u64())
}

/// Replaces member `name`: removes it and adds its peer URL again.
async fn replace_member(
    http: &reqwest::Client,
    leader_url: &str,
    name: &str,
    peer_url: &str,
) -> Result<()> {
    let list = get_json(http, &format!("{leader_url}/v2/members")).await?;
    let id = list["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .and_then(|m| m["id"].as_str())
        .with_context(|| format!("{name} not in {list}"))?
        .to_owned();
    let removed = http
        .delete(format!("{leader_url}/v2/members/{id}"))
        .send()
        .await
        .context("member remove")?;
    if !removed.status().is_success() {
        bail!("member remove answered {}", removed.status());
    }
    // etcd refuses a reconfiguration until the cluster has been healthy for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let added = http
            .post(format!("{leader_url}/v2/members"))
            .json(&serde_json::json!({ "peerURLs": [peer_url] }))
            .send()
            .await
            .context("member add")?;
        if added.status().is_success() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("member add answered {}", added.status());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the benchmark on a ready `cluster` whose leader is `leader`.
pub async fn run(
    cluster: &mut Cluster,
    leader: usize,
    opts: &RecoveryOpts,
    http: &reqwest::Client,
) -> Result<RecoveryResult> {
    let leader_url = cluster.members[leader].client_url.clone();
    eprintln!(
        "recovery-bench: loading {} keys through {leader_url}",
        opts.keys
    );
    let t0 = Instant::now();
    let load_failed = load(http, &leader_url, opts).await;
    let load_secs = t0.elapsed().as_secs_f64();
    let marker = format!("after {} keys", opts.keys);
    put_value(http, &format!("{leader_url}/v2/keys{LAST_KEY}"), &marker).await?;
    let (leader_index, _) = last_key(http, &leader_url)
        .await
        .context("the leader does not answer the last key")?;
    let system = cluster.system;
    let mut result = RecoveryResult {
        system: system.label(),
        keys: opts.keys,
        load_failed,
        load_secs,
        load_rate: opts.keys as f64 / load_secs.max(1e-9),
        leader_index,
        snapshot_bytes: snapshot_bytes(system, &cluster.members[leader].data_dir),
        leader_keys: key_count(http, &leader_url).await,
        leader_snapshot_index: get_json(http, &format!("{leader_url}/v2/stats/self"))
            .await
            .ok()
            .and_then(|v| v["snapshotIndex"].as_u64()),
        leader_rss_mib: cluster.members[leader].rss_kb() as f64 / 1024.0,
        ..RecoveryResult::default()
    };
    eprintln!("recovery-bench: loaded in {load_secs:.1} s; {result:?}");

    let wiped = (leader + 1) % cluster.members.len();
    let member = &mut cluster.members[wiped];
    member.kill();
    std::fs::remove_dir_all(&member.data_dir)
        .with_context(|| format!("wipe {}", member.data_dir.display()))?;
    let url = member.client_url.clone();
    let restarted = Instant::now();
    replace_member(http, &leader_url, &member.name, &member.peer_url).await?;
    eprintln!("recovery-bench: wiped {}, restarting it", member.name);
    member.spawn("existing")?;
    let deadline = restarted + opts.catch_up_timeout;
    loop {
        member.check_alive()?;
        let since = restarted.elapsed().as_secs_f64();
        if result.healthy_secs.is_none() && is_healthy(http, &url).await {
            result.healthy_secs = Some(since);
        }
        if result.snapshot_installed_secs.is_none() {
            let st = get_json(http, &format!("{url}/v2/stats/self")).await;
            if matches!(st, Ok(v) if v["snapshotIndex"].as_u64().unwrap_or(0) > 0) {
                result.snapshot_installed_secs = Some(since);
            }
        }
        let lead = last_key(http, &leader_url)
            .await
            .map_or(u64::MAX, |(i, _)| i);
        if let Some((index, value)) = last_key(http, &url).await {
            if index >= lead && value == marker {
                result.caught_up_secs = Some(restarted.elapsed().as_secs_f64());
                break;
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "recovery-bench: {} did not catch up in {:?}",
                member.name, opts.catch_up_timeout
            );
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    result.member_keys = key_count(http, &url).await;
    result.member_applied = get_json(http, &format!("{url}/v2/stats/self"))
        .await
        .ok()
        .and_then(|v| v["lastApplied"].as_u64());
    result.member_rss_mib = member.rss_kb() as f64 / 1024.0;
    result.member_data_bytes = dir_bytes(&member.data_dir);
    Ok(result)
}
