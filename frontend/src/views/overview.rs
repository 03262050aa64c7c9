//! Overview: the control-plane members with leader, term and indexes, and
//! the fleet's counts.

use leptos::prelude::*;

use super::{failure, or_dash};
use crate::data::load_overview;
use crate::live::use_live;
use crate::model::Overview;

/// The Overview page.
#[component]
pub fn OverviewPage() -> impl IntoView {
    let live = use_live();
    let data = Resource::new(
        move || (live.fleet.get(), live.locks.get()),
        |_| load_overview(),
    );
    view! {
        <h1>"Overview"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(o) => body(o),
                    Err(e) => failure(e),
                }
            })}
        </Transition>
    }
}

fn body(o: Overview) -> AnyView {
    let members = o
        .members
        .into_iter()
        .map(|m| {
            let class = format!("member {}", m.role);
            view! {
                <tr class=class>
                    <td class="name">{m.name}</td>
                    <td><code>{m.id}</code></td>
                    <td>{m.role}</td>
                    <td>{or_dash(m.term)}</td>
                    <td>{or_dash(m.applied)}</td>
                    <td>{or_dash(m.matched)}</td>
                    <td>{m.client_url}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section class="tiles">
            <div class="tile" id="leader">
                <span>"Leader"</span>
                <b>{o.leader.unwrap_or_else(|| "none".into())}</b>
            </div>
            <div class="tile" id="term">
                <span>"Term"</span>
                <b>{o.term}</b>
            </div>
            <div class="tile" id="commit">
                <span>"Commit index"</span>
                <b>{or_dash(o.commit)}</b>
            </div>
            <div class="tile" id="etcd-index">
                <span>"etcd index"</span>
                <b>{o.etcd_index}</b>
            </div>
            <div class="tile" id="machines">
                <span>"Machines"</span>
                <b>{o.machines}</b>
            </div>
            <div class="tile" id="units">
                <span>"Units"</span>
                <b>{o.units}</b>
            </div>
            <div class="tile" id="instances">
                <span>"Instances running / desired"</span>
                <b>{o.instances_running} " / " {o.instances_desired}</b>
            </div>
            <div class="tile" id="locks">
                <span>"Locks held (slots)"</span>
                <b>{o.locks} " (" {o.lock_holders} ")"</b>
            </div>
        </section>
        <h2>"Members"</h2>
        <table id="members">
            <thead>
                <tr>
                    <th>"Name"</th>
                    <th>"Id"</th>
                    <th>"Role"</th>
                    <th>"Term"</th>
                    <th>"Applied"</th>
                    <th>"Matched"</th>
                    <th>"Client URL"</th>
                </tr>
            </thead>
            <tbody>{members}</tbody>
        </table>
    }
    .into_any()
}
