//! Live updates: the browser follows `/api/v1/events` (server-sent events fed
//! by key-space watches) and bumps a counter per affected area; the views'
//! resources depend on those counters and refetch. No polling: nothing
//! happens until the server sends an event. [`watch`] follows another
//! prefix for the Key space page. Each event's index also goes into the
//! samples the Overview's live chart draws (`crate::chart`).

use leptos::prelude::*;

use crate::chart::{self, Sample};
use crate::model::KeyEvent;

/// The counters views follow, and the state of the event stream.
#[derive(Clone, Copy, Debug)]
pub struct Live {
    /// Bumped after changes to machines, units, placements and states.
    pub fleet: RwSignal<u64>,
    /// Bumped after changes to locks and elections.
    pub locks: RwSignal<u64>,
    /// `server-rendered` until hydration, then `hydrated`, `live` once the stream is open, `reconnecting`.
    pub state: RwSignal<&'static str>,
    /// The etcd index of the last event received.
    pub index: RwSignal<u64>,
    /// The last minute of indexes, for the Overview's chart (empty on the server).
    pub samples: RwSignal<Vec<Sample>>,
}

impl Live {
    /// Records the indexes known now (`commit` when a refetch reported it).
    pub fn sample(&self, etcd_index: u64, commit: Option<u64>) {
        let s = Sample {
            at: now_secs(),
            etcd_index,
            commit,
        };
        self.samples.update(|list| chart::push(list, s));
    }
}

/// Seconds on the browser's monotonic clock (zero on the server, which never samples).
fn now_secs() -> f64 {
    #[cfg(feature = "hydrate")]
    return web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now() / 1000.0);
    #[cfg(not(feature = "hydrate"))]
    0.0
}

/// How long a burst of events is gathered before the views refetch once.
#[cfg(feature = "hydrate")]
const SETTLE: std::time::Duration = std::time::Duration::from_millis(150);
/// Most events a [`watch`] keeps, newest first.
pub const WATCH_KEEP: usize = 50;

/// Creates the counters, provides them as context and, in the browser, opens the stream.
pub fn provide() -> Live {
    let live = Live {
        fleet: RwSignal::new(0),
        locks: RwSignal::new(0),
        state: RwSignal::new("server-rendered"),
        index: RwSignal::new(0),
        samples: RwSignal::new(Vec::new()),
    };
    provide_context(live);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| stream::open(live));
    live
}

/// The counters of the surrounding app.
pub fn use_live() -> Live {
    use_context::<Live>().unwrap_or_else(provide)
}

/// In the browser: follows the changes under `prefix` (reopening the stream
/// when it changes, closing it when the page goes) and puts each event first
/// in `events`, keeping [`WATCH_KEEP`]. On the server: nothing.
pub fn watch(prefix: Signal<String>, events: RwSignal<Vec<KeyEvent>>) {
    #[cfg(feature = "hydrate")]
    stream::watch(prefix, events);
    #[cfg(not(feature = "hydrate"))]
    let _ = (prefix, events);
}

#[cfg(feature = "hydrate")]
mod stream {
    use leptos::prelude::*;
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    use web_sys::{EventSource, MessageEvent};

    use super::{Live, SETTLE, WATCH_KEEP};
    use crate::model::{events_url, Area, KeyEvent};

    /// Opens the event stream; the browser reconnects it by itself (resuming
    /// from the last event id).
    pub fn open(live: Live) {
        live.state.set("hydrated");
        let pending_fleet = StoredValue::new(false);
        let pending_locks = StoredValue::new(false);
        let opened = follow(
            "/api/v1/events",
            move |open| live.state.set(if open { "live" } else { "reconnecting" }),
            move |event| {
                live.index.set(event.index);
                live.sample(event.index, None);
                match event.area() {
                    Area::Fleet => settle(pending_fleet, live.fleet),
                    Area::Locks => settle(pending_locks, live.locks),
                }
            },
        );
        match opened {
            // The stream lives as long as the page.
            Some(source) => {
                StoredValue::new_local(source);
            }
            None => live.state.set("offline"),
        }
    }

    /// Follows `prefix` into `events` while the calling view lives.
    pub fn watch(prefix: Signal<String>, events: RwSignal<Vec<KeyEvent>>) {
        let current = StoredValue::new_local(None::<EventSource>);
        let close = move || {
            if let Some(old) = current.try_update_value(Option::take).flatten() {
                old.close();
            }
        };
        Effect::new(move |_| {
            let url = events_url(&prefix.get());
            close();
            let source = follow(
                &url,
                |_| {},
                move |event| {
                    events.update(|list| {
                        list.insert(0, event);
                        list.truncate(WATCH_KEEP);
                    })
                },
            );
            current.set_value(source);
        });
        on_cleanup(close);
    }

    /// An `EventSource` on `url` calling `on_state(open)` and `on_event` for
    /// each key event; `None` when the browser refuses to open it.
    fn follow(
        url: &str,
        on_state: impl Fn(bool) + Clone + 'static,
        mut on_event: impl FnMut(KeyEvent) + 'static,
    ) -> Option<EventSource> {
        let source = EventSource::new(url).ok()?;
        let state = on_state.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || state(true));
        let on_error = Closure::<dyn FnMut()>::new(move || on_state(false));
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let event = ev
                .data()
                .as_string()
                .and_then(|text| serde_json::from_str::<KeyEvent>(&text).ok());
            if let Some(event) = event {
                on_event(event);
            }
        });
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // The handlers must live as long as the stream, which the browser owns.
        on_open.forget();
        on_error.forget();
        on_message.forget();
        Some(source)
    }

    /// Bumps `counter` once after a short pause, however many events arrive meanwhile.
    fn settle(pending: StoredValue<bool>, counter: RwSignal<u64>) {
        if pending.get_value() {
            return;
        }
        pending.set_value(true);
        set_timeout(
            move || {
                pending.set_value(false);
                counter.update(|n| *n += 1);
            },
            SETTLE,
        );
    }
}
