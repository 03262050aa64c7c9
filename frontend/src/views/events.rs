//! Events: the cluster's timeline (machines joined and lost, instances placed
//! and moved, leaders elected), newest first, filterable by kind.

use std::collections::BTreeSet;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::failure;
use super::updates::history;
use crate::data::load_events;
use crate::live::use_live;
use crate::model::HistoryRow;

/// The Events page; `?kind=<kind>` shows only that kind.
#[component]
pub fn EventsPage() -> impl IntoView {
    let live = use_live();
    let query = use_query_map();
    let kind = RwSignal::new(query.with_untracked(|q| q.get("kind").unwrap_or_default()));
    let data = Resource::new(move || live.fleet.get(), |_| load_events());
    view! {
        <h1>"Events"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(list) => page(list, kind),
                    Err(e) => failure(e),
                }
            })}
        </Transition>
    }
}

fn page(list: Vec<HistoryRow>, kind: RwSignal<String>) -> AnyView {
    let kinds: BTreeSet<String> = list.iter().map(|e| e.kind.clone()).collect();
    let options = kinds
        .into_iter()
        .map(|k| {
            let (key, value) = (k.clone(), k.clone());
            view! { <option value=value selected=move || kind.get() == key>{k}</option> }
        })
        .collect_view();
    let list = StoredValue::new(list);
    view! {
        <form class="controls" method="get">
            <label>
                "Kind "
                <select name="kind" on:change=move |ev| kind.set(event_target_value(&ev))>
                    <option value="">"all"</option>
                    {options}
                </select>
            </label>
        </form>
        <div id="events">
            {move || {
                let wanted = kind.get();
                let shown: Vec<HistoryRow> = list.with_value(|l| {
                    l.iter()
                        .filter(|e| wanted.is_empty() || e.kind == wanted)
                        .cloned()
                        .collect()
                });
                history(shown)
            }}
        </div>
    }
    .into_any()
}
