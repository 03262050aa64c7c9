//! Watch fan-out: many long-poll watchers (`GET /v2/keys/<key>?wait=true`) and
//! server-sent-event subscribers (`GET /api/v1/events`, Shoal only) on one
//! member, a writer that changes the key a fixed number of times, and the time
//! from the start of each write to its delivery at every watcher.
//!
//! Before each write the writer waits until the member's `/v2/stats/store`
//! counts every watcher as waiting again (both Shoal and etcd report
//! `watchers`), so a delivery is never a late re-read of the history. Long-poll
//! watchers pass `waitIndex`, so none can miss a write either way.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{ArgAction, Args};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cluster::{get_json, put_value, Cluster, System};

/// The key every watcher watches; under `/_shoal` so the event stream carries it.
pub const KEY: &str = "/_shoal/bench/watch";
/// Watchers started before a short pause, so the listen backlog keeps up.
const SPAWN_BATCH: usize = 500;
/// The pause between spawn batches.
const SPAWN_PAUSE: Duration = Duration::from_millis(20);
/// Longest wait for every watcher to (re)connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for one write to reach every watcher.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for the watcher tasks to finish after the last write.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What one round runs; the command line gives the largest round's.
#[derive(Debug, Clone, Args)]
pub struct WatchOpts {
    /// Long-poll watchers.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub longpoll: usize,
    /// Event-stream subscribers (Shoal only).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub sse: usize,
    /// Writes the writer makes to the watched key.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub writes: usize,
    /// Loopback source addresses the watchers spread over (127.0.0.1 to 127.0.0.N).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub sources: u8,
    /// Where the watchers connect: the leader or a follower (writes always go to the leader).
    #[arg(
        long = "watch-on",
        value_name = "MEMBER",
        default_value = "leader",
        value_parser = PossibleValuesParser::new(["leader", "follower"]).map(|on| on == "leader"),
        action = ArgAction::Set
    )]
    pub on_leader: bool,
}

/// Delivery latencies of one kind of watcher.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Deliveries seen.
    pub delivered: usize,
    /// Deliveries expected (watchers x writes).
    pub expected: usize,
    /// Requests or streams that failed.
    pub errors: usize,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Slowest, ms.
    pub max_ms: Option<f64>,
}

/// One round's figures.
#[derive(Debug, Serialize)]
pub struct RoundResult {
    /// `shoal` or `etcd`.
    pub system: &'static str,
    /// Long-poll watchers.
    pub longpoll: usize,
    /// Event-stream subscribers.
    pub sse: usize,
    /// Writes made.
    pub writes: usize,
    /// Seconds until the member counted every watcher.
    pub connect_secs: f64,
    /// Long-poll deliveries.
    pub longpoll_latency: Latency,
    /// Event-stream deliveries.
    pub sse_latency: Latency,
    /// Median latency of the writes themselves, ms.
    pub put_p50_ms: Option<f64>,
    /// Writes after which not every watcher was waiting again in time.
    pub unready_writes: usize,
    /// Resident set of the watched member with every watcher connected, MiB.
    pub member_rss_mib: f64,
}

/// What a watcher task hands back: (etcd index, arrival) per delivery, and errors.
type Seen = (Vec<(u64, Instant)>, usize);

/// Percentile `p` (0..=1) of sorted `xs`, nearest rank.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let rank = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    Some(xs[rank - 1])
}

/// The member's `watchers` count from `/v2/stats/store`.
async fn watchers(http: &reqwest::Client, url: &str) -> Result<usize> {
    let st = get_json(http, &format!("{url}/v2/stats/store")).await?;
    st["watchers"]
        .as_u64()
        .map(|n| n as usize)
        .with_context(|| format!("no watchers in stats/store: {st}"))
}

