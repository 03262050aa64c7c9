//! Start real member processes (Shoal or etcd 3.4) on loopback and talk to them.
//!
//! Every member runs as a child process with its stdout/stderr in a log file in a
//! temporary directory; it is SIGKILLed when its `Member` is dropped. The binary under
//! test is `shoal-server` unless `SHOAL_TEST_TARGET=etcd` is set (a development aid to
//! check the tests themselves against the reference implementation).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a member may take to report `{"health":"true"}`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// TLS for a cluster's members: they serve `https` client and peer URLs
/// with `cert`/`key` and trust `ca` for each other (tests/it/tls.rs makes the files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// The members' certificate, valid for 127.0.0.1.
    pub cert: PathBuf,
    /// The key of `cert`.
    pub key: PathBuf,
}

/// An HTTP client with `timeout` for members, trusting `tls`'s CA when given.
pub fn member_http(tls: Option<&TlsFiles>, timeout: Duration) -> Result<reqwest::Client> {
    let ca = tls.map(|t| api::tls::TrustedCa::load(&t.ca)).transpose()?;
    Ok(api::tls::trusting(reqwest::Client::builder(), ca.as_ref())
        .timeout(timeout)
        .build()?)
}

/// Which implementation a member runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Shoal,
    Etcd,
}

impl Flavor {
    /// The implementation the tests are about: Shoal, unless `SHOAL_TEST_TARGET=etcd`
    /// (only for checking the tests against etcd while developing them).
    pub fn under_test() -> Flavor {
        match std::env::var("SHOAL_TEST_TARGET").as_deref() {
            Ok("etcd") => Flavor::Etcd,
            Ok("shoal") | Ok("") | Err(_) => Flavor::Shoal,
            Ok(other) => panic!("SHOAL_TEST_TARGET={other:?}: expected `shoal` or `etcd`"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Flavor::Shoal => "shoal",
            Flavor::Etcd => "etcd",
        }
    }

    /// The server binary; panics with instructions when it is missing.
    pub fn binary(self) -> PathBuf {
        match self {
            Flavor::Shoal => shoal_binary("shoal-server"),
            Flavor::Etcd => require_tool("etcd", "etcd-server"),
        }
    }
}

/// One of the workspace's binaries (`shoal-server`, `shoal-agent`, `shoalctl`),
/// from `SHOAL_BIN_DIR` or `target/debug`; panics with instructions when missing.
pub fn shoal_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("SHOAL_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first \
         (or point SHOAL_BIN_DIR at the directory holding it)",
        bin.display()
    );
    bin
}

/// Path of a system tool the tests need; a missing tool is a test failure, not a skip.
pub fn require_tool(name: &str, debian_package: &str) -> PathBuf {
    let candidates = [format!("/usr/bin/{name}"), format!("/usr/local/bin/{name}")];
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: `apt-get install -y {debian_package}` \
         (.ci/run does this) — these tests fail rather than skip without it"
    );
}

/// Heavy tests (3-member clusters) take this lock so that at most one runs at a time:
/// on a 2-core machine parallel clusters starve each other's heartbeats.
pub async fn heavy_test_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Hand out loopback ports that are free right now.
///
/// Ports come from 20000..32000 (below Linux's ephemeral range, so outgoing
/// connections do not take them), starting at an offset derived from the process id so
/// that two test processes rarely probe the same ports; within the process an atomic
/// counter guarantees no port is handed out twice. Each candidate is checked by binding.
pub fn free_port() -> u16 {
    const LOW: u16 = 20000;
    const SPAN: u16 = 12000;
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let seed = (std::process::id() as u64).wrapping_mul(2654435761) % SPAN as u64;
        AtomicU16::new(seed as u16)
    });
    for _ in 0..SPAN {
        let n = next.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = LOW + n;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
}

