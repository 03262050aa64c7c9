//! Units: each unit's desired state next to what runs, per instance, with
//! the reason an instance is not placed.

use leptos::prelude::*;

use super::failure;
use crate::data::load_units;
use crate::live::use_live;
use crate::model::UnitRow;

/// The Units page.
#[component]
pub fn UnitsPage() -> impl IntoView {
    let live = use_live();
    let data = Resource::new(move || live.fleet.get(), |_| load_units());
    view! {
        <h1>"Units"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(list) => table(list),
                    Err(e) => failure(e),
                }
            })}
        </Transition>
    }
}

fn table(list: Vec<UnitRow>) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty">"No units. Submit one with " <code>"shoalctl submit"</code> "."</p> }
            .into_any();
    }
    let rows = list.into_iter().map(unit).collect_view();
    view! {
        <table id="units">
            <thead>
                <tr>
                    <th>"Unit / instance"</th>
                    <th>"Image"</th>
                    <th>"Desired"</th>
                    <th>"Machine"</th>
                    <th>"Actual"</th>
                    <th>"Why not placed"</th>
                </tr>
            </thead>
            {rows}
        </table>
    }
    .into_any()
}

fn unit(u: UnitRow) -> impl IntoView {
    let desired = u.desired.clone();
    let instances = u
        .instances
        .into_iter()
        .map(|i| {
            let class = format!("instance {}", i.actual.as_deref().unwrap_or("none"));
            let actual = i.actual.unwrap_or_else(|| "—".into());
            view! {
                <tr class=class>
                    <td class="instance">{i.instance}</td>
                    <td></td>
                    <td>{desired.clone()}</td>
                    <td>{i.machine_id.unwrap_or_else(|| "—".into())}</td>
                    <td class="state">{actual}</td>
                    <td class="reason">{i.unplaced_reason.unwrap_or_default()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <tbody class="unit" data-unit=u.name.clone()>
            <tr class="unit-head">
                <th>{u.name.clone()} " " <small>{u.kind} " · revision " {format!("{:x}", u.revision)}</small></th>
                <td><code>{u.image}</code></td>
                <td>{u.desired}</td>
                <td colspan="3"></td>
            </tr>
            {instances}
        </tbody>
    }
}
