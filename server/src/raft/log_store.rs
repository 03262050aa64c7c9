//! The raft log and vote, in `raft.db`.
//!
//! openraft hands `append` a batch of entries; the whole batch is one SQLite
//! transaction, so one fsync commits many client writes, and the flush
//! callback fires only after that commit. The newest entries are also kept in
//! memory (the tail), so replicating them to followers reads no SQL.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, Vote};

use super::{io_err, NodeId, TypeConfig};
use crate::db::LogDb;

/// How many of the newest entries the tail keeps.
const TAIL_LEN: usize = 4096;

/// The newest log entries, contiguous, mirroring the end of `raft.db`.
type Tail = Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>;

/// openraft's log storage over [`LogDb`].
#[derive(Clone, Debug)]
pub struct LogStore {
    db: LogDb,
    tail: Tail,
}

impl LogStore {
    /// A log store over an opened `raft.db`.
    pub fn new(db: LogDb) -> Self {
        Self {
            db,
            tail: Tail::default(),
        }
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries `from..to` from the tail, if the tail covers `from`.
    fn read_tail(&self, from: u64, to: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let tail = self.tail();
        let (first, _) = tail.first_key_value()?;
        (*first <= from && from < to)
            .then(|| tail.range(from..to).map(|(_, e)| e.clone()).collect())
    }
}

fn decode(blob: &[u8]) -> Result<Entry<TypeConfig>, serde_json::Error> {
    serde_json::from_slice(blob)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i + 1,
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(entries) = self.read_tail(from, to) {
            return Ok(entries);
        }
        let blobs = self.db.range(from, to).await.map_err(|e| io_err(&e))?;
        let entries: Result<Vec<_>, serde_json::Error> = blobs.iter().map(|b| decode(b)).collect();
        entries.map_err(|e| io_err(&e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> = self
            .db
            .get_meta("last_purged")
            .await
            .map_err(|e| io_err(&e))?;
        let last = match self.db.last().await.map_err(|e| io_err(&e))? {
            Some(blob) => Some(*decode(&blob).map_err(|e| io_err(&e))?.get_log_id()),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.db.put_meta("vote", vote).await.map_err(|e| io_err(&e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.db.get_meta("vote").await.map_err(|e| io_err(&e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        let mut fresh = Vec::new();
        for entry in entries {
            let blob = serde_json::to_vec(&entry).map_err(|e| io_err(&e))?;
            rows.push((entry.get_log_id().index, blob));
            fresh.push(entry);
        }
        {
            let mut tail = self.tail();
            if fresh.first().is_some_and(|e| {
                tail.last_key_value()
                    .is_some_and(|(k, _)| *k + 1 != e.log_id.index)
            }) {
                tail.clear(); // not contiguous with what we hold: start the tail afresh
            }
            for entry in fresh {
                tail.insert(entry.log_id.index, entry);
            }
            while tail.len() > TAIL_LEN {
                tail.pop_first();
            }
        }
        let result = self.db.append(&rows).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.tail().retain(|idx, _| *idx < log_id.index);
        self.db
            .truncate_from(log_id.index)
            .await
            .map_err(|e| io_err(&e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.tail().retain(|idx, _| *idx > log_id.index);
        self.db
            .purge_upto(log_id.index, &log_id)
            .await
            .map_err(|e| io_err(&e))
    }
}
