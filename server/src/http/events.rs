//! `GET /api/v1/events[?prefix=/dir]`: server-sent events, one per key-space
//! change under the prefix (default `/_shoal`; a clean key path, as `/v2/keys`
//! spells keys), with data `{"key":...,"action":...,"index":...}` and the etcd
//! index as the event id. Fed like `/v2/keys?wait=true&recursive=true`: the
//! member's change notification wakes the stream, which reads the event
//! history. A client that reconnects with `Last-Event-ID` resumes after that
//! index; when the history no longer reaches back that far it gets a `resync`
//! event (action `resync`, key the prefix) and should re-read everything. TTL
//! refreshes are not sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use frontend::model::KeyEvent;
use futures::stream;
use tokio::sync::watch;

use super::api_error;
use crate::keyspace::path;
use crate::member::Member;

/// The key-space prefix streamed when the request names none.
pub const PREFIX: &str = "/_shoal";
/// The longest prefix accepted.
const MAX_PREFIX: usize = 1024;
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Query of `GET /api/v1/events`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The directory (or key) whose changes to stream.
    pub prefix: Option<String>,
}

/// True for a key path as the key space stores it: absolute, already clean
/// (no empty, `.` or `..` part, no trailing slash) and without control characters.
pub fn valid_prefix(p: &str) -> bool {
    p.len() <= MAX_PREFIX && path::clean(p) == p && !p.chars().any(char::is_control)
}

/// `GET /api/v1/events`; 400 `bad_request` for a prefix that is not a clean key path.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "Server-sent events `{key, action, index}`, the etcd index as the id", content_type = "text/event-stream", body = String),
        (status = 400, description = "The prefix is not a clean key path; code `bad_request`", body = api::error::ApiErrorBody),
    )
)]
pub async fn stream(
    State(member): State<Arc<Member>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let prefix = match query {
        Ok(Query(q)) => q.prefix.unwrap_or_else(|| PREFIX.to_owned()),
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if !valid_prefix(&prefix) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("prefix {prefix:?} is not a clean key path like /_shoal or /app/config"),
        );
    }
    let changed = member.keys.subscribe();
    let current = member.keys.read().index();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let next = resume.map_or(current, |last| last.min(current)) + 1;
    let follow = Follow {
        member,
        changed,
        prefix,
        next,
    };
    let events = stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, Infallible>(event), f))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One stream's position in the history.
struct Follow {
    member: Arc<Member>,
    changed: watch::Receiver<u64>,
    /// What is streamed.
    prefix: String,
    /// The first index not yet looked at.
    next: u64,
}

impl Follow {
    /// The next message; `None` once the member shuts down.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let found = {
                let keys = self.member.keys.read();
                let current = keys.index();
                let scanned = keys
                    .history()
                    .scan(&self.prefix, true, self.next, 0, current);
                (scanned, current)
            };
            match found {
                (Ok(Some(event)), _) => {
                    self.next = event.index + 1;
                    let key = event.key().to_owned();
                    return Some(message(key, event.body.action.clone(), event.index));
                }
                // Nothing under the prefix up to `current`: skip past it.
                (Ok(None), current) => self.next = current + 1,
                (Err(_), current) => {
                    self.next = current + 1;
                    return Some(message(self.prefix.clone(), "resync".into(), current));
                }
            }
            self.changed.changed().await.ok()?;
        }
    }
}

fn message(key: String, action: String, index: u64) -> SseEvent {
    let data = KeyEvent { key, action, index };
    let event = SseEvent::default().id(index.to_string());
    match serde_json::to_string(&data) {
        Ok(json) => event.data(json),
        Err(e) => event.comment(format!("unencodable event: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_prefix;

    #[test]
    fn prefixes_are_clean_key_paths() {
        for ok in ["/", "/_shoal", "/app/config", "/a b/c@1"] {
            assert!(valid_prefix(ok), "{ok:?} should be accepted");
        }
        for bad in ["", "app", "/app/", "//app", "/a/../b", "/a/./b", "/a\nb"] {
            assert!(!valid_prefix(bad), "{bad:?} should be refused");
        }
        assert!(!valid_prefix(&format!("/{}", "x".repeat(1024))));
    }
}
