//! Payload replication: every member keeps a copy of every payload.
//!
//! `run` watches the payload records (`/_shoal/updates/payloads/*`); for each
//! payload whose file this member lacks it fetches the bytes from another
//! member's client URL — the uploader first, then every other member — and
//! streams them through `PayloadStore::receive`, the same code as an upload,
//! keeping them only when SHA-256 and size match the record. A failed fetch
//! is retried after a backoff doubling from 1 s to at most 30 s, and restarts
//! from the first byte (no Range resume: the hash covers the whole file, and a
//! payload crosses the control plane's network in seconds).
//!
//! Fetches and holder probes carry [`LOCAL_ONLY_HEADER`], so a member that
//! lacks the payload answers 404 instead of redirecting or probing in turn.
//! Files of removed payload records are not garbage collected.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::updates::PayloadMeta;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::payloads::ReceiveError;
use super::Updates;
use crate::member::Member;

/// Request header asking a member to answer a payload request from its own disk only.
pub const LOCAL_ONLY_HEADER: &str = "x-shoal-local-only";

/// How often the task looks again without a key-space change (backoffs run out).
const TICK: Duration = Duration::from_secs(1);
/// The least time between two passes, so a burst of key-space changes costs one.
const MIN_GAP: Duration = Duration::from_millis(200);
/// The wait after the first failed fetch of a payload; it doubles per failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two fetches of a payload.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long connecting to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a fetch may go without receiving a byte.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a download's probe for a holder waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a payload could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No other member is known.
    #[error("no other member to fetch from")]
    NoSource,
    /// The request or the body transfer failed.
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    /// The member answered something other than 200 (404: it does not hold it).
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    /// The body could not be stored, or broke off.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    /// The bytes are not the ones the record names.
    #[error("got {size} bytes with sha256 {sha256}; the record says {want_size} bytes with sha256 {want_sha256}")]
    Mismatch {
        /// Bytes received (or announced).
        size: u64,
        /// Their hash (empty when not received).
        sha256: String,
        /// The record's size.
        want_size: u64,
        /// The record's hash.
        want_sha256: String,
    },
    /// The verified file could not be moved to its name.
    #[error("keeping the payload: {0}")]
    Keep(std::io::Error),
    /// Every member failed; each with its own reason.
    #[error("{}", describe(.0))]
    Everywhere(Vec<(String, FetchError)>),
}

fn describe(failures: &[(String, FetchError)]) -> String {
    failures
        .iter()
        .map(|(url, e)| format!("{url}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The HTTP client for fetches and probes: no redirects, bounded connects and
/// stalls, `headers` (the members' credential) on every request, `https`
/// client URLs verified against `ca` when given.
pub fn client(
    headers: reqwest::header::HeaderMap,
    ca: Option<&api::tls::TrustedCa>,
) -> reqwest::Result<reqwest::Client> {
    api::tls::trusting(reqwest::Client::builder(), ca)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(STALL_TIMEOUT)
        .tcp_nodelay(true)
        .build()
}

fn payload_url(base: &str, sha256: &str) -> String {
    format!(
        "{}/api/v1/updates/payloads/{sha256}",
        base.trim_end_matches('/')
    )
}

/// The payloads (one per hash, valid hashes only) whose bytes are not in `held`, in record order.
pub fn missing<'a>(records: &'a [PayloadMeta], held: &HashSet<String>) -> Vec<&'a PayloadMeta> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|m| {
            api::updates::valid_sha256(&m.sha256)
                && !held.contains(&m.sha256)
                && seen.insert(m.sha256.as_str())
        })
        .collect()
}

