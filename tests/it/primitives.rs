//! Locks, semaphores and elections over the REST API and `shoalctl`, against a
//! real 3-member cluster: limits hold, waiting acquirers get freed slots, a
//! holder that stops renewing loses its slot when its TTL lapses, and a watch
//! on a follower sees a write made through another member.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::harness::{heavy_test_lock, shoal_binary, Cluster, Flavor, V2};

async fn post(url: &str, body: Value) -> Result<(u16, Value)> {
    let resp = reqwest::Client::new().post(url).json(&body).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_election_and_cross_member_watch() -> Result<()> {
    let _serial = heavy_test_lock().await;
    let cluster = Cluster::start_with(Flavor::Shoal, 3, &[]).await?;
    let urls = cluster.client_urls();
    let lock = |i: usize, action: &str| format!("{}/api/v1/locks/reboot/{action}", urls[i % 3]);

    eprintln!(
        "--- a semaphore of 2: two holders get in (through different members), a third is refused"
    );
    let (s, _) = post(
        &lock(0, "acquire"),
        json!({"holder": "m1", "limit": 2, "ttl": 30}),
    )
    .await?;
    ensure!(s == 200, "m1: {s}");
    let (s, body) = post(
        &lock(1, "acquire"),
        json!({"holder": "m2", "limit": 2, "ttl": 30}),
    )
    .await?;
    ensure!(
        s == 200 && body["holders"].as_array().map(Vec::len) == Some(2),
        "m2: {s} {body}"
    );
    let (s, body) = post(
        &lock(2, "acquire"),
        json!({"holder": "m3", "limit": 2, "ttl": 30}),
    )
    .await?;
    ensure!(
        s == 409 && body["error"]["code"] == "lock_busy",
        "m3 must be refused: {s} {body}"
    );

    eprintln!(
        "--- the same holder acquiring again keeps its one slot and gets a larger fencing token"
    );
    let state: Value = reqwest::get(format!("{}/api/v1/locks/reboot", urls[0]))
        .await?
        .json()
        .await?;
    let before = body_token(&state, "m1")?;
    let (s, body) = post(
        &lock(2, "acquire"),
        json!({"holder": "m1", "limit": 2, "ttl": 30}),
    )
    .await?;
    ensure!(
        s == 200 && body["holders"].as_array().map(Vec::len) == Some(2),
        "m1 renew: {s} {body}"
    );
    ensure!(
        body_token(&body, "m1")? > before,
        "fencing token must grow: {body}"
    );

    eprintln!("--- a waiting acquirer gets the slot a release frees");
    let waiter = tokio::spawn({
        let url = lock(1, "acquire");
        async move {
            post(
                &url,
                json!({"holder": "m3", "limit": 2, "ttl": 30, "wait": 20}),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = post(&lock(0, "release"), json!({"holder": "m2"})).await?;
    ensure!(s == 200, "release m2: {s}");
    let (s, body) = waiter.await??;
    ensure!(
        s == 200,
        "waiting m3 should have got the freed slot: {s} {body}"
    );
    let (s, body) = post(&lock(0, "release"), json!({"holder": "m2"})).await?;
    ensure!(
        s == 404 && body["error"]["code"] == "not_held",
        "double release: {s} {body}"
    );

    eprintln!("--- a holder that stops renewing loses its slot when its TTL lapses");
    let (s, _) = post(&lock(0, "release"), json!({"holder": "m3"})).await?;
    ensure!(s == 200, "release m3: {s}");
    let (s, _) = post(
        &lock(0, "acquire"),
        json!({"holder": "dead", "limit": 2, "ttl": 1}),
    )
    .await?;
    ensure!(s == 200, "dead: {s}");
    let started = Instant::now();
    let (s, body) = post(
        &lock(2, "acquire"),
        json!({"holder": "m4", "limit": 2, "ttl": 30, "wait": 10}),
    )
    .await?;
    ensure!(s == 200, "m4 should get the lapsed slot: {s} {body}");
    ensure!(
        started.elapsed() >= Duration::from_millis(500),
        "slot freed before the TTL lapsed"
    );

    eprintln!("--- election: one leader; the loser takes over after a resign");
    let el = |i: usize, action: &str| format!("{}/api/v1/elections/primary/{action}", urls[i % 3]);
    let (s, body) = post(
        &el(0, "campaign"),
        json!({"candidate": "a", "value": "10.0.0.1", "ttl": 30}),
    )
    .await?;
    ensure!(s == 200 && body["leader"] == "a", "a campaigns: {s} {body}");
    let (s, body) = post(&el(1, "campaign"), json!({"candidate": "b", "ttl": 30})).await?;
    ensure!(
        s == 409 && body["error"]["code"] == "election_lost",
        "b must lose: {s} {body}"
    );
    let leader: Value = reqwest::get(format!("{}/api/v1/elections/primary", urls[2]))
        .await?
        .json()
        .await?;
    ensure!(
        leader["leader"] == "a" && leader["value"] == "10.0.0.1",
        "leader seen from member 3: {leader}"
    );
    let (s, _) = post(&el(2, "resign"), json!({"candidate": "a"})).await?;
    ensure!(s == 200, "resign: {s}");
    let (s, body) = post(&el(1, "campaign"), json!({"candidate": "b", "ttl": 30})).await?;
    ensure!(
        s == 200 && body["leader"] == "b",
        "b takes over: {s} {body}"
    );

    eprintln!("--- shoalctl lock runs a command while holding a slot and passes its exit code");
    let status = cmd_status(&urls)?;
    ensure!(
        status == Some(7),
        "shoalctl lock must exit with the command's code, got {status:?}"
    );

    eprintln!("--- a watch on a follower sees a write made through another member");
    let watcher = tokio::spawn({
        let v2 = V2::new(urls[1].clone());
        async move { v2.get("/watched/key?wait=true").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = V2::new(urls[2].clone())
        .put("/watched/key", &[("value", "seen")])
        .await?;
    ensure!(w.status == 201, "write: {}", w.text);
    let event = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .context("watch did not fire")???;
    ensure!(
        event.json()["node"]["value"] == "seen",
        "watch event: {}",
        event.text
    );
    Ok(())
}

fn body_token(state: &Value, holder: &str) -> Result<u64> {
    state["holders"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["holder"] == holder))
        .and_then(|h| h["token"].as_u64())
        .with_context(|| format!("{holder} in {state}"))
}

fn cmd_status(urls: &[String]) -> Result<Option<i32>> {
    let status = Command::new(shoal_binary("shoalctl"))
        .args([
            "--endpoints",
            &urls.join(","),
            "lock",
            "batch",
            "--ttl",
            "5",
            "--",
        ])
        .args(["sh", "-c", "test -n \"$SHOAL_LOCK_TOKEN\" && exit 7"])
        .status()?;
    Ok(status.code())
}
