//! The fleet end to end: one server, three `shoal-agent` processes (distinct
//! machine ids and metadata, sharing this host's Docker engine, told apart by
//! labels), units placed by the engine and run as real containers.
//!
//! Proves: replicas spread under `Conflicts`; required metadata is honoured;
//! a killed agent's instance comes back on another machine once its lease
//! lapses; a restarted agent adopts or removes containers instead of
//! duplicating them; `shoalctl journal` shows a container's output through
//! its agent; destroying a unit removes its containers.
//! Needs Docker: fails (does not skip) when `SHOAL_REQUIRE_DOCKER=1`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::harness::{free_port, heavy_test_lock, shoal_binary, Cluster, Flavor};

const IMAGE: &str = "shoal-test/busybox:latest";
const LEASE_TTL: &str = "3";

/// True when Docker answers; with `SHOAL_REQUIRE_DOCKER=1` its absence is an error.
fn docker_ready() -> Result<bool> {
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var("SHOAL_REQUIRE_DOCKER").as_deref() == Ok("1") {
        bail!("SHOAL_REQUIRE_DOCKER=1 but `docker info` fails: start dockerd");
    }
    Ok(ok)
}

fn ensure_image() -> Result<()> {
    let have = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !have.success() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-image");
        let built = Command::new("bash").arg(script).status()?;
        ensure!(built.success(), "scripts/test-image failed");
    }
    Ok(())
}

/// Containers of this test run, by label, as `instance -> machine`.
fn containers(run: &str) -> Result<Vec<(String, String, String)>> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--filter",
            "label=shoal.machine",
            "--format",
            "{{.Label \"shoal.instance\"}} {{.Label \"shoal.machine\"}} {{.State}}",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next().unwrap_or("").to_owned(),
            ))
        })
        .filter(|(_, m, _)| m.starts_with(run))
        .collect())
}

fn remove_containers(run: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=shoal.machine"])
        .output();
    if let Ok(out) = out {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let inspect = Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"shoal.machine\"}}",
                    id,
                ])
                .output();
            if inspect.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with(run)) {
                let _ = Command::new("docker")
                    .args(["rm", "-f", id])
                    .stdout(Stdio::null())
                    .status();
            }
        }
    }
}

