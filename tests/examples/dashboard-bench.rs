//! Dashboard benchmark (issue 5): the Leptos dashboard of a real `shoal-server`
//! with a large simulated fleet.
//!
//! Starts one `target/release/shoal-server` member on loopback ports, then:
//!
//! 1. registers `--machines` simulated machines and keeps their leases renewed
//!    (`common/fleet.rs`, as `placement-bench` does), submits `--instances`
//!    unit instances as units of `--replicas` replicas and waits until the
//!    engine placed them all and the placements stopped changing;
//! 2. requests the server-rendered Overview (`/`) and Topology (`/ui/topology`)
//!    `--requests` times each, one at a time, and times the first body byte
//!    and the whole page;
//! 3. loads both pages in headless Chromium (`common/chromium.rs`) `--runs`
//!    times each with an empty cache and as often with a warm one, and reads
//!    in the page when it hydrated: a script injected before the page's own
//!    (DevTools `Page.addScriptToEvaluateOnNewDocument`) records
//!    `performance.now()` when the shell's `#live` element leaves
//!    `data-state="server-rendered"`, which the app sets once hydrated;
//! 4. opens `--dashboards` event streams (`GET /api/v1/events`, the stream
//!    every dashboard page follows) and makes `--writes` key writes under
//!    `/_shoal` (`--in-flight` at a time); counts the events the streams
//!    delivered per second and the delay from each write's start to its
//!    event at every stream;
//! 5. reads the wasm package's size, raw and as served precompressed.
//!
//! Prints a markdown table with the issue's targets beside the figures. Every
//! wait has a deadline; the server and chromedriver are killed on exit. Run it
//! with `bench/dashboard.sh`, or
//! `cargo run --release -p tests --example dashboard-bench -- --help`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use api::fleet::Machine;
use api::Client;
use clap::Parser;
use fantoccini::wd::WebDriverCompatibleCommand;
use futures::stream::{self, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[path = "common/chromium.rs"]
mod chromium;
#[path = "common/cli.rs"]
mod cli;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/server.rs"]
mod server;
use chromium::{browser_tools, Chromedriver};
use fleet::{
    base_unit, machine, placements, register, renew_forever, AbortOnDrop, Placed, RenewStats,
    LEASE_TTL, RENEW_EVERY,
};
use server::{clock_ticks, free_port, proc_stats, Server};

/// The pages measured: (name, path).
const PAGES: [(&str, &str); 2] = [("Overview", "/"), ("Topology", "/ui/topology")];
/// Issue 5's target for a server-rendered page, ms.
const SSR_TARGET_MS: f64 = 50.0;
/// Issue 5's target for a hydrated page in headless Chromium, ms.
const HYDRATED_TARGET_MS: f64 = 1000.0;
/// Issue 5's target for the compressed wasm, bytes.
const WASM_TARGET_BYTES: u64 = 500 * 1000;
/// Requests in flight while submitting units.
const SUBMIT_CONCURRENCY: usize = 8;
/// How often placements are counted while the engine works.
const PLACEMENT_POLL: Duration = Duration::from_millis(500);
/// Where the writer writes: under `/_shoal`, so the event stream carries it.
const WRITE_PREFIX: &str = "/_shoal/bench/dashboard";
/// Distinct keys the writer cycles through.
const WRITE_KEYS: usize = 100;
/// Longest wait for a page to hydrate, or for the streams to connect or drain.
const WAIT: Duration = Duration::from_secs(30);
/// Set in every page before its own scripts: the moment `#live` leaves
/// `server-rendered` goes into `window.__shoalHydrated` (ms since navigation start).
const HYDRATION_PROBE_JS: &str = "
(() => {
  const hydrated = () => {
    const e = document.getElementById('live');
    return e && e.dataset.state && e.dataset.state !== 'server-rendered';
  };
  const seen = new MutationObserver(() => {
    if (window.__shoalHydrated === undefined && hydrated()) {
      window.__shoalHydrated = performance.now();
      seen.disconnect();
    }
  });
  seen.observe(document, {subtree: true, childList: true, attributes: true,
                          attributeFilter: ['data-state']});
})();";
/// What the page reports after hydration: when, and the navigation's own timings.
const PAGE_TIMES_JS: &str = "
if (window.__shoalHydrated === undefined) return null;
const nav = performance.getEntriesByType('navigation')[0];
const wasm = performance.getEntriesByType('resource').find((r) => r.name.endsWith('.wasm'));
return {
  hydrated: window.__shoalHydrated,
  first_byte: nav ? nav.responseStart : null,
  loaded: nav ? nav.loadEventEnd : null,
  wasm_transfer: wasm ? wasm.transferSize : null,
};";

/// The dashboard of a real shoal-server with a large simulated fleet.
#[derive(Debug, Clone, Parser)]
#[command(name = "dashboard-bench", args_override_self = true)]
struct Opts {
    /// The shoal-server binary.
    #[arg(long, value_name = "PATH", default_value_os_t = cli::release_server())]
    server: PathBuf,
    /// The wasm package it serves.
    #[arg(
        long,
        value_name = "PATH",
        default_value_os_t = cli::workspace_root().join("target/site/pkg")
    )]
    pkg_dir: PathBuf,
    /// Simulated machines.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    machines: usize,
    /// Unit instances, as N / --replicas units.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    instances: usize,
    /// Replicas per unit.
    #[arg(long, value_name = "N", default_value_t = 100)]
    replicas: u32,
    /// Server-rendered requests per page.
    #[arg(long, value_name = "N", default_value_t = 20)]
    requests: usize,
    /// Chromium loads per page, cold cache and warm cache each.
    #[arg(long, value_name = "N", default_value_t = 5)]
    runs: usize,
    /// Event-stream subscribers.
    #[arg(long, value_name = "N", default_value_t = 100)]
    dashboards: usize,
    /// Key writes while they listen.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    writes: usize,
    /// Writes in flight.
    #[arg(long, value_name = "N", default_value_t = 16)]
    in_flight: usize,
    /// Deadline for the whole run, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "900",
        value_parser = cli::duration(Duration::from_secs)
    )]
    timeout: Duration,
    /// Keep the server's data dir (its log is always kept).
    #[arg(long)]
    keep: bool,
}

