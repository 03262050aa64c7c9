//! The key space: etcd v2's store semantics over an ordered map.
//!
//! This module decides; it does no IO. `apply` turns a [`Command`] into an
//! [`Event`] (or an etcd error) deterministically from the command alone, so
//! every raft member that applies the same log holds the same key space.
//! Mutations are also recorded as [`Change`]s, which the state machine drains
//! and writes to SQLite in the same batch.

pub mod error;
pub mod history;
pub mod op;
pub mod path;

use std::collections::{BTreeMap, BTreeSet};

use api::keys::{KeysResponse, Node};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub use error::{ErrorCode, KeyError};
pub use history::{Event, History};
pub use op::{Command, Op, Precondition};

/// One stored key or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value of a file; `None` for a directory.
    pub value: Option<String>,
    /// Index of the write that created it.
    pub created_index: u64,
    /// Index of the write that last changed it.
    pub modified_index: u64,
    /// When it expires, if it has a TTL.
    pub expiration: Option<DateTime<Utc>>,
}

impl Entry {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.value.is_none()
    }
}

/// A mutation to persist: the state machine mirrors these into SQLite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key now holds this entry.
    Upsert(String, Entry),
    /// The key and everything under it are gone.
    RemoveTree(String),
}

/// The whole key space as a snapshot carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The etcd index.
    pub index: u64,
    /// Every node, root excluded.
    pub nodes: Vec<(String, Entry)>,
}

/// The replicated key space.
#[derive(Debug, Default)]
pub struct KeySpace {
    nodes: BTreeMap<String, Entry>,
    expiring: BTreeSet<(DateTime<Utc>, String)>,
    index: u64,
    history: History,
    changes: Vec<Change>,
}

/// What one PUT writes into a node, as the write helpers take it.
#[derive(Debug, Clone, Copy)]
struct Put<'a> {
    key: &'a str,
    /// The new value; `None` for a directory.
    value: Option<&'a str>,
    exp: Option<DateTime<Utc>>,
    /// Only renew the TTL, keeping the value.
    refresh: bool,
    now: DateTime<Utc>,
}

/// How a read renders a directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Include every descendant, not only children.
    pub recursive: bool,
}

impl KeySpace {
    /// A key space rebuilt from a snapshot image (its history starts empty).
    pub fn from_image(image: Image) -> Self {
        let mut ks = Self {
            index: image.index,
            ..Self::default()
        };
        for (key, entry) in image.nodes {
            ks.insert_quiet(key, entry);
        }
        ks
    }

    /// The whole key space, for a snapshot.
    pub fn image(&self) -> Image {
        Image {
            index: self.index,
            nodes: self
                .nodes
                .iter()
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
        }
    }

