//! Units: each unit's desired state next to what runs, per instance, with
//! the reason an instance is not placed; a form to submit a unit (TOML or
//! JSON) and Start / Stop / Destroy buttons, each with its error in words;
//! a Journal button on each placed instance that follows its output live
//! (`GET /api/v1/units/{name}/journal?follow=true`) below the table, until Stop.

use leptos::prelude::*;

use super::{failure, grouped_table, words};
use crate::data::{load_units, submit_unit, unit_action};
use crate::live::use_live;
use crate::model::{journal_url, UnitRow, UnitVerb};
use crate::rest::{self, Following, JournalState};

/// A button click on a unit: the unit, and the error in words if it failed.
type VerbAction = Action<(String, UnitVerb), (String, Option<String>)>;

/// The journal panel: which instance it follows, its lines and state, the stream.
#[derive(Clone, Copy)]
struct Journal {
    instance: RwSignal<Option<String>>,
    lines: RwSignal<Vec<String>>,
    state: RwSignal<JournalState>,
    stream: StoredValue<Option<Following>>,
}

impl Journal {
    fn new() -> Self {
        let journal = Journal {
            instance: RwSignal::new(None),
            lines: RwSignal::new(Vec::new()),
            state: RwSignal::new(JournalState::Idle),
            stream: StoredValue::new(None),
        };
        on_cleanup(move || journal.stop());
        journal
    }

    /// Follows the journal of `unit`'s `instance` instead of the one followed so far.
    fn open(self, unit: &str, instance: String) {
        self.stop();
        let url = journal_url(unit, &instance);
        self.instance.set(Some(instance));
        let following = rest::follow(url, self.lines, self.state);
        self.stream.set_value(Some(following));
    }

    /// Stops following (the lines stay).
    fn stop(self) {
        if let Some(old) = self.stream.try_update_value(Option::take).flatten() {
            old.stop();
        }
    }
}

/// What the submit form starts with: an example of the TOML `shoalctl submit` reads.
const EXAMPLE: &str = "name = \"hello\"\nimage = \"busybox\"\ncommand = [\"sleep\", \"3600\"]\ndesired = \"launched\"\n";

/// The Units page.
#[component]
pub fn UnitsPage() -> impl IntoView {
    let live = use_live();
    let text = RwSignal::new(EXAMPLE.to_string());
    let submit = Action::new(|text: &String| {
        let text = text.clone();
        async move { submit_unit(text).await.map_err(|e| words(&e)) }
    });
    let verb: VerbAction = Action::new(|(name, verb): &(String, UnitVerb)| {
        let (name, verb) = (name.clone(), *verb);
        async move {
            let failed = unit_action(name.clone(), verb).await.err();
            (name, failed.map(|e| words(&e)))
        }
    });
    let data = Resource::new(
        move || {
            (
                live.fleet.get(),
                submit.version().get(),
                verb.version().get(),
            )
        },
        |_| load_units(),
    );
    let journal = Journal::new();
    view! {
        <h1>"Units"</h1>
        <details class="submit" open=move || submit.value().get().is_some_and(|r| r.is_err())>
            <summary>"Submit a unit"</summary>
            <form id="submit-unit" class="stack" on:submit=move |ev| {
                ev.prevent_default();
                submit.dispatch(text.get_untracked());
            }>
                <textarea name="unit" rows="8" spellcheck="false" prop:value=move || text.get()
                    on:input=move |ev| text.set(event_target_value(&ev))></textarea>
                <div class="act">
                    <button type="submit" disabled=move || submit.pending().get()>"Submit"</button>
                    <small>"TOML as " <code>"shoalctl submit"</code> " reads it, or the API's JSON"</small>
                    {move || submit.value().get().map(|r| match r {
                        Ok(name) => view! { <span class="done">"submitted " {name}</span> }.into_any(),
                        Err(e) => view! { <span class="error">{e}</span> }.into_any(),
                    })}
                </div>
            </form>
        </details>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(list) => unit_table(list, verb, journal),
                    Err(e) => failure(e),
                }
            })}
        </Transition>
        {journal_panel(journal)}
    }
}