/// One member process.
pub struct Member {
    pub flavor: Flavor,
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    initial_cluster: String,
    /// `new` to bootstrap with the others, `existing` to join a running cluster.
    pub cluster_state: &'static str,
    /// Extra flags for the binary (e.g. snapshot tuning).
    pub extra_args: Vec<String>,
    /// Serve `https` with these files (Shoal only).
    pub tls: Option<TlsFiles>,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    fn new(
        flavor: Flavor,
        name: &str,
        dir: &Path,
        client_port: u16,
        peer_port: u16,
        initial_cluster: String,
    ) -> Member {
        Member {
            flavor,
            name: name.to_string(),
            client_port,
            peer_port,
            data_dir: dir.join(format!("{name}.data")),
            log_path: dir.join(format!("{name}.log")),
            initial_cluster,
            cluster_state: "new",
            extra_args: Vec::new(),
            tls: None,
            child: None,
            paused: false,
        }
    }

    /// `https` with TLS files, else `http`.
    pub fn scheme(&self) -> &'static str {
        scheme(self.tls.as_ref())
    }

    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    /// The member's `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.peer_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--name".to_string(),
            self.name.clone(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            self.client_url(),
            "--advertise-client-urls".into(),
            self.client_url(),
            "--listen-peer-urls".into(),
            self.peer_url(),
            "--initial-advertise-peer-urls".into(),
            self.peer_url(),
            "--initial-cluster".into(),
            self.initial_cluster.clone(),
            "--initial-cluster-state".into(),
            self.cluster_state.into(),
            "--initial-cluster-token".into(),
            "shoal-test".into(),
        ];
        if self.flavor == Flavor::Etcd {
            args.push("--enable-v2".into());
        }
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &tls.cert),
                ("--key-file", &tls.key),
                ("--trusted-ca-file", &tls.ca),
                ("--peer-cert-file", &tls.cert),
                ("--peer-key-file", &tls.key),
                ("--peer-trusted-ca-file", &tls.ca),
            ] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Spawn the process (does not wait for health).
    pub fn spawn(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("member {} is already running", self.name);
        }
        let bin = self.flavor.binary();
        let args = self.args();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        writeln!(
            log,
            "===== harness: starting {} {}",
            bin.display(),
            args.join(" ")
        )?;
        let err = log.try_clone()?;
        let child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Poll `/health` until it reports `{"health":"true"}`.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let http = member_http(self.tls.as_ref(), Duration::from_secs(2))?;
        let url = format!("{}/health", self.client_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!(
                        "member {} exited with {status} before becoming healthy\n{}",
                        self.name,
                        self.log_tail(40)
                    );
                }
            } else {
                bail!("member {} is not running", self.name);
            }
            let last = match http.get(&url).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        if let Ok(v) = serde_json::from_str::<Value>(&body) {
                            if v["health"] == "true" {
                                return Ok(());
                            }
                        }
                    }
                    format!("{status} {body}")
                }
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "member {} ({}) not healthy after {timeout:?}; last /health answer: {last}\n{}",
                    self.name,
                    self.flavor.label(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `n` lines of the member's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "----- last {} lines of {} -----\n{}\n-----",
            lines.len() - start,
            self.log_path.display(),
            lines[start..].join("\n")
        )
    }

    /// SIGHUP: the member reloads its certificate files.
    pub fn hangup(&self) -> Result<()> {
        self.signal(Signal::SIGHUP)
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("member {} is not running", self.name))?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        send_signal(Pid::from_raw(pid), sig).with_context(|| format!("{sig} {}", self.name))?;
        Ok(())
    }

    /// SIGKILL the process and reap it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Start again with the same data dir and flags, and wait until healthy.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_healthy(HEALTH_TIMEOUT).await
    }

    /// SIGSTOP: the process stays but stops answering.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after `pause`.
    pub fn resume(&mut self) -> Result<()> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.signal(Signal::SIGCONT);
        }
        self.kill();
        if std::thread::panicking() || std::env::var_os("SHOAL_TEST_SHOW_LOGS").is_some() {
            eprintln!("{}", self.log_tail(30));
        }
    }
}

