//! Server functions: each view's data, read on the server through the
//! [`Backend`](crate::backend::Backend) the server provides, and fetched by
//! the browser from `/ui/fn/*` after hydration.

use leptos::prelude::*;

use crate::model::{MachineCard, Overview, UnitRow};

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
