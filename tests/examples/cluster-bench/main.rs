//! Cluster benchmarks against real 3-member clusters on loopback:
//!
//! - `--mode watch`: watch fan-out. Long-poll watchers on one member of a
//!   Shoal cluster, then event-stream (SSE) subscribers, then both at once,
//!   then the same long-poll watchers on an etcd 3.4 cluster (`--enable-v2`);
//!   a writer changes the watched key `--writes` times; p50/p99/max from the
//!   start of a write to its arrival at each watcher (see `watch.rs`).
//! - `--mode recovery`: a follower with a wiped data dir rejoins a cluster
//!   holding `--keys` keys and catches up (see `recovery.rs`), Shoal then etcd.
//!
//! Both systems get the same `--heartbeat-interval` and `--election-timeout`.
//! Prints a markdown table and, with `--json PATH`, writes the figures as JSON
//! for `bench/report.sh`. Every wait is bounded, the whole run by `--timeout`;
//! every member is SIGKILLed on exit. Run it with `bench/watch.sh` or
//! `bench/recovery.sh`, or `cargo run --release -p tests --example cluster-bench -- --help`.

#[path = "../common/cli.rs"]
mod cli;
mod cluster;
mod recovery;
mod watch;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{ArgAction, Parser};
use serde::Serialize;

use cluster::{Cluster, System};
use recovery::{RecoveryOpts, RecoveryResult};
use watch::{Latency, RoundResult, WatchOpts};

/// Watch fan-out and recovery against real 3-member clusters.
#[derive(Parser)]
#[command(name = "cluster-bench", args_override_self = true)]
struct Opts {
    /// Which benchmark.
    #[arg(long, default_value = "watch", value_parser = ["watch", "recovery"])]
    mode: String,
    /// The shoal-server binary.
    #[arg(long, value_name = "PATH", default_value_os_t = cli::release_server())]
    shoal: PathBuf,
    /// The etcd binary, looked up on PATH.
    #[arg(long, value_name = "PATH", default_value = "etcd", value_parser = on_path)]
    etcd: PathBuf,
    /// The systems to run, comma-separated: shoal, etcd.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "shoal,etcd",
        value_parser = system,
        action = ArgAction::Set
    )]
    systems: Vec<System>,
    /// The --heartbeat-interval of every member, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    heartbeat_ms: u64,
    /// The --election-timeout of every member, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    election_ms: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Bound on the whole run, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "1800",
        value_parser = cli::duration(Duration::from_secs)
    )]
    timeout: Duration,
    /// Keep the run dir (data dirs and member logs).
    #[arg(long)]
    keep: bool,
    /// The watch round's sizes.
    #[command(flatten, next_help_heading = "Watch")]
    watch: WatchOpts,
    /// The recovery load.
    #[command(flatten, next_help_heading = "Recovery")]
    recovery: RecoveryOpts,
    /// Shoal's --snapshot-count (default: the server's, 10000).
    #[arg(long, value_name = "N", help_heading = "Recovery")]
    snapshot_count: Option<u64>,
}

/// `name` found on `PATH`, or `name` itself: the `--etcd` parser, which never fails.
fn on_path(name: &str) -> Result<PathBuf, Infallible> {
    Ok(std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name)))
}

/// One entry of `--systems`.
fn system(name: &str) -> Result<System> {
    match name.trim() {
        "shoal" => Ok(System::Shoal),
        "etcd" => Ok(System::Etcd),
        other => bail!("unknown system {other:?}"),
    }
}

/// The options on the command line, checked where clap cannot.
fn parse_opts() -> Result<Opts> {
    let opts = Opts::parse();
    if opts.watch.writes == 0 || opts.watch.sources == 0 {
        bail!("--writes and --sources must be at least 1");
    }
    Ok(opts)
}

