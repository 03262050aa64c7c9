//! The OS update service: signed payloads, channels with rollout policies, the
//! agents' check-ins and the history of every change, as stored in the key
//! space and served by `/api/v1/updates`.
//!
//! Key layout (JSON values):
//! - `/_shoal/updates/payloads/<version>`: [`PayloadMeta`]; the bytes live on
//!   disk at `<data-dir>/payloads/<sha256>` on the member named in `member`.
//! - `/_shoal/updates/channels/<name>`: [`Channel`], changed with compare-and-swap.
//! - `/_shoal/updates/machines/<machine id>`: [`MachineUpdate`], the last check-in.
//! - `/_shoal/history/updates/<in-order key>`: [`HistoryEvent`], append only.
//!
//! # Signatures
//!
//! A payload is signed with ed25519 over one fixed manifest message,
//! `b"shoal-payload-v1\n{version}\n{size}\n{sha256}\n"` (size in decimal bytes,
//! sha256 in lowercase hex), so a signature binds the version, the length and
//! the content together: replaying a signature for another version, or
//! serving other bytes under it, fails verification. Keys travel as PKCS#8
//! (secret) and SPKI (public) PEM files; signatures as standard base64.
//!
//! # The agent's side of a check-in
//!
//! An agent posts a [`CheckIn`] periodically. The [`CheckInReply`] offers the
//! channel's version when the machine runs another one; the agent may
//! download and verify at once, but takes the reboot semaphore named in
//! [`CheckInReply::lock`] (with that limit) and reboots only while `proceed`
//! is true. After a confirmed update it reports [`UpdateState::Updated`] on the
//! new version until it starts another update; a machine reporting the channel's
//! version as [`UpdateState::Idle`] was already there and takes no part in the
//! rollout (it is never a canary).

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Key-space directory of payload metadata, by version.
pub const PAYLOADS_DIR: &str = "/_shoal/updates/payloads";
/// Key-space directory of channels, by name.
pub const CHANNELS_DIR: &str = "/_shoal/updates/channels";
/// Key-space directory of the machines' last check-ins, by machine id.
pub const MACHINES_DIR: &str = "/_shoal/updates/machines";
/// Key-space directory of the update history (in-order keys).
pub const HISTORY_DIR: &str = "/_shoal/history/updates";
/// The semaphore agents take before rebooting (`/api/v1/locks/reboot`).
pub const REBOOT_LOCK: &str = "reboot";
/// The first line of every signed manifest message.
pub const MANIFEST_TAG: &str = "shoal-payload-v1";

/// A stored payload: what the server announces to agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayloadMeta {
    /// OS version the payload installs.
    pub version: String,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
    /// ed25519 signature of the manifest message, base64.
    pub signature: String,
    /// When it was uploaded.
    pub uploaded_at: DateTime<Utc>,
    /// Client URL of the member that stores the bytes.
    pub member: String,
}

/// The rollout rules of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutPolicy {
    /// Most machines rebooting at once: the limit of the reboot semaphore.
    #[serde(default = "one")]
    pub max_reboots: u32,
    /// The first K machines needing the update (in machine-id order) must
    /// finish healthy before the others may proceed.
    #[serde(default)]
    pub canaries: u32,
    /// Reboot windows like `Mon..Fri 04:00 2h`; none means any time.
    #[serde(default)]
    pub windows: Vec<String>,
    /// IANA time zone the windows are in.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Machines failed or rolled back on the target version that halt the rollout.
    #[serde(default = "one")]
    pub failure_threshold: u32,
    /// Paused by an operator: no machine may proceed.
    #[serde(default)]
    pub paused: bool,
    /// Halted automatically after failures: no machine may proceed until resumed.
    #[serde(default)]
    pub halted: bool,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub halt_reason: String,
    /// When an operator last resumed: failures reported before it no longer count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<DateTime<Utc>>,
}

fn one() -> u32 {
    1
}

fn utc() -> String {
    "UTC".into()
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            max_reboots: 1,
            canaries: 0,
            windows: Vec::new(),
            timezone: utc(),
            failure_threshold: 1,
            paused: false,
            halted: false,
            halt_reason: String::new(),
            resumed_at: None,
        }
    }
}

/// An update channel (e.g. `stable`): the version it points at and how it rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    /// Channel name.
    pub name: String,
    /// The version machines on this channel should run; none yet.
    #[serde(default)]
    pub version: Option<String>,
    /// Rollout rules.
    #[serde(default)]
    pub policy: RolloutPolicy,
}

