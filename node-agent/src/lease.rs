//! The machine lease: `/_shoal/machines/<id>` written with `ttl = lease TTL`
//! and refreshed every third of it. [`LeaseState`] remembers when the last
//! renewal that succeeded was *sent*, which is what self-fencing measures:
//! the server's TTL started no earlier than that instant.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::client::{SetOptions, ETCD_KEY_NOT_FOUND};
use api::fleet::{Machine, MACHINES_DIR};
use api::{Client, ClientError};
use tokio::time::Instant;

/// Why one registration or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The machine record could not be encoded.
    #[error("cannot encode the machine record")]
    Encode(#[from] serde_json::Error),
    /// The cluster refused or could not be reached.
    #[error("lease write failed")]
    Client(#[from] ClientError),
}

/// True when a lease last renewed (sent) at `last` has possibly expired by
/// `now`; a lease never renewed counts as expired.
pub fn lapsed(last: Option<Instant>, ttl: Duration, now: Instant) -> bool {
    match last {
        None => true,
        Some(t) => now.saturating_duration_since(t) > ttl,
    }
}

/// Shared lease bookkeeping, read by the reconciler for self-fencing.
#[derive(Debug)]
pub struct LeaseState {
    ttl: Duration,
    last_renewal: Mutex<Option<Instant>>,
}

impl LeaseState {
    /// New state for a lease of `ttl`, never renewed yet.
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(LeaseState {
            ttl,
            last_renewal: Mutex::new(None),
        })
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records a renewal that succeeded and was sent at `sent_at`.
    pub fn record_renewal(&self, sent_at: Instant) {
        if let Ok(mut last) = self.last_renewal.lock() {
            if last.is_none_or(|t| t < sent_at) {
                *last = Some(sent_at);
            }
        }
    }

    /// When the last successful renewal was sent.
    pub fn last_renewal(&self) -> Option<Instant> {
        self.last_renewal.lock().ok().and_then(|l| *l)
    }

    /// True when the lease may have expired: this machine's exclusive units
    /// must not run.
    pub fn is_fenced(&self) -> bool {
        lapsed(self.last_renewal(), self.ttl, Instant::now())
    }
}

/// Keeps `/_shoal/machines/<id>` alive; clones share the record.
#[derive(Debug, Clone)]
pub struct Lease {
    client: Client,
    /// The record written at every registration; changed with [`Lease::update`].
    machine: Arc<Mutex<Machine>>,
    id: String,
    state: Arc<LeaseState>,
}

impl Lease {
    /// A lease for `machine`, recording renewals in `state`.
    pub fn new(client: Client, machine: Machine, state: Arc<LeaseState>) -> Self {
        Lease {
            client,
            id: machine.id.clone(),
            machine: Arc::new(Mutex::new(machine)),
            state,
        }
    }

    /// The key of this machine's record.
    pub fn key(&self) -> String {
        format!("{MACHINES_DIR}/{}", self.id)
    }

    /// The machine record as last set.
    pub fn record(&self) -> Machine {
        match self.machine.lock() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes the record with `change` and writes it at once (watchers see it).
    pub async fn update(&self, change: impl FnOnce(&mut Machine)) -> Result<(), LeaseError> {
        match self.machine.lock() {
            Ok(mut m) => change(&mut m),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
        self.register().await
    }

    fn ttl_secs(&self) -> u64 {
        self.state.ttl.as_secs().max(1)
    }

    /// Writes the whole machine record with the TTL.
    pub async fn register(&self) -> Result<(), LeaseError> {
        let value = serde_json::to_string(&self.record())?;
        let sent = Instant::now();
        self.client
            .set(
                &self.key(),
                &value,
                SetOptions {
                    ttl: Some(self.ttl_secs()),
                    ..SetOptions::default()
                },
            )
            .await?;
        self.state.record_renewal(sent);
        Ok(())
    }

    /// Refreshes the TTL without waking watchers; registers again if the
    /// record is gone (it expired, or was removed).
    pub async fn renew(&self) -> Result<(), LeaseError> {
        let sent = Instant::now();
        let refreshed = self
            .client
            .set(
                &self.key(),
                "",
                SetOptions {
                    ttl: Some(self.ttl_secs()),
                    prev_exist: Some(true),
                    refresh: true,
                    ..SetOptions::default()
                },
            )
            .await;
        match refreshed {
            Ok(_) => {
                self.state.record_renewal(sent);
                Ok(())
            }
            Err(e) if e.etcd_code() == Some(ETCD_KEY_NOT_FOUND) => {
                tracing::warn!(key = %self.key(), "lease record gone; registering again");
                self.register().await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Renews every third of the TTL until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let period = (self.state.ttl / 3).max(Duration::from_millis(500));
        tokio::pin!(shutdown);
        let mut registered = self.state.last_renewal().is_some();
        loop {
            // Bounded by the period: a renewal stuck on a slow or partitioned
            // cluster must not delay the next attempt.
            let attempt = async {
                if registered {
                    self.renew().await
                } else {
                    self.register().await
                }
            };
            match tokio::time::timeout(period, attempt).await {
                Ok(Ok(())) => registered = true,
                Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "lease renewal failed"),
                Err(_) => tracing::warn!("lease renewal timed out"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    }
}

pub use api::error::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_renewed_is_lapsed() {
        assert!(lapsed(None, Duration::from_secs(10), Instant::now()));
    }

    #[test]
    fn lapses_only_after_the_ttl() {
        let ttl = Duration::from_secs(10);
        let t0 = Instant::now();
        assert!(!lapsed(Some(t0), ttl, t0));
        assert!(!lapsed(Some(t0), ttl, t0 + ttl));
        assert!(lapsed(Some(t0), ttl, t0 + ttl + Duration::from_millis(1)));
        // A clock read before the renewal (racing threads) is not lapsed.
        assert!(!lapsed(Some(t0 + ttl), ttl, t0));
    }

    #[test]
    fn renewals_never_move_back() {
        let state = LeaseState::new(Duration::from_secs(10));
        assert!(state.is_fenced());
        let now = Instant::now();
        state.record_renewal(now);
        assert!(!state.is_fenced());
        state.record_renewal(now - Duration::from_secs(60));
        assert_eq!(state.last_renewal(), Some(now));
        state.record_renewal(now - Duration::from_secs(60) + Duration::from_secs(120));
        assert!(state.last_renewal() > Some(now));
    }
}
