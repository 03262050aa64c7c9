//! The page shell and the app: header with navigation and the live-stream
//! state, and the routes of the views.

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::{path, SsrMode};

use crate::live;
use crate::views::{EventsPage, KeysPage, OverviewPage, TopologyPage, UnitsPage, UpdatesPage};

/// The dashboard's style sheet, inlined in every page.
const STYLE: &str = include_str!("../style.css");

/// The whole HTML document the server renders around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <title>"Shoal"</title>
                <link rel="icon" href="data:," />
                <style>{STYLE}</style>
                <HydrationScripts options />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The dashboard: navigation, the stream state, and the current view. Pages
/// render whole on the server (`SsrMode::Async`): their data is in the HTML.
#[component]
pub fn App() -> impl IntoView {
    let live = live::provide();
    view! {
        <Router>
            <header>
                <strong class="brand">"Shoal"</strong>
                <nav>
                    <A href="/">"Overview"</A>
                    <A href="/ui/topology">"Topology"</A>
                    <A href="/ui/units">"Units"</A>
                    <A href="/ui/updates">"Updates"</A>
                    <A href="/ui/keys">"Key space"</A>
                    <A href="/ui/events">"Events"</A>
                </nav>
                <span id="live" class="live" data-state=move || live.state.get()>
                    {move || live.state.get()}
                    {move || {
                        let index = live.index.get();
                        (index > 0).then(|| format!(" · index {index}"))
                    }}
                </span>
            </header>
            <main>
                <Routes fallback=|| view! { <p class="error">"No such page."</p> }>
                    <Route path=path!("/") view=OverviewPage ssr=SsrMode::Async />
                    <Route path=path!("/ui/topology") view=TopologyPage ssr=SsrMode::Async />
                    <Route path=path!("/ui/units") view=UnitsPage ssr=SsrMode::Async />
                    <Route path=path!("/ui/updates") view=UpdatesPage ssr=SsrMode::Async />
                    <Route path=path!("/ui/keys") view=KeysPage ssr=SsrMode::Async />
                    <Route path=path!("/ui/events") view=EventsPage ssr=SsrMode::Async />
                </Routes>
            </main>
        </Router>
    }
}
