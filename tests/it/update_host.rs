//! What the OS update tests share: a server trusting an update key, signed
//! payload uploads, and agents on their own CoreOS-layout disk image made by
//! `shoal-agent disk init`, with a reboot command that kills the machine's
//! containers (as a reboot would) and sends SIGTERM to the agent (the `sh -c`
//! child's parent): the agent exits cleanly, and the test starts it again —
//! that restart is the reboot, where the agent runs gptprio on its image.
//! Plus reading what they report: check-ins, machine records, GPT slot
//! attributes, and the reboot lock's history in the key space.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use node_agent::slots::{Slot, SlotAttrs, SlotDisk};
use serde_json::Value;

use crate::agents::{get, Agent};
use crate::harness::{seeded_bytes, shoal_binary, shoalctl_ok, Cluster, Flavor, V2};

/// A fresh temporary path as `&str` (the CLIs take strings).
pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temporary path is not UTF-8")
}

/// A one-member server trusting a new update signing key.
pub struct UpdateServer {
    /// The server, kept alive for the test (killed on drop).
    cluster: Cluster,
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
            cluster,
            base,
            secret,
            public,
        })
    }

    /// Uploads 3 MiB + 123 seeded bytes as `version`, signed, and points `channel` at it.
    pub fn upload(&self, dir: &Path, version: &str, seed: u64, channel: &str) -> Result<()> {
        self.upload_to(dir, version, seed, Some(channel))
    }

    /// Like [`UpdateServer::upload`], pointing a channel at it only when one is given.
    pub fn upload_to(
        &self,
        dir: &Path,
        version: &str,
        seed: u64,
        channel: Option<&str>,
    ) -> Result<()> {
        let file = dir.join(format!("os-{version}.img"));
        std::fs::write(&file, seeded_bytes(3 * 1024 * 1024 + 123, seed))?;
        let mut args = vec![
            "update",
            "upload",
            path_str(&file)?,
            "--version",
            version,
            "--key",
            path_str(&self.secret)?,
        ];
        if let Some(c) = channel {
            args.extend(["--channel", c]);
        }
        shoalctl_ok(&self.base, &args)?;
        Ok(())
    }

    /// The file the server keeps the payload with this SHA-256 in.
    pub fn payload_file(&self, sha256: &str) -> PathBuf {
        self.cluster.members[0]
            .data_dir()
            .join("payloads")
            .join(sha256)
    }

    /// An agent `id` on a new disk image `dir/<id>.img` (returned too), not
    /// started yet: checking in every second, health deadline 4 s, drain
    /// timeout 5 s, then the `more` flags (which replace those defaults they name).
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
        let reboot = format!(
            "docker kill $(docker ps -q --filter label=shoal.machine={id}) >/dev/null 2>&1; \
             kill -TERM $PPID"
        );
        let defaults = [
            ("--update-interval", "1"),
            ("--health-deadline", "4"),
            ("--drain-timeout", "5"),
        ];
        let mut extra: Vec<String> = vec![
            "--disk".into(),
            path_str(&image)?.into(),
            "--update-public-key".into(),
            path_str(&self.public)?.into(),
            "--reboot-command".into(),
            reboot,
        ];
        for (flag, value) in defaults {
            if !more.contains(&flag) {
                extra.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        extra.extend(more.iter().map(|s| s.to_string()));
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

/// One change of the reboot lock's slots as the key space recorded it.
#[derive(Debug, Clone)]
pub struct LockEvent {
    /// The etcd index of the change: the order of the raft log.
    pub index: u64,
    /// `create` (taken), `update` (renewed), `delete` (released), `expire` (lapsed).
    pub action: String,
    /// The holder whose slot changed.
    pub holder: String,
}

/// Follows every change of the reboot lock's slots
/// (`/_shoal/locks/reboot/<holder>`) through the key space's watch history,
/// from now until `stop` is set and every change made until then is read.
/// Fails if the history no longer covers the next change (etcd error 401),
/// so the events it returns are all of them, in order.
pub fn follow_reboot_lock(
    base: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<Vec<LockEvent>>> {
    let v2 = V2::with_timeout(base, Duration::from_secs(2));
    tokio::spawn(async move {
        let current =
            |v2: V2| async move { v2.get("/").await?.etcd_index.context("no X-Etcd-Index") };
        let mut next = current(v2.clone()).await? + 1;
        let mut events = Vec::new();
        // Set once `stop` is seen: read every change up to this index, then end.
        let mut until: Option<u64> = None;
        loop {
            if until.is_none() && stop.load(Ordering::Relaxed) {
                until = Some(current(v2.clone()).await?);
            }
            if until.is_some_and(|u| next > u) {
                return Ok(events);
            }
            let path = format!("/_shoal/locks/reboot?wait=true&recursive=true&waitIndex={next}");
            let resp = match v2.get(&path).await {
                Ok(r) => r,
                // No change yet: none is left to read once `until` was taken before asking.
                Err(e)
                    if e.downcast_ref::<reqwest::Error>()
                        .is_some_and(|e| e.is_timeout()) =>
                {
                    if until.is_some() {
                        return Ok(events);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let event = resp.json();
            ensure!(
                event["errorCode"].is_null(),
                "the reboot lock's history from index {next} is lost: {}",
                resp.text
            );
            let node = &event["node"];
            let index = node["modifiedIndex"]
                .as_u64()
                .with_context(|| format!("watch event without an index: {}", resp.text))?;
            let key = node["key"].as_str().unwrap_or_default();
            let holder = key.rsplit('/').next().unwrap_or_default();
            if !holder.starts_with('_') {
                events.push(LockEvent {
                    index,
                    action: event["action"].as_str().unwrap_or_default().to_owned(),
                    holder: holder.to_owned(),
                });
            }
            next = index + 1;
        }
    })
}

/// The most slots held at once over `events`: a slot counts from the change
/// that created it until the one that released or expired it. A slot whose
/// TTL ran out before its expiry was applied still counts, so the judgement
/// errs towards more holders, never fewer.
pub fn most_held(events: &[LockEvent]) -> usize {
    let mut held = BTreeSet::new();
    let mut most = 0;
    for e in events {
        match e.action.as_str() {
            "delete" | "expire" | "compareAndDelete" => {
                held.remove(&e.holder);
            }
            _ => {
                held.insert(e.holder.clone());
            }
        }
        most = most.max(held.len());
    }
    most
}
