//! Clocks that disagree: a 3-member cluster whose members' clocks run
//! `SKEW_MS` behind, on time and `SKEW_MS` ahead (`--clock-skew-ms`). A key
//! with a TTL that a client keeps refreshing while the leader is killed
//! twice (so differently skewed clocks in turn stamp and judge it) never
//! expires while refreshed: every refresh, sent with `prevExist=true`, finds
//! it. Once refreshes stop it expires, never sooner than its TTL less the
//! widest disagreement after the last acknowledged refresh; a key nobody
//! refreshes expires too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use crate::harness::{heavy_test_lock, Cluster, Flavor, V2};

/// How far the outer members' clocks are off, each way.
const SKEW_MS: i64 = 1000;
/// The refreshed key's TTL.
const TTL_SECS: u64 = 8;
const HELD: &str = "/skew/held";
const LEFT: &str = "/skew/left";

/// What the refresher saw.
#[derive(Debug, Default)]
struct Refreshes {
    acked: usize,
    /// Refreshes answered "key not found": the key expired while refreshed.
    lost: Vec<String>,
    /// When the last acknowledged refresh completed.
    last_ack: Option<Instant>,
}

/// Refreshes `HELD` every 500 ms through whichever member answers until `stop`.
async fn refresher(urls: Vec<String>, stop: Arc<AtomicBool>) -> Refreshes {
    let clients: Vec<V2> = urls
        .into_iter()
        .map(|u| V2::with_timeout(u, Duration::from_secs(2)))
        .collect();
    let ttl = TTL_SECS.to_string();
    let form = [
        ("refresh", "true"),
        ("ttl", ttl.as_str()),
        ("prevExist", "true"),
    ];
    let mut log = Refreshes::default();
    let mut target = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match clients[target].put(HELD, &form).await {
            Ok(r) if r.status < 300 => {
                log.acked += 1;
                log.last_ack = Some(Instant::now());
            }
            Ok(r) if r.json()["errorCode"] == 100 => log.lost.push(r.text),
            // No leader, a timeout, a member down: try the next one.
            Ok(_) | Err(_) => target = (target + 1) % clients.len(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_hold_while_refreshed_and_expire_after_under_skewed_clocks() -> Result<()> {
    let _serial = heavy_test_lock().await;
    let mut cluster = Cluster::start_with(Flavor::Shoal, 3, &[]).await?;
    for (i, skew) in [(0, -SKEW_MS), (2, SKEW_MS)] {
        eprintln!("--- member {i}'s clock {skew:+} ms");
        let m = &mut cluster.members[i];
        m.extra_args
            .extend(["--clock-skew-ms".to_owned(), skew.to_string()]);
        m.restart().await?;
    }
    let urls = cluster.client_urls();
    let v2 = V2::new(urls[1].clone());
    let ttl = TTL_SECS.to_string();
    for (key, ttl) in [(HELD, ttl.as_str()), (LEFT, "2")] {
        let r = v2.put(key, &[("value", "v"), ("ttl", ttl)]).await?;
        ensure!(r.status < 300, "create {key}: {} {}", r.status, r.text);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let refreshing = tokio::spawn(refresher(urls.clone(), stop.clone()));
    let mut leaders = Vec::new();
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let leader = cluster.wait_leader(&[], Duration::from_secs(20)).await?;
        leaders.push(leader);
        eprintln!("--- round {round}: SIGKILL the leader, member {leader}");
        cluster.members[leader].kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.members[leader].restart().await?;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    leaders.push(cluster.wait_leader(&[], Duration::from_secs(20)).await?);
    stop.store(true, Ordering::SeqCst);
    let log = refreshing.await?;
    eprintln!(
        "--- leaders {leaders:?}; {} refreshes acknowledged",
        log.acked
    );
    ensure!(
        log.lost.is_empty(),
        "the key expired while refreshed every 500 ms with a {TTL_SECS} s TTL: {:?}",
        log.lost
    );
    leaders.dedup();
    ensure!(
        leaders.len() >= 2,
        "leadership never moved ({leaders:?}): the run proved nothing"
    );
    ensure!(log.acked >= 10, "only {} refreshes went through", log.acked);

    let quorum = V2::new(urls[1].clone());
    let left = quorum.get(&format!("{LEFT}?quorum=true")).await?;
    ensure!(
        left.status == 404,
        "a 2 s key nobody refreshed is still there after 20 s: {}",
        left.text
    );
    let Some(last_ack) = log.last_ack else {
        bail!("no refresh was acknowledged");
    };
    let earliest = Duration::from_millis(TTL_SECS * 1000 - 2 * SKEW_MS.unsigned_abs());
    let deadline = Instant::now() + Duration::from_secs(TTL_SECS + 30);
    loop {
        let r = quorum.get(&format!("{HELD}?quorum=true")).await?;
        if r.status == 404 {
            let gone_after = last_ack.elapsed();
            ensure!(
                gone_after >= earliest,
                "expired {gone_after:?} after the last refresh, sooner than the TTL less the skew ({earliest:?})"
            );
            eprintln!("--- {HELD} gone {gone_after:?} after the last refresh");
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{HELD} never expired after refreshes stopped: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