/// Polls `watchers` until it reaches `target`; false on timeout.
async fn wait_watchers(
    http: &reqwest::Client,
    url: &str,
    target: usize,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(watchers(http, url).await, Ok(n) if n >= target) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// One long-poll watcher: re-arms after every delivery with `waitIndex`.
async fn longpoll(
    http: reqwest::Client,
    url: String,
    first: u64,
    writes: usize,
    delivered: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let (mut next, mut seen, mut errors) = (first, Vec::with_capacity(writes), 0);
    while seen.len() < writes && !*stop.borrow() {
        let ask = async {
            let resp = http
                .get(format!("{url}?wait=true&waitIndex={next}"))
                .send()
                .await?;
            let ok = resp.status().is_success();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((ok, body, Instant::now()))
        };
        let answer = tokio::select! {
            a = ask => a,
            _ = stop.changed() => break,
        };
        let index = match &answer {
            Ok((true, body, _)) => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["node"]["modifiedIndex"].as_u64()),
            _ => None,
        };
        match (index, answer) {
            (Some(index), Ok((_, _, at))) => {
                seen.push((index, at));
                next = index + 1;
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (seen, errors)
}

/// One event-stream subscriber: records every event for [`KEY`].
async fn sse(
    http: reqwest::Client,
    url: String,
    writes: usize,
    delivered: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Vec::with_capacity(writes);
    let open = tokio::select! {
        r = http.get(&url).header("accept", "text/event-stream").send() => r,
        _ = stop.changed() => return (seen, 0),
    };
    let mut resp = match open {
        Ok(r) if r.status().is_success() => r,
        _ => return (seen, 1),
    };
    let mut buf: Vec<u8> = Vec::new();
    while seen.len() < writes {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.changed() => break,
        };
        let at = Instant::now();
        let Ok(Some(bytes)) = chunk else {
            return (seen, 1);
        };
        buf.extend_from_slice(&bytes);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&block).lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if event["key"] == KEY {
                    if let Some(index) = event["index"].as_u64() {
                        seen.push((index, at));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    (seen, 0)
}

/// One HTTP/1 client per loopback source address, each with an unbounded pool.
fn clients(sources: u8) -> Result<Vec<reqwest::Client>> {
    (1..=sources.max(1))
        .map(|i| {
            reqwest::Client::builder()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .http1_only()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(usize::MAX)
                .build()
                .context("build an HTTP client")
        })
        .collect()
}

/// Latency figures of `seen` against the write start times.
fn latency(seen: &[Seen], starts: &HashMap<u64, Instant>, expected: usize) -> Latency {
    let mut ms: Vec<f64> = seen
        .iter()
        .flat_map(|(d, _)| d.iter())
        .filter_map(|(index, at)| starts.get(index).map(|t0| (*at - *t0).as_secs_f64() * 1e3))
        .collect();
    ms.sort_by(f64::total_cmp);
    Latency {
        delivered: ms.len(),
        expected,
        errors: seen.iter().map(|(_, e)| e).sum(),
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied(),
    }
}

/// Runs one round against a ready `cluster` whose leader is `leader`.
pub async fn round(
    cluster: &Cluster,
    leader: usize,
    opts: &WatchOpts,
    http: &reqwest::Client,
) -> Result<RoundResult> {
    let sse_count = if cluster.system == System::Shoal {
        opts.sse
    } else {
        0
    };
    let watched = if opts.on_leader {
        leader
    } else {
        (leader + 1) % cluster.members.len()
    };
    let member = &cluster.members[watched];
    let watch_url = member.client_url.clone();
    let key_url = format!("{watch_url}/v2/keys{KEY}");
    let write_url = format!("{}/v2/keys{KEY}", cluster.members[leader].client_url);
    let first = put_value(http, &write_url, "w0").await? + 1;
    let baseline = watchers(http, &watch_url).await?;
    let target = baseline + opts.longpoll + sse_count;

    let delivered = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let pool = clients(opts.sources)?;
    let (mut lp_tasks, mut sse_tasks) = (JoinSet::new(), JoinSet::new());
    let started = Instant::now();
    for i in 0..opts.longpoll.max(sse_count) {
        let client = pool[i % pool.len()].clone();
        if i < opts.longpoll {
            lp_tasks.spawn(longpoll(
                client.clone(),
                key_url.clone(),
                first,
                opts.writes,
                delivered.clone(),
                stop_rx.clone(),
            ));
        }
        if i < sse_count {
            sse_tasks.spawn(sse(
                client,
                format!("{watch_url}/api/v1/events"),
                opts.writes,
                delivered.clone(),
                stop_rx.clone(),
            ));
        }
        if (i + 1) % SPAWN_BATCH == 0 {
            tokio::time::sleep(SPAWN_PAUSE).await;
        }
    }
    let connected = wait_watchers(http, &watch_url, target, CONNECT_TIMEOUT).await;
    let connect_secs = started.elapsed().as_secs_f64();
    if !connected {
        eprintln!(
            "watch-bench: only {} of {target} watchers connected in {CONNECT_TIMEOUT:?}",
            watchers(http, &watch_url).await.unwrap_or(0)
        );
    }

    let per_write = opts.longpoll + sse_count;
    let mut starts = HashMap::new();
    let mut put_ms = Vec::with_capacity(opts.writes);
    let mut unready = 0;
    for k in 1..=opts.writes {
        if k > 1 && !wait_watchers(http, &watch_url, target, DELIVERY_TIMEOUT).await {
            unready += 1;
        }
        let t0 = Instant::now();
        let index = put_value(http, &write_url, &format!("w{k}")).await?;
        put_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        starts.insert(index, t0);
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while delivered.load(Ordering::Relaxed) < k * per_write && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "watch-bench: {} write {k}/{}: {} deliveries so far",
            cluster.system.label(),
            opts.writes,
            delivered.load(Ordering::Relaxed)
        );
    }
    let member_rss_mib = member.rss_kb() as f64 / 1024.0;
    let _ = stop_tx.send(true);
    let collect = |mut set: JoinSet<Seen>| async move {
        let mut out = Vec::new();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(r) = set.join_next().await {
                if let Ok(seen) = r {
                    out.push(seen);
                }
            }
        })
        .await;
        if drained.is_err() {
            set.abort_all();
        }
        out
    };
    let lp_seen = collect(lp_tasks).await;
    let sse_seen = collect(sse_tasks).await;
    put_ms.sort_by(f64::total_cmp);
    Ok(RoundResult {
        system: cluster.system.label(),
        longpoll: opts.longpoll,
        sse: sse_count,
        writes: opts.writes,
        connect_secs,
        longpoll_latency: latency(&lp_seen, &starts, opts.longpoll * opts.writes),
        sse_latency: latency(&sse_seen, &starts, sse_count * opts.writes),
        put_p50_ms: percentile(&put_ms, 0.5),
        unready_writes: unready,
        member_rss_mib,
    })
}
