//! Peers authenticate each other: a 3-member cluster runs beside a rogue
//! `shoal-server` that names the members in its `--initial-cluster` but
//! holds another cluster token, so it campaigns against them over and over
//! (it thinks it is one of four). Forged raft RPCs — a vote with a huge term,
//! an append, a member add — are sent with no token and with a wrong one.
//! Every one is refused 403, the cluster keeps its leader and term, still
//! takes writes, and its member list stays the same three.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::harness::{free_port, heavy_test_lock, shoal_binary, Cluster, Flavor, V2};

/// The header that carries the cluster token between peers.
const TOKEN_HEADER: &str = "x-shoal-cluster-token";

/// A child process killed on drop.
struct Rogue(Child);

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The leader's index and the term the cluster reports.
async fn leader_and_term(cluster: &Cluster) -> Result<(usize, u64)> {
    let leader = cluster.wait_leader(&[], Duration::from_secs(20)).await?;
    let r = V2::new(cluster.members[leader].client_url())
        .get("/")
        .await?;
    Ok((leader, r.raft_term.context("no X-Raft-Term")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_cluster_token_cannot_vote_append_or_join() -> Result<()> {
    let _serial = heavy_test_lock().await;
    let cluster = Cluster::start_with(Flavor::Shoal, 3, &[]).await?;
    let (leader, term) = leader_and_term(&cluster).await?;
    eprintln!("--- leader member {leader}, term {term}");

    let dir = tempfile::tempdir()?;
    let rogue_peer = format!("http://127.0.0.1:{}", free_port());
    let rogue_client = format!("http://127.0.0.1:{}", free_port());
    let mut initial: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect();
    initial.push(format!("rogue={rogue_peer}"));
    let log = std::fs::File::create(dir.path().join("rogue.log"))?;
    let _rogue = Rogue(
        Command::new(shoal_binary("shoal-server"))
            .args(["--name", "rogue", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &rogue_client])
            .args(["--listen-peer-urls", &rogue_peer])
            .args(["--initial-advertise-peer-urls", &rogue_peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", "not-the-cluster-token"])
            .args(["--election-timeout", "300", "--heartbeat-interval", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the rogue")?,
    );

    eprintln!("--- forged raft RPCs, with no token and a wrong one");
    let peer = cluster.members[(leader + 1) % 3].peer_url();
    let vote = json!({
        "vote": {"leader_id": {"term": term + 1000, "node_id": 4242}, "committed": false},
        "last_log_id": {"leader_id": {"term": term + 1000, "node_id": 4242}, "index": 1_000_000}
    });
    let append = json!({
        "vote": {"leader_id": {"term": term + 1000, "node_id": 4242}, "committed": true},
        "prev_log_id": null, "leader_commit": null, "entries": []
    });
    let http = reqwest::Client::new();
    for (path, body) in [
        ("/raft/vote", vote),
        ("/raft/append", append),
        ("/raft/members/add", json!(rogue_peer)),
    ] {
        for token in [None, Some("not-the-cluster-token")] {
            let mut req = http.post(format!("{peer}{path}")).json(&body);
            if let Some(t) = token {
                req = req.header(TOKEN_HEADER, t);
            }
            let status = req.send().await?.status().as_u16();
            ensure!(
                status == 403,
                "{path} with token {token:?} answered {status}"
            );
        }
    }

    eprintln!("--- the rogue campaigns for 5 s (election timeout 300 ms); writes go on");
    let v2 = V2::new(cluster.members[leader].client_url());
    for i in 0..25 {
        let r = v2
            .put(&format!("/peer-auth/k{i}"), &[("value", "v")])
            .await?;
        ensure!(
            r.status < 300,
            "write {i} during the rogue's campaigns: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (leader_after, term_after) = leader_and_term(&cluster).await?;
    ensure!(
        (leader_after, term_after) == (leader, term),
        "the rogue disturbed the cluster: leader {leader} term {term} became leader {leader_after} term {term_after}"
    );
    let members: Value = reqwest::get(format!("{}/v2/members", cluster.members[0].client_url()))
        .await?
        .json()
        .await?;
    let n = members["members"].as_array().map_or(0, Vec::len);
    ensure!(n == 3, "the member list changed: {members}");
    let rogue_log = std::fs::read_to_string(dir.path().join("rogue.log"))?;
    ensure!(
        rogue_log.contains("answered 403: wrong or missing cluster token"),
        "the rogue was never refused (so it never reached the members?):\n{rogue_log}"
    );
    Ok(())
}
