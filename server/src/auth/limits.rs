//! Per-token limits on the client port, applied with `--auth`: a request rate
//! (GCRA through `governor`, a burst of twice the rate) and a number of open
//! watches (long polls and event streams). The members' own credential is
//! not limited: it carries payload replication and the dashboard's stats.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// What a token may do at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests per second per token; 0 for no limit.
    pub rate: u32,
    /// Watches open at once per token.
    pub watches: usize,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// Over the request rate; try again after the duration.
    #[error("more than {rate} requests per second for this token; retry in {} ms", .retry_after.as_millis())]
    Rate {
        /// The configured rate.
        rate: u32,
        /// When the next request would pass.
        retry_after: Duration,
    },
    /// Too many watches open.
    #[error("this token already has {0} watches open, the most allowed; close one first")]
    Watches(usize),
}

/// The limits' state, shared by every listener of a member.
#[derive(Debug)]
pub struct Limits {
    settings: LimitSettings,
    rate: Option<DefaultKeyedRateLimiter<String>>,
    open: Mutex<HashMap<String, usize>>,
}

/// An open watch, counted until dropped.
#[derive(Debug)]
pub struct WatchSlot {
    limits: Arc<Limits>,
    token: String,
}

impl Limits {
    /// Limits as configured.
    pub fn new(settings: LimitSettings) -> Self {
        let rate = NonZeroU32::new(settings.rate).map(|per_second| {
            let burst = per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Limits {
            settings,
            rate,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `token` against its rate.
    pub fn admit(&self, token: &str) -> Result<(), Limited> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.check_key(&token.to_owned())
            .map_err(|not_until| Limited::Rate {
                rate: self.settings.rate,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Opens a watch for `token`, if it has fewer than the most allowed.
    pub fn watch(self: &Arc<Self>, token: &str) -> Result<WatchSlot, Limited> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(token.to_owned()).or_default();
        if *count >= self.settings.watches {
            return Err(Limited::Watches(self.settings.watches));
        }
        *count += 1;
        Ok(WatchSlot {
            limits: self.clone(),
            token: token.to_owned(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_over_its_rate_is_told_when_to_retry() {
        let limits = Limits::new(LimitSettings {
            rate: 5,
            watches: 1,
        });
        let passed = (0..20).filter(|_| limits.admit("a").is_ok()).count();
        assert_eq!(passed, 10, "a burst of twice the rate passes, then no more");
        match limits.admit("a") {
            Err(Limited::Rate { rate, retry_after }) => {
                assert_eq!(rate, 5);
                assert!(retry_after <= Duration::from_millis(200));
            }
            other => panic!("expected a rate refusal, got {other:?}"),
        }
        assert!(
            limits.admit("b").is_ok(),
            "another token has its own budget"
        );
    }

    #[test]
    fn rate_zero_means_no_limit() {
        let limits = Limits::new(LimitSettings {
            rate: 0,
            watches: 1,
        });
        assert!((0..10_000).all(|_| limits.admit("a").is_ok()));
    }

    #[test]
    fn watches_are_counted_until_closed() {
        let limits = Arc::new(Limits::new(LimitSettings {
            rate: 0,
            watches: 2,
        }));
        let first = limits.watch("a");
        let second = limits.watch("a");
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(limits.watch("a").err(), Some(Limited::Watches(2)));
        assert!(limits.watch("b").is_ok(), "counted per token");
        drop(first);
        assert!(limits.watch("a").is_ok(), "a closed watch frees its slot");
    }
}
