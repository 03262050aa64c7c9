//! Lock holders as clients saw them, and the most held at one instant: the
//! conservative judgement of the semaphore tests (a slot counts only while it
//! is held for sure).

use std::time::Instant;

/// One successful acquire seen by a client, on the client's clock.
pub struct Held {
    /// When the acquire answered 200: the slot is held from here at the latest.
    pub acquired: Instant,
    /// When the slot stops being held for sure: the release's invoke, or the
    /// acquire's invoke + TTL (the leader stamps the expiry no earlier), whichever
    /// comes first.
    pub until: Instant,
    /// Whether the client gave the slot back (or let the TTL lapse).
    pub released: bool,
}

/// The largest number of slots held at one instant: a sweep over the intervals
/// (an interval that ends exactly when another starts does not overlap it).
pub fn max_concurrent(history: &[Held]) -> usize {
    let mut edges: Vec<(Instant, i32)> = history
        .iter()
        .filter(|h| h.until > h.acquired)
        .flat_map(|h| [(h.acquired, 1), (h.until, -1)])
        .collect();
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or_default()
}
