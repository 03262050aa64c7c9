//! What the views show: small serializable records. The server fills them
//! from the same data the REST handlers answer with; the browser receives
//! them from the server functions in `data`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One control-plane member as the Overview lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    /// Member id (hex, as `/v2/members` spells it).
    pub id: String,
    /// Member name.
    pub name: String,
    /// First client URL, empty when the member did not say.
    pub client_url: String,
    /// `leader`, `follower`, `candidate`, or `unreachable` when its stats did not answer.
    pub role: String,
    /// Raft term it reports.
    pub term: Option<u64>,
    /// Last log index it has applied.
    pub applied: Option<u64>,
    /// Log index the leader knows it holds (the leader's own: its applied index).
    pub matched: Option<u64>,
}

/// How far (in log entries) under the commit index a member is shown `behind`.
const BEHIND: u64 = 1000;

impl MemberRow {
    /// Its health in words: `unreachable` when its stats did not answer,
    /// `behind by N` when the leader knows it holds more than [`BEHIND`]
    /// entries less than `commit`, else `healthy`.
    pub fn health(&self, commit: Option<u64>) -> String {
        if self.role == "unreachable" {
            return self.role.clone();
        }
        match (commit, self.matched) {
            (Some(c), Some(held)) if c.saturating_sub(held) > BEHIND => {
                format!("behind by {}", c - held)
            }
            _ => "healthy".into(),
        }
    }
}

/// The Overview page: the control plane and the fleet at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    /// Every member.
    pub members: Vec<MemberRow>,
    /// Name of the leader, if one is known.
    pub leader: Option<String>,
    /// The highest term any member reports.
    pub term: u64,
    /// Log index a majority holds, when the leader's replication stats answered.
    pub commit: Option<u64>,
    /// The key space's etcd index on the member serving the page.
    pub etcd_index: u64,
    /// Machines with a live lease.
    pub machines: usize,
    /// Submitted units.
    pub units: usize,
    /// Instances of launched units.
    pub instances_desired: usize,
    /// Instances their agents report `running`.
    pub instances_running: usize,
    /// Locks with at least one holder.
    pub locks: usize,
    /// Lock slots held, over all locks.
    pub lock_holders: usize,
    /// Every update channel's rollout.
    pub rollouts: Vec<RolloutRow>,
}

/// One channel's rollout at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRow {
    /// Channel name.
    pub channel: String,
    /// The version it rolls out, if any.
    pub version: Option<String>,
    /// `rolling`, `paused`, or `halted: <reason>` ([`ChannelRow::status`]).
    pub status: String,
    /// Machines that checked in on it.
    pub machines: usize,
    /// Of those, the ones running its version.
    pub on_version: usize,
    /// Of those, the ones between downloading and confirming.
    pub updating: usize,
    /// Of those, the ones whose last update failed or rolled back.
    pub failed: usize,
}

/// One instance as a machine card shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedInstance {
    /// Instance name (`web@1`).
    pub instance: String,
    /// What its agent reports (`running`, `exited`...), or `pending` before the first report.
    pub state: String,
}

/// One machine card of the Topology page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineCard {
    /// Machine id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Addresses.
    pub addresses: Vec<String>,
    /// Operator metadata (`region=eu`).
    pub metadata: BTreeMap<String, String>,
    /// `up`, `draining` (by an operator or for an update), `rebooting` (into
    /// an update), or `lease lost` (its lease lapsed while instances are still
    /// placed on it; only its id and those instances are known).
    pub state: String,
    /// OS version, if the update engine reported one.
    pub os_version: String,
    /// Active A/B slot.
    pub active_slot: String,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Memory capacity in MiB.
    pub memory_mb: u64,
    /// The instances placed on it.
    pub instances: Vec<PlacedInstance>,
}

/// One instance of a unit: desired placement next to what runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRow {
    /// Instance name.
    pub instance: String,
    /// Where the engine placed it.
    pub machine_id: Option<String>,
    /// What its agent reports.
    pub actual: Option<String>,
    /// Why it is not placed.
    pub unplaced_reason: Option<String>,
}

