//! Updates: a form to upload a payload (straight to
//! `POST /api/v1/updates/payloads`, with a progress bar), each channel's
//! version and rollout policy with Pause / Resume and Halt, the uploaded
//! versions and the channels pointing at them, every machine's
//! progress through the update states, who holds the reboot lock, and the
//! newest update history.

use leptos::html::Input;
use leptos::prelude::*;

use super::{failure, table, words};
use crate::data::{halt_channel, load_updates, set_paused};
use crate::live::use_live;
use crate::model::{
    upload_url, ChannelRow, HistoryRow, LockHolderRow, MachineProgress, PayloadRow, UpdatesView,
};
use crate::rest;

/// What a channel's buttons do to its rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// Hold every machine until a resume.
    Pause,
    /// Let machines proceed again (clears a halt too).
    Resume,
    /// Halt by hand, as a failure threshold would.
    Halt,
}

impl Move {
    /// The button's label.
    fn label(self) -> &'static str {
        match self {
            Move::Pause => "Pause",
            Move::Resume => "Resume",
            Move::Halt => "Halt",
        }
    }
}

/// A Pause, Resume or Halt click: the channel, and the error in words if it failed.
type PauseAction = Action<(String, Move), (String, Option<String>)>;

/// The reason a halt from this page records.
const HALT_REASON: &str = "halted from the dashboard";

/// The Updates page.
#[component]
pub fn UpdatesPage() -> impl IntoView {
    let live = use_live();
    let pause: PauseAction = Action::new(|(channel, verb): &(String, Move)| {
        let (channel, verb) = (channel.clone(), *verb);
        async move {
            let failed = match verb {
                Move::Pause => set_paused(channel.clone(), true).await,
                Move::Resume => set_paused(channel.clone(), false).await,
                Move::Halt => halt_channel(channel.clone(), Some(HALT_REASON.into())).await,
            }
            .err();
            (channel, failed.map(|e| words(&e)))
        }
    });
    let uploaded = RwSignal::new(0_u64);
    let data = Resource::new(
        move || {
            (
                live.fleet.get(),
                live.locks.get(),
                pause.version().get(),
                uploaded.get(),
            )
        },
        |_| load_updates(),
    );
    view! {
        <h1>"Updates"</h1>
        {upload_form(uploaded)}
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(u) => body(u, pause),
                    Err(e) => failure(e),
                }
            })}
        </Transition>
    }
}

/// The upload form: the file, its version, its signature and an optional
/// channel to point at it; a progress bar while the browser sends it, then
/// what the server stored or why it refused, with every field kept.
/// `uploaded` is bumped after each stored payload (the page refetches).
fn upload_form(uploaded: RwSignal<u64>) -> impl IntoView {
    let file: NodeRef<Input> = NodeRef::new();
    let version = RwSignal::new(String::new());
    let signature = RwSignal::new(String::new());
    let channel = RwSignal::new(String::new());
    let progress = RwSignal::new((0.0_f64, 0.0_f64));
    let sending = RwSignal::new(false);
    let outcome = RwSignal::new(None::<Result<String, String>>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let url = upload_url(
            &version.get_untracked(),
            &signature.get_untracked(),
            &channel.get_untracked(),
        );
        sending.set(true);
        outcome.set(None);
        rest::upload(file, url, progress, move |result| {
            if result.is_ok() {
                uploaded.update(|n| *n += 1);
            }
            outcome.set(Some(result));
            sending.set(false);
        });
    };
    let text = |name: &'static str, value: RwSignal<String>, hint: &'static str| {
        view! {
            <label>
                {hint}
                <input type="text" name=name spellcheck="false" prop:value=move || value.get()
                    on:input=move |ev| value.set(event_target_value(&ev)) />
            </label>
        }
    };
    view! {
        <details class="submit" open=move || outcome.get().is_some() || sending.get()>
            <summary>"Upload a payload"</summary>
            <form id="upload-payload" class="stack" on:submit=submit>
                <label>"Payload file" <input type="file" name="payload" node_ref=file /></label>
                {text("version", version, "Version it installs")}
                {text("signature", signature, "Signature (shoalctl update sign FILE --key signing.pem --version V)")}
                {text("channel", channel, "Point this channel at it (optional)")}
                <div class="act">
                    <button type="submit" disabled=move || sending.get()>"Upload"</button>
                    <progress id="upload-progress" max=move || progress.get().1.max(1.0)
                        value=move || progress.get().0></progress>
                    {move || outcome.get().map(|r| match r {
                        Ok(done) => view! { <span class="done">{done}</span> }.into_any(),
                        Err(e) => view! { <span class="error">{e}</span> }.into_any(),
                    })}
                </div>
            </form>
        </details>
    }
}

fn body(u: UpdatesView, pause: PauseAction) -> AnyView {
    view! {
        <h2>"Channels"</h2>
        {channels(u.channels, pause)}
        <h2>"Versions"</h2>
        {payloads(u.payloads)}
        <h2>"Machines"</h2>
        {machines(u.machines)}
        <h2>"Reboot lock"</h2>
        {holders(u.holders)}
        <h2>"History"</h2>
        {history(u.history)}
    }
    .into_any()
}

