//! Topology: every machine as a card, grouped by a metadata key of the
//! user's choice, with its instances and state, and a text filter. Built for
//! a thousand machines: the server groups, filters and folds (so the search
//! reaches every machine while the page carries only what it shows), every
//! group shows its count, groups collapse (the first `OPEN_GROUPS` start
//! open, closed ones carry no cards), a group shows `CARDS_PER_GROUP` cards
//! until "Show all" is clicked and a card lists its first
//! `INSTANCES_PER_CARD` instances and how many more it runs.

use std::collections::{BTreeMap, BTreeSet};

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use super::failure;
use crate::live::use_live;
use crate::model::MachineCard;

/// Metadata keys tried, in order, when the page does not name one.
#[cfg(feature = "ssr")]
const USUAL_KEYS: [&str; 4] = ["region", "zone", "rack", "role"];
/// Groups open when the page loads; the others start collapsed.
#[cfg(feature = "ssr")]
const OPEN_GROUPS: usize = 12;
/// Cards a group shows before "Show all".
#[cfg(feature = "ssr")]
const CARDS_PER_GROUP: usize = 24;
/// Instances a card lists; the rest are counted.
#[cfg(feature = "ssr")]
const INSTANCES_PER_CARD: usize = 8;

/// What the user opened, closed and expanded, by group label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folding {
    /// Groups toggled away from their initial state: `true` open.
    pub open: BTreeMap<String, bool>,
    /// Groups showing all their cards.
    pub all: BTreeSet<String>,
}

/// What the controls need: the metadata keys to group by and the fleet's size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyFrame {
    /// Every metadata key a machine has.
    pub keys: Vec<String>,
    /// The key grouped by when the page names none.
    pub default_key: String,
    /// How many machines there are.
    pub machines: usize,
}

/// One section of the page, as the server grouped, filtered and folded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// `key=value`, `no key` or `all machines`.
    pub label: String,
    /// How many machines match in this group.
    pub count: usize,
    /// Whether it is unfolded.
    pub open: bool,
    /// The cards shown (none when folded).
    pub cards: Vec<Card>,
}

/// A machine card: the machine with its first instances, and how many it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// The machine, its instances cut to the first few.
    pub machine: MachineCard,
    /// How many instances are placed on it.
    pub instances: usize,
}

/// The controls' data.
#[server(prefix = "/ui/fn", endpoint = "topology_frame")]
pub async fn load_topology_frame() -> Result<TopologyFrame, ServerFnError> {
    Ok(frame(&crate::data::load_machines().await?))
}

/// The groups to show, grouped by `group` (empty: the default key, `-`:
/// none), filtered by `q` and folded as `folding` says.
#[server(prefix = "/ui/fn", endpoint = "topology", input = leptos::server_fn::codec::Json)]
pub async fn load_topology(
    group: String,
    q: String,
    folding: Folding,
) -> Result<Vec<Group>, ServerFnError> {
    let list = crate::data::load_machines().await?;
    let key = if group.is_empty() {
        frame(&list).default_key
    } else {
        group
    };
    Ok(shape(&list, &key, &q.to_lowercase(), &folding))
}

/// The Topology page; `?group=<key>` and `?q=<text>` set the grouping and the filter.
#[component]
pub fn TopologyPage() -> impl IntoView {
    let live = use_live();
    let query = use_query_map();
    let group = RwSignal::new(query.with_untracked(|q| q.get("group").unwrap_or_default()));
    let filter = RwSignal::new(query.with_untracked(|q| q.get("q").unwrap_or_default()));
    let folding = RwSignal::new(Folding::default());
    let frame = Resource::new(move || live.fleet.get(), |_| load_topology_frame());
    let shown = Resource::new(
        move || (live.fleet.get(), group.get(), filter.get(), folding.get()),
        |(_, g, q, f)| load_topology(g, q, f),
    );
    view! {
        <h1>"Topology"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match frame.await {
                    Ok(f) => page(f, group, filter, folding, shown),
                    Err(e) => failure(e),
                }
            })}
        </Transition>
    }
}

