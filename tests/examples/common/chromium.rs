//! Headless Chromium through chromedriver, for the browser test
//! (`tests/it/browser.rs`) and the dashboard benchmark
//! (`tests/examples/dashboard-bench.rs`): finding Debian's `chromium` and
//! `chromium-driver`, starting chromedriver in its own process group (killed
//! with the Chromium it started when dropped) and opening a WebDriver session.
//! Included with `#[path = ...] mod chromium;`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// How long chromedriver may take to answer, and Chromium to start.
const STARTUP: Duration = Duration::from_secs(30);
/// The browser window, so that screenshots are the same size every run.
const WINDOW: (u32, u32) = (1400, 900);

/// Chromium and its WebDriver.
pub struct BrowserTools {
    /// The browser.
    chromium: PathBuf,
    /// Its WebDriver.
    chromedriver: PathBuf,
}

/// Finds Chromium and chromedriver; `None` (after a notice) when missing and
/// `SHOAL_REQUIRE_BROWSER` is not 1, an error when it is.
pub fn browser_tools() -> Result<Option<BrowserTools>> {
    let find = |name: &str| {
        ["/usr/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    match (find("chromium"), find("chromedriver")) {
        (Some(chromium), Some(chromedriver)) => Ok(Some(BrowserTools {
            chromium,
            chromedriver,
        })),
        _ if std::env::var("SHOAL_REQUIRE_BROWSER").as_deref() == Ok("1") => bail!(
            "SHOAL_REQUIRE_BROWSER=1 but chromium or chromedriver is missing: \
             `apt-get install -y chromium chromium-driver` (.ci/run does this)"
        ),
        _ => {
            eprintln!("chromium or chromedriver is not installed and SHOAL_REQUIRE_BROWSER is not 1: skipped");
            Ok(None)
        }
    }
}

/// A chromedriver process on a free loopback port, in its own process group:
/// on drop the group (chromedriver and the Chromium it started) is killed.
pub struct Chromedriver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on loopback `port`, logging to `dir/chromedriver.log`.
    pub fn start(tools: &BrowserTools, dir: &Path, port: u16) -> Result<Chromedriver> {
        let log = dir.join("chromedriver.log");
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawn chromedriver")?;
        Ok(Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// Waits for chromedriver, then opens a Chromium session.
    pub async fn session(&self, tools: &BrowserTools, dir: &Path) -> Result<Client> {
        let deadline = Instant::now() + STARTUP;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            let status = http.get(format!("{}/status", self.url)).send().await;
            if let Ok(resp) = status {
                if resp
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
                {
                    break;
                }
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver not ready within {STARTUP:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("chromium-profile");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--hide-scrollbars".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ];
        let caps: Capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": tools.chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }))?;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            STARTUP,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&self.url),
        )
        .await
        .map_err(|_| anyhow::anyhow!("Chromium did not start within {STARTUP:?}"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("new Chromium session\n{}", self.log_tail()))?;
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(20)),
                Some(Duration::ZERO),
            ))
            .await?;
        Ok(client)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