/// The options on the command line, checked where clap cannot.
fn parse_opts() -> Result<Opts> {
    let opts = Opts::parse();
    ensure!(opts.machines > 0, "need at least one machine");
    ensure!(
        opts.replicas > 0 && opts.instances.is_multiple_of(opts.replicas as usize),
        "--instances must be a multiple of --replicas"
    );
    ensure!(
        opts.requests > 0 && opts.runs > 0 && opts.dashboards > 0 && opts.writes > 0,
        "--requests, --runs, --dashboards and --writes must be at least 1"
    );
    ensure!(opts.in_flight > 0, "--in-flight must be at least 1");
    Ok(opts)
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = parse_opts()?;
    let run_dir = server::run_dir("shoal-dashboard.")?;
    let pkg = opts.pkg_dir.display().to_string();
    let mut server = Server::start(
        &opts.server,
        &run_dir,
        "dashboard-bench",
        &["--dashboard-pkg-dir", &pkg],
    )?;
    eprintln!("bench: shoal-server pid {} on {}", server.pid(), server.url);
    let hard_stop = opts.timeout + Duration::from_secs(30);
    let outcome = server::bounded(hard_stop, bench(&opts, &mut server, &run_dir)).await;
    let data: &[&str] = if opts.keep { &[] } else { &["data"] };
    server::finish(server, &run_dir, data);
    let report = outcome?;
    println!("{report}");
    Ok(())
}

/// The whole run; returns the markdown report.
async fn bench(opts: &Opts, server: &mut Server, run_dir: &Path) -> Result<String> {
    let deadline = Instant::now() + opts.timeout;
    let ticks = clock_ticks();
    let client = server.client(Duration::from_secs(20))?;
    server.wait_healthy(&client).await?;

    let fleet = load_fleet(opts, server, &client, deadline).await?;
    let http = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .timeout(WAIT)
        .build()
        .context("build an HTTP client")?;
    let mut ssr = Vec::new();
    for (name, path) in PAGES {
        eprintln!(
            "bench: {} server-rendered requests of {path}",
            opts.requests
        );
        ssr.push((
            name,
            path,
            ssr_page(&http, &server.url, path, opts.requests).await?,
        ));
    }
    let browser = browser_pages(opts, &http, &server.url, run_dir).await?;
    server.check_alive()?;
    let stream = events(opts, &http, &client, &server.url).await?;
    server.check_alive()?;
    let end = proc_stats(server.pid(), ticks)?;
    let wasm = WasmSize::read(&opts.pkg_dir);
    report(opts, &fleet, &ssr, &browser, &stream, &wasm, &end)
}