fn channels(list: Vec<ChannelRow>, pause: PauseAction) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty">"No channels. Create one with " <code>"shoalctl update channel"</code> "."</p> }
            .into_any();
    }
    let rows = list
        .into_iter()
        .map(|c| {
            let status = c.status();
            let stopped = c.paused || c.halted;
            let windows = if c.windows.is_empty() {
                "any time".to_string()
            } else {
                format!("{} ({})", c.windows.join(", "), c.timezone)
            };
            let name = c.name.clone();
            let mut verbs = vec![if stopped { Move::Resume } else { Move::Pause }];
            if !c.halted {
                verbs.push(Move::Halt);
            }
            let error = {
                let name = name.clone();
                move || {
                    pause
                        .value()
                        .get()
                        .and_then(|(c, e)| if c == name { e } else { None })
                }
            };
            let buttons = verbs
                .into_iter()
                .map(|verb| {
                    let name = name.clone();
                    let click = move |_| {
                        pause.dispatch((name.clone(), verb));
                    };
                    let label = verb.label();
                    view! {
                        <button class=label.to_lowercase() on:click=click disabled=move || pause.pending().get()>
                            {label}
                        </button>
                    }
                })
                .collect_view();
            view! {
                <tr class=format!("channel {}", if stopped { "stopped" } else { "rolling" }) data-channel=name>
                    <td class="name">{c.name}</td>
                    <td class="version">{c.version.unwrap_or_else(|| "—".into())}</td>
                    <td>{c.max_reboots}</td>
                    <td>{c.canaries}</td>
                    <td>{windows}</td>
                    <td>{c.failure_threshold}</td>
                    <td class="status">{status}</td>
                    <td class="act">
                        {buttons}
                        <span class="error">{error}</span>
                    </td>
                </tr>
            }
        })
        .collect_view();
    table(
        "channels",
        &[
            "Channel",
            "Version",
            "Max reboots",
            "Canaries",
            "Windows",
            "Failures to halt",
            "Rollout",
            "",
        ],
        rows,
    )
}

fn payloads(list: Vec<PayloadRow>) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty">"No payload uploaded."</p> }.into_any();
    }
    let rows = list
        .into_iter()
        .map(|p| {
            let version = p.version.clone();
            let channels = if p.channels.is_empty() {
                "—".to_string()
            } else {
                p.channels.join(", ")
            };
            view! {
                <tr data-version=version>
                    <td>{p.version}</td>
                    <td>{format!("{} bytes", p.size)}</td>
                    <td class="digest" title=p.sha256.clone()>{p.sha256.chars().take(12).collect::<String>()}</td>
                    <td>{p.uploaded_at}</td>
                    <td>{channels}</td>
                </tr>
            }
        })
        .collect_view();
    table(
        "payloads",
        &["Version", "Size", "SHA-256", "Uploaded (UTC)", "Channels"],
        rows,
    )
}

fn machines(list: Vec<MachineProgress>) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty">"No machine has checked in."</p> }.into_any();
    }
    let rows = list
        .into_iter()
        .map(|m| {
            let (class, id) = (format!("progress {}", m.state), m.machine_id.clone());
            view! {
                <tr class=class data-machine=id>
                    <td>{m.machine_id}</td>
                    <td>{m.channel}</td>
                    <td>{m.version}</td>
                    <td class="state">{m.state}</td>
                    <td>{m.target.unwrap_or_else(|| "—".into())}</td>
                    <td>{if m.proceed { "yes" } else { "no" }}</td>
                    <td>{m.since}</td>
                    <td class="reason">{m.error}</td>
                </tr>
            }
        })
        .collect_view();
    table(
        "update-machines",
        &[
            "Machine",
            "Channel",
            "Runs",
            "State",
            "Target",
            "May proceed",
            "Since (UTC)",
            "Error",
        ],
        rows,
    )
}

fn holders(list: Vec<LockHolderRow>) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty" id="holders">"Nobody holds the reboot lock."</p> }
            .into_any();
    }
    let rows = list
        .into_iter()
        .map(|h| {
            view! {
                <tr>
                    <td>{h.lock}</td>
                    <td class="holder">{h.holder}</td>
                    <td>{h.token}</td>
                    <td>{h.expiration.unwrap_or_else(|| "—".into())}</td>
                </tr>
            }
        })
        .collect_view();
    table(
        "holders",
        &["Lock", "Holder", "Fencing token", "Lapses (UTC)"],
        rows,
    )
}

/// A history, newest first: time, kind, what it is about, details.
pub(super) fn history(list: Vec<HistoryRow>) -> AnyView {
    if list.is_empty() {
        return view! { <p class="empty">"Nothing yet."</p> }.into_any();
    }
    let rows = list
        .into_iter()
        .map(|e| {
            let tags = e
                .subjects
                .into_iter()
                .map(|s| view! { <span class="tag">{s}</span> })
                .collect_view();
            let kind = e.kind.clone();
            view! {
                <tr class="event" data-kind=kind>
                    <td>{e.at}</td>
                    <td class="kind">{e.kind}</td>
                    <td>{tags}</td>
                    <td>{e.detail}</td>
                </tr>
            }
        })
        .collect_view();
    table("history", &["When (UTC)", "What", "About", "Details"], rows)
}
