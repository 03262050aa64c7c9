//! Placement benchmark: the fleet engine at scale against a real `shoal-server`.
//!
//! Starts one `target/release/shoal-server` member on loopback ports with a
//! temporary data dir, then in this one process:
//!
//! 1. registers `--machines` simulated machines (`PUT /v2/keys/_shoal/machines/<id>?ttl=30`
//!    with a JSON `api::fleet::Machine`; no Docker) and renews their leases every
//!    10 s the way `shoal-agent` does (`refresh=true&prevExist=true`; `common/fleet.rs`);
//! 2. submits a mix of units through `POST /api/v1/units` (replicated units with
//!    and without conflicts, spread and required metadata, plus one global unit)
//!    and times how long until every instance has a placement;
//! 3. kills `--kill` machines (stops renewing them and DELETEs their keys) and
//!    times how long until every replicated instance that was on them is placed
//!    on a live machine again;
//! 4. prints a markdown table with the server's peak RSS and CPU time.
//!
//! Every wait has a deadline and the server is SIGKILLed on exit. Run it with
//! `bench/placement.sh`, or `cargo run --release -p tests --example placement-bench -- --help`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use api::client::{DeleteOptions, GetOptions};
use api::fleet::{Machine, Unit, MACHINES_DIR, PLACEMENTS_DIR, UNPLACED_DIR};
use api::Client;
use clap::{value_parser, Parser};
use futures::stream::{self, StreamExt as _};
use tokio::time::Instant;

#[path = "common/cli.rs"]
mod cli;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/server.rs"]
mod server;
use fleet::{
    base_unit, list_dir, machine, machine_id, placements, register, renew_forever, AbortOnDrop,
    Placed, RenewStats, LEASE_TTL, RENEW_EVERY, WRITE_CONCURRENCY,
};
use server::{clock_ticks, proc_stats, Server};

/// Requests in flight while submitting units.
const SUBMIT_CONCURRENCY: usize = 8;
/// Name of the global unit.
const GLOBAL_UNIT: &str = "node-exporter";
/// Nomad's C1M: a million containers on 5,000 hosts in under 5 minutes.
const NOMAD_C1M_PER_SEC: f64 = 3_300.0;

/// The fleet engine at scale against a real shoal-server.
#[derive(Debug, Clone, Parser)]
#[command(name = "placement-bench", args_override_self = true)]
struct Opts {
    /// The shoal-server binary.
    #[arg(long, value_name = "PATH", default_value_os_t = cli::release_server())]
    server: PathBuf,
    /// Simulated machines.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    machines: usize,
    /// Replicated units.
    #[arg(long, value_name = "N", default_value_t = 90)]
    units: usize,
    /// Replicas per replicated unit, 2 to 1000.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        value_parser = value_parser!(u32).range(2..=1000)
    )]
    replicas: u32,
    /// Machines that die in phase 2.
    #[arg(long, value_name = "N", default_value_t = 100)]
    kill: usize,
    /// Deadline for the whole run, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "600",
        value_parser = cli::duration(Duration::from_secs)
    )]
    timeout: Duration,
    /// How often placements are counted, in milliseconds.
    #[arg(
        long = "poll-ms",
        value_name = "MS",
        default_value = "100",
        value_parser = cli::duration(Duration::from_millis)
    )]
    poll: Duration,
    /// Seconds to wait after the move (renewals only), then check nothing moved
    /// and no machine lapsed; the default outlasts the 30 s lease TTL.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "35",
        value_parser = cli::duration(Duration::from_secs)
    )]
    hold: Duration,
    /// Keep the server's data dir (its log is always kept).
    #[arg(long)]
    keep: bool,
}

/// The options on the command line, checked where clap cannot.
fn parse_opts() -> Result<Opts> {
    let opts = Opts::parse();
    if opts.machines == 0 || opts.kill >= opts.machines {
        bail!("need at least one machine, and fewer dying machines than machines");
    }
    if opts.kill > 0 && opts.machines - opts.kill < opts.replicas as usize {
        bail!("units that conflict with themselves need at least --replicas live machines");
    }
    Ok(opts)
}

