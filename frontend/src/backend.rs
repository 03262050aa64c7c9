//! The data source the server functions read from: shoal-server implements it
//! with the functions its REST handlers use, and provides it as context.
//! Every action goes through the same handler the REST API (and the CLI) uses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::model::{HistoryRow, KeyDir, MachineCard, Overview, UnitRow, UnitVerb, UpdatesView};

/// A data source answer: the value, or what went wrong in words.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where the dashboard's data comes from on the server.
pub trait Backend: Send + Sync + 'static {
    /// Members, leader, indexes and fleet counts.
    fn overview(&self) -> Answer<'_, Overview>;
    /// Every machine with a live lease and the instances placed on it.
    fn machines(&self) -> Answer<'_, Vec<MachineCard>>;
    /// Every unit with its instances.
    fn units(&self) -> Answer<'_, Vec<UnitRow>>;
    /// Submits a unit given as TOML or JSON text; its name.
    fn submit_unit(&self, text: String) -> Answer<'_, String>;
    /// Starts, stops or destroys a unit.
    fn unit_action(&self, name: String, verb: UnitVerb) -> Answer<'_, ()>;
    /// Channels, machines' update progress, reboot-lock holders, update history.
    fn updates(&self) -> Answer<'_, UpdatesView>;
    /// Pauses (`true`) or resumes a channel's rollout.
    fn set_paused(&self, channel: String, paused: bool) -> Answer<'_, ()>;
    /// Halts a channel's rollout (until a resume), with a reason or the default one.
    fn halt_channel(&self, channel: String, reason: Option<String>) -> Answer<'_, ()>;
    /// A directory of the key space, listed recursively.
    fn keys(&self, dir: String) -> Answer<'_, KeyDir>;
    /// Sets a key to a value; the index of the write.
    fn put_key(&self, key: String, value: String) -> Answer<'_, u64>;
    /// Deletes a key (or an empty directory); the index of the write.
    fn delete_key(&self, key: String) -> Answer<'_, u64>;
    /// The newest cluster events, newest first.
    fn events(&self) -> Answer<'_, Vec<HistoryRow>>;
    /// The newest audit log entries (kind `audit`), newest first.
    fn audit(&self) -> Answer<'_, Vec<HistoryRow>>;
}

/// The data source as the server provides it to the views (`provide_context`).
pub type SharedBackend = Arc<dyn Backend>;
