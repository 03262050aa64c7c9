//! `/api/v1/locks`: counting semaphores with TTL-backed holders (a mutex has limit 1),
//! and the FleetLock protocol (`/v1/pre-reboot`, `/v1/steady-state`) Zincati speaks
//! to the same semaphores.
//!
//! # FleetLock
//!
//! A FleetLock group maps to a semaphore: group `default` to [`REBOOT_LOCK`] (the
//! lock Shoal's own agents take), any other group `g` to `reboot-g` (see
//! [`fleetlock_lock_name`]). The client id is the holder. A FleetLock client names
//! no limit; it acquires with the lock's configured limit (`PUT /api/v1/locks/{name}`),
//! else the limit the current holders took it with, else 1. FleetLock has no
//! renewal, so its slots last [`FLEETLOCK_TTL_SECS`]: a host that never comes back
//! frees its slot after that, or sooner with `shoalctl lock unlock`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::updates::REBOOT_LOCK;

/// `POST /api/v1/locks/{name}/acquire` body. Acquiring again as the same holder
/// keeps the one slot and renews its TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireRequest {
    /// Who takes the slot (a machine id, a process name...).
    pub holder: String,
    /// How many holders the lock admits; 1 makes it a mutex.
    #[serde(default = "one")]
    pub limit: u32,
    /// Seconds the slot lasts unless acquired again.
    pub ttl: u64,
    /// Optional note stored with the slot.
    #[serde(default)]
    pub value: String,
    /// Seconds to wait for a free slot; 0 answers at once.
    #[serde(default)]
    pub wait: u64,
}

fn one() -> u32 {
    1
}

/// `POST /api/v1/locks/{name}/release` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRequest {
    /// The holder giving its slot back.
    pub holder: String,
}

/// One slot of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Holder {
    /// Who holds it.
    pub holder: String,
    /// The note stored with the slot.
    pub value: String,
    /// Fencing token: the modified index of the holder's entry; it grows with every acquire.
    pub token: u64,
    /// When the slot lapses unless renewed.
    pub expiration: Option<DateTime<Utc>>,
}

/// `PUT /api/v1/locks/{name}` body: the limit of clients that name none (FleetLock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockConfig {
    /// How many holders the lock admits; at least 1.
    pub limit: u32,
}

/// The state of one lock, returned by `GET` and by acquire/release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockState {
    /// Lock name.
    pub name: String,
    /// The holders admitted at most, as set by the current holders' acquires (0 when none).
    pub limit: u32,
    /// The limit set with `PUT /api/v1/locks/{name}`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_limit: Option<u32>,
    /// Current holders, oldest first.
    pub holders: Vec<Holder>,
}

/// `GET /api/v1/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockList {
    /// Every lock with at least one holder.
    pub locks: Vec<LockState>,
}

/// The header every FleetLock request carries, with the value `true`.
pub const FLEETLOCK_HEADER: &str = "fleet-lock-protocol";
/// Seconds a FleetLock slot lasts: the protocol has no renewal, and a host
/// releases only after it rebooted (`/v1/steady-state`), so the TTL only bounds
/// how long a host that never returns blocks its group.
pub const FLEETLOCK_TTL_SECS: u64 = 24 * 60 * 60;
/// The FleetLock group Zincati uses unless configured otherwise.
pub const FLEETLOCK_DEFAULT_GROUP: &str = "default";
/// FleetLock error kind: the `fleet-lock-protocol: true` header is missing.
pub const FLEETLOCK_MISSING_HEADER: &str = "missing_fleet_lock_header";
/// FleetLock error kind: the body is not valid `client_params`.
pub const FLEETLOCK_BAD_REQUEST: &str = "bad_client_params";
/// FleetLock error kind (airlock's spelling): every slot of the group is held.
pub const FLEETLOCK_SEMAPHORE_FULL: &str = "failed_lock_semaphore_full";
/// FleetLock error kind: the cluster could not commit the change.
pub const FLEETLOCK_UNAVAILABLE: &str = "unavailable";

/// `POST /v1/pre-reboot` and `/v1/steady-state` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetLockRequest {
    /// Who asks, and for which group.
    pub client_params: FleetLockClient,
}

/// A FleetLock client's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetLockClient {
    /// The client's stable identifier (Zincati: an app-specific machine id); the holder.
    pub id: String,
    /// The reboot group, `^[a-zA-Z0-9.-]+$`.
    pub group: String,
}

/// A FleetLock error answer: a small set of `kind`s, and words in `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetLockError {
    /// Machine-readable error type, e.g. [`FLEETLOCK_SEMAPHORE_FULL`].
    pub kind: String,
    /// Human-readable description.
    pub value: String,
}

/// The semaphore a FleetLock group maps to: `default` is [`REBOOT_LOCK`],
/// any other group `g` is `reboot-g`.
pub fn fleetlock_lock_name(group: &str) -> String {
    if group == FLEETLOCK_DEFAULT_GROUP {
        REBOOT_LOCK.to_owned()
    } else {
        format!("{REBOOT_LOCK}-{group}")
    }
}

/// True for a group name the protocol allows: `^[a-zA-Z0-9.-]+$`.
pub fn valid_fleetlock_group(group: &str) -> bool {
    !group.is_empty()
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleetlock_groups_map_to_reboot_semaphores() {
        assert_eq!(fleetlock_lock_name("default"), "reboot");
        assert_eq!(fleetlock_lock_name("workers"), "reboot-workers");
        assert!(valid_fleetlock_group("db-1.eu"));
        for bad in ["", "a b", "a/b", "a_b", "ä"] {
            assert!(!valid_fleetlock_group(bad), "{bad:?}");
        }
    }

    #[test]
    fn fleetlock_body_is_zincatis() {
        let body =
            r#"{"client_params":{"id":"c988d2509fdf4cdcbed39037c56406fb","group":"default"}}"#;
        let req: FleetLockRequest = serde_json::from_str(body).expect("decode");
        assert_eq!(req.client_params.group, "default");
        assert_eq!(req.client_params.id, "c988d2509fdf4cdcbed39037c56406fb");
    }
}
