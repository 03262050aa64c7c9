//! The bounded event history that watches read from.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::error::{ErrorCode, KeyError};
use super::path;

/// How many events the history keeps, as etcd v2 does.
pub const HISTORY_LEN: usize = 1000;

/// One change to the key space, as a watcher receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The etcd index the change got.
    pub index: u64,
    /// The wire body (`action`, `node`, `prevNode`).
    pub body: api::keys::KeysResponse,
    /// A TTL refresh: recorded, but watchers are not woken by it.
    pub refresh: bool,
}

impl Event {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        self.body.node.key.as_deref().unwrap_or("/")
    }
}

/// The last [`HISTORY_LEN`] events, oldest first.
#[derive(Debug, Default, Clone)]
pub struct History {
    events: VecDeque<Event>,
}

impl History {
    /// Records an event, dropping the oldest past the bound.
    pub fn push(&mut self, event: Event) {
        if self.events.len() == HISTORY_LEN {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Forgets everything (after a snapshot replaced the key space).
    pub fn clear(&mut self) {
        self.events.clear();
    }

    /// The first event at or after `since` on `key` (or under it if `recursive`).
    /// TTL refreshes after `live_after` (the index when the watch began) are
    /// skipped: as in etcd, a refresh is in the history but wakes no watcher.
    ///
    /// `current` is the key space's index. The history holds every event from
    /// its oldest to `current` without a gap; an index older than that (lost
    /// to the bound or to a restart) answers etcd's error 401, so the watcher
    /// re-reads and watches again instead of silently missing events.
    pub fn scan(
        &self,
        key: &str,
        recursive: bool,
        since: u64,
        live_after: u64,
        current: u64,
    ) -> Result<Option<Event>, KeyError> {
        let oldest = self.events.front().map_or(current + 1, |e| e.index);
        if since < oldest {
            return Err(KeyError::new(
                ErrorCode::EventIndexCleared,
                format!("the requested history has been cleared [{oldest}/{since}]"),
                current,
            ));
        }
        Ok(self
            .events
            .iter()
            .skip_while(|e| e.index < since)
            .filter(|e| !(e.refresh && e.index > live_after))
            .find(|e| matches(e, key, recursive))
            .cloned())
    }
}

fn matches(event: &Event, key: &str, recursive: bool) -> bool {
    let ek = event.key();
    if ek == key {
        return true;
    }
    // A watch on a key also sees the removal of a directory above it.
    let removes_tree = matches!(
        event.body.action.as_str(),
        "delete" | "expire" | "compareAndDelete"
    ) && event.body.node.dir;
    if removes_tree && path::is_within(key, ek) {
        return true;
    }
    // Unlike listings, watches report hidden keys too, as etcd's do.
    recursive && path::is_within(ek, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(index: u64, key: &str) -> Event {
        Event {
            index,
            refresh: false,
            body: api::keys::KeysResponse {
                action: "set".into(),
                node: api::keys::Node {
                    key: Some(key.into()),
                    value: Some("v".into()),
                    modified_index: index,
                    created_index: index,
                    ..Default::default()
                },
                prev_node: None,
            },
        }
    }

    #[test]
    fn finds_first_matching_event_from_index() {
        let mut h = History::default();
        h.push(ev(1, "/a"));
        h.push(ev(2, "/b/c"));
        h.push(ev(3, "/a"));
        assert_eq!(
            h.scan("/a", false, 2, 3, 3).ok().flatten().map(|e| e.index),
            Some(3)
        );
        assert_eq!(
            h.scan("/b", true, 1, 3, 3).ok().flatten().map(|e| e.index),
            Some(2)
        );
        assert_eq!(h.scan("/b", false, 1, 3, 3).ok().flatten(), None);
        assert_eq!(h.scan("/a", false, 4, 3, 3).ok().flatten(), None);
    }

    #[test]
    fn old_index_is_cleared() {
        let mut h = History::default();
        for i in 1..=(HISTORY_LEN as u64 + 10) {
            h.push(ev(i, "/k"));
        }
        let current = HISTORY_LEN as u64 + 10;
        let err = h
            .scan("/k", false, 5, current, current)
            .err()
            .map(|e| e.code);
        assert_eq!(err, Some(ErrorCode::EventIndexCleared));
        assert_eq!(
            h.scan("/k", false, 11, current, current)
                .ok()
                .flatten()
                .map(|e| e.index),
            Some(11)
        );
    }
}