// ------------------------------------------------------------------ fleet

/// How the fleet was loaded; the renewer keeps the leases while it lives.
struct Fleet {
    register: Duration,
    placed: Duration,
    settled: Duration,
    renew: Arc<RenewStats>,
    _renewer: AbortOnDrop,
}

/// Registers the machines, keeps them renewed, submits the units and waits
/// until every instance is placed on a machine and the placements stop changing.
async fn load_fleet(
    opts: &Opts,
    server: &mut Server,
    client: &Client,
    deadline: Instant,
) -> Result<Fleet> {
    let machines: Arc<Vec<Machine>> = Arc::new((0..opts.machines).map(machine).collect());
    let t = Instant::now();
    let failed = register(client, &machines).await?;
    ensure!(
        failed == 0,
        "{failed} of {} registrations failed",
        machines.len()
    );
    let register = t.elapsed();
    eprintln!(
        "bench: registered {} machines in {}",
        machines.len(),
        secs(register)
    );
    let renew = Arc::new(RenewStats::default());
    let renewer = AbortOnDrop(tokio::spawn(renew_forever(
        client.clone(),
        Arc::clone(&machines),
        Arc::default(),
        Arc::clone(&renew),
    )));

    let units: Vec<_> = (0..opts.instances / opts.replicas as usize)
        .map(|i| {
            let mut unit = base_unit(format!("web-{i:03}"));
            unit.placement.replicas = opts.replicas;
            unit.placement.spread = Some("zone".into());
            unit
        })
        .collect();
    eprintln!(
        "bench: submitting {} units ({} instances)",
        units.len(),
        opts.instances
    );
    let t = Instant::now();
    let submitted: Vec<Result<()>> = stream::iter(&units)
        .map(|u| async move {
            client
                .submit_unit(u)
                .await
                .with_context(|| format!("submit {}", u.name))?;
            Ok(())
        })
        .buffer_unordered(SUBMIT_CONCURRENCY)
        .collect()
        .await;
    submitted.into_iter().collect::<Result<Vec<()>>>()?;

    let known: HashSet<&str> = machines.iter().map(|m| m.id.as_str()).collect();
    let on_machines = |snap: &BTreeMap<String, Placed>| {
        snap.values()
            .filter(|p| known.contains(p.machine.as_str()))
            .count()
    };
    let mut placed = None;
    let mut last: Option<BTreeMap<String, Placed>> = None;
    loop {
        server.check_alive()?;
        let snap = placements(client).await?;
        let n = on_machines(&snap);
        if placed.is_none() && n >= opts.instances {
            placed = Some(t.elapsed());
            eprintln!("bench: {n} instances placed after {}", secs(t.elapsed()));
        }
        if placed.is_some() && last.as_ref() == Some(&snap) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "placement not done by the deadline: {n}/{} placed",
            opts.instances
        );
        if placed.is_none() {
            eprintln!(
                "bench: placed {n}/{} after {}",
                opts.instances,
                secs(t.elapsed())
            );
        }
        last = Some(snap);
        tokio::time::sleep(PLACEMENT_POLL).await;
    }
    Ok(Fleet {
        register,
        placed: placed.unwrap_or_default(),
        settled: t.elapsed(),
        renew,
        _renewer: renewer,
    })
}

// ------------------------------------------------------------------ server-rendered pages

/// Timings of one page's server-rendered requests.
struct Ssr {
    /// Request start → first body byte, ms, sorted.
    first_byte: Vec<f64>,
    /// Request start → last body byte, ms, sorted.
    total: Vec<f64>,
    /// Body size of the last answer, bytes.
    bytes: usize,
}

