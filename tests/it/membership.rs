//! Membership and catch-up: a member added with `POST /v2/members` joins a
//! running cluster whose log was already compacted, so it can only catch up by
//! installing a snapshot; afterwards it holds every key and takes part in
//! quorum. Removing it shrinks the cluster back.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use crate::harness::{heavy_test_lock, Cluster, Flavor, V2};

/// Small snapshot settings so a few hundred writes compact the log.
const SNAPSHOT_FLAGS: [&str; 4] = ["--snapshot-count", "50", "--snapshot-catchup-entries", "5"];
const KEYS: usize = 200;

/// Key `i`'s value: 20 kB each, so the snapshot (about 4 MB) spans two chunks
/// and outgrows the 2 MB a default HTTP body limit allows.
fn value(i: usize) -> String {
    format!("v{i}-{}", "x".repeat(20_000))
}

async fn stats(url: &str) -> Result<serde_json::Value> {
    Ok(reqwest::get(format!("{url}/v2/stats/self"))
        .await?
        .json()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_member_catches_up_from_a_snapshot() -> Result<()> {
    let _serial = heavy_test_lock().await;
    eprintln!("--- start a 1-member cluster that snapshots every 50 entries");
    let mut cluster = Cluster::start_with(Flavor::Shoal, 1, &SNAPSHOT_FLAGS).await?;
    let first = V2::new(cluster.members[0].client_url());
    for i in 0..KEYS {
        let r = first
            .put(&format!("/snap/k{i:03}"), &[("value", &value(i))])
            .await?;
        ensure!(r.status < 300, "write {i} failed: {} {}", r.status, r.text);
    }
    let leader = stats(&cluster.members[0].client_url()).await?;
    let purged = leader["purgedIndex"].as_u64().unwrap_or_default();
    eprintln!(
        "--- leader snapshot at {}, log purged up to {purged}",
        leader["snapshotIndex"]
    );
    ensure!(
        purged > 100,
        "the log was not compacted after snapshots: {leader}"
    );

    eprintln!("--- add a second member; it must install the snapshot to catch up");
    let joined = cluster.add_member(&SNAPSHOT_FLAGS).await?;
    let new_url = cluster.members[joined].client_url();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = stats(&new_url).await?;
        if st["lastApplied"].as_u64().unwrap_or_default() > purged {
            ensure!(
                st["snapshotIndex"].as_u64().unwrap_or_default() > 0,
                "caught up without a snapshot: {st}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "new member never caught up: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v2 = V2::new(new_url.clone());
    for i in 0..KEYS {
        let r = v2.get(&format!("/snap/k{i:03}")).await?;
        ensure!(
            r.json()["node"]["value"] == value(i),
            "key {i} missing on the new member: {}",
            r.status
        );
    }

    eprintln!("--- both members are voters: a write needs and gets both");
    let members: serde_json::Value = reqwest::get(format!("{new_url}/v2/members"))
        .await?
        .json()
        .await?;
    let list = members["members"].as_array().context("members list")?;
    ensure!(list.len() == 2, "expected 2 members: {members}");
    let r = v2.put("/snap/after-join", &[("value", "x")]).await?;
    ensure!(
        r.status < 300,
        "write through the new member failed: {}",
        r.text
    );

    eprintln!("--- remove the new member again");
    let id = list
        .iter()
        .find(|m| m["clientURLs"][0] == new_url.as_str())
        .and_then(|m| m["id"].as_str())
        .context("the new member in the list")?
        .to_owned();
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/v2/members/{id}",
            cluster.members[0].client_url()
        ))
        .send()
        .await?;
    ensure!(
        resp.status().as_u16() == 204,
        "member remove answered {}",
        resp.status()
    );
    cluster.members[joined].kill();
    let r = first.put("/snap/after-remove", &[("value", "y")]).await?;
    ensure!(
        r.status < 300,
        "the remaining member alone must take writes again: {}",
        r.text
    );
    Ok(())
}
