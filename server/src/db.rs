//! Persistence: the only module that runs SQL.
//!
//! Each member keeps two SQLite files in its data dir, both in WAL mode, so a
//! committed transaction survives SIGKILL:
//! - `raft.db` (`synchronous=FULL`): the raft log and vote. Raft owns this: an
//!   entry is appended and fsynced before the member acknowledges it, so it
//!   also survives power loss.
//! - `state.db` (`synchronous=NORMAL`): the applied key space and the latest
//!   snapshot. This is a projection of the log up to `last_applied`, so its
//!   applies need no fsync of their own: after a power loss openraft re-applies
//!   from the log whatever state.db lost. The one thing the log cannot give
//!   back is what it purged, so saving or installing a snapshot — after which
//!   the log may be purged — ends with a full checkpoint that makes state.db
//!   durable up to that point.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::keyspace::{Change, Entry, Image};

/// A failure of the embedded database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite or the connection pool failed.
    #[error("sqlite: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be (de)serialized.
    #[error("stored value: {0}")]
    Codec(#[from] serde_json::Error),
}

async fn open(
    path: &Path,
    max_connections: u32,
    synchronous: SqliteSynchronous,
) -> Result<SqlitePool, DbError> {
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(opts)
        .await?)
}

/// Rows per multi-row statement, well under SQLite's bound-parameter limit.
const ROWS_PER_STATEMENT: usize = 200;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

/// `raft.db`: log entries and raft metadata, stored as JSON blobs.
#[derive(Clone, Debug)]
pub struct LogDb {
    pool: SqlitePool,
}

impl LogDb {
    /// Opens (creating and migrating) `raft.db` in `dir`.
    pub async fn open(dir: &Path) -> Result<Self, DbError> {
        let pool = open(&dir.join("raft.db"), 4, SqliteSynchronous::Full).await?;
        sqlx::migrate!("../migrations/raft").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Appends entries (index, JSON) atomically and durably: one multi-row
    /// statement (its own transaction, one fsync), or one transaction over
    /// several statements for a very large batch.
    pub async fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), DbError> {
        fn insert(chunk: &[(u64, Vec<u8>)]) -> sqlx::QueryBuilder<'_, sqlx::Sqlite> {
            let mut q = sqlx::QueryBuilder::new("INSERT OR REPLACE INTO raft_log (idx, entry) ");
            q.push_values(chunk, |mut row, (idx, blob)| {
                row.push_bind(to_i64(*idx)).push_bind(blob.as_slice());
            });
            q
        }
        if entries.len() <= ROWS_PER_STATEMENT {
            insert(entries).build().execute(&self.pool).await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            insert(chunk).build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Entries with `from <= idx < to`, in order.
    pub async fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, DbError> {
        let rows =
            sqlx::query("SELECT entry FROM raft_log WHERE idx >= ? AND idx < ? ORDER BY idx")
                .bind(to_i64(from))
                .bind(to_i64(to))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.get::<Vec<u8>, _>(0)).collect())
    }

    /// The entry with the highest index.
    pub async fn last(&self) -> Result<Option<Vec<u8>>, DbError> {
        let row = sqlx::query("SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>(0)))
    }

    /// Deletes entries with `idx >= from` (a conflicting suffix).
    pub async fn truncate_from(&self, from: u64) -> Result<(), DbError> {
        sqlx::query("DELETE FROM raft_log WHERE idx >= ?")
            .bind(to_i64(from))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes entries with `idx <= upto` and records the purge point, atomically.
    pub async fn purge_upto(&self, upto: u64, last_purged: &impl Serialize) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        put_meta(&mut tx, "raft_meta", "last_purged", last_purged).await?;
        sqlx::query("DELETE FROM raft_log WHERE idx <= ?")
            .bind(to_i64(upto))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores one metadata value (vote, committed), fsynced.
    pub async fn put_meta(&self, name: &str, value: &impl Serialize) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        put_meta(&mut tx, "raft_meta", name, value).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads one metadata value.
    pub async fn get_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, DbError> {
        get_meta(&self.pool, "raft_meta", name).await
    }
}

async fn put_meta(
    tx: &mut Tx<'_>,
    table: &str,
    name: &str,
    value: &impl Serialize,
) -> Result<(), DbError> {
    let blob = serde_json::to_vec(value)?;
    sqlx::query(&format!(
        "INSERT OR REPLACE INTO {table} (name, value) VALUES (?, ?)"
    ))
    .bind(name)
    .bind(blob)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn get_meta<T: DeserializeOwned>(
    pool: &SqlitePool,
    table: &str,
    name: &str,
) -> Result<Option<T>, DbError> {
    let row = sqlx::query(&format!("SELECT value FROM {table} WHERE name = ?"))
        .bind(name)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(r) => Ok(Some(serde_json::from_slice(&r.get::<Vec<u8>, _>(0))?)),
        None => Ok(None),
    }
}

/// `state.db`: the applied key space, state machine metadata and the snapshot.
#[derive(Clone, Debug)]
pub struct StateDb {
    pool: SqlitePool,
}

/// State machine metadata written with every applied batch.
pub struct AppliedMeta<'a, L: Serialize, M: Serialize> {
    /// The last applied log id.
    pub last_applied: &'a L,
    /// The last applied membership.
    pub membership: &'a M,
    /// The etcd index after the batch.
    pub etcd_index: u64,
}

