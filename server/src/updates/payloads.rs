//! Payload bytes on this member's disk: `<data-dir>/payloads/<sha256>`.
//!
//! An upload streams into a temporary file (`.upload-<random>`) while it is
//! hashed; only a complete, accepted upload is renamed to its hash, so a file
//! named by a hash always holds exactly those bytes. A temporary file is
//! removed when its upload is dropped (refused, failed, or the client went away),
//! and leftovers from a crash are removed at start. Replication
//! (`super::replicate`) brings in other members' payloads through the same
//! `receive` and `keep`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

const TEMP_PREFIX: &str = ".upload-";

/// Why an upload could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Reading the request body failed (the client went away, ...).
    #[error("reading the upload failed: {0}")]
    Body(String),
    /// The disk refused.
    #[error("storing the upload failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The directory of stored payloads.
#[derive(Debug, Clone)]
pub struct PayloadStore {
    dir: PathBuf,
}

/// A completely received upload in its temporary file, removed on drop unless kept.
#[derive(Debug)]
pub struct Received {
    temp: Option<PathBuf>,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

impl Received {
    /// True when the bytes are exactly `size` bytes hashing to `sha256`.
    pub fn matches(&self, sha256: &str, size: u64) -> bool {
        self.size == size && self.sha256 == sha256
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(path) = self.temp.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(%e, path = %path.display(), "cannot remove a temporary upload");
            }
        }
    }
}

impl PayloadStore {
    /// Opens (creating) `<data_dir>/payloads` and removes unfinished uploads.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("payloads");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(PayloadStore { dir })
    }

    /// Where the payload with this hash lives (whether or not it is here).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// True when this member holds the payload.
    pub async fn has(&self, sha256: &str) -> bool {
        tokio::fs::metadata(self.path(sha256))
            .await
            .is_ok_and(|m| m.is_file())
    }

    /// Streams `body` into a temporary file, hashing it on the way.
    pub async fn receive<S, E>(&self, body: S) -> Result<Received, ReceiveError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let name = format!("{TEMP_PREFIX}{:016x}", rand::thread_rng().gen::<u64>());
        let path = self.dir.join(name);
        let mut file = tokio::fs::File::create(&path).await?;
        // From here on the guard removes the file whatever happens.
        let mut received = Received {
            temp: Some(path),
            sha256: String::new(),
            size: 0,
        };
        let mut hasher = Sha256::new();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ReceiveError::Body(e.to_string()))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            received.size += chunk.len() as u64;
        }
        file.sync_all().await?;
        received.sha256 = hex::encode(hasher.finalize());
        Ok(received)
    }

    /// Moves an upload to its hash's name (replacing nothing: same hash, same bytes).
    pub async fn keep(&self, mut received: Received) -> std::io::Result<PathBuf> {
        let target = self.path(&received.sha256);
        let Some(temp) = received.temp.take() else {
            return Ok(target);
        };
        if self.has(&received.sha256).await {
            tokio::fs::remove_file(&temp).await?;
        } else {
            tokio::fs::rename(&temp, &target).await?;
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uploads_are_hashed_kept_by_hash_or_removed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("payloads"))?;
        std::fs::write(dir.path().join("payloads/.upload-stale"), b"x")?;
        let store = PayloadStore::open(dir.path())?;
        assert!(!dir.path().join("payloads/.upload-stale").exists());

        let chunks = vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"te")),
            Ok(Bytes::from_static(b"st")),
        ];
        let received = store.receive(futures::stream::iter(chunks)).await?;
        assert_eq!(received.size, 4);
        assert_eq!(
            received.sha256,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert!(received.matches(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            4
        ));
        assert!(!received.matches(&received.sha256.clone(), 5));
        let path = store.keep(received).await?;
        assert_eq!(std::fs::read(&path)?, b"test");

        let refused = store
            .receive(futures::stream::iter(vec![Ok::<_, std::io::Error>(
                Bytes::from_static(b"other"),
            )]))
            .await?;
        drop(refused);
        let broken = store
            .receive(futures::stream::iter(vec![
                Ok(Bytes::from_static(b"half")),
                Err(std::io::Error::other("client went away")),
            ]))
            .await;
        assert!(matches!(broken, Err(ReceiveError::Body(_))));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("payloads"))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names.len(), 1, "only the kept payload remains: {names:?}");
        Ok(())
    }
}