/// Client URLs to fetch from, best first: the uploader, then the other members'
/// in the given order; none of `mine`, none twice, none empty.
pub fn order_sources(
    uploader: &str,
    others: impl IntoIterator<Item = String>,
    mine: &[String],
) -> Vec<String> {
    let norm = |u: &str| u.trim_end_matches('/').to_owned();
    let mine: HashSet<String> = mine.iter().map(|u| norm(u)).collect();
    let mut out: Vec<String> = Vec::new();
    for url in std::iter::once(uploader.to_owned()).chain(others) {
        let url = norm(&url);
        if !url.is_empty() && !mine.contains(&url) && !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

/// The wait after `failures` failed fetches in a row: doubling from 1 s, at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// Failed fetches per payload hash: how many in a row, and when to try again.
#[derive(Debug, Default)]
pub struct Retries(HashMap<String, (u32, Instant)>);

impl Retries {
    /// True when `sha256` may be fetched at `now` (never failed, or its wait is over).
    pub fn due(&self, sha256: &str, now: Instant) -> bool {
        self.0.get(sha256).is_none_or(|(_, next)| *next <= now)
    }

    /// Records a failure at `now`; answers the wait before the next attempt.
    pub fn failed(&mut self, sha256: &str, now: Instant) -> Duration {
        let entry = self.0.entry(sha256.to_owned()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let wait = backoff(entry.0);
        entry.1 = now + wait;
        wait
    }

    /// Forgets every hash not in `wanted` (fetched, or its record removed).
    pub fn retain(&mut self, wanted: &HashSet<&str>) {
        self.0.retain(|sha, _| wanted.contains(sha.as_str()));
    }
}

/// Client URLs that may hold a payload uploaded to `uploader`, best first:
/// the uploader, then every other member that answers (`/raft/info`).
pub async fn sources(member: &Member, uploader: &str) -> Vec<String> {
    let others = member
        .members()
        .into_iter()
        .filter(|(id, _)| *id != member.id)
        .map(|(id, node)| async move { member.info_of(id, &node).await });
    let infos = futures::future::join_all(others).await;
    let urls = infos
        .into_iter()
        .flatten()
        .filter_map(|info| info.client_urls.into_iter().next());
    order_sources(uploader, urls, &member.client_urls)
}

/// The first of `sources` to answer that it holds `sha256` on its own disk, if any
/// does within the probe timeout.
pub async fn holder(client: &reqwest::Client, sources: &[String], sha256: &str) -> Option<String> {
    let mut probes: FuturesUnordered<_> = sources
        .iter()
        .map(|base| async move {
            let answer = client
                .head(payload_url(base, sha256))
                .header(LOCAL_ONLY_HEADER, "1")
                .timeout(PROBE_TIMEOUT)
                .send()
                .await;
            answer
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
                .then(|| base.clone())
        })
        .collect();
    while let Some(answer) = probes.next().await {
        if answer.is_some() {
            return answer;
        }
    }
    None
}

/// Fetches `meta`'s bytes from the member at `base` into the store, verified.
async fn fetch_from(updates: &Updates, base: &str, meta: &PayloadMeta) -> Result<(), FetchError> {
    let mismatch = |size: u64, sha256: String| FetchError::Mismatch {
        size,
        sha256,
        want_size: meta.size,
        want_sha256: meta.sha256.clone(),
    };
    let resp = updates
        .peers
        .get(payload_url(base, &meta.sha256))
        .header(LOCAL_ONLY_HEADER, "1")
        .send()
        .await?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status(resp.status()));
    }
    if let Some(len) = resp.content_length().filter(|len| *len != meta.size) {
        return Err(mismatch(len, String::new()));
    }
    // Never store more than the record's size, whatever the member sends.
    let limit = meta.size;
    let mut seen = 0u64;
    let body = resp.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| e.to_string())?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(format!(
                "the body is longer than the record's {limit} bytes"
            ));
        }
        Ok(chunk)
    });
    let received = updates.store.receive(body).await?;
    if !received.matches(&meta.sha256, meta.size) {
        return Err(mismatch(received.size, received.sha256.clone()));
    }
    updates
        .store
        .keep(received)
        .await
        .map_err(FetchError::Keep)?;
    Ok(())
}