/// `n` sequential GETs of `path` after one warm-up request.
async fn ssr_page(http: &reqwest::Client, base: &str, path: &str, n: usize) -> Result<Ssr> {
    let url = format!("{base}{path}");
    let mut out = Ssr {
        first_byte: Vec::with_capacity(n),
        total: Vec::with_capacity(n),
        bytes: 0,
    };
    for i in 0..=n {
        let t0 = Instant::now();
        let mut resp = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let (mut first, mut bytes) = (None, 0);
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("read {url}"))? {
            first.get_or_insert_with(|| t0.elapsed());
            bytes += chunk.len();
        }
        let total = t0.elapsed();
        if i > 0 {
            out.first_byte.push(ms(first.unwrap_or(total)));
            out.total.push(ms(total));
            out.bytes = bytes;
        }
    }
    out.first_byte.sort_by(f64::total_cmp);
    out.total.sort_by(f64::total_cmp);
    Ok(out)
}

// ------------------------------------------------------------------ Chromium

/// One page load in Chromium, ms since its navigation started.
#[derive(Debug, Clone, Copy)]
struct Load {
    hydrated: f64,
    first_byte: Option<f64>,
    loaded: Option<f64>,
    wasm_transfer: Option<u64>,
}

/// Chromium's loads per page and cache state, or why there are none.
enum Browser {
    Skipped(String),
    Measured(Vec<(&'static str, bool, Vec<Load>)>),
}

/// A DevTools command through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp(Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

/// Loads every page `--runs` times with an empty cache, then as often with a warm one.
async fn browser_pages(
    opts: &Opts,
    http: &reqwest::Client,
    base: &str,
    run_dir: &Path,
) -> Result<Browser> {
    let Some(tools) = browser_tools()? else {
        return Ok(Browser::Skipped(
            "chromium or chromedriver not installed".into(),
        ));
    };
    let wasm = http
        .get(format!("{base}/pkg/frontend_bg.wasm"))
        .send()
        .await
        .context("GET /pkg/frontend_bg.wasm")?;
    if !wasm.status().is_success() {
        return Ok(Browser::Skipped(format!(
            "no wasm package served ({}): run scripts/build-frontend",
            wasm.status()
        )));
    }
    let driver = Chromedriver::start(&tools, run_dir, free_port()?)?;
    let client = driver.session(&tools, run_dir).await?;
    let result = load_pages(opts, &client, base).await;
    let _ = client.close().await;
    result.map(Browser::Measured)
}

async fn load_pages(
    opts: &Opts,
    client: &fantoccini::Client,
    base: &str,
) -> Result<Vec<(&'static str, bool, Vec<Load>)>> {
    let cdp = |cmd: &str, params: Value| Cdp(json!({"cmd": cmd, "params": params}));
    client
        .issue_cmd(cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": HYDRATION_PROBE_JS}),
        ))
        .await
        .context("inject the hydration probe")?;
    let mut out = Vec::new();
    for cold in [true, false] {
        for (name, path) in PAGES {
            let mut loads = Vec::with_capacity(opts.runs);
            for _ in 0..opts.runs {
                if cold {
                    client
                        .issue_cmd(cdp("Network.clearBrowserCache", json!({})))
                        .await
                        .context("clear the browser cache")?;
                }
                client
                    .goto(&format!("{base}{path}"))
                    .await
                    .with_context(|| format!("load {path}"))?;
                loads.push(hydration(client, path).await?);
            }
            let median = median(&loads.iter().map(|l| l.hydrated).collect::<Vec<_>>());
            eprintln!(
                "bench: Chromium {name} ({} cache): hydrated after {median:.0} ms (median of {})",
                if cold { "empty" } else { "warm" },
                loads.len()
            );
            out.push((name, cold, loads));
        }
    }
    Ok(out)
}

/// Waits until the probe saw the page hydrate and reads its timings.
async fn hydration(client: &fantoccini::Client, path: &str) -> Result<Load> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = client
            .execute(PAGE_TIMES_JS, vec![])
            .await
            .context("read the page's timings")?;
        if let Some(hydrated) = v["hydrated"].as_f64() {
            return Ok(Load {
                hydrated,
                first_byte: v["first_byte"].as_f64(),
                loaded: v["loaded"].as_f64(),
                wasm_transfer: v["wasm_transfer"].as_u64(),
            });
        }
        ensure!(
            Instant::now() < deadline,
            "{path} did not hydrate within {WAIT:?} (#live still server-rendered)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ event stream

/// What the event streams delivered while the writer wrote.
struct Stream {
    /// Events of any key delivered, summed over the streams.
    events: usize,
    /// Writer's events delivered, summed over the streams.
    delivered: usize,
    /// Streams that failed.
    errors: usize,
    /// Writer's start → the last stream's last event.
    wall: Duration,
    /// Writer's start → its last answer.
    writing: Duration,
    /// Write start → its event at a stream, ms, sorted.
    latency: Vec<f64>,
}

/// What one stream saw: every event counted, the writer's by index and arrival.
type Seen = (usize, Vec<(u64, Instant)>, bool);

/// Opens `--dashboards` streams, writes `--writes` keys, collects the deliveries.
async fn events(
    opts: &Opts,
    http: &reqwest::Client,
    client: &Client,
    base: &str,
) -> Result<Stream> {
    let (stop_tx, stop) = watch::channel(false);
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(opts.dashboards);
    let mut streams = JoinSet::new();
    for _ in 0..opts.dashboards {
        streams.spawn(subscribe(
            http.clone(),
            format!("{base}/api/v1/events"),
            opts.writes,
            ready_tx.clone(),
            stop.clone(),
        ));
    }
    drop(ready_tx);
    let connect_by = Instant::now() + WAIT;
    for n in 0..opts.dashboards {
        match tokio::time::timeout_at(connect_by, ready.recv()).await {
            Ok(Some(())) => {}
            _ => bail!(
                "only {n} of {} event streams opened within {WAIT:?}",
                opts.dashboards
            ),
        }
    }
    eprintln!(
        "bench: {} event streams open; {} writes, {} in flight",
        opts.dashboards, opts.writes, opts.in_flight
    );
    let start = Instant::now();
    let written: Vec<Result<(u64, Instant)>> = stream::iter(0..opts.writes)
        .map(|i| async move {
            let key = format!("{WRITE_PREFIX}/k{:03}", i % WRITE_KEYS);
            let t0 = Instant::now();
            let answer = client
                .set(&key, &i.to_string(), Default::default())
                .await
                .with_context(|| format!("PUT {key}"))?;
            Ok((answer.body.node.modified_index, t0))
        })
        .buffer_unordered(opts.in_flight)
        .collect()
        .await;
    let writing = start.elapsed();
    let starts: HashMap<u64, Instant> = written.into_iter().collect::<Result<_>>()?;
    let drain_by = Instant::now() + WAIT;
    let mut seen: Vec<Seen> = Vec::with_capacity(opts.dashboards);
    while !streams.is_empty() {
        match tokio::time::timeout_at(drain_by, streams.join_next()).await {
            Ok(Some(r)) => seen.push(r.context("an event stream task")?),
            Ok(None) => break,
            Err(_) => {
                eprintln!(
                    "bench: streams still short of their events after {WAIT:?}: stopping them"
                );
                let _ = stop_tx.send(true);
                while let Some(r) = streams.join_next().await {
                    seen.push(r.context("an event stream task")?);
                }
            }
        }
    }
    let last = seen
        .iter()
        .flat_map(|(_, d, _)| d.iter().map(|(_, at)| *at))
        .max()
        .unwrap_or(start);
    let mut latency: Vec<f64> = seen
        .iter()
        .flat_map(|(_, d, _)| d.iter())
        .filter_map(|(index, at)| starts.get(index).map(|t0| ms(at.duration_since(*t0))))
        .collect();
    latency.sort_by(f64::total_cmp);
    Ok(Stream {
        events: seen.iter().map(|(n, _, _)| n).sum(),
        delivered: latency.len(),
        errors: seen.iter().filter(|(_, _, failed)| *failed).count(),
        wall: last.duration_since(start),
        writing,
        latency,
    })
}

/// One dashboard's stream: says when it is open, counts every event and
/// records the writer's, until it has `writes` of them or is stopped.
async fn subscribe(
    http: reqwest::Client,
    url: String,
    writes: usize,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let (mut count, mut mine) = (0, Vec::with_capacity(writes));
    let open = http
        .get(&url)
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(3600))
        .send()
        .await;
    let mut resp = match open {
        Ok(r) if r.status().is_success() => r,
        _ => return (count, mine, true),
    };
    let _ = ready.send(()).await;
    let mut buf: Vec<u8> = Vec::new();
    while mine.len() < writes {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.changed() => break,
        };
        let at = Instant::now();
        let Ok(Some(bytes)) = chunk else {
            return (count, mine, true);
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
                count += 1;
                let ours = event["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with(WRITE_PREFIX));
                if let (true, Some(index)) = (ours, event["index"].as_u64()) {
                    mine.push((index, at));
                }
            }
        }
    }
    (count, mine, false)
}

