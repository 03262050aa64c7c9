//! The Shoal dashboard: Leptos views rendered by shoal-server (`ssr`) and
//! hydrated in the browser (`hydrate`, built to wasm by `scripts/build-frontend`).
//!
//! `model` holds the records the views show, `data` the server functions that
//! fetch them, `backend` (server only) the trait the server implements to
//! answer them, `live` the event stream that keeps them current, `rest` the
//! browser's own REST calls (payload upload with progress, live journals),
//! `chart` the Overview's live chart, `app` the shell and routes, `views` the pages.

pub mod app;
#[cfg(feature = "ssr")]
pub mod backend;
pub mod chart;
pub mod data;
pub mod live;
pub mod model;
pub mod rest;
mod views;

pub use app::{shell, App};

/// The browser's entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
