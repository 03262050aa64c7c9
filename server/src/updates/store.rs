//! The update service's records in the key space: JSON reads, plain and
//! compare-and-swap writes, and history appends (in-order keys).

use api::updates::HistoryEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::UpdateError;
use crate::keyspace::{ErrorCode, Op, Precondition};
use crate::member::{Member, ServeError};

/// A record read with the modified index to compare-and-swap against.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its key's modified index.
    pub index: u64,
}

/// Reads and decodes one record; `None` when the key does not exist.
pub fn read<T: DeserializeOwned>(
    member: &Member,
    key: &str,
) -> Result<Option<Versioned<T>>, UpdateError> {
    let Ok(entry) = member.keys.read().lookup(key) else {
        return Ok(None);
    };
    let Some(text) = entry.value else {
        return Err(UpdateError::Corrupt(format!("{key} is a directory")));
    };
    let value =
        serde_json::from_str(&text).map_err(|e| UpdateError::Corrupt(format!("{key}: {e}")))?;
    Ok(Some(Versioned {
        value,
        index: entry.modified_index,
    }))
}

/// Every decodable record directly under `dir`, in key order (others are skipped).
pub fn list<T: DeserializeOwned>(member: &Member, dir: &str) -> Vec<T> {
    member
        .keys
        .read()
        .children(dir)
        .into_iter()
        .filter_map(|(key, entry)| {
            let parsed = serde_json::from_str(entry.value.as_deref()?);
            if let Err(e) = &parsed {
                tracing::warn!(%key, %e, "skipping an unreadable update record");
            }
            parsed.ok()
        })
        .collect()
}

/// How a write must find the key.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Whatever is there.
    Any,
    /// The key must not exist.
    Absent,
    /// The key's modified index must be this.
    Index(u64),
}

/// Writes `value` as JSON at `key`. `Ok(false)` when `expect` did not hold
/// (someone else changed the key first: re-read and retry).
pub async fn write<T: Serialize>(
    member: &Member,
    key: &str,
    value: &T,
    expect: Expect,
) -> Result<bool, UpdateError> {
    let text = serde_json::to_string(value).map_err(|e| UpdateError::Corrupt(e.to_string()))?;
    let cond = match expect {
        Expect::Any => Precondition::default(),
        Expect::Absent => Precondition {
            prev_exist: Some(false),
            ..Precondition::default()
        },
        Expect::Index(i) => Precondition {
            prev_index: Some(i),
            ..Precondition::default()
        },
    };
    let op = Op::Put {
        key: key.to_owned(),
        value: Some(text),
        ttl: None,
        refresh: false,
        cond,
    };
    match member.write(op).await {
        Ok(_) => Ok(true),
        Err(ServeError::Key(e))
            if matches!(
                e.code,
                ErrorCode::TestFailed | ErrorCode::NodeExist | ErrorCode::KeyNotFound
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(UpdateError::Unavailable(e)),
    }
}

/// Appends an event to the update history. A failure is logged, not returned:
/// the change it describes has already happened.
pub async fn record(member: &Member, event: HistoryEvent) {
    let value = match serde_json::to_string(&event) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%e, "cannot encode a history event");
            return;
        }
    };
    let op = Op::CreateInOrder {
        dir: api::updates::HISTORY_DIR.to_owned(),
        value: Some(value),
        ttl: None,
    };
    if let Err(e) = member.write(op).await {
        tracing::warn!(%e, kind = %event.kind, "cannot record a history event");
    }
}

/// The newest `limit` history events, oldest first.
pub fn history(member: &Member, limit: usize) -> Vec<HistoryEvent> {
    let mut all: Vec<HistoryEvent> = list(member, api::updates::HISTORY_DIR);
    let skip = all.len().saturating_sub(limit);
    all.drain(..skip);
    all
}
