//! Key space: a directory listed recursively (keys with values and indexes,
//! directories as links), a form to create, edit or delete a key through the
//! `/v2/keys` handler, and a live watch of a prefix over the event stream.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{failure, table, words};
use crate::data::{delete_key, load_keys, put_key};
use crate::live::watch;
use crate::model::{KeyDir, KeyEvent};

/// What the form asks for.
#[derive(Clone, Debug)]
enum KeyWrite {
    /// Set the key to the value.
    Put(String, String),
    /// Delete the key.
    Delete(String),
}

/// A form submission's outcome, in words.
type WriteAction = Action<KeyWrite, Result<String, String>>;

/// The Key space page; `?dir=<dir>` chooses the listed directory (default `/`).
#[component]
pub fn KeysPage() -> impl IntoView {
    let query = use_query_map();
    let dir = RwSignal::new(query.with_untracked(|q| q.get("dir").unwrap_or_else(|| "/".into())));
    let key = RwSignal::new(String::new());
    let value = RwSignal::new(String::new());
    let prefix = RwSignal::new(dir.get_untracked());
    let watched = RwSignal::new(Vec::<KeyEvent>::new());
    watch(prefix.into(), watched);
    let write: WriteAction = Action::new(|w: &KeyWrite| {
        let w = w.clone();
        async move {
            let done = match w {
                KeyWrite::Put(k, v) => put_key(k, v).await.map(|i| format!("set at index {i}")),
                KeyWrite::Delete(k) => delete_key(k).await.map(|i| format!("deleted at index {i}")),
            };
            done.map_err(|e| words(&e))
        }
    });
    let latest = move || watched.with(|w| w.first().map(|e| e.index));
    let data = Resource::new(
        move || (dir.get(), write.version().get(), latest()),
        |(d, _, _)| load_keys(d),
    );
    let edit = move |k: String, v: String| {
        key.set(k);
        value.set(v);
    };
    // Opening a directory also watches it.
    let open = move |d: String| {
        watched.set(Vec::new());
        prefix.set(d.clone());
        dir.set(d);
    };
    view! {
        <h1>"Key space"</h1>
        <form class="controls" method="get" on:submit=move |ev| {
            ev.prevent_default();
        }>
            <label>
                "Directory "
                <input name="dir" prop:value=move || dir.get() on:change=move |ev| open(event_target_value(&ev)) />
            </label>
        </form>
        <div class="split">
            <div id="tree">
                <Transition fallback=|| view! { <p>"Loading…"</p> }>
                    {move || Suspend::new(async move {
                        match data.await {
                            Ok(d) => tree(d, open, edit),
                            Err(e) => failure(e),
                        }
                    })}
                </Transition>
            </div>
            <aside>
                <h2>"Create, edit, delete"</h2>
                <form id="key-form" class="stack" on:submit=move |ev| {
                    ev.prevent_default();
                    write.dispatch(KeyWrite::Put(key.get_untracked(), value.get_untracked()));
                }>
                    <label>
                        "Key"
                        <input name="key" placeholder="/app/config" prop:value=move || key.get()
                            on:input=move |ev| key.set(event_target_value(&ev)) />
                    </label>
                    <label>
                        "Value"
                        <textarea name="value" rows="4" prop:value=move || value.get()
                            on:input=move |ev| value.set(event_target_value(&ev))></textarea>
                    </label>
                    <div class="act">
                        <button type="submit" class="save">"Save"</button>
                        <button type="button" class="delete" on:click=move |_| {
                            write.dispatch(KeyWrite::Delete(key.get_untracked()));
                        }>"Delete"</button>
                        {move || write.value().get().map(|r| match r {
                            Ok(done) => view! { <span class="done">{done}</span> }.into_any(),
                            Err(e) => view! { <span class="error">{e}</span> }.into_any(),
                        })}
                    </div>
                </form>
                <h2>"Watch"</h2>
                <label class="stack">
                    "Prefix"
                    <input name="prefix" prop:value=move || prefix.get()
                        on:change=move |ev| {
                            watched.set(Vec::new());
                            prefix.set(event_target_value(&ev));
                        } />
                </label>
                <ol id="watch">
                    {move || watched.get().into_iter().map(|e| {
                        let class = format!("watch {}", e.action);
                        view! {
                            <li class=class>
                                <b>{e.action}</b> " " <code>{e.key}</code> " " <small>"@" {e.index}</small>
                            </li>
                        }
                    }).collect_view()}
                </ol>
            </aside>
        </div>
    }
}

fn tree(
    d: KeyDir,
    open: impl Fn(String) + Copy + Send + 'static,
    edit: impl Fn(String, String) + Copy + Send + 'static,
) -> AnyView {
    if d.nodes.is_empty() {
        return view! { <p class="empty">"No keys under " <code>{d.dir}</code> "."</p> }.into_any();
    }
    let rows = d
        .nodes
        .into_iter()
        .map(|n| {
            let indent = format!("padding-left: {}rem", 0.6 + 1.2 * n.depth as f64);
            let name = n.key.rsplit('/').next().unwrap_or_default().to_string();
            let ttl = n.ttl.map(|t| format!("ttl {t}s")).unwrap_or_default();
            let indexes = format!("{} / {}", n.modified_index, n.created_index);
            if n.dir {
                let target = n.key.clone();
                view! {
                    <tr class="node dir" data-key=n.key.clone()>
                        <td style=indent>
                            <a href=format!("?dir={}", n.key) on:click=move |ev| {
                                ev.prevent_default();
                                open(target.clone());
                            }>{name} "/"</a>
                        </td>
                        <td></td>
                        <td>{indexes}</td>
                        <td>{ttl}</td>
                    </tr>
                }
                .into_any()
            } else {
                let (k, v) = (n.key.clone(), n.value.clone().unwrap_or_default());
                view! {
                    <tr class="node key" data-key=n.key.clone()>
                        <td style=indent>
                            <a href="#key-form" on:click=move |_| edit(k.clone(), v.clone())>{name}</a>
                        </td>
                        <td class="value"><code>{n.value.unwrap_or_default()}</code></td>
                        <td>{indexes}</td>
                        <td>{ttl}</td>
                    </tr>
                }
                .into_any()
            }
        })
        .collect_view();
    view! {
        <p class="count">{d.dir.clone()} " at index " {d.index}</p>
        {table("keys", &["Key", "Value", "Modified / created", "TTL"], rows)}
    }
    .into_any()
}
