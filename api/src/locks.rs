//! `/api/v1/locks`: counting semaphores with TTL-backed holders (a mutex has limit 1).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/locks/{name}/acquire` body. Acquiring again as the same holder
/// keeps the one slot and renews its TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct ReleaseRequest {
    /// The holder giving its slot back.
    pub holder: String,
}

/// One slot of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The state of one lock, returned by `GET` and by acquire/release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    /// Lock name.
    pub name: String,
    /// The holders admitted at most, as set by the last acquire.
    pub limit: u32,
    /// Current holders, oldest first.
    pub holders: Vec<Holder>,
}

/// `GET /api/v1/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockList {
    /// Every lock with at least one holder.
    pub locks: Vec<LockState>,
}
