//! The dashboard's views, one module each.

mod events;
mod keys;
mod overview;
mod topology;
mod units;
mod updates;

pub use events::EventsPage;
pub use keys::KeysPage;
pub use overview::OverviewPage;
pub use topology::TopologyPage;
pub use units::UnitsPage;
pub use updates::UpdatesPage;

use leptos::prelude::*;

/// A failed data fetch, in words, where the view would be.
fn failure(e: ServerFnError) -> AnyView {
    view! { <p class="error">"Cannot load: " {words(&e)}</p> }.into_any()
}

/// What went wrong, in the server's words (without the server-function wrapping).
fn words(e: &ServerFnError) -> String {
    match e {
        ServerFnError::ServerError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// A table named `id` with these column headings over `rows` (its `<tr>`s).
fn table(id: &'static str, headings: &[&'static str], rows: impl IntoView + 'static) -> AnyView {
    grouped_table(id, headings, view! { <tbody>{rows}</tbody> })
}

/// A table named `id` with these column headings over `bodies` (its `<tbody>`s).
fn grouped_table(
    id: &'static str,
    headings: &[&'static str],
    bodies: impl IntoView + 'static,
) -> AnyView {
    let headings = headings
        .iter()
        .map(|h| view! { <th>{*h}</th> })
        .collect_view();
    view! {
        <table id=id>
            <thead>
                <tr>{headings}</tr>
            </thead>
            {bodies}
        </table>
    }
    .into_any()
}

/// An optional number, or a dash.
fn or_dash(n: Option<u64>) -> String {
    n.map_or_else(|| "—".to_string(), |n| n.to_string())
}