/// One agent process; SIGKILLed on drop.
struct Agent {
    id: String,
    args: Vec<String>,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn start(dir: &Path, server: &str, id: &str, metadata: &str) -> Result<Agent> {
        let args = vec![
            "--server".into(),
            server.into(),
            "--machine-id".into(),
            id.into(),
            "--metadata".into(),
            metadata.into(),
            "--state-dir".into(),
            dir.join(id).display().to_string(),
            "--local-endpoint".into(),
            format!("127.0.0.1:{}", free_port()),
            "--lease-ttl".into(),
            LEASE_TTL.into(),
        ];
        let mut a = Agent {
            id: id.into(),
            args,
            log: dir.join(format!("{id}.log")),
            child: None,
        };
        a.spawn()?;
        Ok(a)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(shoal_binary("shoal-agent"))
            .args(&self.args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn shoal-agent")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn get(url: &str) -> Result<Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

/// Polls `GET /api/v1/units/{name}` until `done` holds or `timeout` passes.
async fn wait_unit(
    base: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = get(&format!("{base}/api/v1/units/{name}")).await?;
        if done(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached in {timeout:?}; last status {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(instance, machine)` of every instance that the agent of the machine it
/// is placed on reports running (a stale report from a lost machine does not count).
fn running(status: &Value) -> Vec<(String, String)> {
    status["instances"]
        .as_array()
        .map(|is| {
            is.iter()
                .filter(|i| {
                    i["actual"]["state"] == "running"
                        && i["actual"]["machine_id"] == i["machine_id"]
                })
                .filter_map(|i| {
                    Some((
                        i["instance"].as_str()?.to_owned(),
                        i["machine_id"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_run_as_containers_and_survive_a_lost_machine() -> Result<()> {
    if !docker_ready()? {
        eprintln!(
            "Docker is not available and SHOAL_REQUIRE_DOCKER is not 1: nothing to test here"
        );
        return Ok(());
    }
    let _serial = heavy_test_lock().await;
    ensure_image()?;
    let run = format!("it{}", std::process::id());
    remove_containers(&run);
    let cluster = Cluster::start_with(Flavor::Shoal, 1, &[]).await?;
    let base = cluster.members[0].client_url();
    let dir = tempfile::tempdir()?;

    eprintln!("--- three agents: two in region eu, one in us");
    let mut agents = vec![
        Agent::start(dir.path(), &base, &format!("{run}-m1"), "region=eu")?,
        Agent::start(dir.path(), &base, &format!("{run}-m2"), "region=eu")?,
        Agent::start(dir.path(), &base, &format!("{run}-m3"), "region=us")?,
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let machines = get(&format!("{base}/api/v1/machines")).await?;
        let ids: BTreeSet<String> = machines
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        if agents.iter().all(|a| ids.contains(&a.id)) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "agents did not register: {machines}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("--- web: 2 replicas that conflict with each other; db: region us only");
    let http = reqwest::Client::new();
    let web = json!({
        "name": "web", "image": IMAGE, "command": ["sleep", "3600"], "desired": "launched",
        "placement": { "replicas": 2, "conflicts": ["web*"] }
    });
    let db = json!({
        "name": "db", "image": IMAGE, "command": ["sh", "-c", "echo db-says-hello; exec sleep 3600"], "desired": "launched",
        "placement": { "machine-metadata": { "region": ["us"] } }
    });
    for unit in [&web, &db] {
        let resp = http
            .post(format!("{base}/api/v1/units"))
            .json(unit)
            .send()
            .await?;
        ensure!(
            resp.status().as_u16() == 201,
            "submit: {} {}",
            resp.status(),
            resp.text().await?
        );
    }
    let status = wait_unit(
        &base,
        "web",
        Duration::from_secs(60),
        "web running twice",
        |s| running(s).len() == 2,
    )
    .await?;
    let machines: BTreeSet<String> = running(&status).into_iter().map(|(_, m)| m).collect();
    ensure!(
        machines.len() == 2,
        "conflicting replicas share a machine: {status}"
    );
    let status = wait_unit(&base, "db", Duration::from_secs(60), "db running", |s| {
        running(s).len() == 1
    })
    .await?;
    ensure!(
        running(&status)[0].1 == format!("{run}-m3"),
        "db must run in region us: {status}"
    );
    let in_docker = containers(&run)?;
    ensure!(
        in_docker.len() == 3,
        "3 containers expected in Docker, found {in_docker:?}"
    );

    eprintln!("--- shoalctl journal db: the container's output, through the agent that runs it");
    let out = Command::new(shoal_binary("shoalctl"))
        .args(["--endpoints", &base, "journal", "db", "-n", "10"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("db-says-hello"),
        "journal: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    eprintln!("--- kill the agent running web@1; the instance comes back elsewhere");
    let web_status = get(&format!("{base}/api/v1/units/web")).await?;
    let (_, victim) = running(&web_status)
        .into_iter()
        .find(|(i, _)| i == "web@1")
        .context("web@1 running")?;
    let victim_idx = agents
        .iter()
        .position(|a| a.id == victim)
        .context("victim agent")?;
    agents[victim_idx].kill();
    let status = wait_unit(&base, "web", Duration::from_secs(60), "web@1 moved", |s| {
        running(s).iter().any(|(i, m)| i == "web@1" && *m != victim)
    })
    .await?;
    eprintln!("    web is now {:?}", running(&status));

    eprintln!(
        "--- restart the killed agent: it removes its stale web@1 instead of keeping a duplicate"
    );
    agents[victim_idx].spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let on_victim: Vec<_> = containers(&run)?
            .into_iter()
            .filter(|(i, m, _)| i == "web@1" && *m == victim)
            .collect();
        if on_victim.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "restarted agent kept its unassigned container: {on_victim:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let web: Vec<_> = containers(&run)?
            .into_iter()
            .filter(|(i, _, _)| i.starts_with("web@"))
            .collect();
        let instances: BTreeSet<&str> = web.iter().map(|(i, _, _)| i.as_str()).collect();
        if web.len() == 2 && instances.len() == 2 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "exactly web@1 and web@2 should run, Docker has {web:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    eprintln!("--- destroy both units: their containers go away");
    for name in ["web", "db"] {
        let resp = http
            .delete(format!("{base}/api/v1/units/{name}"))
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "destroy {name}: {}",
            resp.status()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !containers(&run)?.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "containers left after destroy: {:?}",
            containers(&run)?
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(agents);
    remove_containers(&run);
    Ok(())
}