/// Fetches `meta`'s bytes from the first member that serves them; answers its URL.
async fn fetch(updates: &Updates, meta: &PayloadMeta) -> Result<String, FetchError> {
    let sources = sources(&updates.member, &meta.member).await;
    if sources.is_empty() {
        return Err(FetchError::NoSource);
    }
    let mut failures = Vec::new();
    for base in sources {
        match fetch_from(updates, &base, meta).await {
            Ok(()) => return Ok(base),
            Err(e) => failures.push((base, e)),
        }
    }
    Err(FetchError::Everywhere(failures))
}

/// One look at the records: fetches every missing payload whose backoff is over.
async fn pass(updates: &Updates, held: &mut HashSet<String>, retries: &mut Retries) {
    let records = updates.payloads();
    let wanted: Vec<PayloadMeta> = missing(&records, held).into_iter().cloned().collect();
    retries.retain(&wanted.iter().map(|m| m.sha256.as_str()).collect());
    for meta in &wanted {
        if updates.store.has(&meta.sha256).await {
            held.insert(meta.sha256.clone());
            continue;
        }
        if !retries.due(&meta.sha256, Instant::now()) {
            continue;
        }
        let started = Instant::now();
        match fetch(updates, meta).await {
            Ok(from) => {
                tracing::info!(version = %meta.version, sha256 = %meta.sha256, %from,
                    took = ?started.elapsed(), "payload replicated");
                held.insert(meta.sha256.clone());
            }
            Err(e) => {
                let wait = retries.failed(&meta.sha256, Instant::now());
                tracing::warn!(version = %meta.version, sha256 = %meta.sha256, %e, ?wait,
                    "cannot replicate the payload yet; retrying");
            }
        }
    }
}

/// Keeps this member's payload files complete; runs until the key space goes away.
pub async fn run(updates: Arc<Updates>) {
    let mut changed = updates.member.keys.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held = HashSet::new();
    let mut retries = Retries::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = changed.changed() => if r.is_err() { return },
        }
        changed.mark_unchanged();
        pass(&updates, &mut held, &mut retries).await;
        tokio::time::sleep(MIN_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: &str, sha: char) -> PayloadMeta {
        PayloadMeta {
            version: version.into(),
            sha256: sha.to_string().repeat(64),
            size: 1,
            signature: String::new(),
            uploaded_at: chrono::Utc::now(),
            member: "http://a".into(),
        }
    }

    #[test]
    fn missing_payloads_are_the_unheld_hashes_once_each() {
        let mut bad = meta("bad", 'x');
        bad.sha256 = "../etc/passwd".into();
        let records = vec![meta("1", 'a'), meta("2", 'b'), meta("2-again", 'b'), bad];
        let held: HashSet<String> = ["a".repeat(64)].into();
        let versions: Vec<&str> = missing(&records, &held)
            .iter()
            .map(|m| m.version.as_str())
            .collect();
        assert_eq!(versions, ["2"]);
        let all: HashSet<String> = ["a".repeat(64), "b".repeat(64)].into();
        assert!(missing(&records, &all).is_empty());
    }

    #[test]
    fn sources_put_the_uploader_first_and_skip_this_member() {
        let others = ["http://b/", "http://me", "http://a", "", "http://c"].map(String::from);
        assert_eq!(
            order_sources("http://a/", others, &["http://me/".into()]),
            ["http://a", "http://b", "http://c"]
        );
        // The uploader is this member (its file was lost): only the others.
        assert_eq!(
            order_sources("http://me", ["http://b".into()], &["http://me".into()]),
            ["http://b"]
        );
        assert!(order_sources("", [], &[]).is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_a_bound() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn retries_wait_out_their_backoff_and_are_forgotten() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        let sha = "a".repeat(64);
        assert!(r.due(&sha, t0));
        assert_eq!(r.failed(&sha, t0), Duration::from_secs(1));
        assert!(!r.due(&sha, t0 + Duration::from_millis(999)));
        assert!(r.due(&sha, t0 + Duration::from_secs(1)));
        assert_eq!(
            r.failed(&sha, t0 + Duration::from_secs(1)),
            Duration::from_secs(2)
        );
        assert!(!r.due(&sha, t0 + Duration::from_secs(2)));
        r.retain(&HashSet::new());
        assert!(r.due(&sha, t0));
    }
}
