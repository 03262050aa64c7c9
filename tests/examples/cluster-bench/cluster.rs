//! Three-member clusters of `shoal-server` or etcd 3.4 (v2 API) as child
//! processes on loopback, for the watch and recovery benchmarks. Every member
//! is SIGKILLed and reaped when its [`Member`] is dropped.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use tokio::time::Instant;

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// `shoal-server`.
    Shoal,
    /// etcd 3.4 with `--enable-v2`.
    Etcd,
}

impl System {
    /// The name used in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            System::Shoal => "shoal",
            System::Etcd => "etcd",
        }
    }
}

/// One member: its flags, data dir, log and (while running) process.
pub struct Member {
    /// Member name (`n1`...).
    pub name: String,
    /// Client URL.
    pub client_url: String,
    /// Peer URL.
    pub peer_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// Starts the process with `--initial-cluster-state` `state`.
    pub fn spawn(&mut self, state: &str) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("create {}", self.data_dir.display()))?;
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let err = out.try_clone().context("clone the log file handle")?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--initial-cluster-state", state])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs and reaps the process, if it runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Fails when the process is not running.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name);
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            ),
            Err(e) => Err(e).context("cannot check a member process"),
        }
    }

    /// Resident set size now (VmRSS), KiB; 0 when unknown.
    pub fn rss_kb(&self) -> u64 {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running cluster.
pub struct Cluster {
    /// What it runs.
    pub system: System,
    /// Its members, `n1` first.
    pub members: Vec<Member>,
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a loopback port")?;
    Ok(l.local_addr().context("local address")?.port())
}

/// `n` distinct free ports.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    for _ in 0..n * 20 {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
        if ports.len() == n {
            return Ok(ports);
        }
    }
    bail!("could not find {n} distinct free ports")
}

impl Cluster {
    /// Starts `n` members of `system` (binary `bin`) with data and logs under
    /// `dir`, each with the `extra` flags.
    pub fn start(
        system: System,
        bin: &Path,
        n: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<Cluster> {
        if !bin.is_file() {
            bail!("{} does not exist", bin.display());
        }
        let ports = free_ports(2 * n)?;
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[n + i]);
        let initial: Vec<String> = (0..n).map(|i| format!("n{}={}", i + 1, peer(i))).collect();
        let tag = format!("bench-{}", system.label());
        let mut members = Vec::with_capacity(n);
        for (i, port) in ports.iter().take(n).enumerate() {
            let name = format!("n{}", i + 1);
            let client_url = format!("http://127.0.0.1:{port}");
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer(i),
                "--initial-advertise-peer-urls",
                &peer(i),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-token",
                &tag,
            ]
            .map(String::from)
            .to_vec();
            if system == System::Etcd {
                args.push("--enable-v2".into());
            }
            args.extend(extra.iter().cloned());
            let mut member = Member {
                data_dir: dir.join(format!("{}-{name}", system.label())),
                log: dir.join(format!("{}-{name}.log", system.label())),
                name,
                client_url,
                peer_url: peer(i),
                bin: bin.to_owned(),
                args,
                child: None,
            };
            member.spawn("new")?;
            members.push(member);
        }
        Ok(Cluster { system, members })
    }

    /// Waits until every member is healthy and one is leader; returns its index.
    pub async fn wait_ready(&mut self, http: &reqwest::Client, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut healthy = true;
            for m in &mut self.members {
                m.check_alive()?;
                healthy &= is_healthy(http, &m.client_url).await;
            }
            if healthy {
                if let Some(leader) = self.leader(http).await {
                    return Ok(leader);
                }
            }
            if Instant::now() >= deadline {
                bail!("{} cluster not ready in {timeout:?}", self.system.label());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the member that reports itself leader, if any.
    pub async fn leader(&self, http: &reqwest::Client) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if let Ok(st) = get_json(http, &format!("{}/v2/stats/self", m.client_url)).await {
                if st["state"] == "StateLeader" {
                    return Some(i);
                }
            }
        }
        None
    }
}

/// True when `GET /health` says `"health":"true"`.
pub async fn is_healthy(http: &reqwest::Client, url: &str) -> bool {
    matches!(get_json(http, &format!("{url}/health")).await, Ok(v) if v["health"] == "true")
}

/// `GET url` as JSON, with a 5 s timeout.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    resp.json()
        .await
        .with_context(|| format!("GET {url}: body"))
}

/// `PUT url` with form `value=value`; returns the new node's `modifiedIndex`.
pub async fn put_value(http: &reqwest::Client, url: &str, value: &str) -> Result<u64> {
    let resp = http
        .put(url)
        .form(&[("value", value)])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("PUT {url}: body"))?;
    if !status.is_success() {
        bail!("PUT {url}: {status} {body}");
    }
    body["node"]["modifiedIndex"]
        .as_u64()
        .with_context(|| format!("PUT {url}: no modifiedIndex in {body}"))
}