/// One unit of the Units page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRow {
    /// Unit name.
    pub name: String,
    /// Container image.
    pub image: String,
    /// `launched` or `inactive`.
    pub desired: String,
    /// `replicated` or `exclusive`.
    pub kind: String,
    /// The unit's revision.
    pub revision: u64,
    /// Its instances.
    pub instances: Vec<InstanceRow>,
}

/// One update channel with its rollout policy, as `/api/v1/updates/channels` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRow {
    /// Channel name.
    pub name: String,
    /// The version it points at, if any.
    pub version: Option<String>,
    /// Most machines rebooting at once.
    pub max_reboots: u32,
    /// Machines that must finish healthy before the others proceed.
    pub canaries: u32,
    /// Reboot windows; none means any time.
    pub windows: Vec<String>,
    /// Time zone of the windows.
    pub timezone: String,
    /// Failures that halt the rollout.
    pub failure_threshold: u32,
    /// Paused by an operator.
    pub paused: bool,
    /// Halted after failures.
    pub halted: bool,
    /// Why it halted.
    pub halt_reason: String,
}

/// One uploaded payload: a version machines can be updated to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRow {
    /// OS version it installs.
    pub version: String,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// When it was uploaded (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub uploaded_at: String,
    /// The channels pointing at it.
    pub channels: Vec<String>,
}

impl ChannelRow {
    /// `rolling`, `paused`, or `halted: <reason>`.
    pub fn status(&self) -> String {
        if self.halted {
            format!("halted: {}", self.halt_reason)
        } else if self.paused {
            "paused".into()
        } else {
            "rolling".into()
        }
    }
}

/// One machine's place in the update state machine (its last check-in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineProgress {
    /// Machine id.
    pub machine_id: String,
    /// Channel it follows.
    pub channel: String,
    /// Version it runs.
    pub version: String,
    /// Its update state (`idle`, `downloading`, ... `updated`, `rolled_back`, `failed`).
    pub state: String,
    /// The version it is updating to, if any.
    pub target: Option<String>,
    /// The last error, in words.
    pub error: String,
    /// Whether the last check-in let it proceed.
    pub proceed: bool,
    /// When its state last changed (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub since: String,
}

/// One slot of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolderRow {
    /// Lock name.
    pub lock: String,
    /// Who holds the slot.
    pub holder: String,
    /// Fencing token.
    pub token: u64,
    /// When the slot lapses unless renewed, if it has a TTL.
    pub expiration: Option<String>,
}

/// One entry of a history (updates or cluster events).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// When it happened (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub at: String,
    /// What happened (`channel_paused`, `machine_state`, `machine_joined`...).
    pub kind: String,
    /// What it is about: machine, channel, unit, version, as `name=value` pairs.
    pub subjects: Vec<String>,
    /// Details in words.
    pub detail: String,
}

/// The Updates page: channels, versions, machines' progress, reboot-lock holders, history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatesView {
    /// Every channel.
    pub channels: Vec<ChannelRow>,
    /// Every uploaded payload, newest first.
    pub payloads: Vec<PayloadRow>,
    /// Every machine that checked in.
    pub machines: Vec<MachineProgress>,
    /// Holders of the reboot lock(s) (`reboot`, `reboot-<group>`).
    pub holders: Vec<LockHolderRow>,
    /// The newest update history entries, newest first.
    pub history: Vec<HistoryRow>,
}

/// One key or directory of the Key space page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyNode {
    /// Full path.
    pub key: String,
    /// Depth below the listed directory (0: its direct children).
    pub depth: usize,
    /// True for a directory.
    pub dir: bool,
    /// The value of a key (none for directories).
    pub value: Option<String>,
    /// Index of the write that last changed it.
    pub modified_index: u64,
    /// Index of the write that created it.
    pub created_index: u64,
    /// Seconds left before it expires, if it has a TTL.
    pub ttl: Option<i64>,
}

/// A directory of the key space, listed recursively.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDir {
    /// The listed directory.
    pub dir: String,
    /// The etcd index the listing was read at.
    pub index: u64,
    /// Its keys and directories, depth first, in key order.
    pub nodes: Vec<KeyNode>,
}

