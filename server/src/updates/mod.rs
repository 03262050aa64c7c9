//! The OS update service: signed payloads stored by hash on disk, channels
//! with rollout policies, the agents' check-ins, and the update history.
//!
//! Records live in the key space (layout in `api::updates`); payload bytes live
//! on the disk of the member that received them (`payloads`), never in the log,
//! and `replicate` copies them to every other member. `rollout` decides each
//! check-in without IO; `window` parses reboot windows; `store` reads and
//! writes the records. Only `crate::http::updates` serves HTTP.

pub mod payloads;
pub mod replicate;
pub mod rollout;
pub mod store;
pub mod window;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use api::updates::{
    Channel, ChannelUpdate, CheckIn, CheckInReply, HistoryEvent, LockSpec, MachineUpdate, Offer,
    PayloadMeta, UploadQuery, CHANNELS_DIR, MACHINES_DIR, PAYLOADS_DIR, REBOOT_LOCK,
};
use bytes::Bytes;
use chrono::Utc;
use futures::Stream;

use crate::member::{Member, ServeError};
use payloads::{PayloadStore, ReceiveError};
use store::{Expect, Versioned};

/// How often a channel change retries a compare-and-swap that lost a race.
const CAS_ATTEMPTS: usize = 20;

/// Why an update request failed; `crate::http::updates` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The payload's signature does not verify under the trusted key.
    #[error("{0}")]
    BadSignature(String),
    /// No such payload, channel or machine.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (another hash for a version, a lost race).
    #[error("{0}")]
    Conflict(String),
    /// The key space could not be written.
    #[error("{0}")]
    Unavailable(ServeError),
    /// A stored record cannot be read.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The payload could not be stored on disk.
    #[error("{0}")]
    Storage(String),
    /// The payload is recorded but no member holding it answers.
    #[error("{0}")]
    Unreachable(String),
}

/// Where the bytes of a payload are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// On this member's disk.
    Here(std::path::PathBuf),
    /// On the member with this client URL.
    Member(String),
}

/// The update service of one member.
#[derive(Debug)]
pub struct Updates {
    member: Arc<Member>,
    store: PayloadStore,
    public_key: Option<api::updates::PublicKey>,
    /// Fetches and probes payloads on other members (`replicate`).
    peers: reqwest::Client,
}

fn key(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}

fn check_name(what: &str, name: &str) -> Result<(), UpdateError> {
    if api::updates::valid_name(name) {
        Ok(())
    } else {
        Err(UpdateError::BadRequest(format!(
            "{what} {name:?} must be 1-128 of [A-Za-z0-9._:@-], not starting with '.' or '_'"
        )))
    }
}

fn check_version(version: &str) -> Result<(), UpdateError> {
    if api::updates::valid_version(version) {
        Ok(())
    } else {
        Err(UpdateError::BadRequest(format!(
            "version {version:?} must be 1-128 of [A-Za-z0-9._+-], not starting with '.' or '_'"
        )))
    }
}

fn event(kind: &str) -> HistoryEvent {
    HistoryEvent {
        at: Utc::now(),
        kind: kind.to_owned(),
        machine: None,
        channel: None,
        version: None,
        detail: String::new(),
    }
}

/// Checks the policy fields of a channel update.
fn validate_update(u: &ChannelUpdate) -> Result<(), UpdateError> {
    let bad = |m: String| Err(UpdateError::BadRequest(m));
    if u.max_reboots == Some(0) {
        return bad("max_reboots must be at least 1".into());
    }
    if u.failure_threshold == Some(0) {
        return bad("failure_threshold must be at least 1".into());
    }
    for w in u.windows.iter().flatten() {
        window::Window::parse(w).map_err(|e| UpdateError::BadRequest(e.to_string()))?;
    }
    if let Some(tz) = &u.timezone {
        window::parse_tz(tz).map_err(|e| UpdateError::BadRequest(e.to_string()))?;
    }
    if let Some(v) = &u.version {
        check_version(v)?;
    }
    Ok(())
}

