//! The wall clock this member judges TTLs and leases by: the stamp a leader
//! puts in each command (from which expirations are computed), the expiry
//! sweep, remaining TTLs on reads, live lock holders and machine leases.
//!
//! `--clock-skew-ms` offsets it, a fault-injection knob: a test runs members
//! whose clocks disagree and checks that TTLs still behave, as they must
//! when real hosts drift.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

static SKEW_MS: AtomicI64 = AtomicI64::new(0);

/// Sets the offset of [`now`] from the system clock (once, at startup).
pub fn set_skew_ms(ms: i64) {
    SKEW_MS.store(ms, Ordering::Relaxed);
}

/// The member's idea of the current time.
pub fn now() -> DateTime<Utc> {
    Utc::now() + TimeDelta::milliseconds(SKEW_MS.load(Ordering::Relaxed))
}
