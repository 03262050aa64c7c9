//! Calls the browser makes straight to the REST API, for what a server
//! function cannot carry: a payload upload with its progress
//! (`XMLHttpRequest`'s `upload.onprogress`) and a journal followed live
//! (`fetch` and its body's stream reader, stopped by an `AbortController`).
//! Same-origin requests carry the page's credentials (the token given as
//! HTTP Basic), so the server authorizes them as it does every other action.
//! On the server (SSR) nothing here runs: the views call it from event handlers.

use leptos::html::Input;
use leptos::prelude::*;

/// Where a followed journal is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalState {
    /// None opened yet.
    Idle,
    /// Asking the server.
    Opening,
    /// Lines arrive as the instance writes them.
    Following,
    /// The stream ended (the container stopped, or the agent closed it).
    Ended,
    /// Stopped from the page.
    Stopped,
    /// Refused or broken, in words.
    Failed(String),
}

impl JournalState {
    /// A short word for the page (`data-state`).
    pub fn word(&self) -> &'static str {
        match self {
            JournalState::Idle => "idle",
            JournalState::Opening => "opening",
            JournalState::Following => "following",
            JournalState::Ended => "ended",
            JournalState::Stopped => "stopped",
            JournalState::Failed(_) => "failed",
        }
    }
}

/// A journal being followed, by number (the browser keeps its request, so
/// views may hold this anywhere); [`Following::stop`] ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Following(u64);

impl Following {
    /// Stops reading: the request is aborted and the server closes the stream.
    pub fn stop(self) {
        #[cfg(feature = "hydrate")]
        browser::stop(self.0);
    }
}

/// Follows the journal at `url` (from `crate::model::journal_url`): its
/// lines go into `lines` (the newest `JOURNAL_KEEP`), its state into `state`.
pub fn follow(
    url: String,
    lines: RwSignal<Vec<String>>,
    state: RwSignal<JournalState>,
) -> Following {
    #[cfg(feature = "hydrate")]
    return browser::follow(url, lines, state);
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (url, lines, state);
        Following(0)
    }
}

