//! What the OS update tests share: a server trusting an update key, signed
//! payload uploads, and agents on their own CoreOS-layout disk image made by
//! `shoal-agent disk init`, with `--reboot-command 'kill -TERM $PPID'`: the
//! reboot command sends SIGTERM to the agent (the `sh -c` child's parent),
//! the agent exits cleanly, and the test starts it again — that restart is
//! the reboot, where the agent runs gptprio on its image. Plus reading what
//! they report: check-ins, machine records, GPT slot attributes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use node_agent::slots::{Slot, SlotAttrs, SlotDisk};
use serde_json::Value;

use crate::agents::{get, Agent};
use crate::harness::{seeded_bytes, shoal_binary, shoalctl_ok, Cluster, Flavor};

/// A fresh temporary path as `&str` (the CLIs take strings).
pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temporary path is not UTF-8")
}

/// A one-member server trusting a new update signing key.
pub struct UpdateServer {
    /// The server, kept alive for the test (killed on drop).
    _cluster: Cluster,
    /// Its client URL.
    pub base: String,
    /// The PEM signing key payloads are signed with.
    pub secret: PathBuf,
    /// The PEM public key the server and agents trust.
    pub public: PathBuf,
}

impl UpdateServer {
    /// Makes a key pair in `dir/keys` and starts the server trusting it.
    pub async fn start(dir: &Path) -> Result<UpdateServer> {
        let keys = dir.join("keys");
        shoalctl_ok(
            "http://127.0.0.1:1",
            &["update", "keygen", "--out", path_str(&keys)?],
        )?;
        let secret = keys.join("signing.pem");
        let public = keys.join("public.pem");
        let cluster = Cluster::start_with(
            Flavor::Shoal,
            1,
            &["--update-public-key", path_str(&public)?],
        )
        .await?;
        let base = cluster.client_urls()[0].clone();
        Ok(UpdateServer {
            _cluster: cluster,
            base,
            secret,
            public,
        })
    }

    /// Uploads 3 MiB + 123 seeded bytes as `version`, signed, and points `channel` at it.
    pub fn upload(&self, dir: &Path, version: &str, seed: u64, channel: &str) -> Result<()> {
        let file = dir.join(format!("os-{version}.img"));
        std::fs::write(&file, seeded_bytes(3 * 1024 * 1024 + 123, seed))?;
        shoalctl_ok(
            &self.base,
            &[
                "update",
                "upload",
                path_str(&file)?,
                "--version",
                version,
                "--channel",
                channel,
                "--key",
                path_str(&self.secret)?,
            ],
        )?;
        Ok(())
    }

    /// An agent `id` on a new disk image `dir/<id>.img` (returned too), not
    /// started yet: checking in every second, health deadline 4 s, drain
    /// timeout 5 s, then the `more` flags.
    pub fn disk_agent(&self, dir: &Path, id: &str, more: &[&str]) -> Result<(Agent, PathBuf)> {
        let image = dir.join(format!("{id}.img"));
        let out = Command::new(shoal_binary("shoal-agent"))
            .args(["disk", "init", path_str(&image)?, "--usr-size", "8"])
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && said.contains("USR-B"),
            "disk init: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let extra: Vec<String> = [
            "--disk",
            path_str(&image)?,
            "--update-public-key",
            path_str(&self.public)?,
            "--reboot-command",
            "kill -TERM $PPID",
            "--update-interval",
            "1",
            "--health-deadline",
            "4",
            "--drain-timeout",
            "5",
        ]
        .iter()
        .chain(more)
        .map(|s| s.to_string())
        .collect();
        Ok((Agent::new(dir, &self.base, id, "", &extra), image))
    }
}

/// The machines' last check-ins, by machine id.
pub async fn machines(base: &str) -> Result<BTreeMap<String, Value>> {
    let list = get(&format!("{base}/api/v1/updates/machines")).await?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["machine_id"].as_str()?.to_owned(), m.clone())))
        .collect())
}

/// `(state, version, target)` of `id`'s last check-in (empty strings when unknown).
pub fn state_of<'a>(ms: &'a BTreeMap<String, Value>, id: &str) -> (&'a str, &'a str, &'a str) {
    let m = &ms.get(id).unwrap_or(&Value::Null);
    (
        m["state"].as_str().unwrap_or(""),
        m["version"].as_str().unwrap_or(""),
        m["target"].as_str().unwrap_or(""),
    )
}

/// The slot attributes of an agent's disk image.
pub fn attrs(image: &Path) -> Result<(SlotAttrs, SlotAttrs)> {
    let disk = SlotDisk::open(image)?;
    Ok((disk.attrs(Slot::A), disk.attrs(Slot::B)))
}

/// The machine record of `id` as `/api/v1/machines` shows it.
pub async fn record(base: &str, id: &str) -> Result<Value> {
    let list = get(&format!("{base}/api/v1/machines")).await?;
    list.as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"] == id)
        .cloned()
        .with_context(|| format!("{id} not registered: {list}"))
}

/// The holders of the reboot lock.
pub async fn reboot_lock_holders(base: &str) -> Result<Vec<String>> {
    let lock = get(&format!("{base}/api/v1/locks/reboot")).await?;
    Ok(lock["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["holder"].as_str().map(str::to_owned))
        .collect())
}
