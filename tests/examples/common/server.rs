//! What the one-member benchmarks share (`placement-bench`, `rollout-bench`,
//! `dashboard-bench`): a release `shoal-server` started on free loopback ports
//! with its log in the run dir, SIGKILLed when dropped, and its CPU and memory
//! read from `/proc`. Included with `#[path = "common/server.rs"] mod server;`.

use std::ffi::OsStr;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use api::Client;
use tokio::time::Instant;

/// The running server; SIGKILLed and reaped when dropped.
pub struct Server {
    child: Child,
    /// Its client URL.
    pub url: String,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a loopback port")?;
    Ok(l.local_addr().context("local address")?.port())
}

impl Server {
    /// Starts a one-member cluster from `bin` with its data in `dir/data`,
    /// cluster token `token`, and `extra` flags.
    pub fn start<S: AsRef<OsStr>>(
        bin: &Path,
        dir: &Path,
        token: &str,
        extra: &[S],
    ) -> Result<Server> {
        if !bin.is_file() {
            bail!(
                "{} does not exist: run `cargo build --release -p server` first (or pass --server)",
                bin.display()
            );
        }
        let (client, peer) = (free_port()?, free_port()?);
        if client == peer {
            bail!("got the same port twice; try again");
        }
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = dir.join("server.log");
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("clone the log file handle")?;
        let child = Command::new(bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", token])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Server {
            child,
            url: client_url,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("shoal-server exited ({status}); see {}", self.log.display()),
            Err(e) => Err(e).context("cannot check the server process"),
        }
    }

    /// Waits until `/health` says true, at most 30 s.
    pub async fn wait_healthy(&mut self, client: &Client) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.check_alive()?;
            if let Ok(h) = client.health().await {
                if h.health == "true" {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("server not healthy in time; see {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client of this server with the given request timeout.
    pub fn client(&self, request_timeout: Duration) -> Result<Client> {
        Client::with_timeouts(
            vec![self.url.parse().context("server URL")?],
            Duration::from_secs(3),
            request_timeout,
        )
        .context("build a client")
    }
}

/// A new run directory `/tmp/<prefix>XXXX` that outlives the bench (its logs stay), announced.
pub fn run_dir(prefix: &str) -> Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("create a temp dir")?
        .keep();
    eprintln!("bench: run dir {}", dir.display());
    Ok(dir)
}

/// `work`, bounded by `hard_stop` and by Ctrl-C.
pub async fn bounded<T>(
    hard_stop: Duration,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = tokio::time::timeout(hard_stop, work) => {
            r.unwrap_or_else(|_| bail!("the run passed its hard deadline ({hard_stop:?})"))
        }
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => bail!("interrupted"),
            Err(e) => bail!("cannot wait for Ctrl-C: {e}"),
        },
    }
}

/// Stops `server`, removes `dirs` of `run_dir` and says where the server's log stays.
pub fn finish(server: Server, run_dir: &Path, dirs: &[&str]) {
    let log = server.log.clone();
    drop(server);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(run_dir.join(dir));
    }
    eprintln!("bench: server log kept at {}", log.display());
}

/// Memory and CPU of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Peak resident set (VmHWM), KiB.
    pub hwm_kb: u64,
    /// Current resident set (VmRSS), KiB.
    pub rss_kb: u64,
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
}

/// The clock tick of `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Memory (`/proc/<pid>/status`) and CPU (utime + stime of `/proc/<pid>/stat`) of `pid`.
pub fn proc_stats(pid: u32, ticks: f64) -> Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))
    };
    Ok(ProcStats {
        hwm_kb: field("VmHWM:"),
        rss_kb: field("VmRSS:"),
        cpu_secs: (tick(11)? + tick(12)?) / ticks,
    })
}
