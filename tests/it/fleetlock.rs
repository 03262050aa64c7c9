//! Reboot locks from the outside, on a real 3-member cluster: the FleetLock
//! protocol as Zincati speaks it (`/v1/pre-reboot`, `/v1/steady-state`), groups
//! mapped to `/api/v1/locks` semaphores, `shoalctl lock status/unlock/limit`, and a
//! property test of the semaphore under many racing clients with TTL expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};

use crate::harness::{heavy_test_lock, shoalctl, Cluster, Flavor};
use crate::holders::{max_concurrent, Held};

/// A FleetLock call; `header` is the `fleet-lock-protocol` value, if any.
async fn fleetlock(
    http: &reqwest::Client,
    url: &str,
    header: Option<&str>,
    body: &str,
) -> Result<(u16, Value)> {
    let mut req = http.post(url).body(body.to_owned());
    if let Some(v) = header {
        req = req.header("fleet-lock-protocol", v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

fn params(id: &str, group: &str) -> String {
    json!({"client_params": {"id": id, "group": group}}).to_string()
}

fn holders(state: &Value) -> Vec<&str> {
    state["holders"]
        .as_array()
        .map(|hs| hs.iter().filter_map(|h| h["holder"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_protocol_and_shoalctl_lock() -> Result<()> {
    let _serial = heavy_test_lock().await;
    let cluster = Cluster::start_with(Flavor::Shoal, 3, &[]).await?;
    let urls = cluster.client_urls();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let pre = |i: usize| format!("{}/v1/pre-reboot", urls[i % 3]);
    let steady = |i: usize| format!("{}/v1/steady-state", urls[i % 3]);
    let lock = |i: usize, name: &str| format!("{}/api/v1/locks/{name}", urls[i % 3]);
    let get = |url: String| {
        let http = http.clone();
        async move { Ok::<Value, anyhow::Error>(http.get(url).send().await?.json().await?) }
    };

    eprintln!("--- the protocol header is required, with the value true");
    for header in [None, Some("false"), Some("1")] {
        let (s, body) = fleetlock(&http, &pre(0), header, &params("a", "default")).await?;
        ensure!(
            s == 400 && body["kind"] == "missing_fleet_lock_header" && body["value"] != "",
            "header {header:?}: {s} {body}"
        );
    }

    eprintln!("--- the body must be client_params with a non-empty id and a valid group");
    for bad in [
        "not json".to_owned(),
        "{}".to_owned(),
        json!({"client_params": {"id": "a"}}).to_string(),
        params("", "default"),
        params("a", ""),
        params("a", "no_underscores"),
        params("a/b", "default"),
    ] {
        for url in [pre(1), steady(1)] {
            let (s, body) = fleetlock(&http, &url, Some("true"), &bad).await?;
            ensure!(
                s == 400 && body["kind"] == "bad_client_params",
                "{url} {bad}: {s} {body}"
            );
        }
    }

    eprintln!(
        "--- group default is the reboot semaphore, 1 slot unless configured; locking is recursive"
    );
    let (s, body) = fleetlock(&http, &pre(0), Some("true"), &params("a", "default")).await?;
    ensure!(s == 200, "a: {s} {body}");
    let (s, body) = fleetlock(&http, &pre(2), Some("true"), &params("a", "default")).await?;
    ensure!(s == 200, "a again: {s} {body}");
    let state = get(lock(1, "reboot")).await?;
    ensure!(
        holders(&state) == ["a"]
            && state["limit"] == 1
            && state["holders"][0]["value"] == "fleetlock",
        "one slot for a: {state}"
    );
    let (s, body) = fleetlock(&http, &pre(1), Some("true"), &params("b", "default")).await?;
    ensure!(
        s == 409 && body["kind"] == "failed_lock_semaphore_full",
        "b must be refused: {s} {body}"
    );
    ensure!(
        body["value"].as_str().is_some_and(|v| v.contains('a')),
        "the refusal names the holder: {body}"
    );

    eprintln!("--- steady-state releases (200 also when nothing is held), then b gets the slot");
    let (s, _) = fleetlock(&http, &steady(2), Some("true"), &params("b", "default")).await?;
    ensure!(s == 200, "b holds nothing: {s}");
    let (s, _) = fleetlock(&http, &steady(0), Some("true"), &params("a", "default")).await?;
    ensure!(s == 200, "a releases: {s}");
    let (s, _) = fleetlock(&http, &steady(1), Some("true"), &params("a", "default")).await?;
    ensure!(s == 200, "a releases again: {s}");
    let (s, body) = fleetlock(&http, &pre(1), Some("true"), &params("b", "default")).await?;
    ensure!(s == 200, "b after a left: {s} {body}");

    eprintln!("--- a group configured with 2 slots through the locks API admits two");
    let resp = http
        .put(lock(0, "reboot-workers"))
        .json(&json!({"limit": 0}))
        .send()
        .await?;
    ensure!(resp.status() == 400, "limit 0: {}", resp.status());
    let resp = http
        .put(lock(0, "reboot-workers"))
        .json(&json!({"limit": 2}))
        .send()
        .await?;
    let status = resp.status();
    let state: Value = resp.json().await?;
    ensure!(
        status == 200 && state["configured_limit"] == 2,
        "configure: {status} {state}"
    );
    for (i, id) in ["w1", "w2"].iter().enumerate() {
        let (s, body) = fleetlock(&http, &pre(i), Some("true"), &params(id, "workers")).await?;
        ensure!(s == 200, "{id}: {s} {body}");
    }
    let (s, body) = fleetlock(&http, &pre(2), Some("true"), &params("w3", "workers")).await?;
    ensure!(
        s == 409 && body["kind"] == "failed_lock_semaphore_full",
        "w3 must be refused: {s} {body}"
    );

    eprintln!("--- an unconfigured group shares the limit its current holders took it with");
    let resp = http
        .post(format!("{}/acquire", lock(0, "reboot-db")))
        .json(&json!({"holder": "agent-1", "limit": 2, "ttl": 30}))
        .send()
        .await?;
    ensure!(resp.status() == 200, "agent-1: {}", resp.status());
    let (s, body) = fleetlock(&http, &pre(1), Some("true"), &params("d1", "db")).await?;
    ensure!(s == 200, "d1 takes the second slot: {s} {body}");
    let (s, body) = fleetlock(&http, &pre(2), Some("true"), &params("d2", "db")).await?;
    ensure!(s == 409, "d2 must be refused: {s} {body}");

    eprintln!("--- shoalctl lock status shows limits, holders, tokens and TTL left");
    let (ok, out, err) = shoalctl(&urls.join(","), &["lock", "status", "reboot-workers"])?;
    ensure!(ok, "status: {err}");
    let mut lines = out.lines();
    ensure!(
        lines.next() == Some("reboot-workers: limit=2 holders=2 configured_limit=2"),
        "status header: {out}"
    );
    for id in ["w1", "w2"] {
        let line = lines.next().unwrap_or_default();
        let ttl: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ttl=")?.strip_suffix('s')?.parse().ok())
            .with_context(|| format!("no ttl in {line:?}"))?;
        ensure!(
            line.starts_with(&format!("  {id} token=")) && ttl > 23 * 3600 && ttl <= 24 * 3600,
            "holder line: {line:?}"
        );
    }
    let (ok, out, err) = shoalctl(&urls.join(","), &["-o", "json", "lock", "status"])?;
    ensure!(ok, "status of all: {err}");
    let all: Value = serde_json::from_str(out.trim())?;
    let mut names: Vec<&str> = all["locks"]
        .as_array()
        .map(|ls| ls.iter().filter_map(|l| l["name"].as_str()).collect())
        .unwrap_or_default();
    names.sort_unstable();
    ensure!(
        names == ["reboot", "reboot-db", "reboot-workers"],
        "every held lock: {out}"
    );

    eprintln!("--- shoalctl lock unlock frees a holder's slot; unlocking it again fails");
    let (ok, out, err) = shoalctl(&urls.join(","), &["lock", "unlock", "reboot-workers", "w1"])?;
    ensure!(
        ok && out.starts_with("reboot-workers: limit=2 holders=1"),
        "unlock: {out} {err}"
    );
    let (s, body) = fleetlock(&http, &pre(2), Some("true"), &params("w3", "workers")).await?;
    ensure!(s == 200, "w3 gets the freed slot: {s} {body}");
    let (ok, _, err) = shoalctl(&urls.join(","), &["lock", "unlock", "reboot-workers", "w1"])?;
    ensure!(
        !ok && err.contains("not_held"),
        "a second unlock must fail: {err}"
    );

    eprintln!("--- shoalctl lock limit configures the default group");
    let (ok, out, err) = shoalctl(&urls.join(","), &["lock", "limit", "reboot", "2"])?;
    ensure!(
        ok && out.contains("configured_limit=2"),
        "limit: {out} {err}"
    );
    let (s, body) = fleetlock(&http, &pre(0), Some("true"), &params("c", "default")).await?;
    ensure!(s == 200, "c is the second of 2: {s} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_never_exceeds_its_limit_under_racing_clients() -> Result<()> {
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 30;
    const LIMIT: usize = 3;
    const TTL: Duration = Duration::from_secs(1);

    let _serial = heavy_test_lock().await;
    let cluster = Cluster::start_with(Flavor::Shoal, 3, &[]).await?;
    let urls = Arc::new(cluster.client_urls());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let started = Instant::now();

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, urls) = (http.clone(), urls.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(c as u64 + 1);
                let mut history = Vec::new();
                let mut refused = 0usize;
                for round in 0..ROUNDS {
                    let member = &urls[(c + round) % urls.len()];
                    let holder = format!("c{c}-r{round}");
                    // Every other attempt waits up to a second on the server for a free slot.
                    let wait = round % 2;
                    let invoked = Instant::now();
                    let resp = http
                        .post(format!("{member}/api/v1/locks/prop/acquire"))
                        .json(&json!({
                            "holder": holder, "limit": LIMIT, "ttl": TTL.as_secs(), "wait": wait,
                        }))
                        .send()
                        .await?;
                    let acquired = Instant::now();
                    match resp.status().as_u16() {
                        200 => {}
                        409 => {
                            refused += 1;
                            let pause = rng.gen_range(20..60);
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            continue;
                        }
                        other => anyhow::bail!("acquire {holder}: HTTP {other}"),
                    }
                    let lapses = invoked + TTL;
                    if rng.gen_ratio(1, 6) {
                        // A client that dies holding its slot: only the TTL frees it.
                        history.push(Held {
                            acquired,
                            until: lapses,
                            released: false,
                        });
                        continue;
                    }
                    let hold = rng.gen_range(10..70);
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    let releasing = Instant::now();
                    let member = &urls[(c + round + 1) % urls.len()];
                    let status = http
                        .post(format!("{member}/api/v1/locks/prop/release"))
                        .json(&json!({"holder": holder}))
                        .send()
                        .await?
                        .status()
                        .as_u16();
                    // 404: the slot lapsed first (a slow machine); it is gone either way.
                    anyhow::ensure!(
                        status == 200 || status == 404,
                        "release {holder}: HTTP {status}"
                    );
                    history.push(Held {
                        acquired,
                        until: releasing.min(lapses),
                        released: true,
                    });
                }
                Ok::<_, anyhow::Error>((history, refused))
            })
        })
        .collect();

    let mut history = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (h, r) = task.await??;
        history.extend(h);
        refused += r;
    }
    let leaked = history.iter().filter(|h| !h.released).count();
    let max = max_concurrent(&history);
    eprintln!(
        "--- {} acquires ({leaked} never released), {refused} refused, at most {max} of {LIMIT} held at once, in {:?}",
        history.len(),
        started.elapsed()
    );
    ensure!(max <= LIMIT, "{max} holders at one instant, limit {LIMIT}");
    ensure!(refused > 0, "the clients never contended");
    ensure!(history.len() >= 100, "too few acquires to mean much");
    // Without expiry the first LIMIT leaked slots would have blocked everyone for good.
    ensure!(
        leaked > LIMIT,
        "only {leaked} slots leaked: TTL expiry was not exercised"
    );
    Ok(())
}
