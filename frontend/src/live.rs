//! Live updates: the browser follows `/api/v1/events` (server-sent events fed
//! by key-space watches) and bumps a counter per affected area; the views'
//! resources depend on those counters and refetch. No polling: nothing
//! happens until the server sends an event.

use leptos::prelude::*;

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
}

/// How long a burst of events is gathered before the views refetch once.
#[cfg(feature = "hydrate")]
const SETTLE: std::time::Duration = std::time::Duration::from_millis(150);

/// Creates the counters, provides them as context and, in the browser, opens the stream.
pub fn provide() -> Live {
    let live = Live {
        fleet: RwSignal::new(0),
        locks: RwSignal::new(0),
        state: RwSignal::new("server-rendered"),
        index: RwSignal::new(0),
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

#[cfg(feature = "hydrate")]
mod stream {
    use leptos::prelude::*;
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    use web_sys::{EventSource, MessageEvent};

    use super::{Live, SETTLE};
    use crate::model::{Area, KeyEvent};

    /// Opens the event stream; the browser reconnects it by itself (resuming
    /// from the last event id).
    pub fn open(live: Live) {
        live.state.set("hydrated");
        let Ok(source) = EventSource::new("/api/v1/events") else {
            live.state.set("offline");
            return;
        };
        let pending_fleet = StoredValue::new(false);
        let pending_locks = StoredValue::new(false);
        let on_open = Closure::<dyn FnMut()>::new(move || live.state.set("live"));
        let on_error = Closure::<dyn FnMut()>::new(move || live.state.set("reconnecting"));
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else {
                return;
            };
            let Ok(event) = serde_json::from_str::<KeyEvent>(&text) else {
                return;
            };
            live.index.set(event.index);
            match event.area() {
                Area::Fleet => settle(pending_fleet, live.fleet),
                Area::Locks => settle(pending_locks, live.locks),
            }
        });
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // The stream lives as long as the page: its handlers must too.
        on_open.forget();
        on_error.forget();
        on_message.forget();
        StoredValue::new_local(source);
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