/// `POST /api/v1/updates/channels/{name}/halt`: an operator's halt; the body is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HaltRequest {
    /// Why the rollout stops (default: "halted by an operator").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PUT /api/v1/updates/channels/{name}`: only the fields given change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelUpdate {
    /// Point the channel at this (uploaded) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// New most concurrent reboots (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reboots: Option<u32>,
    /// New canary count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canaries: Option<u32>,
    /// New reboot windows (replace the old ones; empty means any time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<String>>,
    /// New time zone of the windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// New failure threshold (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// Where an agent is in the update state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Nothing in progress.
    #[default]
    Idle,
    /// Writing the payload to the passive slot.
    Downloading,
    /// Checking size, hash and signature.
    Verifying,
    /// The passive slot holds a verified payload.
    Verified,
    /// Waiting for a reboot semaphore slot (or for `proceed`).
    WaitingForLock,
    /// Moving its units to other machines.
    Draining,
    /// Rebooting into the new slot.
    Rebooting,
    /// Booted the new slot; running the health checks.
    Confirming,
    /// Running the new version, confirmed healthy.
    Updated,
    /// The new slot was unhealthy; back on the old one.
    RolledBack,
    /// The update failed before a reboot (download, verification, ...).
    Failed,
}

impl UpdateState {
    /// True for the states that count towards a channel's failure threshold.
    pub fn is_failure(self) -> bool {
        matches!(self, UpdateState::Failed | UpdateState::RolledBack)
    }

    /// True between starting a download and confirming the new slot.
    pub fn in_progress(self) -> bool {
        !matches!(self, UpdateState::Idle | UpdateState::Updated) && !self.is_failure()
    }

    /// The wire name, e.g. `waiting_for_lock`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Idle => "idle",
            UpdateState::Downloading => "downloading",
            UpdateState::Verifying => "verifying",
            UpdateState::Verified => "verified",
            UpdateState::WaitingForLock => "waiting_for_lock",
            UpdateState::Draining => "draining",
            UpdateState::Rebooting => "rebooting",
            UpdateState::Confirming => "confirming",
            UpdateState::Updated => "updated",
            UpdateState::RolledBack => "rolled_back",
            UpdateState::Failed => "failed",
        }
    }
}

impl fmt::Display for UpdateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/v1/updates/checkin`: an agent's periodic report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckIn {
    /// The machine's id (as in `/_shoal/machines`).
    pub machine_id: String,
    /// The channel it follows.
    pub channel: String,
    /// The version it runs now.
    pub version: String,
    /// Where it is in the update state machine.
    #[serde(default)]
    pub state: UpdateState,
    /// The version it is updating to (or failed to update to), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The last error, in words (empty when none).
    #[serde(default)]
    pub error: String,
}

/// What to install: the payload the channel points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Offer {
    /// Version to install.
    pub version: String,
    /// Expected SHA-256, lowercase hex.
    pub sha256: String,
    /// Expected length in bytes.
    pub size: u64,
    /// Signature to check against the agent's public key (see [`verify`]).
    pub signature: String,
    /// Where to download it: a path relative to any member's client URL
    /// (`/api/v1/updates/payloads/<sha256>`, with Range support; a member
    /// without the bytes redirects to the one holding them).
    pub url: String,
}

/// The reboot semaphore an agent takes before it reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockSpec {
    /// Lock name under `/api/v1/locks`.
    pub name: String,
    /// The limit to acquire with: the channel's `max_reboots`.
    pub limit: u32,
}

/// The answer to a [`CheckIn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckInReply {
    /// The payload to install, when the machine does not run the channel's version.
    pub offer: Option<Offer>,
    /// True when the machine may take the reboot lock and reboot now.
    pub proceed: bool,
    /// Why (not), in words.
    pub reason: String,
    /// The semaphore to take before rebooting.
    pub lock: LockSpec,
}

/// What the server keeps about one machine's updates: its last check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineUpdate {
    /// Machine id.
    pub machine_id: String,
    /// Channel it follows.
    pub channel: String,
    /// Version it runs.
    pub version: String,
    /// Its state.
    pub state: UpdateState,
    /// The version it is updating to (or last failed on), if any.
    #[serde(default)]
    pub target: Option<String>,
    /// The last error, in words.
    #[serde(default)]
    pub error: String,
    /// Whether the last reply let it proceed.
    #[serde(default)]
    pub proceed: bool,
    /// When `state` (or `version`) last changed.
    pub since: DateTime<Utc>,
    /// When it last checked in.
    pub last_checkin: DateTime<Utc>,
}

