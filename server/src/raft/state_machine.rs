//! The raft state machine: applies committed commands to the key space,
//! persists each applied batch to `state.db`, builds and installs snapshots.
//!
//! The in-memory [`KeySpace`] is shared with the HTTP layer through
//! [`Shared`]: readers take the lock briefly and never across an await;
//! watchers wait on `Shared::changed`, which carries the etcd index.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use tokio::sync::watch;

use super::{io_err, Applied, MemberNode, NodeId, TypeConfig};
use crate::db::{AppliedMeta, StateDb};
use crate::keyspace::{Image, KeySpace};

/// The key space as every part of the server sees it.
#[derive(Debug)]
pub struct Shared {
    keys: RwLock<KeySpace>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn new(keys: KeySpace) -> Self {
        let (changed, _) = watch::channel(keys.index());
        Self {
            keys: RwLock::new(keys),
            changed,
        }
    }

    /// Read access to the applied key space.
    pub fn read(&self) -> RwLockReadGuard<'_, KeySpace> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, KeySpace> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that sees the etcd index change after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many watchers are waiting now.
    pub fn watchers(&self) -> usize {
        self.changed.receiver_count()
    }
}

/// openraft's state machine over the key space and [`StateDb`].
#[derive(Debug)]
pub struct StateMachine {
    shared: Arc<Shared>,
    db: StateDb,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, MemberNode>,
}

impl StateMachine {
    /// Loads the applied key space from `state.db`.
    pub async fn load(db: StateDb) -> anyhow::Result<Self> {
        let image = db.load_image().await?;
        let last_applied = db
            .get_meta::<Option<LogId<NodeId>>>("last_applied")
            .await?
            .flatten();
        let membership = db.get_meta("membership").await?.unwrap_or_default();
        Ok(Self {
            shared: Arc::new(Shared::new(KeySpace::from_image(image))),
            db,
            last_applied,
            membership,
        })
    }

    /// The handle the HTTP layer reads through.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn meta(
        &self,
        etcd_index: u64,
    ) -> AppliedMeta<'_, Option<LogId<NodeId>>, StoredMembership<NodeId, MemberNode>> {
        AppliedMeta {
            last_applied: &self.last_applied,
            membership: &self.membership,
            etcd_index,
        }
    }
}

/// Builds a snapshot from a consistent copy of the key space.
#[derive(Debug)]
pub struct SnapshotBuilder {
    image: Image,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, MemberNode>,
    db: StateDb,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = serde_json::to_vec(&self.image).map_err(|e| io_err(&e))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!(
                "{}-{}-{}",
                l.leader_id,
                l.index,
                chrono::Utc::now().timestamp_millis()
            ),
            None => format!("empty-{}", chrono::Utc::now().timestamp_millis()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let meta_blob = serde_json::to_vec(&meta).map_err(|e| io_err(&e))?;
        self.db
            .save_snapshot(&meta_blob, &data)
            .await
            .map_err(|e| io_err(&e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, MemberNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let (changes, index) = {
            let mut keys = self.shared.write();
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                out.push(match entry.payload {
                    EntryPayload::Blank => Applied::Nothing,
                    EntryPayload::Normal(batch) => {
                        Applied::Keys(batch.0.iter().map(|cmd| keys.apply(cmd)).collect())
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        Applied::Nothing
                    }
                });
            }
            (keys.take_changes(), keys.index())
        };
        self.db
            .apply(&changes, self.meta(index))
            .await
            .map_err(|e| io_err(&e))?;
        self.shared.changed.send_replace(index);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            image: self.shared.read().image(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            db: self.db.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MemberNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let image: Image = serde_json::from_slice(&data).map_err(|e| io_err(&e))?;
        let meta_blob = serde_json::to_vec(meta).map_err(|e| io_err(&e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let index = image.index;
        self.db
            .install(&image, self.meta(index), &meta_blob, &data)
            .await
            .map_err(|e| io_err(&e))?;
        *self.shared.write() = KeySpace::from_image(image);
        self.shared.changed.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some((meta, data)) = self.db.load_snapshot().await.map_err(|e| io_err(&e))? else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, MemberNode> =
            serde_json::from_slice(&meta).map_err(|e| io_err(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