    /// The etcd index: the number of successful writes so far.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The bounded event history that watches scan.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Number of stored nodes (root excluded).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when only the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Takes the mutations recorded since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Keys whose TTL has run out at `now`, soonest first, at most `limit`.
    pub fn expired(&self, now: DateTime<Utc>, limit: usize) -> Vec<String> {
        self.expiring
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Reads a key or directory (`GET /v2/keys`).
    pub fn get(
        &self,
        key: &str,
        opts: ReadOptions,
        now: DateTime<Utc>,
    ) -> Result<KeysResponse, KeyError> {
        let node = self.lookup(key)?;
        Ok(KeysResponse {
            action: "get".into(),
            node: self.render(key, &node, opts.recursive, true, now),
            prev_node: None,
        })
    }

    /// Looks up a node by cleaned key, with etcd's errors for missing or
    /// blocked paths. The root is a permanent directory at index 0.
    pub fn lookup(&self, key: &str) -> Result<Entry, KeyError> {
        if path::is_root(key) {
            return Ok(root());
        }
        for dir in path::ancestors(key) {
            match self.nodes.get(dir) {
                None => return Err(self.err(ErrorCode::KeyNotFound, dir)),
                Some(e) if !e.is_dir() => return Err(self.err(ErrorCode::NotDir, dir)),
                Some(_) => {}
            }
        }
        self.nodes
            .get(key)
            .cloned()
            .ok_or_else(|| self.err(ErrorCode::KeyNotFound, key))
    }

    /// The direct, visible children of a directory, in key order.
    pub fn children(&self, dir: &str) -> Vec<(String, Entry)> {
        let prefix = path::child_prefix(dir);
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/') && !path::is_hidden(k))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Applies one replicated command. Successful writes advance the index by
    /// one and are recorded in the history.
    pub fn apply(&mut self, cmd: &Command) -> Result<Event, KeyError> {
        let now = cmd.now;
        let event = match &cmd.op {
            Op::Put {
                key,
                value,
                ttl,
                refresh,
                cond,
            } => {
                let exp = expiration(now, *ttl);
                if path::is_root(key) {
                    return Err(self.err(ErrorCode::RootReadOnly, "/"));
                }
                let put = Put {
                    key,
                    value: value.as_deref(),
                    exp,
                    refresh: *refresh,
                    now,
                };
                match cond.prev_exist {
                    Some(true) if !cond.compares() => self.update(put, None)?,
                    Some(false) => self.create(key, put.value, exp, false, "create", now)?,
                    _ if cond.compares() => self.update(put, Some(cond))?,
                    _ => self.set(put)?,
                }
            }
            Op::CreateInOrder { dir, value, ttl } => {
                let key = format!("{}{:020}", path::child_prefix(dir), self.index + 1);
                self.create(
                    &key,
                    value.as_deref(),
                    expiration(now, *ttl),
                    false,
                    "create",
                    now,
                )?
            }
            Op::Delete {
                key,
                dir,
                recursive,
                cond,
            } => {
                if path::is_root(key) {
                    return Err(self.err(ErrorCode::RootReadOnly, "/"));
                }
                if cond.compares() {
                    self.compare_and_delete(key, cond, now)?
                } else {
                    self.delete(key, *dir || *recursive, *recursive, "delete", now)?
                }
            }
            Op::Expire { keys } => return self.expire(keys, now),
            Op::Acquire {
                dir,
                holder,
                limit,
                ttl,
                value,
            } => self.acquire(dir, holder, *limit, *ttl, value, now)?,
            Op::Release { dir, holder } => {
                let key = format!("{}{holder}", path::child_prefix(dir));
                self.delete(&key, false, false, "delete", now)?
            }
        };
        Ok(self.record(event))
    }

    fn set(&mut self, put: Put<'_>) -> Result<Event, KeyError> {
        let Put {
            key,
            value,
            exp,
            refresh,
            now,
        } = put;
        let prev = match self.lookup(key) {
            Ok(e) => Some(e),
            Err(e) if e.code == ErrorCode::KeyNotFound => None,
            Err(e) => return Err(e),
        };
        let value = match (&prev, refresh) {
            (Some(p), true) => p.value.clone(),
            (None, true) => return Err(self.err(ErrorCode::KeyNotFound, key)),
            (_, false) => value.map(str::to_owned),
        };
        let mut event = self.create(key, value.as_deref(), exp, true, "set", now)?;
        event.refresh = refresh;
        Ok(event)
    }

    /// etcd's internalCreate: makes missing parent directories, then the node.
    fn create(
        &mut self,
        key: &str,
        value: Option<&str>,
        exp: Option<DateTime<Utc>>,
        replace: bool,
        action: &str,
        now: DateTime<Utc>,
    ) -> Result<Event, KeyError> {
        let next = self.index + 1;
        for dir in path::ancestors(key) {
            match self.nodes.get(dir) {
                Some(e) if e.is_dir() => {}
                Some(_) => return Err(self.err(ErrorCode::NotDir, dir)),
                None => self.insert(
                    dir.to_owned(),
                    Entry {
                        value: None,
                        created_index: next,
                        modified_index: next,
                        expiration: None,
                    },
                ),
            }
        }
        let mut prev_node = None;
        if let Some(existing) = self.nodes.get(key).cloned() {
            if !replace {
                return Err(self.err(ErrorCode::NodeExist, key));
            }
            if existing.is_dir() {
                return Err(self.err(ErrorCode::NotFile, key));
            }
            prev_node = Some(self.render(key, &existing, false, false, now));
        }
        let entry = Entry {
            value: value.map(str::to_owned),
            created_index: next,
            modified_index: next,
            expiration: exp,
        };
        let node = self.render(key, &entry, false, false, now);
        self.insert(key.to_owned(), entry);
        Ok(self.event(action, node, prev_node))
    }

    /// Rewrites an existing node in place, keeping its created index: an
    /// `update` (`prevExist=true`), or a `compareAndSwap` when `cond` compares.
    /// A directory can only have its TTL updated, never be compared.
    fn update(&mut self, put: Put<'_>, cond: Option<&Precondition>) -> Result<Event, KeyError> {
        let existing = self.lookup(put.key)?;
        let gives_dir_a_value = put.value.is_some_and(|v| !v.is_empty());
        if existing.is_dir() && (cond.is_some() || gives_dir_a_value) {
            return Err(self.err(ErrorCode::NotFile, put.key));
        }
        if let Some(cond) = cond {
            self.compare(&existing, cond)?;
        }
        let value = if put.refresh || existing.is_dir() {
            existing.value.clone()
        } else {
            Some(put.value.unwrap_or_default().to_owned())
        };
        let action = if cond.is_some() {
            "compareAndSwap"
        } else {
            "update"
        };
        let mut event = self.rewrite(put.key, &existing, value, put.exp, action, put.now);
        event.refresh = put.refresh;
        Ok(event)
    }

    /// Writes a new value and TTL into an existing node, keeping its created index.
    fn rewrite(
        &mut self,
        key: &str,
        existing: &Entry,
        value: Option<String>,
        exp: Option<DateTime<Utc>>,
        action: &str,
        now: DateTime<Utc>,
    ) -> Event {
        let next = self.index + 1;
        let prev = self.render(key, existing, false, false, now);
        let mut entry = Entry {
            value,
            created_index: existing.created_index,
            modified_index: next,
            expiration: exp,
        };
        let node = self.render(key, &entry, false, false, now);
        if existing.is_dir() {
            // As in etcd, updating a directory changes only its TTL; its stored
            // modified index stays (the event still carries the new index).
            entry.modified_index = existing.modified_index;
        }
        self.insert(key.to_owned(), entry);
        self.event(action, node, Some(prev))
    }

    fn compare(&self, existing: &Entry, cond: &Precondition) -> Result<(), KeyError> {
        let current = existing.value.as_deref().unwrap_or_default();
        let value_ok = cond.prev_value.as_deref().is_none_or(|v| v == current);
        let index_ok = cond.prev_index.is_none_or(|i| i == existing.modified_index);
        let pv = cond.prev_value.as_deref().unwrap_or_default();
        let pi = cond.prev_index.unwrap_or_default();
        let cause = match (value_ok, index_ok) {
            (true, true) => return Ok(()),
            (false, true) => format!("[{pv} != {current}]"),
            (true, false) => format!("[{pi} != {}]", existing.modified_index),
            (false, false) => format!("[{pv} != {current}] [{pi} != {}]", existing.modified_index),
        };
        Err(self.err(ErrorCode::TestFailed, cause))
    }

    fn compare_and_delete(
        &mut self,
        key: &str,
        cond: &Precondition,
        now: DateTime<Utc>,
    ) -> Result<Event, KeyError> {
        let existing = self.lookup(key)?;
        if existing.is_dir() {
            return Err(self.err(ErrorCode::NotFile, key));
        }
        self.compare(&existing, cond)?;
        self.delete(key, false, false, "compareAndDelete", now)
    }

    fn delete(
        &mut self,
        key: &str,
        dir: bool,
        recursive: bool,
        action: &str,
        now: DateTime<Utc>,
    ) -> Result<Event, KeyError> {
        let existing = self.lookup(key)?;
        if existing.is_dir() {
            if !dir {
                return Err(self.err(ErrorCode::NotFile, key));
            }
            if !recursive && self.has_children(key) {
                return Err(self.err(ErrorCode::DirNotEmpty, key));
            }
        }
        Ok(self.remove_event(key, &existing, action, now))
    }

    fn remove_event(
        &mut self,
        key: &str,
        existing: &Entry,
        action: &str,
        now: DateTime<Utc>,
    ) -> Event {
        let next = self.index + 1;
        let prev = self.render(key, existing, false, false, now);
        let node = Node {
            key: Some(key.to_owned()),
            dir: existing.is_dir(),
            created_index: existing.created_index,
            modified_index: next,
            ..Node::default()
        };
        self.remove_tree(key);
        self.event(action, node, Some(prev))
    }

    /// Removes the listed keys whose expiration is at or before `now`; each
    /// removal is its own `expire` event. Returns the last event, or an error
    /// carrying the index when nothing had expired any more.
    fn expire(&mut self, keys: &[String], now: DateTime<Utc>) -> Result<Event, KeyError> {
        let mut last = None;
        for key in keys {
            let Some(existing) = self.nodes.get(key).cloned() else {
                continue;
            };
            if existing.expiration.is_none_or(|at| at > now) {
                continue;
            }
            let event = self.remove_event(key, &existing, "expire", now);
            last = Some(self.record(event));
        }
        last.ok_or_else(|| self.err(ErrorCode::KeyNotFound, "no expired key"))
    }

    fn acquire(
        &mut self,
        dir: &str,
        holder: &str,
        limit: u32,
        ttl: u64,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<Event, KeyError> {
        let key = format!("{}{holder}", path::child_prefix(dir));
        let slot = serde_json::json!({ "limit": limit, "value": value }).to_string();
        let exp = expiration(now, Some(ttl));
        if let Some(existing) = self.nodes.get(&key).cloned() {
            if existing.is_dir() {
                return Err(self.err(ErrorCode::NotFile, &key));
            }
            return Ok(self.rewrite(&key, &existing, Some(slot), exp, "update", now));
        }
        let live = self
            .children(dir)
            .iter()
            .filter(|(_, e)| e.expiration.is_none_or(|at| at > now))
            .count();
        if live >= limit as usize {
            return Err(self.err(
                ErrorCode::TestFailed,
                format!("[{live} holders >= limit {limit}]"),
            ));
        }
        self.create(&key, Some(&slot), exp, false, "create", now)
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = path::child_prefix(dir);
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn event(&mut self, action: &str, node: Node, prev_node: Option<Node>) -> Event {
        self.index += 1;
        Event {
            index: self.index,
            body: KeysResponse {
                action: action.to_owned(),
                node,
                prev_node,
            },
            refresh: false,
        }
    }

    fn record(&mut self, event: Event) -> Event {
        self.history.push(event.clone());
        event
    }

    fn err(&self, code: ErrorCode, cause: impl Into<String>) -> KeyError {
        KeyError::new(code, cause, self.index)
    }

    fn insert(&mut self, key: String, entry: Entry) {
        self.changes
            .push(Change::Upsert(key.clone(), entry.clone()));
        self.insert_quiet(key, entry);
    }

    fn insert_quiet(&mut self, key: String, entry: Entry) {
        if let Some(at) = entry.expiration {
            self.expiring.insert((at, key.clone()));
        }
        if let Some(old) = self.nodes.insert(key.clone(), entry) {
            if let Some(at) = old.expiration {
                self.expiring.remove(&(at, key));
            }
        }
    }

    fn remove_tree(&mut self, key: &str) {
        let prefix = path::child_prefix(key);
        let mut doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        doomed.push(key.to_owned());
        for k in doomed {
            if let Some(old) = self.nodes.remove(&k) {
                if let Some(at) = old.expiration {
                    self.expiring.remove(&(at, k));
                }
            }
        }
        self.changes.push(Change::RemoveTree(key.to_owned()));
    }

    /// Renders a node as etcd does; directories list their visible children
    /// when `with_children` (all descendants when `recursive`).
    fn render(
        &self,
        key: &str,
        entry: &Entry,
        recursive: bool,
        with_children: bool,
        now: DateTime<Utc>,
    ) -> Node {
        let (expiration, ttl) = match entry.expiration {
            Some(at) => (Some(at), Some(ttl_left(at, now)).filter(|t| *t != 0)),
            None => (None, None),
        };
        let nodes = (entry.is_dir() && with_children)
            .then(|| {
                self.children(key)
                    .iter()
                    .map(|(k, e)| self.render(k, e, recursive, recursive, now))
                    .collect::<Vec<_>>()
            })
            .filter(|n| !n.is_empty());
        Node {
            key: (!path::is_root(key)).then(|| key.to_owned()),
            value: entry.value.clone(),
            dir: entry.is_dir(),
            expiration,
            ttl,
            nodes,
            modified_index: entry.modified_index,
            created_index: entry.created_index,
        }
    }
}

fn root() -> Entry {
    Entry {
        value: None,
        created_index: 0,
        modified_index: 0,
        expiration: None,
    }
}

/// When a node written at `now` with `ttl` expires; `ttl=0` expires at once, as in etcd.
fn expiration(now: DateTime<Utc>, ttl: Option<u64>) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(ttl?).ok()?;
    now.checked_add_signed(Duration::try_seconds(secs)?)
}

/// Seconds left, rounded up, as etcd reports `ttl`.
fn ttl_left(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let left = at - now;
    let secs = left.num_seconds();
    if left > Duration::seconds(secs) {
        secs + 1
    } else {
        secs
    }
}

#[cfg(test)]
mod tests;