/// What a unit action button asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitVerb {
    /// `POST /api/v1/units/{name}/start`.
    Start,
    /// `POST /api/v1/units/{name}/stop`.
    Stop,
    /// `DELETE /api/v1/units/{name}`.
    Destroy,
}

impl UnitVerb {
    /// The button's label.
    pub fn label(self) -> &'static str {
        match self {
            UnitVerb::Start => "Start",
            UnitVerb::Stop => "Stop",
            UnitVerb::Destroy => "Destroy",
        }
    }
}

/// One key-space change as `/api/v1/events` sends it (the `data` of an SSE message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEvent {
    /// The key that changed.
    pub key: String,
    /// etcd's action: `set`, `create`, `delete`, `expire`, `compareAndSwap`...
    pub action: String,
    /// The etcd index of the change.
    pub index: u64,
}

/// Which part of the dashboard a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Locks and elections.
    Locks,
    /// Machines, units, placements, states: everything else under `/_shoal`.
    Fleet,
}

impl KeyEvent {
    /// The area whose views this change affects.
    pub fn area(&self) -> Area {
        if self.key.starts_with("/_shoal/locks") || self.key.starts_with("/_shoal/elections") {
            Area::Locks
        } else {
            Area::Fleet
        }
    }
}

/// The event stream's URL for changes under `prefix` (`/api/v1/events?prefix=...`).
pub fn events_url(prefix: &str) -> String {
    format!("/api/v1/events?prefix={}", escape(prefix, b"/-_.~@:"))
}

/// `text` percent-encoded, keeping ASCII letters, digits and the bytes in `keep`.
fn escape(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment or query value, percent-encoded.
fn component(text: &str) -> String {
    escape(text, b"-_.~@:")
}

/// How many lines of its tail a journal starts with.
pub const JOURNAL_TAIL: u64 = 200;
/// Most journal lines the Units page keeps, the newest.
pub const JOURNAL_KEEP: usize = 500;

/// `GET /api/v1/units/{unit}/journal` of one instance, followed, from the last [`JOURNAL_TAIL`] lines.
pub fn journal_url(unit: &str, instance: &str) -> String {
    format!(
        "/api/v1/units/{}/journal?instance={}&follow=true&tail={JOURNAL_TAIL}",
        component(unit),
        component(instance)
    )
}

/// Adds the complete lines of `chunk` (after what `partial` held) to
/// `lines`, keeping the newest [`JOURNAL_KEEP`]; an unfinished last line
/// stays in `partial` until its newline arrives.
pub fn take_lines(lines: &mut Vec<String>, partial: &mut Vec<u8>, chunk: &[u8]) {
    partial.extend_from_slice(chunk);
    let Some(cut) = partial.iter().rposition(|b| *b == b'\n') else {
        return;
    };
    let complete: Vec<u8> = partial.drain(..=cut).collect();
    lines.extend(
        String::from_utf8_lossy(&complete)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned()),
    );
    let over = lines.len().saturating_sub(JOURNAL_KEEP);
    lines.drain(..over);
}

/// `POST /api/v1/updates/payloads` with a payload's version, signature and optional channel.
pub fn upload_url(version: &str, signature: &str, channel: &str) -> String {
    let mut url = format!(
        "/api/v1/updates/payloads?version={}&signature={}",
        component(version.trim()),
        component(signature.trim())
    );
    if !channel.trim().is_empty() {
        url.push_str(&format!("&channel={}", component(channel.trim())));
    }
    url
}

/// What an API answer that is not a success says, in words: the message of
/// an `/api/v1` error body, else the text (an agent's), else the status.
pub fn error_words(status: u16, body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    match message {
        Some(m) => m,
        None if !body.trim().is_empty() => body.trim().to_owned(),
        None => format!("the server answered {status}"),
    }
}