/// A set of members started together with one `--initial-cluster`.
pub struct Cluster {
    // Field order matters: members are dropped (killed) before the directory is removed.
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Start `n` members of the implementation under test and wait until all are healthy.
    pub async fn start(n: usize) -> Result<Cluster> {
        Cluster::start_flavor(Flavor::under_test(), n).await
    }

    /// Start `n` members of the given implementation and wait until all are healthy.
    pub async fn start_flavor(flavor: Flavor, n: usize) -> Result<Cluster> {
        Cluster::start_with(flavor, n, &[]).await
    }

    /// Start `n` members with extra flags each, and wait until all are healthy.
    pub async fn start_with(flavor: Flavor, n: usize, extra_args: &[&str]) -> Result<Cluster> {
        Cluster::start_opts(flavor, n, extra_args, None).await
    }

    /// Start `n` Shoal members serving `https` client and peer URLs with `tls`.
    pub async fn start_tls(n: usize, tls: &TlsFiles) -> Result<Cluster> {
        Cluster::start_opts(Flavor::Shoal, n, &[], Some(tls)).await
    }

    /// Start `n` Shoal members serving `https` with `tls` and extra flags each.
    pub async fn start_tls_with(n: usize, tls: &TlsFiles, extra_args: &[&str]) -> Result<Cluster> {
        Cluster::start_opts(Flavor::Shoal, n, extra_args, Some(tls)).await
    }

