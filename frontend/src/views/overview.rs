//! Overview: the control-plane members with leader, term, indexes and
//! health, the fleet's counts, each update channel's rollout at a glance
//! (machines on its version, updating, failed), and a live chart of the last minute's writes per second and
//! indexes (fed by the event stream and the page's refetches; empty as the
//! server renders it).

use leptos::prelude::*;

use super::{failure, or_dash, table};
use crate::chart;
use crate::data::load_overview;
use crate::live::{use_live, Live};
use crate::model::{Overview, RolloutRow};

/// The Overview page.
#[component]
pub fn OverviewPage() -> impl IntoView {
    let live = use_live();
    let data = Resource::new(
        move || (live.fleet.get(), live.locks.get()),
        |_| load_overview(),
    );
    Effect::new(move |_| {
        if let Some(Ok(o)) = data.get() {
            live.sample(o.etcd_index, o.commit);
        }
    });
    view! {
        <h1>"Overview"</h1>
        {live_chart(live)}
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

/// The two charts: writes per second, and the etcd and commit indexes.
fn live_chart(live: Live) -> impl IntoView {
    let samples = live.samples;
    let writes = Memo::new(move |_| samples.with(|s| chart::writes_per_second(s)));
    let etcd = move || samples.with(|s| chart::points(&chart::etcd_series(s), false));
    let commit = move || samples.with(|s| chart::points(&chart::commit_series(s), false));
    let latest = move || writes.with(|w| w.last().map_or("—".into(), |p| p.1.to_string()));
    let last_index = move || samples.with(|s| s.last().map_or(0, |s| s.etcd_index));
    let view_box = format!("0 0 {} {}", chart::WIDTH, chart::HEIGHT);
    view! {
        <section id="live-chart" class="charts" data-samples=move || samples.with(Vec::len)>
            <figure class="chart" id="writes-chart">
                <figcaption>"Writes/s, last " {chart::WINDOW_SECS} " s: " <b>{latest}</b></figcaption>
                <svg viewBox=view_box.clone() preserveAspectRatio="none" role="img" aria-label="writes per second">
                    <polyline class="writes" fill="none" points=move || writes.with(|w| chart::points(w, true))></polyline>
                </svg>
            </figure>
            <figure class="chart" id="index-chart">
                <figcaption>"etcd index " <b>{last_index}</b> " and commit index"</figcaption>
                <svg viewBox=view_box preserveAspectRatio="none" role="img" aria-label="etcd and commit index">
                    <polyline class="etcd" fill="none" points=etcd></polyline>
                    <polyline class="commit" fill="none" points=commit></polyline>
                </svg>
            </figure>
        </section>
    }
}

fn body(o: Overview) -> AnyView {
    let members = o
        .members
        .into_iter()
        .map(|m| {
            let class = format!("member {}", m.role);
            let health = m.health(o.commit);
            view! {
                <tr class=class>
                    <td class="name">{m.name}</td>
                    <td><code>{m.id}</code></td>
                    <td>{m.role}</td>
                    <td>{or_dash(m.term)}</td>
                    <td>{or_dash(m.applied)}</td>
                    <td>{or_dash(m.matched)}</td>
                    <td class="health">{health}</td>
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
        {table(
            "members",
            &["Name", "Id", "Role", "Term", "Applied", "Matched", "Health", "Client URL"],
            members,
        )}
        <h2>"Rollouts"</h2>
        {rollouts(o.rollouts)}
    }
    .into_any()
}

/// Each channel's rollout: its version and status, and how far its machines are.
fn rollouts(list: Vec<RolloutRow>) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty" id="rollouts">"No update channels."</p> }.into_any();
    }
    let rows = list
        .into_iter()
        .map(|r| {
            let name = r.channel.clone();
            view! {
                <tr data-channel=name>
                    <td class="name">{r.channel}</td>
                    <td>{r.version.unwrap_or_else(|| "—".into())}</td>
                    <td class="status">{r.status}</td>
                    <td class="on-version">{format!("{} / {}", r.on_version, r.machines)}</td>
                    <td class="updating">{r.updating}</td>
                    <td class="failed">{r.failed}</td>
                </tr>
            }
        })
        .collect_view();
    table(
        "rollouts",
        &[
            "Channel",
            "Version",
            "Status",
            "On its version",
            "Updating",
            "Failed",
        ],
        rows,
    )
}