impl StateDb {
    /// Opens (creating and migrating) `state.db` in `dir`.
    pub async fn open(dir: &Path) -> Result<Self, DbError> {
        let pool = open(&dir.join("state.db"), 2, SqliteSynchronous::Normal).await?;
        sqlx::migrate!("../migrations/state").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Loads the whole key space.
    pub async fn load_image(&self) -> Result<Image, DbError> {
        let rows =
            sqlx::query("SELECT key, value, created_index, modified_index, expiration FROM kv")
                .fetch_all(&self.pool)
                .await?;
        let mut nodes = Vec::with_capacity(rows.len());
        for r in rows {
            let expiration: Option<String> = r.get(4);
            let expiration = expiration
                .map(|s| DateTime::parse_from_rfc3339(&s).map(|d| d.with_timezone(&Utc)))
                .transpose()
                .map_err(|e| DbError::Sql(sqlx::Error::Decode(Box::new(e))))?;
            let entry = Entry {
                value: r.get(1),
                created_index: to_u64(r.get(2)),
                modified_index: to_u64(r.get(3)),
                expiration,
            };
            nodes.push((r.get::<String, _>(0), entry));
        }
        let index = self.get_meta("etcd_index").await?.unwrap_or_default();
        Ok(Image { index, nodes })
    }

    /// Reads one metadata value.
    pub async fn get_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, DbError> {
        get_meta(&self.pool, "sm_meta", name).await
    }

    /// Persists one applied batch: its key changes and the new metadata, atomically.
    pub async fn apply<L: Serialize, M: Serialize>(
        &self,
        changes: &[Change],
        meta: AppliedMeta<'_, L, M>,
    ) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        write_batch(&mut tx, changes, meta).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the key space with a snapshot's image and stores the snapshot, atomically.
    pub async fn install<L: Serialize, M: Serialize>(
        &self,
        image: &Image,
        meta: AppliedMeta<'_, L, M>,
        snapshot_meta: &[u8],
        snapshot_data: &[u8],
    ) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM kv").execute(&mut *tx).await?;
        let changes: Vec<Change> = image
            .nodes
            .iter()
            .map(|(k, e)| Change::Upsert(k.clone(), e.clone()))
            .collect();
        write_batch(&mut tx, &changes, meta).await?;
        save_snapshot(&mut tx, snapshot_meta, snapshot_data).await?;
        tx.commit().await?;
        self.checkpoint().await
    }

    /// Makes everything committed so far durable (the log may be purged after this).
    async fn checkpoint(&self) -> Result<(), DbError> {
        sqlx::query("PRAGMA wal_checkpoint(FULL)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores the latest snapshot (meta and data as JSON).
    pub async fn save_snapshot(&self, meta: &[u8], data: &[u8]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        save_snapshot(&mut tx, meta, data).await?;
        tx.commit().await?;
        self.checkpoint().await
    }

    /// The latest snapshot's meta and data, if any.
    pub async fn load_snapshot(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>, DbError> {
        let row = sqlx::query("SELECT meta, data FROM snapshot WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;

async fn save_snapshot(tx: &mut Tx<'_>, meta: &[u8], data: &[u8]) -> Result<(), DbError> {
    sqlx::query("INSERT OR REPLACE INTO snapshot (id, meta, data) VALUES (1, ?, ?)")
        .bind(meta)
        .bind(data)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn write_batch<L: Serialize, M: Serialize>(
    tx: &mut Tx<'_>,
    changes: &[Change],
    meta: AppliedMeta<'_, L, M>,
) -> Result<(), DbError> {
    // Consecutive upserts go out as one multi-row statement; a removal
    // flushes them first, so the order of changes is kept.
    let mut upserts: Vec<(&String, &Entry)> = Vec::new();
    for change in changes {
        match change {
            Change::Upsert(key, e) => {
                upserts.push((key, e));
                if upserts.len() == ROWS_PER_STATEMENT {
                    upsert_rows(tx, &upserts).await?;
                    upserts.clear();
                }
            }
            Change::RemoveTree(key) => {
                upsert_rows(tx, &upserts).await?;
                upserts.clear();
                // Descendants are exactly the keys in [key + "/", key + "0"): '0' follows '/'.
                sqlx::query("DELETE FROM kv WHERE key = ? OR (key >= ? AND key < ?)")
                    .bind(key)
                    .bind(format!("{key}/"))
                    .bind(format!("{key}0"))
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    upsert_rows(tx, &upserts).await?;
    let rows = [
        ("last_applied", serde_json::to_vec(meta.last_applied)?),
        ("membership", serde_json::to_vec(meta.membership)?),
        ("etcd_index", serde_json::to_vec(&meta.etcd_index)?),
    ];
    let mut q = sqlx::QueryBuilder::new("INSERT OR REPLACE INTO sm_meta (name, value) ");
    q.push_values(&rows, |mut row, (name, value)| {
        row.push_bind(*name).push_bind(value.as_slice());
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

async fn upsert_rows(tx: &mut Tx<'_>, rows: &[(&String, &Entry)]) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut q = sqlx::QueryBuilder::new(
        "INSERT OR REPLACE INTO kv (key, value, created_index, modified_index, expiration) ",
    );
    q.push_values(rows, |mut row, (key, e)| {
        row.push_bind(key.as_str())
            .push_bind(e.value.as_deref())
            .push_bind(to_i64(e.created_index))
            .push_bind(to_i64(e.modified_index))
            .push_bind(e.expiration.map(|t| t.to_rfc3339()));
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}