/// The followed journal: whose, its state (or why it failed), Stop, the lines.
fn journal_panel(journal: Journal) -> impl IntoView {
    let state = move || journal.state.get();
    view! {
        <section id="journal" data-state=move || state().word()>
            <h2>"Journal"</h2>
            {move || match journal.instance.get() {
                None => view! {
                    <p class="empty">"Choose Journal on a placed instance to follow its output live."</p>
                }
                .into_any(),
                Some(instance) => view! {
                    <div class="act">
                        <code class="instance">{instance}</code>
                        <span class="status">{move || state().word()}</span>
                        <button class="stop" disabled=move || !matches!(state(), JournalState::Opening | JournalState::Following)
                            on:click=move |_| journal.stop()>"Stop"</button>
                        <span class="error">{move || match state() {
                            JournalState::Failed(e) => e,
                            _ => String::new(),
                        }}</span>
                    </div>
                    <div class="lines"><pre>{move || journal.lines.get().join("\n")}</pre></div>
                }
                .into_any(),
            }}
        </section>
    }
}

fn unit_table(list: Vec<UnitRow>, verb: VerbAction, journal: Journal) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty">"No units. Submit one above or with " <code>"shoalctl submit"</code> "."</p> }
            .into_any();
    }
    let rows = list
        .into_iter()
        .map(|u| unit(u, verb, journal))
        .collect_view();
    grouped_table(
        "units",
        &[
            "Unit / instance",
            "Image",
            "Desired",
            "Machine",
            "Actual",
            "Why not placed",
            "",
        ],
        rows,
    )
}

/// Start / Stop / Destroy for one unit, with the last error of any of them.
fn buttons(name: String, launched: bool, verb: VerbAction) -> impl IntoView {
    let toggle = if launched {
        UnitVerb::Stop
    } else {
        UnitVerb::Start
    };
    let button = |v: UnitVerb, name: String| {
        view! {
            <button class=v.label().to_lowercase() disabled=move || verb.pending().get()
                on:click=move |_| {
                    verb.dispatch((name.clone(), v));
                }>
                {v.label()}
            </button>
        }
    };
    let error = {
        let name = name.clone();
        move || {
            verb.value()
                .get()
                .and_then(|(n, e)| if n == name { e } else { None })
        }
    };
    view! {
        {button(toggle, name.clone())}
        {button(UnitVerb::Destroy, name.clone())}
        <span class="error">{error}</span>
    }
}

fn unit(u: UnitRow, verb: VerbAction, journal: Journal) -> impl IntoView {
    let (desired, unit) = (u.desired.clone(), u.name.clone());
    let instances = u
        .instances
        .into_iter()
        .map(|i| {
            let class = format!("instance {}", i.actual.as_deref().unwrap_or("none"));
            let actual = i.actual.unwrap_or_else(|| "—".into());
            let open = i.machine_id.is_some().then(|| {
                let (unit, name) = (unit.clone(), i.instance.clone());
                view! {
                    <button class="journal" data-journal=name.clone()
                        on:click=move |_| journal.open(&unit, name.clone())>"Journal"</button>
                }
            });
            view! {
                <tr class=class>
                    <td class="instance">{i.instance}</td>
                    <td></td>
                    <td>{desired.clone()}</td>
                    <td>{i.machine_id.unwrap_or_else(|| "—".into())}</td>
                    <td class="state">{actual}</td>
                    <td class="reason">{i.unplaced_reason.unwrap_or_default()}</td>
                    <td class="act">{open}</td>
                </tr>
            }
        })
        .collect_view();
    let launched = u.desired == "launched";
    let id = u.name.clone();
    view! {
        <tbody class="unit" data-unit=id>
            <tr class="unit-head">
                <th>{u.name.clone()} " " <small>{u.kind} " · revision " {format!("{:x}", u.revision)}</small></th>
                <td><code>{u.image}</code></td>
                <td>{u.desired}</td>
                <td colspan="4" class="act">{buttons(u.name, launched, verb)}</td>
            </tr>
            {instances}
        </tbody>
    }
}