/// Uploads the file chosen in `input` to `url` (from
/// `crate::model::upload_url`), reporting `(sent, total)` bytes into
/// `progress` as the browser sends them; `done` gets the outcome in words.
pub fn upload(
    input: NodeRef<Input>,
    url: String,
    progress: RwSignal<(f64, f64)>,
    done: impl FnOnce(Result<String, String>) + 'static,
) {
    #[cfg(feature = "hydrate")]
    browser::upload(input, url, progress, done);
    #[cfg(not(feature = "hydrate"))]
    let _ = (input, url, progress, done);
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::rc::Rc;

    use js_sys::Uint8Array;
    use leptos::html::Input;
    use leptos::prelude::*;
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;
    use web_sys::{
        AbortController, AbortSignal, File, ProgressEvent, ReadableStreamDefaultReader,
        ReadableStreamReadResult, RequestInit, Response, XmlHttpRequest,
    };

    use super::{Following, JournalState};
    use crate::model::{error_words, take_lines, upload_words};

    /// What a JavaScript exception says.
    fn js_words(e: &JsValue) -> String {
        e.dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| e.as_string())
            .unwrap_or_else(|| format!("{e:?}"))
    }

    thread_local! {
        /// The journals being read, by number, with the controller that aborts each.
        static OPEN: RefCell<HashMap<u64, AbortController>> = RefCell::default();
        /// The number the next journal gets.
        static NEXT: Cell<u64> = const { Cell::new(1) };
    }

    pub fn follow(
        url: String,
        lines: RwSignal<Vec<String>>,
        state: RwSignal<JournalState>,
    ) -> Following {
        let id = NEXT.replace(NEXT.get() + 1);
        let abort = AbortController::new().ok();
        let signal = abort.as_ref().map(AbortController::signal);
        if let Some(abort) = abort {
            OPEN.with_borrow_mut(|open| open.insert(id, abort));
        }
        state.set(JournalState::Opening);
        lines.set(Vec::new());
        leptos::task::spawn_local(async move {
            let end = read(&url, signal.as_ref(), lines, state).await;
            OPEN.with_borrow_mut(|open| open.remove(&id));
            let stopped = signal.as_ref().is_some_and(AbortSignal::aborted);
            state.set(match end {
                _ if stopped => JournalState::Stopped,
                Ok(()) => JournalState::Ended,
                Err(e) => JournalState::Failed(e),
            });
        });
        Following(id)
    }

    /// Aborts journal `id`'s request, if it is still open.
    pub fn stop(id: u64) {
        if let Some(abort) = OPEN.with_borrow_mut(|open| open.remove(&id)) {
            abort.abort();
        }
    }

    /// Reads the journal's body chunk by chunk until it ends or is aborted.
    async fn read(
        url: &str,
        signal: Option<&AbortSignal>,
        lines: RwSignal<Vec<String>>,
        state: RwSignal<JournalState>,
    ) -> Result<(), String> {
        let window = web_sys::window().ok_or("no window")?;
        let init = RequestInit::new();
        init.set_signal(signal);
        let resp: Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
            .await
            .map_err(|e| js_words(&e))?
            .unchecked_into();
        if !resp.ok() {
            let text = match resp.text() {
                Ok(promise) => JsFuture::from(promise)
                    .await
                    .ok()
                    .and_then(|t| t.as_string()),
                Err(_) => None,
            };
            return Err(error_words(resp.status(), &text.unwrap_or_default()));
        }
        state.set(JournalState::Following);
        let body = resp.body().ok_or("the journal came without a body")?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        let mut partial = Vec::new();
        loop {
            let chunk: ReadableStreamReadResult = JsFuture::from(reader.read())
                .await
                .map_err(|e| js_words(&e))?
                .unchecked_into();
            if chunk.get_done().unwrap_or(true) {
                if !partial.is_empty() {
                    partial.push(b'\n');
                    lines.update(|l| take_lines(l, &mut partial, &[]));
                }
                return Ok(());
            }
            let bytes = Uint8Array::new(&chunk.get_value()).to_vec();
            lines.update(|l| take_lines(l, &mut partial, &bytes));
        }
    }

    pub fn upload(
        input: NodeRef<Input>,
        url: String,
        progress: RwSignal<(f64, f64)>,
        done: impl FnOnce(Result<String, String>) + 'static,
    ) {
        let file = input
            .get_untracked()
            .and_then(|i| i.files())
            .and_then(|list| list.get(0));
        let Some(file) = file else {
            return done(Err("choose a payload file first".into()));
        };
        progress.set((0.0, file.size()));
        // Called once: by the request's loadend, or here if it never started.
        let done = Rc::new(Cell::new(Some(done)));
        if let Err(e) = send(&file, &url, progress, done.clone()) {
            if let Some(done) = done.take() {
                done(Err(format!(
                    "the browser could not send it: {}",
                    js_words(&e)
                )));
            }
        }
    }

    /// Starts the request; its `loadend` (after success, failure or abort,
    /// exactly once) reports the outcome and frees the progress handler.
    fn send<F: FnOnce(Result<String, String>) + 'static>(
        file: &File,
        url: &str,
        progress: RwSignal<(f64, f64)>,
        done: Rc<Cell<Option<F>>>,
    ) -> Result<(), JsValue> {
        let xhr = XmlHttpRequest::new()?;
        xhr.open_with_async("POST", url, true)?;
        xhr.set_request_header("Content-Type", "application/octet-stream")?;
        let on_progress = Closure::<dyn FnMut(ProgressEvent)>::new(move |ev: ProgressEvent| {
            if ev.length_computable() {
                progress.set((ev.loaded(), ev.total()));
            }
        });
        let upload = xhr.upload()?;
        upload.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
        let answered = xhr.clone();
        let on_end = Closure::once_into_js(move || {
            upload.set_onprogress(None);
            drop(on_progress);
            let status = answered.status().unwrap_or(0);
            let body = answered.response_text().ok().flatten().unwrap_or_default();
            let outcome = if status == 0 {
                Err("the upload did not reach the server (network error)".into())
            } else {
                upload_words(status, &body)
            };
            if let Some(done) = done.take() {
                done(outcome);
            }
        });
        xhr.set_onloadend(Some(on_end.unchecked_ref()));
        xhr.send_with_opt_blob(Some(file))
    }
}