/// Everything `--json` writes.
#[derive(Serialize)]
struct Report<'a> {
    mode: &'a str,
    heartbeat_ms: u64,
    election_ms: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    watch: Vec<RoundResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    recovery: Vec<RecoveryResult>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let opts = parse_opts()?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("shoal-{}.", opts.mode))
        .tempdir()
        .context("create the run dir")?;
    eprintln!("cluster-bench: run dir {}", dir.path().display());
    let run = tokio::time::timeout(opts.timeout, bench(&opts, dir.path())).await;
    if opts.keep {
        eprintln!("cluster-bench: kept {}", dir.keep().display());
    }
    let report = run.map_err(|_| anyhow::anyhow!("timed out after {:?}", opts.timeout))??;
    let table = if opts.mode == "recovery" {
        recovery_table(&report.recovery, &opts)
    } else {
        watch_table(&report.watch, &opts)
    };
    print!("{table}");
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&report).context("encode JSON")?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The flags every member of `system` gets: the same timing on both systems.
fn member_flags(opts: &Opts, system: System) -> Vec<String> {
    let mut flags = vec![
        "--heartbeat-interval".into(),
        opts.heartbeat_ms.to_string(),
        "--election-timeout".into(),
        opts.election_ms.to_string(),
    ];
    if let (Some(n), System::Shoal) = (opts.snapshot_count, system) {
        flags.extend(["--snapshot-count".into(), n.to_string()]);
    }
    flags
}

/// Starts a cluster of `system` in a fresh subdirectory `tag` of `dir`.
async fn start(
    opts: &Opts,
    system: System,
    dir: &Path,
    tag: &str,
    http: &reqwest::Client,
) -> Result<(Cluster, usize)> {
    let sub = dir.join(tag);
    std::fs::create_dir_all(&sub).with_context(|| format!("create {}", sub.display()))?;
    let bin = match system {
        System::Shoal => &opts.shoal,
        System::Etcd => &opts.etcd,
    };
    let mut cluster = Cluster::start(system, bin, 3, &sub, &member_flags(opts, system))?;
    let leader = cluster.wait_ready(http, Duration::from_secs(30)).await?;
    Ok((cluster, leader))
}

async fn bench<'a>(opts: &'a Opts, dir: &Path) -> Result<Report<'a>> {
    let http = reqwest::Client::builder()
        .http1_only()
        .build()
        .context("build an HTTP client")?;
    let mut report = Report {
        mode: &opts.mode,
        heartbeat_ms: opts.heartbeat_ms,
        election_ms: opts.election_ms,
        watch: Vec::new(),
        recovery: Vec::new(),
    };
    if opts.mode == "recovery" {
        for &system in &opts.systems {
            let tag = format!("recovery-{}", system.label());
            let (mut cluster, leader) = start(opts, system, dir, &tag, &http).await?;
            let r = recovery::run(&mut cluster, leader, &opts.recovery, &http).await?;
            report.recovery.push(r);
        }
        return Ok(report);
    }
    let w = &opts.watch;
    let mut rounds = Vec::new();
    for &system in &opts.systems {
        if w.longpoll > 0 {
            rounds.push((system, w.longpoll, 0));
        }
        if system == System::Shoal && w.sse > 0 {
            rounds.push((system, 0, w.sse));
            if w.longpoll > 0 {
                rounds.push((system, w.longpoll, w.sse));
            }
        }
    }
    for (n, (system, longpoll, sse)) in rounds.into_iter().enumerate() {
        let tag = format!("round{n}-{}", system.label());
        eprintln!(
            "watch-bench: round {n}: {} with {longpoll} long-poll and {sse} SSE watchers",
            system.label()
        );
        let (cluster, leader) = start(opts, system, dir, &tag, &http).await?;
        let round_opts = WatchOpts {
            longpoll,
            sse,
            ..w.clone()
        };
        report
            .watch
            .push(watch::round(&cluster, leader, &round_opts, &http).await?);
    }
    Ok(report)
}

fn ms(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.1} ms"))
}

