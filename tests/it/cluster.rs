//! A 3-member cluster as three processes: the leader SIGKILLed under writes, a new
//! leader elected, every acknowledged write still there once the old leader is back;
//! a paused or killed minority is tolerated and a lost majority gives errors, not hangs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::harness::{heavy_test_lock, Cluster, V2};

const WRITERS: usize = 2;
const WRITES_PER_WRITER: usize = 300;
/// Kill the leader once this many writes are acknowledged.
const KILL_AFTER_ACKS: usize = 100;

/// Outcome of one writer: the keys it saw acknowledged (key -> value) and how many
/// attempts had an unknown outcome (timeout, connection error, 5xx).
struct WriterLog {
    acked: BTreeMap<String, String>,
    unknown: usize,
    acked_after_kill: usize,
}

async fn writer(
    w: usize,
    urls: Vec<String>,
    acks: Arc<AtomicUsize>,
    killed: Arc<AtomicUsize>,
) -> Result<WriterLog> {
    let clients: Vec<V2> = urls
        .iter()
        .map(|u| V2::with_timeout(u.clone(), Duration::from_secs(5)))
        .collect();
    let mut log = WriterLog {
        acked: BTreeMap::new(),
        unknown: 0,
        acked_after_kill: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut target = w % clients.len();
    for i in 0..WRITES_PER_WRITER {
        let key = format!("/load/w{w}-{i:04}");
        let value = format!("w{w}-v{i}");
        // Retry the same (idempotent) write until it is acknowledged: a timeout or a
        // 5xx is an unknown outcome, so the key stays unverified until a retry succeeds.
        loop {
            if Instant::now() > deadline {
                bail!("writer {w}: no progress before the deadline at write {i}");
            }
            match clients[target].put(&key, &[("value", &value)]).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    log.acked.insert(key.clone(), value.clone());
                    acks.fetch_add(1, Ordering::SeqCst);
                    if killed.load(Ordering::SeqCst) > 0 {
                        log.acked_after_kill += 1;
                    }
                    break;
                }
                Ok(r) if r.status < 500 => {
                    bail!("writer {w}: {key} refused with {}: {}", r.status, r.text)
                }
                Ok(_) | Err(_) => {
                    log.unknown += 1;
                    target = (target + 1) % clients.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    Ok(log)
}

/// Wait until `GET /load?recursive=true` (quorum or not) on `url` holds every acked key.
async fn wait_all_present(
    url: &str,
    acked: &BTreeMap<String, String>,
    quorum: bool,
    timeout: Duration,
) -> Result<()> {
    let v2 = V2::with_timeout(url, Duration::from_secs(10));
    let q = if quorum { "&quorum=true" } else { "" };
    let deadline = Instant::now() + timeout;
    loop {
        let mut problem = String::new();
        match v2.get(&format!("/load?recursive=true{q}")).await {
            Ok(r) if r.status == 200 => {
                let body = r.json();
                let mut seen = BTreeMap::new();
                for n in body["node"]["nodes"].as_array().into_iter().flatten() {
                    if let (Some(k), Some(v)) = (n["key"].as_str(), n["value"].as_str()) {
                        seen.insert(k.to_string(), v.to_string());
                    }
                }
                let missing: Vec<&String> = acked
                    .iter()
                    .filter(|(k, v)| seen.get(*k) != Some(*v))
                    .map(|(k, _)| k)
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                problem = format!(
                    "{} of {} acknowledged writes missing or wrong, e.g. {:?}",
                    missing.len(),
                    acked.len(),
                    &missing[..missing.len().min(5)]
                );
            }
            Ok(r) => problem = format!("{} {}", r.status, r.text),
            Err(e) => problem.push_str(&e.to_string()),
        }
        if Instant::now() > deadline {
            bail!("{url} (quorum={quorum}) after {timeout:?}: {problem}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_load_loses_no_acknowledged_write() -> Result<()> {
    let _heavy = heavy_test_lock().await;
    let mut cluster = Cluster::start(3).await?;
    let old = cluster.wait_leader(&[], Duration::from_secs(15)).await?;
    eprintln!("--- leader is {}", cluster.members[old].name);

    eprintln!("--- start {WRITERS} writers x {WRITES_PER_WRITER} writes of distinct keys");
    let acks = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(writer(
                w,
                cluster.client_urls(),
                acks.clone(),
                killed.clone(),
            ))
        })
        .collect();

    let until = Instant::now() + Duration::from_secs(60);
    while acks.load(Ordering::SeqCst) < KILL_AFTER_ACKS {
        ensure!(
            Instant::now() < until,
            "only {} writes acknowledged in 60 s before the kill",
            acks.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "--- kill the leader {} (SIGKILL) after {} acknowledged writes",
        cluster.members[old].name,
        acks.load(Ordering::SeqCst)
    );
    cluster.member(old).kill();
    killed.store(1, Ordering::SeqCst);
    let killed_at = Instant::now();

    let new = cluster.wait_leader(&[old], Duration::from_secs(20)).await?;
    ensure!(new != old, "the killed member cannot be leader");
    eprintln!(
        "--- new leader {} after {:?}",
        cluster.members[new].name,
        killed_at.elapsed()
    );

    eprintln!("--- writers keep going against the survivors");
    let mut acked = BTreeMap::new();
    let (mut unknown, mut after_kill) = (0, 0);
    for (w, h) in writers.into_iter().enumerate() {
        let log = tokio::time::timeout(Duration::from_secs(150), h)
            .await
            .with_context(|| format!("writer {w} did not finish"))???;
        unknown += log.unknown;
        after_kill += log.acked_after_kill;
        acked.extend(log.acked);
    }
    eprintln!(
        "--- {} writes acknowledged ({after_kill} after the kill), {unknown} attempts with unknown outcome (retried)",
        acked.len()
    );
    ensure!(acked.len() == WRITERS * WRITES_PER_WRITER);
    ensure!(
        after_kill > 0,
        "no write was acknowledged after the kill: the run proved nothing"
    );

    eprintln!(
        "--- restart the old leader {} with its data dir",
        cluster.members[old].name
    );
    cluster.member(old).restart().await?;

    for m in &cluster.members {
        eprintln!(
            "--- {}: every acknowledged write readable with quorum=true",
            m.name
        );
        wait_all_present(&m.client_url(), &acked, true, Duration::from_secs(30)).await?;
        eprintln!("--- {}: ...and from its own copy (caught up)", m.name);
        wait_all_present(&m.client_url(), &acked, false, Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// One PUT with the client's 15 s timeout; returns (status or error text, time taken).
async fn timed_put(url: &str, key: &str, value: &str) -> (Result<(u16, String)>, Duration) {
    let v2 = V2::new(url);
    let start = Instant::now();
    let r = v2
        .put(key, &[("value", value)])
        .await
        .map(|r| (r.status, r.text));
    (r, start.elapsed())
}

async fn write_and_read_everywhere(cluster: &Cluster, live: &[usize], key: &str) -> Result<()> {
    for &i in live {
        let url = cluster.members[i].client_url();
        let value = format!("via-{}", cluster.members[i].name);
        let (r, took) = timed_put(&url, key, &value).await;
        let (status, text) = r.with_context(|| format!("PUT via {url}"))?;
        ensure!(
            (200..300).contains(&status),
            "PUT via {url}: {status} {text} after {took:?}"
        );
        for &j in live {
            let got = V2::new(cluster.members[j].client_url())
                .get(&format!("{key}?quorum=true"))
                .await?;
            let v: Value = got.json();
            ensure!(
                got.status == 200 && v["node"]["value"] == value.as_str(),
                "quorum read on {} after write via {}: {} {}",
                cluster.members[j].name,
                cluster.members[i].name,
                got.status,
                got.text
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_down_serves_majority_down_refuses() -> Result<()> {
    let _heavy = heavy_test_lock().await;
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader(&[], Duration::from_secs(15)).await?;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);

    eprintln!("--- pause follower {} (SIGSTOP)", cluster.members[f1].name);
    cluster.member(f1).pause()?;
    write_and_read_everywhere(&cluster, &[leader, f2], "/minority/paused").await?;
    eprintln!("--- resume it (SIGCONT): it catches up");
    cluster.member(f1).resume()?;
    let want: BTreeMap<String, String> = [(
        "/minority/paused".to_string(),
        format!("via-{}", cluster.members[f2].name),
    )]
    .into();
    let url = cluster.members[f1].client_url();
    let v2 = V2::new(&url);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = v2.get("/minority?recursive=true").await;
        if let Ok(r) = r {
            let v = r.json();
            let got = v["node"]["nodes"][0]["value"].as_str().map(str::to_string);
            if got.as_deref() == want.values().next().map(String::as_str) {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "{url} did not catch up after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!(
        "--- kill follower {} (SIGKILL): one of three down",
        cluster.members[f1].name
    );
    cluster.member(f1).kill();
    write_and_read_everywhere(&cluster, &[leader, f2], "/minority/one-down").await?;

    eprintln!(
        "--- kill follower {} too: two of three down",
        cluster.members[f2].name
    );
    cluster.member(f2).kill();
    let url = cluster.members[leader].client_url();
    let (r, took) = timed_put(&url, "/minority/two-down", "x").await;
    eprintln!("--- write without a quorum answered after {took:?}: {r:?}");
    match r {
        Ok((status, text)) => ensure!(
            status >= 500,
            "a write without a quorum must fail, got {status} {text}"
        ),
        Err(e) => {
            bail!("a write without a quorum must get an error answer, not {e:#} after {took:?}")
        }
    }
    ensure!(
        took < Duration::from_secs(10),
        "a write without a quorum took {took:?} to fail (limit 10 s)"
    );

    eprintln!("--- bring one member back: the cluster has a quorum again");
    cluster.member(f1).restart().await?;
    cluster.wait_leader(&[f2], Duration::from_secs(20)).await?;
    write_and_read_everywhere(&cluster, &[leader, f1], "/minority/recovered").await?;
    Ok(())
}

/// Registers a simulated machine (a lease as the agent writes it, no Docker).
async fn register_machine(v2: &V2, id: &str) -> Result<()> {
    let record = serde_json::json!({
        "id": id, "hostname": id, "cpu_millis": 4000, "memory_mb": 8192,
    });
    let r = v2
        .put(
            &format!("/_shoal/machines/{id}"),
            &[("value", &record.to_string()), ("ttl", "120")],
        )
        .await?;
    ensure!(r.status < 300, "register {id}: {} {}", r.status, r.text);
    Ok(())
}

/// Polls `GET /api/v1/units/{unit}` on any live member until every one of its
/// `want` instances is placed and `done` holds for the machines they are on.
async fn wait_placed(
    urls: &[String],
    unit: &str,
    want: usize,
    done: impl Fn(&[String]) -> bool,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut last = Value::Null;
    loop {
        for url in urls {
            let Ok(resp) = http.get(format!("{url}/api/v1/units/{unit}")).send().await else {
                continue;
            };
            let Ok(status) = resp.json::<Value>().await else {
                continue;
            };
            let on: Vec<String> = status["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["machine_id"].as_str().map(str::to_owned))
                .collect();
            if on.len() == want && done(&on) {
                return Ok(on);
            }
            last = status;
        }
        ensure!(
            Instant::now() < deadline,
            "{unit}: {want} placements not reached; last status {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The engine runs on the Raft leader and moves with leadership: units are
/// placed by the first leader; after it is SIGKILLed, the new leader's engine
/// places a newly submitted unit and moves the instance of a machine that
/// died, never placing an instance twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_moves_with_leadership() -> Result<()> {
    let _serial = heavy_test_lock().await;
    let mut cluster = Cluster::start(3).await?;
    let urls = cluster.client_urls();
    let leader = cluster.wait_leader(&[], Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let v2 = V2::new(urls[follower].clone());
    for id in ["ma", "mb", "mc"] {
        register_machine(&v2, id).await?;
    }
    let http = reqwest::Client::new();
    let submit = |name: &str, replicas: u32| {
        let unit = serde_json::json!({
            "name": name, "image": "shoal-test/busybox", "desired": "launched",
            "placement": {"replicas": replicas, "conflicts": [format!("{name}*")]},
        });
        http.post(format!("{}/api/v1/units", urls[follower]))
            .json(&unit)
            .send()
    };

    eprintln!("--- the first leader places web on two distinct machines");
    let resp = submit("web", 2).await?;
    ensure!(resp.status().is_success(), "submit web: {}", resp.status());
    let distinct = |on: &[String]| on[0] != on[1];
    let web = wait_placed(&urls, "web", 2, distinct).await?;

    eprintln!("--- SIGKILL the leader; a new one is elected");
    cluster.member(leader).kill();
    let new_leader = cluster
        .wait_leader(&[leader], Duration::from_secs(10))
        .await?;
    let live: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| urls[i].clone())
        .collect();
    let v2 = V2::new(live[0].clone());

    eprintln!("--- the new leader's engine places a new unit");
    let resp = http
        .post(format!("{}/api/v1/units", urls[new_leader]))
        .json(&serde_json::json!({
            "name": "db", "image": "shoal-test/busybox", "desired": "launched",
        }))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "submit db: {}", resp.status());
    wait_placed(&live, "db", 1, |_| true).await?;

    eprintln!("--- a machine of web dies: the new leader moves its instance");
    let dead = web[0].clone();
    let r = v2
        .request("DELETE", &format!("/v2/keys/_shoal/machines/{dead}"), &[])
        .await?;
    ensure!(r.status < 300, "delete {dead}: {}", r.status);
    let moved = wait_placed(&live, "web", 2, |on| {
        distinct(on) && on.iter().all(|m| *m != dead)
    })
    .await?;
    ensure!(
        moved.contains(&web[1]),
        "the instance on the live machine stays put: was {web:?}, now {moved:?}"
    );
    Ok(())
}
