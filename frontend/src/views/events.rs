//! Events: the cluster's timeline (machines joined and lost, instances placed
//! and moved, leaders elected) and, for admins, the audit log (kind `audit`:
//! writes through the API, shown only when that kind is chosen), newest
//! first, filterable by kind.

use std::collections::BTreeSet;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::failure;
use super::updates::history;
use crate::data::{load_audit, load_events};
use crate::live::use_live;
use crate::model::HistoryRow;

/// The Events page; `?kind=<kind>` shows only that kind.
#[component]
pub fn EventsPage() -> impl IntoView {
    let live = use_live();
    let query = use_query_map();
    let kind = RwSignal::new(query.with_untracked(|q| q.get("kind").unwrap_or_default()));
    let data = Resource::new(
        move || live.fleet.get(),
        |_| async {
            let events = load_events().await?;
            // Only admins may read the audit log; the others see the cluster's events.
            let audit = load_audit().await.unwrap_or_default();
            Ok::<_, ServerFnError>(newest_first(events, audit))
        },
    );
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

/// True when a row of `kind` is shown for the filter `wanted`: that kind
/// only, or with no filter every kind but the audit log (which would drown
/// the cluster's own events: agents write every few seconds).
fn shows(wanted: &str, kind: &str) -> bool {
    if wanted.is_empty() {
        kind != AUDIT
    } else {
        kind == wanted
    }
}

/// The kind of audit log rows.
const AUDIT: &str = "audit";

/// Both timelines in one, newest first (`at` is `YYYY-MM-DD HH:MM:SS`, so it sorts as text).
fn newest_first(mut events: Vec<HistoryRow>, audit: Vec<HistoryRow>) -> Vec<HistoryRow> {
    events.extend(audit);
    events.sort_by(|a, b| b.at.cmp(&a.at));
    events
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
                    <option value="">"all cluster events"</option>
                    {options}
                </select>
            </label>
        </form>
        <div id="events">
            {move || {
                let wanted = kind.get();
                let shown: Vec<HistoryRow> = list.with_value(|l| {
                    l.iter()
                        .filter(|e| shows(&wanted, &e.kind))
                        .cloned()
                        .collect()
                });
                history(shown)
            }}
        </div>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: &str, kind: &str) -> HistoryRow {
        HistoryRow {
            at: at.into(),
            kind: kind.into(),
            subjects: Vec::new(),
            detail: String::new(),
        }
    }

    #[test]
    fn audit_rows_show_only_when_chosen() {
        assert!(shows("", "machine_joined"));
        assert!(!shows("", "audit"));
        assert!(shows("audit", "audit"));
        assert!(!shows("audit", "machine_joined"));
        assert!(shows("machine_joined", "machine_joined"));
    }

    #[test]
    fn audit_entries_interleave_with_cluster_events_by_time() {
        let events = vec![
            row("2026-01-02 10:00:03", "machine_joined"),
            row("2026-01-02 10:00:01", "instance_placed"),
        ];
        let audit = vec![
            row("2026-01-02 10:00:04", "audit"),
            row("2026-01-02 10:00:02", "audit"),
        ];
        let kinds: Vec<String> = newest_first(events, audit)
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            ["audit", "machine_joined", "audit", "instance_placed"]
        );
    }
}