/// Applies an update's fields to a channel.
fn apply_update(c: &mut Channel, u: &ChannelUpdate) {
    if let Some(v) = &u.version {
        c.version = Some(v.clone());
    }
    let p = &mut c.policy;
    if let Some(n) = u.max_reboots {
        p.max_reboots = n;
    }
    if let Some(n) = u.canaries {
        p.canaries = n;
    }
    if let Some(w) = &u.windows {
        p.windows = w.clone();
    }
    if let Some(tz) = &u.timezone {
        p.timezone = tz.clone();
    }
    if let Some(n) = u.failure_threshold {
        p.failure_threshold = n;
    }
}

impl Updates {
    /// The service for `member`, storing payloads under `data_dir`, trusting the
    /// public key in `public_key_file` (when given) for uploads.
    pub fn open(
        member: Arc<Member>,
        data_dir: &Path,
        public_key_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let store = PayloadStore::open(data_dir).context("opening the payload directory")?;
        let public_key = match public_key_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --update-public-key {}", path.display()))?;
                Some(
                    api::updates::public_key(&pem)
                        .with_context(|| format!("--update-public-key {}", path.display()))?,
                )
            }
            None => None,
        };
        let peers = member.client_http.clone();
        Ok(Updates {
            member,
            store,
            public_key,
            peers,
        })
    }

    /// This member's client URL, as payload records name it.
    fn client_url(&self) -> String {
        self.member.client_urls.first().cloned().unwrap_or_default()
    }

    /// Stores an uploaded payload and records it; `true` when the version is new.
    /// With `query.channel`, the channel then points at the version.
    pub async fn upload<S, E>(
        &self,
        query: UploadQuery,
        body: S,
    ) -> Result<(PayloadMeta, bool), UpdateError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        check_version(&query.version)?;
        if let Some(c) = &query.channel {
            check_name("channel", c)?;
        }
        api::updates::decode_signature(&query.signature)
            .map_err(|e| UpdateError::BadRequest(format!("signature: {e}")))?;
        let received = self.store.receive(body).await.map_err(|e| match e {
            ReceiveError::Body(_) => UpdateError::BadRequest(e.to_string()),
            ReceiveError::Io(_) => UpdateError::Storage(e.to_string()),
        })?;
        if let Some(trusted) = &self.public_key {
            api::updates::verify_with(
                trusted,
                &query.version,
                received.size,
                &received.sha256,
                &query.signature,
            )
            .map_err(|e| {
                UpdateError::BadSignature(format!(
                    "payload refused: {e} (version {}, {} bytes, sha256 {})",
                    query.version, received.size, received.sha256
                ))
            })?;
        }
        let meta_key = key(PAYLOADS_DIR, &query.version);
        let conflict = |existing: &PayloadMeta, sha: &str| {
            UpdateError::Conflict(format!(
                "version {} already exists with sha256 {}, not {sha}",
                existing.version, existing.sha256
            ))
        };
        if let Some(existing) = store::read::<PayloadMeta>(&self.member, &meta_key)? {
            if existing.value.sha256 != received.sha256 {
                return Err(conflict(&existing.value, &received.sha256));
            }
        }
        let meta = PayloadMeta {
            version: query.version.clone(),
            sha256: received.sha256.clone(),
            size: received.size,
            signature: query.signature.trim().to_owned(),
            uploaded_at: Utc::now(),
            member: self.client_url(),
        };
        self.store
            .keep(received)
            .await
            .map_err(|e| UpdateError::Storage(format!("storing the payload: {e}")))?;
        let created = store::write(&self.member, &meta_key, &meta, Expect::Absent).await?;
        let meta = if created {
            store::record(
                &self.member,
                HistoryEvent {
                    version: Some(meta.version.clone()),
                    detail: format!("{} bytes, sha256 {}", meta.size, meta.sha256),
                    ..event("payload_uploaded")
                },
            )
            .await;
            meta
        } else {
            // It existed already (or was created meanwhile): same hash or a conflict.
            match store::read::<PayloadMeta>(&self.member, &meta_key)? {
                Some(existing) if existing.value.sha256 == meta.sha256 => existing.value,
                Some(existing) => return Err(conflict(&existing.value, &meta.sha256)),
                None => return Err(UpdateError::Conflict("the version kept changing".into())),
            }
        };
        if let Some(channel) = &query.channel {
            let update = ChannelUpdate {
                version: Some(meta.version.clone()),
                ..ChannelUpdate::default()
            };
            self.update_channel(channel, &update).await?;
        }
        Ok((meta, created))
    }

    /// Every stored payload's metadata, by version.
    pub fn payloads(&self) -> Vec<PayloadMeta> {
        store::list(&self.member, PAYLOADS_DIR)
    }

    /// Where the payload with hash `sha256` is, or `NotFound`. When this member
    /// does not hold it (yet), another member that answers it does, found by a
    /// short probe; the uploader when none answers in time. `local_only`: only
    /// this member's disk (`NotFound` otherwise), as members ask each other.
    pub async fn locate(&self, sha256: &str, local_only: bool) -> Result<Location, UpdateError> {
        let missing = || UpdateError::NotFound(format!("no payload with sha256 {sha256}"));
        if !api::updates::valid_sha256(sha256) {
            return Err(missing());
        }
        if self.store.has(sha256).await {
            return Ok(Location::Here(self.store.path(sha256)));
        }
        if local_only {
            return Err(UpdateError::NotFound(format!(
                "payload {sha256} is not on this member"
            )));
        }
        let meta = self
            .payloads()
            .into_iter()
            .find(|m| m.sha256 == sha256)
            .ok_or_else(missing)?;
        let sources = replicate::sources(&self.member, &meta.member).await;
        if let Some(url) = replicate::holder(&self.peers, &sources, sha256).await {
            return Ok(Location::Member(url));
        }
        // Nobody confirmed in time: the uploader, as before replication.
        match sources.into_iter().next() {
            Some(url) if url == meta.member.trim_end_matches('/') => Ok(Location::Member(url)),
            _ => Err(UpdateError::Unreachable(format!(
                "no member holding payload {sha256} answers; try again later"
            ))),
        }
    }

    /// Every channel.
    pub fn channels(&self) -> Vec<Channel> {
        store::list(&self.member, CHANNELS_DIR)
    }

    /// One channel, or `NotFound`.
    pub fn channel(&self, name: &str) -> Result<Channel, UpdateError> {
        check_name("channel", name)?;
        store::read::<Channel>(&self.member, &key(CHANNELS_DIR, name))?
            .map(|v| v.value)
            .ok_or_else(|| UpdateError::NotFound(format!("no channel named {name:?}")))
    }

    /// Changes a channel by compare-and-swap, retrying lost races; creates it
    /// (with the default policy) when `create`. Answers `(before, after)`;
    /// `before` is `None` for a new channel.
    async fn modify_channel(
        &self,
        name: &str,
        create: bool,
        change: impl Fn(&mut Channel),
    ) -> Result<(Option<Channel>, Channel), UpdateError> {
        check_name("channel", name)?;
        let channel_key = key(CHANNELS_DIR, name);
        for _ in 0..CAS_ATTEMPTS {
            let current: Option<Versioned<Channel>> = store::read(&self.member, &channel_key)?;
            let (before, expect) = match current {
                Some(v) => (Some(v.value), Expect::Index(v.index)),
                None if create => (None, Expect::Absent),
                None => return Err(UpdateError::NotFound(format!("no channel named {name:?}"))),
            };
            let mut after = before.clone().unwrap_or_else(|| Channel {
                name: name.to_owned(),
                version: None,
                policy: api::updates::RolloutPolicy::default(),
            });
            change(&mut after);
            if before.as_ref() == Some(&after) {
                return Ok((before, after));
            }
            if store::write(&self.member, &channel_key, &after, expect).await? {
                return Ok((before, after));
            }
        }
        Err(UpdateError::Conflict(format!(
            "channel {name} kept changing; try again"
        )))
    }

    /// `PUT` a channel: points it at an uploaded version and/or changes its policy.
    pub async fn update_channel(
        &self,
        name: &str,
        update: &ChannelUpdate,
    ) -> Result<Channel, UpdateError> {
        validate_update(update)?;
        if let Some(v) = &update.version {
            if store::read::<PayloadMeta>(&self.member, &key(PAYLOADS_DIR, v))?.is_none() {
                return Err(UpdateError::BadRequest(format!(
                    "no payload for version {v:?}: upload it first"
                )));
            }
        }
        let (before, after) = self
            .modify_channel(name, true, |c| apply_update(c, update))
            .await?;
        if before.as_ref() != Some(&after) {
            let detail = serde_json::to_string(update).unwrap_or_default();
            store::record(
                &self.member,
                HistoryEvent {
                    channel: Some(name.to_owned()),
                    version: after.version.clone(),
                    detail,
                    ..event("channel_changed")
                },
            )
            .await;
        }
        Ok(after)
    }

    /// Pauses a channel, or resumes it (which also clears a halt and forgives
    /// the failures reported so far).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Channel, UpdateError> {
        let now = Utc::now();
        let (before, after) = self
            .modify_channel(name, false, |c| {
                let p = &mut c.policy;
                p.paused = paused;
                if !paused {
                    p.halted = false;
                    p.halt_reason.clear();
                    p.resumed_at = Some(now);
                }
            })
            .await?;
        if before.as_ref().map(|b| &b.policy) != Some(&after.policy) {
            let kind = if paused {
                "channel_paused"
            } else {
                "channel_resumed"
            };
            store::record(
                &self.member,
                HistoryEvent {
                    channel: Some(name.to_owned()),
                    version: after.version.clone(),
                    ..event(kind)
                },
            )
            .await;
        }
        Ok(after)
    }

    /// The last check-in of every machine, optionally only those on `channel`.
    pub fn machines(&self, channel: Option<&str>) -> Vec<MachineUpdate> {
        store::list::<MachineUpdate>(&self.member, MACHINES_DIR)
            .into_iter()
            .filter(|m| channel.is_none_or(|c| m.channel == c))
            .collect()
    }

    /// The newest `limit` history events, oldest first.
    pub fn history(&self, limit: usize) -> Vec<HistoryEvent> {
        store::history(&self.member, limit)
    }

    /// Handles an agent's check-in: records it and answers with the rollout decision.
    pub async fn checkin(&self, ci: CheckIn) -> Result<CheckInReply, UpdateError> {
        check_name("machine_id", &ci.machine_id)?;
        check_name("channel", &ci.channel)?;
        check_version(&ci.version)?;
        if let Some(t) = &ci.target {
            check_version(t)?;
        }
        let now = Utc::now();
        let machine_key = key(MACHINES_DIR, &ci.machine_id);
        let prev = store::read::<MachineUpdate>(&self.member, &machine_key)?.map(|v| v.value);
        let moved = prev.as_ref().is_none_or(|p| {
            p.state != ci.state || p.version != ci.version || p.channel != ci.channel
        });
        let mut me = MachineUpdate {
            machine_id: ci.machine_id.clone(),
            channel: ci.channel.clone(),
            version: ci.version.clone(),
            state: ci.state,
            target: ci
                .target
                .clone()
                .or_else(|| prev.as_ref().and_then(|p| p.target.clone())),
            error: ci.error.clone(),
            proceed: false,
            since: match &prev {
                Some(p) if !moved => p.since,
                _ => now,
            },
            last_checkin: now,
        };
        let channel = store::read::<Channel>(&self.member, &key(CHANNELS_DIR, &ci.channel))?;
        let reply = match channel {
            None => CheckInReply {
                offer: None,
                proceed: false,
                reason: format!("no channel named {}", ci.channel),
                lock: LockSpec {
                    name: REBOOT_LOCK.into(),
                    limit: 1,
                },
            },
            Some(Versioned { value: channel, .. }) => {
                let mut machines = self.machines(Some(&ci.channel));
                machines.retain(|m| m.machine_id != me.machine_id);
                machines.push(me.clone());
                let decision = rollout::decide(&channel, &machines, &me, now);
                if let Some(why) = decision.halt.clone() {
                    self.halt(&channel.name, why).await?;
                }
                let mut reply = CheckInReply {
                    offer: None,
                    proceed: decision.proceed,
                    reason: decision.reason,
                    lock: LockSpec {
                        name: REBOOT_LOCK.into(),
                        limit: channel.policy.max_reboots.max(1),
                    },
                };
                if let (true, Some(version)) = (decision.offer, &channel.version) {
                    match store::read::<PayloadMeta>(&self.member, &key(PAYLOADS_DIR, version))? {
                        Some(Versioned { value: p, .. }) => {
                            if ci.target.is_none() {
                                me.target = Some(version.clone());
                            }
                            reply.offer = Some(Offer {
                                url: format!("/api/v1/updates/payloads/{}", p.sha256),
                                version: p.version,
                                sha256: p.sha256,
                                size: p.size,
                                signature: p.signature,
                            });
                        }
                        None => {
                            reply.proceed = false;
                            reply.reason = format!("the payload of {version} is missing");
                        }
                    }
                }
                reply
            }
        };
        me.proceed = reply.proceed;
        store::write(&self.member, &machine_key, &me, Expect::Any).await?;
        if moved {
            let from = prev
                .as_ref()
                .map_or("new".to_owned(), |p| format!("{} {}", p.state, p.version));
            let mut detail = format!("{from} -> {} {}", me.state, me.version);
            if !me.error.is_empty() {
                detail.push_str(&format!(": {}", me.error));
            }
            store::record(
                &self.member,
                HistoryEvent {
                    machine: Some(me.machine_id.clone()),
                    channel: Some(me.channel.clone()),
                    version: me.target.clone(),
                    detail,
                    ..event("machine_state")
                },
            )
            .await;
        }
        Ok(reply)
    }

    /// Halts a channel with `reason` (once; an earlier reason stays) and records
    /// it: the rollout halts automatically on failures, or by an operator.
    pub async fn halt(&self, name: &str, reason: String) -> Result<Channel, UpdateError> {
        let (before, after) = self
            .modify_channel(name, false, |c| {
                if !c.policy.halted {
                    c.policy.halted = true;
                    c.policy.halt_reason = reason.clone();
                }
            })
            .await?;
        if before.is_some_and(|b| !b.policy.halted) {
            tracing::warn!(channel = %name, %reason, "rollout halted");
            store::record(
                &self.member,
                HistoryEvent {
                    channel: Some(name.to_owned()),
                    version: after.version.clone(),
                    detail: reason,
                    ..event("channel_halted")
                },
            )
            .await;
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_updates_are_validated() {
        let ok = ChannelUpdate {
            max_reboots: Some(2),
            windows: Some(vec!["Mon..Fri 04:00 2h".into()]),
            timezone: Some("Europe/Berlin".into()),
            ..ChannelUpdate::default()
        };
        assert!(validate_update(&ok).is_ok());
        let bad = [
            ChannelUpdate {
                max_reboots: Some(0),
                ..ChannelUpdate::default()
            },
            ChannelUpdate {
                failure_threshold: Some(0),
                ..ChannelUpdate::default()
            },
            ChannelUpdate {
                windows: Some(vec!["whenever".into()]),
                ..ChannelUpdate::default()
            },
            ChannelUpdate {
                timezone: Some("Nowhere/Special".into()),
                ..ChannelUpdate::default()
            },
            ChannelUpdate {
                version: Some("../etc".into()),
                ..ChannelUpdate::default()
            },
        ];
        for b in bad {
            assert!(
                matches!(validate_update(&b), Err(UpdateError::BadRequest(_))),
                "{b:?}"
            );
        }
    }

    #[test]
    fn updates_change_only_the_given_fields() {
        let mut c = Channel {
            name: "stable".into(),
            version: Some("1".into()),
            policy: api::updates::RolloutPolicy {
                canaries: 2,
                ..api::updates::RolloutPolicy::default()
            },
        };
        apply_update(
            &mut c,
            &ChannelUpdate {
                max_reboots: Some(3),
                ..ChannelUpdate::default()
            },
        );
        assert_eq!(c.version.as_deref(), Some("1"));
        assert_eq!(c.policy.canaries, 2);
        assert_eq!(c.policy.max_reboots, 3);
    }
}