/// The upload's outcome in words from the server's answer: what was stored, or why not.
pub fn upload_words(status: u16, body: &str) -> Result<String, String> {
    if !(200..300).contains(&status) {
        return Err(error_words(status, body));
    }
    let meta: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let sha = meta["sha256"].as_str().unwrap_or_default();
    let what = if status == 201 {
        "uploaded"
    } else {
        "already stored"
    };
    Ok(format!(
        "{what} {}: {} bytes, sha256 {}…",
        meta["version"].as_str().unwrap_or("?"),
        meta["size"],
        sha.get(..12).unwrap_or(sha)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_unreachable_behind_or_healthy() {
        let row = |role: &str, matched: Option<u64>| MemberRow {
            id: String::new(),
            name: String::new(),
            client_url: String::new(),
            role: role.into(),
            term: Some(1),
            applied: None,
            matched,
        };
        assert_eq!(row("unreachable", None).health(Some(5000)), "unreachable");
        assert_eq!(
            row("follower", Some(3000)).health(Some(5000)),
            "behind by 2000"
        );
        assert_eq!(row("follower", Some(4500)).health(Some(5000)), "healthy");
        assert_eq!(row("follower", None).health(None), "healthy");
    }

    #[test]
    fn watch_urls_escape_the_prefix() {
        assert_eq!(events_url("/_shoal"), "/api/v1/events?prefix=/_shoal");
        assert_eq!(
            events_url("/a b/&x=é"),
            "/api/v1/events?prefix=/a%20b/%26x%3D%C3%A9"
        );
    }

    #[test]
    fn journal_and_upload_urls_escape_their_values() {
        assert_eq!(
            journal_url("web", "web@2"),
            "/api/v1/units/web/journal?instance=web@2&follow=true&tail=200"
        );
        assert_eq!(
            upload_url(" 1.2+b ", "ab+/c=", ""),
            "/api/v1/updates/payloads?version=1.2%2Bb&signature=ab%2B%2Fc%3D"
        );
        assert_eq!(
            upload_url("2", "s", "stable"),
            "/api/v1/updates/payloads?version=2&signature=s&channel=stable"
        );
    }

    #[test]
    fn journal_lines_wait_for_their_newline_and_keep_the_newest() {
        let (mut lines, mut partial) = (Vec::new(), Vec::new());
        take_lines(&mut lines, &mut partial, b"one\r\ntw");
        assert_eq!(lines, ["one"]);
        take_lines(&mut lines, &mut partial, b"o\nthree");
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(partial, b"three");
        for n in 0..JOURNAL_KEEP {
            take_lines(&mut lines, &mut partial, format!("\n{n}").as_bytes());
        }
        assert_eq!(lines.len(), JOURNAL_KEEP);
        assert_eq!(lines.last().map(String::as_str), Some("498"));
    }

    #[test]
    fn answers_in_words() {
        let body = r#"{"error":{"code":"bad_request","message":"signature: malformed"}}"#;
        assert_eq!(error_words(400, body), "signature: malformed");
        assert_eq!(
            error_words(502, "docker not connected\n"),
            "docker not connected"
        );
        assert_eq!(error_words(500, ""), "the server answered 500");
        let meta = r#"{"version":"1.2","size":5,"sha256":"0123456789abcdef"}"#;
        assert_eq!(
            upload_words(201, meta),
            Ok("uploaded 1.2: 5 bytes, sha256 0123456789ab…".into())
        );
        assert!(upload_words(200, meta).is_ok_and(|w| w.starts_with("already stored 1.2")));
        assert_eq!(upload_words(409, body), Err("signature: malformed".into()));
    }

    fn event(key: &str) -> KeyEvent {
        KeyEvent {
            key: key.into(),
            action: "set".into(),
            index: 1,
        }
    }

    #[test]
    fn events_go_to_their_area() {
        assert_eq!(event("/_shoal/locks/reboot/m1").area(), Area::Locks);
        assert_eq!(event("/_shoal/elections/x").area(), Area::Locks);
        assert_eq!(event("/_shoal/units/web").area(), Area::Fleet);
        assert_eq!(event("/_shoal").area(), Area::Fleet);
    }

    #[test]
    fn events_travel_as_compact_json() {
        let json = r#"{"key":"/_shoal/units/web","action":"delete","index":42}"#;
        let e: KeyEvent = serde_json::from_str(json).expect("an event");
        assert_eq!(e.index, 42);
        assert_eq!(serde_json::to_string(&e).expect("json"), json);
    }
}