// ------------------------------------------------------------------ wasm

/// Sizes of the wasm package's module, bytes (`None`: file missing).
struct WasmSize {
    raw: Option<u64>,
    gzip: Option<u64>,
    brotli: Option<u64>,
}

impl WasmSize {
    fn read(pkg: &Path) -> WasmSize {
        let size = |name: &str| std::fs::metadata(pkg.join(name)).ok().map(|m| m.len());
        WasmSize {
            raw: size("frontend_bg.wasm"),
            gzip: size("frontend_bg.wasm.gz"),
            brotli: size("frontend_bg.wasm.br"),
        }
    }
}

// ------------------------------------------------------------------ report

fn report(
    opts: &Opts,
    fleet: &Fleet,
    ssr: &[(&str, &str, Ssr)],
    browser: &Browser,
    stream: &Stream,
    wasm: &WasmSize,
    end: &server::ProcStats,
) -> Result<String> {
    let mut r = String::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    writeln!(r, "## Dashboard benchmark\n")?;
    writeln!(
        r,
        "One shoal-server member (`{}`) with {} simulated machines (leases: TTL {LEASE_TTL} s, \
         renewed every {} s) and {} unit instances ({} units × {} replicas, spread over 5 zones), all placed \
         before measuring; {cores} cores shared by the server, Chromium and the bench client.\n",
        opts.server.display(),
        opts.machines,
        RENEW_EVERY.as_secs(),
        opts.instances,
        opts.instances / opts.replicas as usize,
        opts.replicas
    )?;
    writeln!(r, "| measure | Shoal | target |")?;
    writeln!(r, "| --- | --- | --- |")?;
    for (name, path, s) in ssr {
        writeln!(
            r,
            "| {name} (`{path}`) server-rendered, first byte, median / p95 (n={}) | {} / {} ms | |",
            s.total.len(),
            f1(median(&s.first_byte)),
            f1(percentile(&s.first_byte, 0.95))
        )?;
        writeln!(
            r,
            "| {name} server-rendered, whole page, median / p95 | {} / {} ms | {} |",
            f1(median(&s.total)),
            f1(percentile(&s.total, 0.95)),
            verdict(percentile(&s.total, 0.95), SSR_TARGET_MS, "ms")
        )?;
        writeln!(
            r,
            "| {name} page size (uncompressed HTML) | {} bytes | |",
            thousands(s.bytes as u64)
        )?;
    }
    match browser {
        Browser::Skipped(why) => writeln!(
            r,
            "| hydrated page in headless Chromium | not measured: {why} | < 1,000 ms |"
        )?,
        Browser::Measured(loads) => {
            for (name, cold, l) in loads {
                let h: Vec<f64> = l.iter().map(|l| l.hydrated).collect();
                let fb: Vec<f64> = l.iter().filter_map(|l| l.first_byte).collect();
                let ld: Vec<f64> = l.iter().filter_map(|l| l.loaded).collect();
                writeln!(
                    r,
                    "| {name} in Chromium, {} cache: navigation → hydrated, median / max (n={}) | {} / {} ms (first byte {} ms, load event {} ms, medians) | {} |",
                    if *cold { "empty" } else { "warm" },
                    h.len(),
                    f0(median(&h)),
                    f0(h.iter().copied().reduce(f64::max).unwrap_or(f64::NAN)),
                    f0(median(&fb)),
                    f0(median(&ld)),
                    verdict(h.iter().copied().reduce(f64::max).unwrap_or(f64::NAN), HYDRATED_TARGET_MS, "ms")
                )?;
            }
        }
    }
    let wall = stream.wall.as_secs_f64();
    writeln!(
        r,
        "| event stream: {} dashboards on `/api/v1/events`, {} writes ({} in flight, {:.0} writes/s): events delivered per second | {} /s ({} events in {}) | |",
        opts.dashboards,
        opts.writes,
        opts.in_flight,
        opts.writes as f64 / stream.writing.as_secs_f64(),
        thousands((stream.events as f64 / wall.max(1e-9)) as u64),
        thousands(stream.events as u64),
        secs(stream.wall)
    )?;
    writeln!(
        r,
        "| event stream: write start → event at a dashboard, p50 / p99 / max | {} / {} / {} ms ({} of {} deliveries, {} streams failed) | |",
        f1(median(&stream.latency)),
        f1(percentile(&stream.latency, 0.99)),
        f1(stream.latency.last().copied().unwrap_or(f64::NAN)),
        thousands(stream.delivered as u64),
        thousands((opts.dashboards * opts.writes) as u64),
        stream.errors
    )?;
    let kb = |b: Option<u64>| {
        b.map_or_else(
            || "missing".to_owned(),
            |b| format!("{} bytes", thousands(b)),
        )
    };
    writeln!(
        r,
        "| wasm module (`frontend_bg.wasm`), raw | {} | |",
        kb(wasm.raw)
    )?;
    writeln!(
        r,
        "| wasm module, gzip (as served precompressed) | {} | {} |",
        kb(wasm.gzip),
        wasm.gzip.map_or_else(
            || "< 500,000 bytes".to_owned(),
            |g| verdict(g as f64, WASM_TARGET_BYTES as f64, "bytes")
        )
    )?;
    if wasm.brotli.is_some() {
        writeln!(r, "| wasm module, brotli | {} | |", kb(wasm.brotli))?;
    }
    if let Browser::Measured(loads) = browser {
        let sent = loads
            .iter()
            .flat_map(|(_, _, l)| l.iter().filter_map(|l| l.wasm_transfer))
            .max();
        if let Some(b) = sent.filter(|b| *b > 0) {
            writeln!(
                r,
                "| wasm as Chromium received it (transfer size, largest) | {} bytes | |",
                thousands(b)
            )?;
        }
    }
    writeln!(r)?;
    writeln!(r, "Setup:")?;
    writeln!(r, "- registered {} machines in {}; {} instances placed {} after the first submit, placements unchanged for {} ms after {}", opts.machines, secs(fleet.register), opts.instances, secs(fleet.placed), PLACEMENT_POLL.as_millis(), secs(fleet.settled))?;
    writeln!(
        r,
        "- lease renewal rounds during the run: {}, failed renewals: {}, slowest round: {} ms",
        fleet.renew.rounds.load(Ordering::Relaxed),
        fleet.renew.failures.load(Ordering::Relaxed),
        fleet.renew.slowest_ms.load(Ordering::Relaxed)
    )?;
    writeln!(
        r,
        "- server RSS: peak (VmHWM) {} MiB, at the end {} MiB; CPU {:.1} s over the run",
        end.hwm_kb / 1024,
        end.rss_kb / 1024,
        end.cpu_secs
    )?;
    writeln!(r, "- server-rendered: one request at a time after one warm-up request, HTTP/1.1 without compression; first byte = first body chunk")?;
    writeln!(r, "- Chromium: hydrated = `performance.now()` when `#live` leaves `data-state=\"server-rendered\"`, seen by a MutationObserver injected before the page's scripts; empty cache = DevTools `Network.clearBrowserCache` before each load")?;
    writeln!(r, "- event stream: writes to {WRITE_KEYS} keys under `{WRITE_PREFIX}`; events per second counts every event of any key the streams delivered, from the first write's start to the last delivery")?;
    Ok(r)
}

/// The target, and whether `value` met it.
fn verdict(value: f64, target: f64, unit: &str) -> String {
    let t = thousands(target as u64);
    if value.is_nan() {
        format!("< {t} {unit}")
    } else if value < target {
        format!("< {t} {unit}: met")
    } else {
        format!("< {t} {unit}: **missed**")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn f0(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.0}")
    }
}

fn f1(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.1}")
    }
}

/// `n` with thousands separators.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Median of `xs` (sorted or not), NaN when empty.
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Percentile `p` (0..=1) of sorted `xs`, nearest rank; NaN when empty.
fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}
