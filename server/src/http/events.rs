//! `GET /api/v1/events`: server-sent events, one per key-space change under
//! `/_shoal`, with data `{"key":...,"action":...,"index":...}` and the etcd
//! index as the event id. Fed like `/v2/keys?wait=true`: the member's change
//! notification wakes the stream, which reads the event history. A client
//! that reconnects with `Last-Event-ID` resumes after that index; when the
//! history no longer reaches back that far it gets a `resync` event (action
//! `resync`, key `/_shoal`) and should re-read everything. TTL refreshes are
//! not sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use frontend::model::KeyEvent;
use futures::stream::{self, Stream};
use tokio::sync::watch;

use crate::member::Member;

/// The key-space prefix whose changes are streamed.
pub const PREFIX: &str = "/_shoal";
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/events`.
pub async fn stream(
    State(member): State<Arc<Member>>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
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
        next,
    };
    let events = stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok(event), f))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// One stream's position in the history.
struct Follow {
    member: Arc<Member>,
    changed: watch::Receiver<u64>,
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
                let scanned = keys.history().scan(PREFIX, true, self.next, 0, current);
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
                    return Some(message(PREFIX.into(), "resync".into(), current));
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