/// The machines that die: every tenth, offset so zones and disks are mixed.
fn dying(machines: usize, kill: usize) -> BTreeSet<String> {
    let stride = (machines / kill.max(1)).max(1);
    let mut out = BTreeSet::new();
    let mut i = 0;
    while out.len() < kill {
        let n = (i * stride + i % stride) % machines;
        out.insert(machine_id(n));
        i += 1;
        if i > machines * 2 {
            break;
        }
    }
    let mut fill = 0;
    while out.len() < kill {
        out.insert(machine_id(fill));
        fill += 1;
    }
    out
}

/// The kinds of replicated unit in the mix, in the order they are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Plain,
    Conflicts,
    Spread,
    Metadata,
    Combined,
}

impl Kind {
    /// Unit `i`'s kind: of every 9 units, 3 plain and 2 of each of the others
    /// but one combined.
    fn of(i: usize) -> Kind {
        match i % 9 {
            0..=2 => Kind::Plain,
            3 | 4 => Kind::Conflicts,
            5 | 6 => Kind::Spread,
            7 => Kind::Metadata,
            _ => Kind::Combined,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Plain => "no rules",
            Kind::Conflicts => "`conflicts = [itself]` (one per machine)",
            Kind::Spread => "`spread = \"zone\"`",
            Kind::Metadata => "`machine-metadata disk=ssd`",
            Kind::Combined => {
                "`machine-metadata zone=z0|z1|z2` + `spread = \"zone\"` + self-conflict"
            }
        }
    }
}

/// Replicated unit `i` of the mix.
fn replicated_unit(i: usize, replicas: u32) -> (Kind, Unit) {
    let kind = Kind::of(i);
    let name = format!("svc-{i:03}");
    let mut unit = base_unit(name.clone());
    unit.placement.replicas = replicas;
    match kind {
        Kind::Plain => {}
        Kind::Conflicts => unit.placement.conflicts = vec![name],
        Kind::Spread => unit.placement.spread = Some("zone".into()),
        Kind::Metadata => {
            unit.placement
                .machine_metadata
                .insert("disk".into(), vec!["ssd".into()]);
        }
        Kind::Combined => {
            unit.placement
                .machine_metadata
                .insert("zone".into(), vec!["z0".into(), "z1".into(), "z2".into()]);
            unit.placement.spread = Some("zone".into());
            unit.placement.conflicts = vec![name];
        }
    }
    (kind, unit)
}

fn global_unit() -> Unit {
    let mut unit = base_unit(GLOBAL_UNIT.into());
    unit.placement.global = true;
    unit.cpu_millis = 50;
    unit.memory_mb = 64;
    unit
}

/// When a wait ended and what it saw last.
#[derive(Debug, Clone)]
struct Waited {
    /// Time from the phase's start until the condition held; `None` on timeout.
    done_after: Option<Duration>,
    /// Milestones: (fraction of the goal, time from the phase's start).
    milestones: Vec<(f64, Duration)>,
    /// Progress when the wait ended.
    last: usize,
    goal: usize,
    polls: usize,
    slowest_poll: Duration,
}

/// How placements are polled: through which client, how often, until when.
struct Poller<'a> {
    client: &'a Client,
    poll: Duration,
    deadline: Instant,
}

