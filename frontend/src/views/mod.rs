//! The dashboard's views, one module each.

mod overview;
mod topology;
mod units;

pub use overview::OverviewPage;
pub use topology::TopologyPage;
pub use units::UnitsPage;

use leptos::prelude::*;

/// A failed data fetch, in words, where the view would be.
fn failure(e: ServerFnError) -> AnyView {
    view! { <p class="error">"Cannot load: " {e.to_string()}</p> }.into_any()
}

/// An optional number, or a dash.
fn or_dash(n: Option<u64>) -> String {
    n.map_or_else(|| "—".to_string(), |n| n.to_string())
}