/// The Topology groups as the server answers them.
type Shown = Resource<Result<Vec<Group>, ServerFnError>>;

fn page(
    frame: TopologyFrame,
    group: RwSignal<String>,
    filter: RwSignal<String>,
    folding: RwSignal<Folding>,
    shown: Shown,
) -> AnyView {
    let TopologyFrame {
        keys,
        default_key,
        machines: count,
    } = frame;
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
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match shown.await {
                        Ok(list) => groups(list, folding),
                        Err(e) => failure(e),
                    }
                })}
            </Transition>
        </div>
    }
    .into_any()
}

/// The metadata keys of `list` and the one to group by by default.
#[cfg(feature = "ssr")]
fn frame(list: &[MachineCard]) -> TopologyFrame {
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
    TopologyFrame {
        keys: keys.into_iter().collect(),
        default_key,
        machines: list.len(),
    }
}

/// The cards matching `needle`, in sections by their value of `key` (`-`: one
/// section), folded as `folding` says.
#[cfg(feature = "ssr")]
fn shape(list: &[MachineCard], key: &str, needle: &str, folding: &Folding) -> Vec<Group> {
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
    sections
        .into_iter()
        .enumerate()
        .map(|(i, (label, machines))| {
            let open = folding.open.get(&label).copied().unwrap_or(i < OPEN_GROUPS);
            let limit = if folding.all.contains(&label) {
                machines.len()
            } else {
                CARDS_PER_GROUP
            };
            let cards = if open {
                machines.iter().copied().take(limit).map(card_of).collect()
            } else {
                Vec::new()
            };
            Group {
                count: machines.len(),
                label,
                open,
                cards,
            }
        })
        .collect()
}

/// `m` as a card: its first instances, and how many it runs.
#[cfg(feature = "ssr")]
fn card_of(m: &MachineCard) -> Card {
    let mut machine = m.clone();
    machine.instances.truncate(INSTANCES_PER_CARD);
    Card {
        machine,
        instances: m.instances.len(),
    }
}

/// The groups the server shaped, each foldable.
fn groups(list: Vec<Group>, folding: RwSignal<Folding>) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty">"No machine matches."</p> }.into_any();
    }
    list.into_iter()
        .map(|g| {
            let Group {
                label,
                count: n,
                open,
                cards,
            } = g;
            let shown = cards.len();
            let cards = cards.iter().map(card).collect_view();
            let toggle = {
                let label = label.clone();
                move |ev: leptos::ev::MouseEvent| {
                    ev.prevent_default();
                    folding.update(|f| {
                        f.open.insert(label.clone(), !open);
                    });
                }
            };
            let more = (open && n > shown).then(|| {
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
#[cfg(feature = "ssr")]
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

fn card(c: &Card) -> impl IntoView {
    let m = &c.machine;
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
    let hidden = c.instances.saturating_sub(m.instances.len());
    let more = (hidden > 0).then(|| view! { <li class="more">{format!("+{hidden} more")}</li> });
    let os = if m.os_version.is_empty() {
        "OS —".to_string()
    } else {
        format!("OS {} ({})", m.os_version, m.active_slot)
    };
    let host = if m.hostname.is_empty() {
        "unknown host".to_string()
    } else {
        m.hostname.clone()
    };
    let resources = if m.cpu_millis == 0 && m.memory_mb == 0 {
        "capacity unknown".to_string()
    } else {
        format!("{} mCPU, {} MiB", m.cpu_millis, m.memory_mb)
    };
    view! {
        <article class=format!("machine {}", m.state.replace(' ', "-")) data-id=m.id.clone()>
            <h3>{host} " " <small>{m.id.clone()}</small></h3>
            <p class="facts">
                <span class="state">{m.state.clone()}</span>
                " · "
                {os}
                " · "
                {resources}
            </p>
            <p class="facts">{m.addresses.join(", ")}</p>
            <p class="tags">{metadata}</p>
            <ul class="instances" data-count=c.instances.to_string()>{instances}{more}</ul>
        </article>
    }
}