/// Polls placements until `progress` says done (it returns the count towards
/// `goal` and whether the goal is met) or the deadline passes; times count from `start`.
async fn wait_for(
    poller: &Poller<'_>,
    server: &mut Server,
    start: Instant,
    goal: usize,
    label: &str,
    progress: impl Fn(&BTreeMap<String, Placed>) -> (usize, bool),
) -> Result<Waited> {
    let Poller {
        client,
        poll,
        deadline,
    } = *poller;
    // 0.0 stands for the first one.
    let marks = [0.0, 0.1, 0.5, 0.9, 0.99];
    let mut w = Waited {
        done_after: None,
        milestones: Vec::new(),
        last: 0,
        goal,
        polls: 0,
        slowest_poll: Duration::ZERO,
    };
    let mut last_print = Instant::now();
    loop {
        server.check_alive()?;
        let asked = Instant::now();
        let snapshot = placements(client).await?;
        w.polls += 1;
        w.slowest_poll = w.slowest_poll.max(asked.elapsed());
        // The state read is at least as new as the moment the request was sent.
        let at = asked.saturating_duration_since(start);
        let (n, done) = progress(&snapshot);
        w.last = n;
        for m in marks {
            let reached = w.milestones.iter().any(|(f, _)| *f == m);
            if !reached && n > 0 && n as f64 >= m * goal as f64 {
                w.milestones.push((m, at));
            }
        }
        if done {
            w.done_after = Some(at);
            return Ok(w);
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "bench: {label}: {n}/{goal} after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if Instant::now() >= deadline {
            eprintln!("bench: {label}: deadline passed at {n}/{goal}");
            return Ok(w);
        }
        tokio::time::sleep(poll).await;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// The text without ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of the server log at WARN or ERROR, counted by message (first 5 kinds kept).
fn log_warnings(log: &Path) -> (usize, Vec<String>) {
    let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
        .collect();
    let sample = bad.iter().take(5).map(|l| (*l).to_owned()).collect();
    (bad.len(), sample)
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = parse_opts()?;
    let run_dir = server::run_dir("shoal-placement.")?;
    let mut server = Server::start(&opts.server, &run_dir, "placement-bench", &[] as &[&str])?;
    eprintln!("bench: shoal-server pid {} on {}", server.pid(), server.url);
    let hard_stop = opts.timeout + Duration::from_secs(30);
    let outcome = server::bounded(hard_stop, bench(&opts, &mut server)).await;
    let data: &[&str] = if opts.keep { &[] } else { &["data"] };
    server::finish(server, &run_dir, data);
    let report = outcome?;
    println!("{report}");
    Ok(())
}

/// The whole run; returns the markdown report.
async fn bench(opts: &Opts, server: &mut Server) -> Result<String> {
    let deadline = Instant::now() + opts.timeout;
    let ticks = clock_ticks();
    let client = server.client(Duration::from_secs(20))?;
    server.wait_healthy(&client).await?;
    let idle = proc_stats(server.pid(), ticks)?;

    // Machines.
    let machines: Arc<Vec<Machine>> = Arc::new((0..opts.machines).map(machine).collect());
    let t = Instant::now();
    let failed = register(&client, &machines).await?;
    let register_time = t.elapsed();
    if failed > 0 {
        bail!(
            "{failed} of {} machine registrations failed",
            machines.len()
        );
    }
    eprintln!(
        "bench: registered {} machines in {}",
        machines.len(),
        secs(register_time)
    );
    let dead: Arc<Mutex<HashSet<String>>> = Arc::default();
    let renew_stats = Arc::new(RenewStats::default());
    let renewer = tokio::spawn(renew_forever(
        client.clone(),
        Arc::clone(&machines),
        Arc::clone(&dead),
        Arc::clone(&renew_stats),
    ));
    // Abort the renewer however this function ends.
    let _renewer = AbortOnDrop(renewer);

    // Units.
    let mut units: Vec<(Option<Kind>, Unit)> = (0..opts.units)
        .map(|i| {
            let (k, u) = replicated_unit(i, opts.replicas);
            (Some(k), u)
        })
        .collect();
    units.push((None, global_unit()));
    let replicated_total = opts.units * opts.replicas as usize;
    let goal1 = replicated_total + opts.machines;
    let before1 = proc_stats(server.pid(), ticks)?;
    let index_before = client
        .get("/", GetOptions::default())
        .await
        .context("read the etcd index")?
        .etcd_index;
    eprintln!(
        "bench: submitting {} units ({} instances)",
        units.len(),
        goal1
    );
    let start1 = Instant::now();
    let submits: Vec<Result<()>> = stream::iter(&units)
        .map(|(_, u)| {
            let client = &client;
            async move {
                client
                    .submit_unit(u)
                    .await
                    .with_context(|| format!("submit {}", u.name))?;
                Ok(())
            }
        })
        .buffer_unordered(SUBMIT_CONCURRENCY)
        .collect()
        .await;
    let submit_time = start1.elapsed();
    for r in submits {
        r?;
    }
    eprintln!("bench: all units submitted after {}", secs(submit_time));
    let poller = Poller {
        client: &client,
        poll: opts.poll,
        deadline,
    };
    let alive_all: HashSet<String> = machines.iter().map(|m| m.id.clone()).collect();
    let phase1 = wait_for(&poller, server, start1, goal1, "placed", |snap| {
        let n = snap
            .values()
            .filter(|p| alive_all.contains(&p.machine))
            .count();
        (n, n >= goal1)
    })
    .await?;
    let after1 = proc_stats(server.pid(), ticks)?;
    let index_after = client
        .get("/", GetOptions::default())
        .await
        .context("read the etcd index")?
        .etcd_index;
    let unplaced1 = list_dir(&client, UNPLACED_DIR).await?;

    // Rule check on the result of phase 1.
    let snap1 = placements(&client).await?;
    let violations = check_rules(&snap1, &units, &machines);

    // Phase 2: machines die.
    let mut phase2 = None;
    let mut moved_goal = 0;
    let mut after2 = after1;
    let mut stable_changes = None;
    let mut leftovers = 0;
    if opts.kill > 0 && phase1.done_after.is_some() {
        let dying = dying(opts.machines, opts.kill);
        let affected: BTreeSet<String> = snap1
            .iter()
            .filter(|(i, p)| {
                dying.contains(&p.machine) && !i.starts_with(&format!("{GLOBAL_UNIT}@"))
            })
            .map(|(i, _)| i.clone())
            .collect();
        moved_goal = affected.len();
        dead.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(dying.iter().cloned());
        let alive: HashSet<String> = alive_all
            .iter()
            .filter(|id| !dying.contains(*id))
            .cloned()
            .collect();
        let goal2 = replicated_total + alive.len();
        eprintln!(
            "bench: deleting {} machine keys ({} replicated instances on them)",
            dying.len(),
            affected.len()
        );
        let start2 = Instant::now();
        let deletes: Vec<Result<()>> = stream::iter(&dying)
            .map(|id| {
                let client = &client;
                async move {
                    client
                        .delete(&format!("{MACHINES_DIR}/{id}"), DeleteOptions::default())
                        .await
                        .with_context(|| format!("delete machine {id}"))?;
                    Ok(())
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let delete_time = start2.elapsed();
        for r in deletes {
            r?;
        }
        eprintln!("bench: machine keys deleted after {}", secs(delete_time));
        let moved = wait_for(&poller, server, start2, affected.len(), "moved", |snap| {
            let n = affected
                .iter()
                .filter(|i| snap.get(*i).is_some_and(|p| alive.contains(&p.machine)))
                .count();
            (n, n >= affected.len())
        })
        .await?;
        let converged = wait_for(&poller, server, start2, goal2, "converged", |snap| {
            let on_live = snap.values().filter(|p| alive.contains(&p.machine)).count();
            (on_live, on_live >= goal2 && snap.len() == goal2)
        })
        .await?;
        after2 = proc_stats(server.pid(), ticks)?;
        let snap2 = placements(&client).await?;
        leftovers = snap2
            .values()
            .filter(|p| !alive.contains(&p.machine))
            .count();
        // Stability: nothing should move while only lease renewals happen, for
        // longer than the lease TTL (so the renewals are what keeps machines alive).
        let hold = opts
            .hold
            .min(deadline.saturating_duration_since(Instant::now()));
        if converged.done_after.is_some() && !hold.is_zero() {
            eprintln!(
                "bench: holding the fleet for {} (renewals only)",
                secs(hold)
            );
            tokio::time::sleep(hold).await;
            server.check_alive()?;
            let snap3 = placements(&client).await?;
            let changed = snap3
                .iter()
                .filter(|(i, p)| snap2.get(*i) != Some(*p))
                .count()
                + snap2.keys().filter(|i| !snap3.contains_key(*i)).count();
            let live = client
                .machines()
                .await
                .context("GET /api/v1/machines")?
                .len();
            stable_changes = Some((hold, changed, live));
        }
        phase2 = Some((delete_time, moved, converged));
    }
    let end = proc_stats(server.pid(), ticks)?;
    let (warn_count, warn_sample) = log_warnings(&server.log);

    // Report.
    let mut r = String::new();
    let host_cores = std::thread::available_parallelism().map_or(0, usize::from);
    writeln!(r, "## Placement benchmark\n")?;
    writeln!(
        r,
        "One shoal-server member (release build), {} simulated machines (leases: TTL {LEASE_TTL} s, renewed every {} s with `refresh`), \
         {} units × {} replicas + 1 global unit = {goal1} instances; {host_cores} cores shared by server and bench client.\n",
        opts.machines,
        RENEW_EVERY.as_secs(),
        opts.units,
        opts.replicas
    )?;
    writeln!(r, "| measure | Shoal | anchor |")?;
    writeln!(r, "| --- | --- | --- |")?;
    writeln!(
        r,
        "| register {} machines (PUT ?ttl={LEASE_TTL}, {WRITE_CONCURRENCY} in flight) | {} | |",
        opts.machines,
        secs(register_time)
    )?;
    writeln!(
        r,
        "| submit {} units ({SUBMIT_CONCURRENCY} in flight) | {} | |",
        units.len(),
        secs(submit_time)
    )?;
    match phase1.done_after {
        Some(d) => {
            let rate = goal1 as f64 / d.as_secs_f64();
            let cpu = after1.cpu_secs - before1.cpu_secs;
            writeln!(r, "| first submit → all {goal1} instances placed | {} | Nomad C1M: 1,000,000 in < 5 min |", secs(d))?;
            writeln!(r, "| placements per second | {rate:.0} /s | ~{NOMAD_C1M_PER_SEC:.0} /s |")?;
            writeln!(
                r,
                "| placements per second per core ({host_cores} cores) | {:.0} /s/core | ~{NOMAD_C1M_PER_SEC:.0} /s for the whole cluster |",
                rate / host_cores.max(1) as f64
            )?;
            if cpu > 0.0 {
                writeln!(
                    r,
                    "| server CPU during placement | {cpu:.1} s ({:.0} placements per CPU-second) | |",
                    goal1 as f64 / cpu
                )?;
            }
        }
        None => writeln!(
            r,
            "| first submit → all {goal1} instances placed | **not reached** ({}/{goal1} by the deadline) | |",
            phase1.last
        )?,
    }
    let marks: Vec<String> = phase1
        .milestones
        .iter()
        .map(|(f, d)| {
            if *f > 0.0 {
                format!("{:.0}%: {}", f * 100.0, secs(*d))
            } else {
                format!("first: {}", secs(*d))
            }
        })
        .collect();
    writeln!(r, "| placement milestones | {} | |", marks.join(", "))?;
    writeln!(
        r,
        "| key-space writes during placement (etcd index delta, incl. lease renewals) | {} | |",
        index_after.saturating_sub(index_before)
    )?;
    if let Some((delete_time, moved, converged)) = &phase2 {
        writeln!(
            r,
            "| {} machines die (keys DELETEd, renewals stopped; deletes took {}) → their {moved_goal} replicated instances placed on live machines | {} | |",
            opts.kill,
            secs(*delete_time),
            moved.done_after.map_or_else(|| format!("**not reached** ({}/{moved_goal})", moved.last), secs)
        )?;
        writeln!(
            r,
            "| … → fully converged (their global instances removed too) | {} | |",
            converged.done_after.map_or_else(
                || format!("**not reached** ({}/{})", converged.last, converged.goal),
                secs
            )
        )?;
        writeln!(
            r,
            "| server CPU during the move | {:.1} s | |",
            after2.cpu_secs - after1.cpu_secs
        )?;
    }
    writeln!(
        r,
        "| server peak RSS (VmHWM) | {} (idle after start: {}, after placement: {}) | |",
        mib(end.hwm_kb),
        mib(idle.hwm_kb),
        mib(after1.hwm_kb)
    )?;
    writeln!(
        r,
        "| server RSS at the end (VmRSS) | {} | |",
        mib(end.rss_kb)
    )?;
    writeln!(r)?;
    writeln!(r, "Unit mix:")?;
    let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
    for k in units.iter().filter_map(|(k, _)| *k) {
        *kinds.entry(k).or_default() += 1;
    }
    for (k, n) in &kinds {
        writeln!(r, "- {n} × {} replicas: {}", opts.replicas, k.describe())?;
    }
    writeln!(
        r,
        "- 1 global unit `{GLOBAL_UNIT}` ({} instances)",
        opts.machines
    )?;
    writeln!(r, "- machines: `zone=z0..z4`, `disk=ssd|hdd` (half each), `rack=r0..r39`; 16 cores, 64 GiB; units ask 100m/128 MiB (global 50m/64 MiB)")?;
    writeln!(r)?;
    writeln!(r, "Checks:")?;
    writeln!(
        r,
        "- rule violations after placement: {}",
        if violations.is_empty() {
            "none".to_owned()
        } else {
            format!("{} (first: {})", violations.len(), violations[0])
        }
    )?;
    writeln!(
        r,
        "- unplaced reasons recorded after placement: {}",
        unplaced1.len()
    )?;
    if let Some((k, v, _)) = unplaced1.first() {
        writeln!(r, "  - e.g. {k}: {v}")?;
    }
    if phase2.is_some() {
        writeln!(
            r,
            "- placements left on dead machines after convergence: {leftovers}"
        )?;
        match stable_changes {
            Some((hold, n, live)) => writeln!(
                r,
                "- held {} after convergence (lease renewals only): {n} placements changed, {live} live machines at the end (expected {})",
                secs(hold),
                opts.machines - opts.kill
            )?,
            None => writeln!(
                r,
                "- stability check skipped (not converged, or no time left)"
            )?,
        }
    }
    writeln!(
        r,
        "- placement polls (`GET {PLACEMENTS_DIR}?recursive=true` every {} ms): {} in phase 1, slowest {}",
        opts.poll.as_millis(),
        phase1.polls,
        secs(phase1.slowest_poll)
    )?;
    writeln!(
        r,
        "- lease renewal rounds: {}, failed renewals: {}, slowest round: {} ms",
        renew_stats.rounds.load(Ordering::Relaxed),
        renew_stats.failures.load(Ordering::Relaxed),
        renew_stats.slowest_ms.load(Ordering::Relaxed)
    )?;
    writeln!(r, "- server log WARN/ERROR lines: {warn_count}")?;
    for l in warn_sample {
        writeln!(r, "  - `{}`", l.chars().take(240).collect::<String>())?;
    }
    if phase1.done_after.is_none() {
        bail!("placement did not finish before the deadline\n\n{r}");
    }
    Ok(r)
}

/// Checks the placed result against the rules the bench asked for.
fn check_rules(
    snap: &BTreeMap<String, Placed>,
    units: &[(Option<Kind>, Unit)],
    machines: &[Machine],
) -> Vec<String> {
    let by_id: BTreeMap<&str, &Machine> = machines.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut out = Vec::new();
    for (_, unit) in units {
        let prefix = format!("{}@", unit.name);
        let mine: Vec<(&String, &Placed)> = snap
            .iter()
            .filter(|(i, _)| i.starts_with(&prefix))
            .collect();
        let mut per_machine: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for (instance, p) in &mine {
            let Some(m) = by_id.get(p.machine.as_str()) else {
                out.push(format!("{instance} on unknown machine {}", p.machine));
                continue;
            };
            *per_machine.entry(&m.id).or_default() += 1;
            if let Some(z) = m.metadata.get("zone") {
                *per_zone.entry(z).or_default() += 1;
            }
            for (key, allowed) in &unit.placement.machine_metadata {
                if !m.metadata.get(key).is_some_and(|v| allowed.contains(v)) {
                    out.push(format!("{instance} on {} breaks metadata {key}", m.id));
                }
            }
        }
        if unit.placement.conflicts.contains(&unit.name) {
            if let Some((m, n)) = per_machine.iter().find(|(_, n)| **n > 1) {
                out.push(format!(
                    "{}: {n} instances on {m} despite conflicts",
                    unit.name
                ));
            }
        }
        if unit.placement.spread.is_some() {
            let (lo, hi) = (per_zone.values().min(), per_zone.values().max());
            if let (Some(lo), Some(hi)) = (lo, hi) {
                if hi - lo > 1 {
                    out.push(format!(
                        "{}: zones hold {lo}..{hi} instances (spread)",
                        unit.name
                    ));
                }
            }
        }
    }
    out
}
