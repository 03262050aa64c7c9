//! Topology: every machine as a card, grouped by a metadata key of the
//! user's choice, with its instances and state, and a text filter. Built for
//! a thousand machines: every group shows its count, groups collapse (the
//! first [`OPEN_GROUPS`] start open, closed ones render no cards), and a
//! group shows [`CARDS_PER_GROUP`] cards until "Show all" is clicked.

use std::collections::{BTreeMap, BTreeSet};

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::failure;
use crate::data::load_machines;
use crate::live::use_live;
use crate::model::MachineCard;

/// Metadata keys tried, in order, when the page does not name one.
const USUAL_KEYS: [&str; 4] = ["region", "zone", "rack", "role"];
/// Groups open when the page loads; the others start collapsed.
const OPEN_GROUPS: usize = 12;
/// Cards a group shows before "Show all".
const CARDS_PER_GROUP: usize = 24;

/// What the user opened, closed and expanded, by group label.
#[derive(Clone, Debug, Default)]
struct Folding {
    /// Groups toggled away from their initial state: `true` open.
    open: BTreeMap<String, bool>,
    /// Groups showing all their cards.
    all: BTreeSet<String>,
}

/// The Topology page; `?group=<key>` and `?q=<text>` set the grouping and the filter.
#[component]
pub fn TopologyPage() -> impl IntoView {
    let live = use_live();
    let query = use_query_map();
    let group = RwSignal::new(query.with_untracked(|q| q.get("group").unwrap_or_default()));
    let filter = RwSignal::new(query.with_untracked(|q| q.get("q").unwrap_or_default()));
    let data = Resource::new(move || live.fleet.get(), |_| load_machines());
    view! {
        <h1>"Topology"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(list) => page(list, group, filter),
                    Err(e) => failure(e),
                }
            })}
        </Transition>
    }
}

fn page(list: Vec<MachineCard>, group: RwSignal<String>, filter: RwSignal<String>) -> AnyView {
    let keys: BTreeSet<String> = list
        .iter()
        .flat_map(|m| m.metadata.keys().cloned())
        .collect();
    let default_key = USUAL_KEYS
        .iter()
        .find(|k| keys.contains(**k))
        .map(|k| k.to_string())
        .or_else(|| keys.first().cloned())
        .unwrap_or_default();
    let chosen = move || {
        let g = group.get();
        if g.is_empty() {
            default_key.clone()
        } else {
            g
        }
    };
    let options = keys
        .iter()
        .map(|k| {
            let key = k.clone();
            let chosen = chosen.clone();
            view! {
                <option value=k.clone() selected=move || chosen() == key>
                    {k.clone()}
                </option>
            }
        })
        .collect_view();
    let count = list.len();
    let list = StoredValue::new(list);
    let folding = RwSignal::new(Folding::default());
    view! {
        <form class="controls" method="get">
            <label>
                "Group by "
                <select name="group" on:change=move |ev| group.set(event_target_value(&ev))>
                    <option value="-">"nothing"</option>
                    {options}
                </select>
            </label>
            <label>
                "Filter "
                <input
                    name="q"
                    type="search"
                    placeholder="id, host, metadata, instance"
                    prop:value=move || filter.get()
                    on:input=move |ev| filter.set(event_target_value(&ev))
                />
            </label>
            <span class="count">{count} " machines"</span>
        </form>
        <div id="topology">
            {move || {
                let key = chosen();
                let needle = filter.get().to_lowercase();
                list.with_value(|l| groups(l, &key, &needle, folding))
            }}
        </div>
    }
    .into_any()
}

/// The cards matching `needle`, in sections by their value of `key` (`-`: one
/// section), folded as `folding` says.
fn groups(list: &[MachineCard], key: &str, needle: &str, folding: RwSignal<Folding>) -> AnyView {
    let mut sections: BTreeMap<String, Vec<&MachineCard>> = BTreeMap::new();
    for m in list.iter().filter(|m| matches(m, needle)) {
        let label = if key == "-" || key.is_empty() {
            "all machines".to_string()
        } else {
            m.metadata
                .get(key)
                .map_or_else(|| format!("no {key}"), |v| format!("{key}={v}"))
        };
        sections.entry(label).or_default().push(m);
    }
    if sections.is_empty() {
        return view! { <p class="empty">"No machine matches."</p> }.into_any();
    }
    let state = folding.get();
    sections
        .into_iter()
        .enumerate()
        .map(|(i, (label, machines))| {
            let n = machines.len();
            let open = state.open.get(&label).copied().unwrap_or(i < OPEN_GROUPS);
            let limit = if state.all.contains(&label) {
                n
            } else {
                CARDS_PER_GROUP
            };
            let cards = if open {
                machines.into_iter().take(limit).map(card).collect_view()
            } else {
                Vec::new()
            };
            let toggle = {
                let label = label.clone();
                move |ev: leptos::ev::MouseEvent| {
                    ev.prevent_default();
                    folding.update(|f| {
                        f.open.insert(label.clone(), !open);
                    });
                }
            };
            let more = (open && n > limit).then(|| {
                let label = label.clone();
                let all = move |_| {
                    folding.update(|f| {
                        f.all.insert(label.clone());
                    });
                };
                view! {
                    <button type="button" class="show-all" on:click=all>
                        {format!("Show all {n}")}
                    </button>
                }
            });
            let id = label.clone();
            view! {
                <section class="group" data-group=id>
                    <details open=open>
                        <summary on:click=toggle>
                            <h2>{label} <small>" · " {n}</small></h2>
                        </summary>
                        <div class="cards">{cards}</div>
                        {more}
                    </details>
                </section>
            }
        })
        .collect_view()
        .into_any()
}

/// Does the machine's id, host, metadata, state or an instance contain `needle`?
fn matches(m: &MachineCard, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let has = |s: &str| s.to_lowercase().contains(needle);
    has(&m.id)
        || has(&m.hostname)
        || has(&m.state)
        || m.metadata.iter().any(|(k, v)| has(&format!("{k}={v}")))
        || m.instances.iter().any(|i| has(&i.instance))
}

fn card(m: &MachineCard) -> impl IntoView {
    let metadata = m
        .metadata
        .iter()
        .map(|(k, v)| view! { <span class="tag">{format!("{k}={v}")}</span> })
        .collect_view();
    let instances = m
        .instances
        .iter()
        .map(|i| {
            view! {
                <li class=format!("instance {}", i.state)>
                    {i.instance.clone()} " " <span class="state">{i.state.clone()}</span>
                </li>
            }
        })
        .collect_view();
    let os = if m.os_version.is_empty() {
        "OS —".to_string()
    } else {
        format!("OS {} ({})", m.os_version, m.active_slot)
    };
    view! {
        <article class=format!("machine {}", m.state) data-id=m.id.clone()>
            <h3>{m.hostname.clone()} " " <small>{m.id.clone()}</small></h3>
            <p class="facts">
                <span class="state">{m.state.clone()}</span>
                " · "
                {os}
                " · "
                {format!("{} mCPU, {} MiB", m.cpu_millis, m.memory_mb)}
            </p>
            <p class="facts">{m.addresses.join(", ")}</p>
            <p class="tags">{metadata}</p>
            <ul class="instances">{instances}</ul>
        </article>
    }
}
