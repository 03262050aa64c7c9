//! The cluster reboot semaphore as this machine holds it: taken before
//! draining, renewed while held (its TTL covers the reboot itself, when the
//! agent is down), released after the new slot is confirmed or the old slot
//! runs again. The holder is the machine id, so taking it again after a
//! restart renews the same slot instead of taking a second one.

use std::time::Duration;

use api::locks::{AcquireRequest, ReleaseRequest};
use api::updates::LockSpec;
use api::{Client, ClientError};

use crate::lease::error_chain;

/// The reboot lock of one machine.
#[derive(Debug, Clone)]
pub struct RebootLock {
    /// The cluster.
    client: Client,
    /// The holder id: the machine id.
    holder: String,
    /// Seconds a slot lasts unless renewed.
    ttl: Duration,
}

impl RebootLock {
    /// The lock taken by `holder` with slots lasting `ttl`.
    pub fn new(client: Client, holder: String, ttl: Duration) -> RebootLock {
        RebootLock {
            client,
            holder,
            ttl,
        }
    }

    /// Takes (or renews) a slot without waiting: `Ok(false)` when the lock is full.
    pub async fn acquire(&self, spec: &LockSpec) -> Result<bool, ClientError> {
        let req = AcquireRequest {
            holder: self.holder.clone(),
            limit: spec.limit.max(1),
            ttl: self.ttl.as_secs().max(1),
            value: String::new(),
            wait: 0,
        };
        match self.client.acquire(&spec.name, &req).await {
            Ok(_) => Ok(true),
            Err(e) if e.api_code() == Some("lock_busy") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the slot back; not holding it (it lapsed) counts as released.
    pub async fn release(&self, spec: &LockSpec) -> Result<(), ClientError> {
        let req = ReleaseRequest {
            holder: self.holder.clone(),
        };
        match self.client.release(&spec.name, &req).await {
            Ok(_) => Ok(()),
            Err(e) if e.api_code() == Some("not_held") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Renews the slot every third of the TTL (at most every 30 s) until dropped.
    pub fn keep(&self, spec: LockSpec) -> Keeper {
        let lock = self.clone();
        let period = (self.ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(30));
        Keeper(tokio::spawn(async move {
            loop {
                match lock.acquire(&spec).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lock = %spec.name, "reboot lock slot lapsed and the lock is full")
                    }
                    Err(e) => {
                        tracing::warn!(lock = %spec.name, error = %error_chain(&e), "reboot lock renewal failed")
                    }
                }
                tokio::time::sleep(period).await;
            }
        }))
    }
}

/// The renewal task of a held lock; renewal stops when it is dropped.
#[derive(Debug)]
pub struct Keeper(tokio::task::JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}