fn watch_table(rounds: &[RoundResult], opts: &Opts) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| system | watchers | kind | delivered / expected | p50 | p99 | max | errors | all connected after | member RSS |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    let mut row = |r: &RoundResult, kind: &str, l: &Latency| {
        let _ = writeln!(
            t,
            "| {} | {} | {kind} | {} / {} | {} | {} | {} | {} | {:.1} s | {:.0} MiB |",
            r.system,
            watchers_label(r),
            l.delivered,
            l.expected,
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.max_ms),
            l.errors,
            r.connect_secs,
            r.member_rss_mib,
        );
    };
    for r in rounds {
        if r.longpoll > 0 {
            row(r, "long-poll", &r.longpoll_latency);
        }
        if r.sse > 0 {
            row(r, "SSE", &r.sse_latency);
        }
    }
    let _ = writeln!(
        t,
        "\n{} writes per round, one every time all watchers wait again; watchers on the {}; \
         latency from the start of the PUT to the watcher's receipt of the event; heartbeat {} ms, \
         election timeout {} ms on both systems.",
        opts.watch.writes,
        if opts.watch.on_leader {
            "leader"
        } else {
            "a follower"
        },
        opts.heartbeat_ms,
        opts.election_ms
    );
    let unready: usize = rounds.iter().map(|r| r.unready_writes).sum();
    if unready > 0 {
        let _ = writeln!(
            t,
            "\n{unready} writes went out before every watcher waited again (15 s limit)."
        );
    }
    t
}

fn watchers_label(r: &RoundResult) -> String {
    match (r.longpoll, r.sse) {
        (l, 0) => format!("{l}"),
        (0, s) => format!("{s}"),
        (l, s) => format!("{l} + {s} at once"),
    }
}

/// A recovery table row: its label and how to render a system's cell.
type Row = (&'static str, Box<dyn Fn(&RecoveryResult) -> String>);

fn recovery_table(results: &[RecoveryResult], opts: &Opts) -> String {
    let secs = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.2} s"));
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let catch_up = opts.recovery.catch_up_timeout.as_secs_f64();
    let opt = |x: Option<u64>| x.map_or("n/a".into(), |v| v.to_string());
    let rows: [Row; 12] = [
        (
            "keys loaded (failed)",
            Box::new(|r| format!("{} ({})", r.keys, r.load_failed)),
        ),
        (
            "load time, rate",
            Box::new(|r| format!("{:.1} s, {:.0} keys/s", r.load_secs, r.load_rate)),
        ),
        (
            "leader etcd index",
            Box::new(|r| r.leader_index.to_string()),
        ),
        (
            "leader snapshot index",
            Box::new(move |r| opt(r.leader_snapshot_index)),
        ),
        (
            "leader's latest snapshot",
            Box::new(move |r| r.snapshot_bytes.map_or("none".into(), mib)),
        ),
        (
            "restart → /health true",
            Box::new(move |r| secs(r.healthy_secs)),
        ),
        (
            "restart → snapshot installed",
            Box::new(move |r| secs(r.snapshot_installed_secs)),
        ),
        (
            "**restart → caught up** (index equal, last key read)",
            Box::new(move |r| {
                let s = r
                    .caught_up_secs
                    .map_or(format!("not within {}", secs(Some(catch_up))), |v| {
                        secs(Some(v))
                    });
                format!("**{s}**")
            }),
        ),
        (
            "recovered member's raft applied index at the end",
            Box::new(move |r| opt(r.member_applied)),
        ),
        (
            "keys on leader / recovered member (stats/store)",
            Box::new(move |r| format!("{} / {}", opt(r.leader_keys), opt(r.member_keys))),
        ),
        (
            "RSS leader / recovered member",
            Box::new(|r| format!("{:.0} MiB / {:.0} MiB", r.leader_rss_mib, r.member_rss_mib)),
        ),
        (
            "recovered member's data dir",
            Box::new(move |r| mib(r.member_data_bytes)),
        ),
    ];
    let mut t = String::from("| metric |");
    for r in results {
        let _ = write!(t, " {} |", r.system);
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(results.len()));
    t.push('\n');
    for (label, cell) in &rows {
        let _ = write!(t, "| {label} |");
        for r in results {
            let _ = write!(t, " {} |", cell(r));
        }
        t.push('\n');
    }
    let _ = writeln!(
        t,
        "\n{} PUTs in flight while loading, {}-byte values, 1,000 keys per directory; heartbeat {} ms, \
         election timeout {} ms on both systems. The wiped member is removed, added again \
         (`/v2/members`) and started with `--initial-cluster-state existing`; the clock starts \
         at the removal.",
        opts.recovery.concurrency, opts.recovery.value_bytes, opts.heartbeat_ms, opts.election_ms
    );
    t
}
