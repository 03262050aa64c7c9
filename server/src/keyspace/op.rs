//! The writes the key space accepts: the payload of every raft log entry.
//!
//! Every operation carries the leader's clock reading (`Command::now`), so
//! TTLs and expiry are decided once, by the leader, and every member applies
//! the same result.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One replicated write: an operation stamped with the leader's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The leader's wall clock when it proposed the write.
    pub now: DateTime<Utc>,
    /// What to do.
    pub op: Op,
}

/// Conditions a write may place on the key's current state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precondition {
    /// `Some(true)`: the key must exist; `Some(false)`: it must not.
    pub prev_exist: Option<bool>,
    /// The key's current value must equal this.
    pub prev_value: Option<String>,
    /// The key's current modified index must equal this.
    pub prev_index: Option<u64>,
}

impl Precondition {
    /// True when the write compares value or index (compare-and-swap/delete).
    pub fn compares(&self) -> bool {
        self.prev_value.is_some() || self.prev_index.is_some()
    }
}

/// A key-space operation, in etcd v2's vocabulary plus Shoal's lock slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// PUT: set, create, update or compare-and-swap a key or directory.
    Put {
        /// Cleaned key.
        key: String,
        /// New value; `None` makes a directory.
        value: Option<String>,
        /// Seconds to live; `None` makes the node permanent.
        ttl: Option<u64>,
        /// Only renew the TTL, keeping the value and not waking watchers.
        refresh: bool,
        /// Conditions on the current node.
        cond: Precondition,
    },
    /// POST: create a key with a fresh, ordered name inside `dir`.
    CreateInOrder {
        /// Cleaned directory key.
        dir: String,
        /// Value of the new key; `None` makes an ordered directory.
        value: Option<String>,
        /// Seconds to live.
        ttl: Option<u64>,
    },
    /// DELETE: remove a key, or a directory (recursively if asked).
    Delete {
        /// Cleaned key.
        key: String,
        /// Allow removing an empty directory.
        dir: bool,
        /// Remove a directory with everything under it.
        recursive: bool,
        /// Conditions on the current node (compare-and-delete).
        cond: Precondition,
    },
    /// Remove these keys if their TTL has run out by `Command::now` (leader-proposed).
    Expire {
        /// Keys the leader saw expired.
        keys: Vec<String>,
    },
    /// Take or renew one of `limit` slots under `dir` for `holder`.
    Acquire {
        /// Cleaned directory holding the slots.
        dir: String,
        /// Who takes the slot; the slot's key is `dir/holder`.
        holder: String,
        /// The most slots the directory admits.
        limit: u32,
        /// Seconds the slot lasts.
        ttl: u64,
        /// Note stored in the slot.
        value: String,
    },
    /// Give back `holder`'s slot under `dir`.
    Release {
        /// Cleaned directory holding the slots.
        dir: String,
        /// Whose slot to remove.
        holder: String,
    },
}
