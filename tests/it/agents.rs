//! What the fleet tests share: Docker checks, the test image, `shoal-agent`
//! processes, and polling the REST API for units and machines.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::harness::{free_port, heavy_test_lock, shoal_binary, Cluster, Flavor};

/// A fleet test's setup: Docker checked, heavy tests serialised, the test
/// image present, no containers left from an earlier run of the same name,
/// and a one-member server.
pub struct FleetRun {
    /// The run's name: machine ids start with it, so its containers are known.
    pub run: String,
    /// The server's client URL.
    pub base: String,
    /// The server, kept alive for the run (dropped, so killed, before the guard).
    _cluster: Cluster,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl FleetRun {
    /// Sets up a run named `prefix<pid>`; `None` (after a notice) when Docker
    /// is absent and not required.
    pub async fn start(prefix: &str) -> Result<Option<FleetRun>> {
        if !docker_ready()? {
            eprintln!(
                "Docker is not available and SHOAL_REQUIRE_DOCKER is not 1: nothing to test here"
            );
            return Ok(None);
        }
        let serial = heavy_test_lock().await;
        ensure_image()?;
        let run = format!("{prefix}{}", std::process::id());
        remove_containers(&run);
        let cluster = Cluster::start_with(Flavor::Shoal, 1, &[]).await?;
        let base = cluster.members[0].client_url();
        Ok(Some(FleetRun {
            run,
            base,
            _cluster: cluster,
            _serial: serial,
        }))
    }
}

/// `POST /api/v1/units`: submits (or updates) a unit; 200 or 201 expected.
pub async fn submit(base: &str, unit: &Value) -> Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/units"))
        .json(unit)
        .send()
        .await?;
    let status = resp.status();
    ensure!(
        status.is_success(),
        "submit {}: {status} {}",
        unit["name"],
        resp.text().await?
    );
    Ok(())
}

/// Waits until every agent's machine is registered.
pub async fn wait_machines(base: &str, agents: &[&Agent]) -> Result<()> {
    wait_machines_with(&reqwest::Client::new(), base, agents).await
}

/// [`wait_machines`] asking through `http` (e.g. one that trusts a test CA).
pub async fn wait_machines_with(
    http: &reqwest::Client,
    base: &str,
    agents: &[&Agent],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("{base}/api/v1/machines");
        let machines: Value = http.get(&url).send().await?.json().await?;
        let ids: BTreeSet<&str> = machines
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str())
            .collect();
        if agents.iter().all(|a| ids.contains(a.id.as_str())) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "agents did not register: {machines}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The local test image (scripts/test-image).
pub const IMAGE: &str = "shoal-test/busybox:latest";
/// Lease TTL of the test agents, in seconds.
pub const LEASE_TTL: &str = "3";

/// True when Docker answers; with `SHOAL_REQUIRE_DOCKER=1` its absence is an error.
pub fn docker_ready() -> Result<bool> {
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

pub fn ensure_image() -> Result<()> {
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
pub fn containers(run: &str) -> Result<Vec<(String, String, String)>> {
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

pub fn remove_containers(run: &str) {
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
pub struct Agent {
    /// Machine id.
    pub id: String,
    args: Vec<String>,
    /// Environment variables set for the process.
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Starts an agent for machine `id` with `metadata` (`k=v,...`) against
    /// `server`, its state and log in `dir`.
    pub fn start(dir: &Path, server: &str, id: &str, metadata: &str) -> Result<Agent> {
        Agent::start_with(dir, server, id, metadata, &[])
    }

    /// Like [`Agent::start`], with `extra` flags after the usual ones.
    pub fn start_with(
        dir: &Path,
        server: &str,
        id: &str,
        metadata: &str,
        extra: &[String],
    ) -> Result<Agent> {
        let mut a = Agent::new(dir, server, id, metadata, extra);
        a.spawn()?;
        Ok(a)
    }

    /// The agent [`Agent::start_with`] starts, not started yet.
    pub fn new(dir: &Path, server: &str, id: &str, metadata: &str, extra: &[String]) -> Agent {
        let mut args = vec![
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
        args.extend(extra.iter().cloned());
        Agent {
            id: id.into(),
            args,
            env: Vec::new(),
            log: dir.join(format!("{id}.log")),
            child: None,
        }
    }

    /// Starts the process (again), appending to the same log.
    pub fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(shoal_binary("shoal-agent"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn shoal-agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// Adds flags for the next [`Agent::spawn`].
    pub fn push_args(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(|s| s.to_string()));
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for the next [`Agent::spawn`].
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.into(), v.into()));
        }
    }

    /// True when the process was started and has exited by itself since.
    pub fn exited(&mut self) -> bool {
        self.exit_status().is_some()
    }

    /// How the process ended, once it has exited by itself.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of the agent's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILLs the process (its containers stay).
    pub fn kill(&mut self) {
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

/// `GET url` as JSON.
pub async fn get(url: &str) -> Result<Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

/// Polls `GET /api/v1/units/{name}` until `done` holds or `timeout` passes.
pub async fn wait_unit(
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
pub fn running(status: &Value) -> Vec<(String, String)> {
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

/// Polls Docker until `done` holds for this run's containers.
pub async fn wait_containers(
    run: &str,
    what: &str,
    done: impl Fn(&[(String, String, String)]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = containers(run)?;
        if done(&now) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{what}: Docker has {now:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Destroys `units` and waits until this run has no containers left.
pub async fn destroy_all(base: &str, run: &str, units: &[&str]) -> Result<()> {
    let http = reqwest::Client::new();
    for name in units {
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
    wait_containers(run, "containers left after destroy", <[_]>::is_empty).await
}
