//! Server functions: each view's data and each action, run on the server
//! through the [`Backend`](crate::backend::Backend) the server provides, and
//! called by the browser at `/ui/fn/*` after hydration.

use leptos::prelude::*;

use crate::model::{HistoryRow, KeyDir, MachineCard, Overview, UnitRow, UnitVerb, UpdatesView};

/// The data source of this request.
#[cfg(feature = "ssr")]
fn backend() -> Result<crate::backend::SharedBackend, ServerFnError> {
    use_context::<crate::backend::SharedBackend>()
        .ok_or_else(|| ServerFnError::new("the dashboard has no data source"))
}

/// The Overview page's data.
#[server(prefix = "/ui/fn", endpoint = "overview")]
pub async fn load_overview() -> Result<Overview, ServerFnError> {
    backend()?.overview().await.map_err(ServerFnError::new)
}

/// The machines with their instances.
#[server(prefix = "/ui/fn", endpoint = "machines")]
pub async fn load_machines() -> Result<Vec<MachineCard>, ServerFnError> {
    backend()?.machines().await.map_err(ServerFnError::new)
}

/// The units with their instances.
#[server(prefix = "/ui/fn", endpoint = "units")]
pub async fn load_units() -> Result<Vec<UnitRow>, ServerFnError> {
    backend()?.units().await.map_err(ServerFnError::new)
}

/// Submits a unit written as TOML or JSON; its name.
#[server(prefix = "/ui/fn", endpoint = "submit_unit")]
pub async fn submit_unit(text: String) -> Result<String, ServerFnError> {
    backend()?
        .submit_unit(text)
        .await
        .map_err(ServerFnError::new)
}

/// Starts, stops or destroys a unit.
#[server(prefix = "/ui/fn", endpoint = "unit_action")]
pub async fn unit_action(name: String, verb: UnitVerb) -> Result<(), ServerFnError> {
    backend()?
        .unit_action(name, verb)
        .await
        .map_err(ServerFnError::new)
}

/// The Updates page's data.
#[server(prefix = "/ui/fn", endpoint = "updates")]
pub async fn load_updates() -> Result<UpdatesView, ServerFnError> {
    backend()?.updates().await.map_err(ServerFnError::new)
}

/// Pauses or resumes a channel's rollout.
#[server(prefix = "/ui/fn", endpoint = "set_paused")]
pub async fn set_paused(channel: String, paused: bool) -> Result<(), ServerFnError> {
    backend()?
        .set_paused(channel, paused)
        .await
        .map_err(ServerFnError::new)
}

/// Halts a channel's rollout until a resume.
#[server(prefix = "/ui/fn", endpoint = "halt_channel")]
pub async fn halt_channel(channel: String, reason: Option<String>) -> Result<(), ServerFnError> {
    backend()?
        .halt_channel(channel, reason)
        .await
        .map_err(ServerFnError::new)
}

/// A key-space directory, recursively.
#[server(prefix = "/ui/fn", endpoint = "keys")]
pub async fn load_keys(dir: String) -> Result<KeyDir, ServerFnError> {
    backend()?.keys(dir).await.map_err(ServerFnError::new)
}

/// Sets a key; the index of the write.
#[server(prefix = "/ui/fn", endpoint = "put_key")]
pub async fn put_key(key: String, value: String) -> Result<u64, ServerFnError> {
    backend()?
        .put_key(key, value)
        .await
        .map_err(ServerFnError::new)
}

/// Deletes a key; the index of the write.
#[server(prefix = "/ui/fn", endpoint = "delete_key")]
pub async fn delete_key(key: String) -> Result<u64, ServerFnError> {
    backend()?.delete_key(key).await.map_err(ServerFnError::new)
}

/// The newest cluster events.
#[server(prefix = "/ui/fn", endpoint = "events")]
pub async fn load_events() -> Result<Vec<HistoryRow>, ServerFnError> {
    backend()?.events().await.map_err(ServerFnError::new)
}

/// The newest audit log entries (admins only: others get a 403).
#[server(prefix = "/ui/fn", endpoint = "audit")]
pub async fn load_audit() -> Result<Vec<HistoryRow>, ServerFnError> {
    backend()?.audit().await.map_err(ServerFnError::new)
}