/// One entry of the update history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEvent {
    /// When it happened (the server's clock).
    pub at: DateTime<Utc>,
    /// What happened: `payload_uploaded`, `channel_changed`, `channel_paused`,
    /// `channel_resumed`, `channel_halted`, `machine_state`.
    pub kind: String,
    /// The machine it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// The channel it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The version it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Details in words (e.g. the new state, the halt reason).
    #[serde(default)]
    pub detail: String,
}

/// Query of `POST /api/v1/updates/payloads` (the body is the payload itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct UploadQuery {
    /// Version the payload installs.
    pub version: String,
    /// Its signature (base64), from [`sign`].
    pub signature: String,
    /// Also point this channel at the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// A version name: 1-128 of `[A-Za-z0-9._+-]`, not starting with `.` or `_`.
pub fn valid_version(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && !v.starts_with(['.', '_'])
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// A channel or machine name: 1-128 of `[A-Za-z0-9._:@-]`, not starting with `.` or `_`.
pub fn valid_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && !n.starts_with(['.', '_'])
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c))
}

/// True for 64 lowercase hex digits (a SHA-256 as payloads are named).
pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// Why a key could not be made, read, or a signature checked.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The secret key is not a PKCS#8 PEM ed25519 key.
    #[error("invalid secret key: {0}")]
    SecretKey(String),
    /// The public key is not an SPKI PEM ed25519 key.
    #[error("invalid public key: {0}")]
    PublicKey(String),
    /// Encoding a new key as PEM failed.
    #[error("encoding the key failed: {0}")]
    Encode(String),
    /// The signature is not base64 of 64 bytes.
    #[error("signature is not base64 of 64 bytes")]
    Malformed,
    /// The signature does not match the manifest under this key.
    #[error("signature does not match version, size and hash under the trusted key")]
    Mismatch,
    /// The version or hash is not valid, so no manifest is made of it.
    #[error("invalid {0}: nothing is signed or verified over it")]
    Field(&'static str),
}

/// The exact bytes a payload signature covers.
pub fn manifest(version: &str, size: u64, sha256: &str) -> Vec<u8> {
    format!("{MANIFEST_TAG}\n{version}\n{size}\n{sha256}\n").into_bytes()
}

/// The manifest of valid fields only: a version or hash with a newline in it
/// could make two different offers sign the same bytes.
fn checked_manifest(version: &str, size: u64, sha256: &str) -> Result<Vec<u8>, SignError> {
    if !valid_version(version) {
        return Err(SignError::Field("version"));
    }
    if !valid_sha256(sha256) {
        return Err(SignError::Field("sha256"));
    }
    Ok(manifest(version, size, sha256))
}

/// A new ed25519 key pair as `(secret PKCS#8 PEM, public SPKI PEM)`.
pub fn generate_keypair() -> Result<(String, String), SignError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let secret = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SignError::Encode(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignError::Encode(e.to_string()))?;
    Ok((secret.to_string(), public))
}

/// The public PEM of a secret PEM key.
pub fn public_of(secret_pem: &str) -> Result<String, SignError> {
    let key = SigningKey::from_pkcs8_pem(secret_pem.trim())
        .map_err(|e| SignError::SecretKey(e.to_string()))?;
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignError::Encode(e.to_string()))
}

/// Signs a payload's manifest; the base64 signature.
pub fn sign(secret_pem: &str, version: &str, size: u64, sha256: &str) -> Result<String, SignError> {
    let key = SigningKey::from_pkcs8_pem(secret_pem.trim())
        .map_err(|e| SignError::SecretKey(e.to_string()))?;
    let sig = key.sign(&checked_manifest(version, size, sha256)?);
    Ok(base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()))
}

/// Decodes a base64 signature (checks its shape only).
pub fn decode_signature(signature: &str) -> Result<Signature, SignError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| SignError::Malformed)?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|_| SignError::Malformed)?;
    Ok(Signature::from_bytes(&bytes))
}

/// A trusted ed25519 public key.
pub type PublicKey = VerifyingKey;