    /// Start `n` members with extra flags each (and TLS when given), and wait
    /// until all are healthy.
    async fn start_opts(
        flavor: Flavor,
        n: usize,
        extra_args: &[&str],
        tls: Option<&TlsFiles>,
    ) -> Result<Cluster> {
        assert!(n >= 1);
        flavor.binary(); // fail early with a clear message
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-it-{}-", flavor.label()))
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{}={}://127.0.0.1:{peer}", i + 1, scheme(tls)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| {
                Member::new(
                    flavor,
                    &format!("n{}", i + 1),
                    dir.path(),
                    client,
                    peer,
                    initial_cluster.clone(),
                )
            })
            .collect();
        eprintln!(
            "--- starting {n}-member {} cluster in {} (clients: {})",
            flavor.label(),
            dir.path().display(),
            members
                .iter()
                .map(|m| m.client_url())
                .collect::<Vec<_>>()
                .join(" ")
        );
        for m in members.iter_mut() {
            m.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
            m.tls = tls.cloned();
            m.spawn()?;
        }
        for m in members.iter_mut() {
            m.wait_healthy(HEALTH_TIMEOUT).await?;
        }
        Ok(Cluster { members, _dir: dir })
    }

    /// Adds a member the etcd way: `POST /v2/members` on member 0, then start
    /// the new process with `--initial-cluster-state existing`. Returns its index.
    pub async fn add_member(&mut self, extra_args: &[&str]) -> Result<usize> {
        let (client, peer) = (free_port(), free_port());
        let name = format!("n{}", self.members.len() + 1);
        let tls = self.members[0].tls.clone();
        let peer_url = format!("{}://127.0.0.1:{peer}", scheme(tls.as_ref()));
        let http = member_http(tls.as_ref(), Duration::from_secs(15))?;
        let resp = http
            .post(format!("{}/v2/members", self.members[0].client_url()))
            .json(&serde_json::json!({ "peerURLs": [peer_url] }))
            .send()
            .await?;
        if resp.status().as_u16() != 201 {
            bail!(
                "member add answered {}: {}",
                resp.status(),
                resp.text().await?
            );
        }
        let mut initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        initial.push(format!("{name}={peer_url}"));
        let mut m = Member::new(
            self.members[0].flavor,
            &name,
            self._dir.path(),
            client,
            peer,
            initial.join(","),
        );
        m.cluster_state = "existing";
        m.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        m.tls = tls;
        m.spawn()?;
        m.wait_healthy(HEALTH_TIMEOUT).await?;
        self.members.push(m);
        Ok(self.members.len() - 1)
    }

    pub fn member(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url()).collect()
    }

    /// Index of the member that reports itself leader in `/v2/stats/self`, waiting up to `timeout`.
    /// Members in `skip` (killed or paused) are not asked.
    pub async fn wait_leader(&self, skip: &[usize], timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let http = member_http(self.members[0].tls.as_ref(), Duration::from_secs(2))?;
        loop {
            let mut leaders = Vec::new();
            for (i, m) in self.members.iter().enumerate() {
                if skip.contains(&i) {
                    continue;
                }
                let url = format!("{}/v2/stats/self", m.client_url());
                if let Ok(resp) = http.get(&url).send().await {
                    if let Ok(v) = resp.json::<Value>().await {
                        if v["state"] == "StateLeader" {
                            leaders.push(i);
                        }
                    }
                }
            }
            if leaders.len() == 1 {
                return Ok(leaders[0]);
            }
            if Instant::now() >= deadline {
                bail!("no single leader among live members after {timeout:?} (saw {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The URL scheme of a member with `tls`.
fn scheme(tls: Option<&TlsFiles>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// An HTTP answer, kept raw enough to compare field by field.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub etcd_index: Option<u64>,
    pub raft_index: Option<u64>,
    pub raft_term: Option<u64>,
    pub content_type: Option<String>,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// A tiny etcd-v2 client over reqwest for the tests.
#[derive(Clone)]
pub struct V2 {
    pub base: String,
    pub http: reqwest::Client,
}

impl V2 {
    pub fn new(base: impl Into<String>) -> V2 {
        V2::with_timeout(base, Duration::from_secs(15))
    }

    pub fn with_timeout(base: impl Into<String>, timeout: Duration) -> V2 {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        V2 {
            base: base.into(),
            http,
        }
    }

    /// Send `method` to `path` (e.g. `/v2/keys/a?recursive=true`); `form` goes in an
    /// urlencoded body when non-empty.
    pub async fn request(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Result<Resp> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !form.is_empty() {
            req = req.form(form);
        }
        let resp = req.send().await?;
        let header = |name: &str| -> Option<String> {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let num = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
        let status = resp.status().as_u16();
        let etcd_index = num("x-etcd-index");
        let raft_index = num("x-raft-index");
        let raft_term = num("x-raft-term");
        let content_type = header("content-type");
        let text = resp.text().await?;
        Ok(Resp {
            status,
            etcd_index,
            raft_index,
            raft_term,
            content_type,
            text,
        })
    }

    pub async fn put(&self, key: &str, form: &[(&str, &str)]) -> Result<Resp> {
        self.request("PUT", &format!("/v2/keys{key}"), form).await
    }

    pub async fn get(&self, key_and_query: &str) -> Result<Resp> {
        self.request("GET", &format!("/v2/keys{key_and_query}"), &[])
            .await
    }
}

/// Run a command with a deadline; returns (exit success, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(bool, String, String)> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out_path)?))
        .stderr(Stdio::from(File::create(&err_path)?))
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{cmd:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((
        status.success(),
        std::fs::read_to_string(&out_path)?,
        std::fs::read_to_string(&err_path)?,
    ))
}

/// How long a `shoalctl` run may take.
const SHOALCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `shoalctl --endpoints <endpoints> ARGS`: (success, stdout, stderr).
pub fn shoalctl(endpoints: &str, args: &[&str]) -> Result<(bool, String, String)> {
    let mut cmd = Command::new(shoal_binary("shoalctl"));
    cmd.args(["--endpoints", endpoints]).args(args);
    run_with_timeout(&mut cmd, SHOALCTL_TIMEOUT)
}

/// Runs `shoalctl` and fails unless it succeeds; its stdout.
pub fn shoalctl_ok(endpoints: &str, args: &[&str]) -> Result<String> {
    let (ok, out, err) = shoalctl(endpoints, args)?;
    ensure!(ok, "shoalctl {args:?} failed: {err}{out}");
    Ok(out)
}

/// `len` pseudo-random bytes, the same for the same `seed`.
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore as _, SeedableRng as _};
    let mut bytes = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}