/// A public key read from its PEM.
pub fn public_key(public_pem: &str) -> Result<PublicKey, SignError> {
    VerifyingKey::from_public_key_pem(public_pem.trim())
        .map_err(|e| SignError::PublicKey(e.to_string()))
}

/// Checks a payload signature with a parsed public key.
pub fn verify_with(
    key: &PublicKey,
    version: &str,
    size: u64,
    sha256: &str,
    signature: &str,
) -> Result<(), SignError> {
    let sig = decode_signature(signature)?;
    key.verify(&checked_manifest(version, size, sha256)?, &sig)
        .map_err(|_| SignError::Mismatch)
}

/// Checks a payload signature against a public PEM key.
pub fn verify(
    public_pem: &str,
    version: &str,
    size: u64,
    sha256: &str,
    signature: &str,
) -> Result<(), SignError> {
    verify_with(&public_key(public_pem)?, version, size, sha256, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn keys() -> (String, String) {
        generate_keypair().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_signature_verifies_and_binds_version_size_and_hash() -> Result<(), SignError> {
        let (secret, public) = keys();
        assert_eq!(public_of(&secret)?, public);
        let sig = sign(&secret, "1.2.0", 4096, SHA)?;
        verify(&public, "1.2.0", 4096, SHA, &sig)?;
        assert!(matches!(
            verify(&public, "1.2.1", 4096, SHA, &sig),
            Err(SignError::Mismatch)
        ));
        assert!(matches!(
            verify(&public, "1.2.0", 4097, SHA, &sig),
            Err(SignError::Mismatch)
        ));
        let tampered = SHA.replacen('9', "8", 1);
        assert!(matches!(
            verify(&public, "1.2.0", 4096, &tampered, &sig),
            Err(SignError::Mismatch)
        ));
        Ok(())
    }

    #[test]
    fn other_keys_and_garbage_are_refused() -> Result<(), SignError> {
        let (secret, _) = keys();
        let (_, other_public) = keys();
        let sig = sign(&secret, "1", 1, SHA)?;
        assert!(matches!(
            verify(&other_public, "1", 1, SHA, &sig),
            Err(SignError::Mismatch)
        ));
        assert!(matches!(
            verify(&other_public, "1", 1, SHA, "not base64!"),
            Err(SignError::Malformed)
        ));
        assert!(matches!(
            verify(&other_public, "1", 1, SHA, "AAAA"),
            Err(SignError::Malformed)
        ));
        assert!(matches!(
            verify("nonsense", "1", 1, SHA, &sig),
            Err(SignError::PublicKey(_))
        ));
        assert!(matches!(
            sign("nonsense", "1", 1, SHA),
            Err(SignError::SecretKey(_))
        ));
        Ok(())
    }

    #[test]
    fn fields_that_could_shift_the_manifest_are_refused() -> Result<(), SignError> {
        let (secret, public) = keys();
        // "1\n2" / 3 / x would sign the same bytes as "1" / 2 / "3\nx".
        assert!(matches!(
            sign(&secret, "1\n2", 3, SHA),
            Err(SignError::Field("version"))
        ));
        let sig = sign(&secret, "1", 2, SHA)?;
        let shifted = format!("{SHA}\n");
        assert!(matches!(
            verify(&public, "1", 2, &shifted, &sig),
            Err(SignError::Field("sha256"))
        ));
        Ok(())
    }

    #[test]
    fn manifest_is_the_documented_message() {
        assert_eq!(
            manifest("v1", 12, "ab"),
            b"shoal-payload-v1\nv1\n12\nab\n".to_vec()
        );
    }

    #[test]
    fn names_and_hashes_are_checked() {
        assert!(valid_version("2024.05.1+build-3"));
        assert!(!valid_version(""));
        assert!(!valid_version("../x"));
        assert!(!valid_version("a b"));
        assert!(valid_name("stable"));
        assert!(!valid_name("_x"));
        assert!(!valid_name("a/b"));
        assert!(valid_sha256(SHA));
        assert!(!valid_sha256(&SHA.to_uppercase()));
        assert!(!valid_sha256("abc"));
    }

    #[test]
    fn states_use_snake_case_on_the_wire() -> Result<(), serde_json::Error> {
        for s in [UpdateState::WaitingForLock, UpdateState::RolledBack] {
            assert_eq!(serde_json::to_value(s)?, s.as_str());
        }
        let policy: RolloutPolicy = serde_json::from_str("{}")?;
        assert_eq!(policy, RolloutPolicy::default());
        Ok(())
    }
}
