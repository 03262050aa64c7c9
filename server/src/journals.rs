//! Journal requests waiting for their agent. A member asked for an
//! instance's logs writes a [`api::fleet::JournalRequest`] into the key space
//! and waits here; the agent of the instance's machine sees the request,
//! connects out to this member and posts the logs, which [`Journals::deliver`]
//! hands to the waiting request. Agents are never dialled, so journals reach
//! every host an agent can reach the cluster from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use tokio::sync::oneshot;

/// What an agent answered a journal request with.
#[derive(Debug)]
pub enum Answer {
    /// The logs, streamed; `done` is dropped once the client stops reading.
    Logs {
        /// The agent's request body.
        body: Body,
        /// Held by whoever reads `body`; its drop ends the agent's request.
        done: oneshot::Sender<()>,
    },
    /// Why the agent cannot give the logs, in its words.
    Refused(String),
}

/// Why an answer found no request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeliverError {
    /// Nobody waits for this request id on this member (answered, timed out, or never made).
    #[error("no journal request {0:?} waits on this member")]
    NotWaiting(String),
    /// The request is for another machine's instance.
    #[error("journal request {id:?} is for machine {wanted:?}, not {answered:?}")]
    OtherMachine {
        /// The request id.
        id: String,
        /// The machine the request went to.
        wanted: String,
        /// The machine that answered.
        answered: String,
    },
}

type Waiting = HashMap<String, (String, oneshot::Sender<Answer>)>;

/// The journal requests of this member that wait for their agent, by request id.
#[derive(Debug, Default, Clone)]
pub struct Journals {
    waiting: Arc<Mutex<Waiting>>,
}

/// A journal request waiting for its answer; dropping it withdraws the request.
#[derive(Debug)]
pub struct Pending {
    id: String,
    journals: Journals,
    answer: oneshot::Receiver<Answer>,
}

impl Pending {
    /// The agent's answer (`None`: withdrawn, which only a drop does).
    pub async fn answer(&mut self) -> Option<Answer> {
        (&mut self.answer).await.ok()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.journals.lock().remove(&self.id);
    }
}

impl Journals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for request `id` to machine `machine`.
    pub fn wait(&self, id: &str, machine: &str) -> Pending {
        let (tx, answer) = oneshot::channel();
        self.lock().insert(id.to_owned(), (machine.to_owned(), tx));
        Pending {
            id: id.to_owned(),
            journals: self.clone(),
            answer,
        }
    }

    /// Hands `machine`'s answer to request `id`.
    pub fn deliver(&self, id: &str, machine: &str, answer: Answer) -> Result<(), DeliverError> {
        let mut waiting = self.lock();
        match waiting.get(id) {
            None => return Err(DeliverError::NotWaiting(id.to_owned())),
            Some((wanted, _)) if wanted != machine => {
                return Err(DeliverError::OtherMachine {
                    id: id.to_owned(),
                    wanted: wanted.clone(),
                    answered: machine.to_owned(),
                })
            }
            Some(_) => {}
        }
        if let Some((_, tx)) = waiting.remove(id) {
            // Err: the request was withdrawn just now; the answer goes nowhere.
            let _ = tx.send(answer);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_request_and_only_from_its_machine() {
        let journals = Journals::default();
        let mut pending = journals.wait("r1", "m1");
        let refused = |why: &str| Answer::Refused(why.to_owned());
        assert_eq!(
            journals.deliver("r1", "m2", refused("no")),
            Err(DeliverError::OtherMachine {
                id: "r1".into(),
                wanted: "m1".into(),
                answered: "m2".into()
            })
        );
        assert_eq!(
            journals.deliver("r9", "m1", refused("no")),
            Err(DeliverError::NotWaiting("r9".into()))
        );
        assert_eq!(journals.deliver("r1", "m1", refused("not here")), Ok(()));
        match pending.answer().await {
            Some(Answer::Refused(why)) => assert_eq!(why, "not here"),
            other => panic!("unexpected answer {other:?}"),
        }
        assert_eq!(
            journals.deliver("r1", "m1", refused("again")),
            Err(DeliverError::NotWaiting("r1".into())),
            "a request takes one answer"
        );
    }

    #[test]
    fn a_dropped_request_is_withdrawn() {
        let journals = Journals::default();
        drop(journals.wait("r1", "m1"));
        assert_eq!(
            journals.deliver("r1", "m1", Answer::Refused(String::new())),
            Err(DeliverError::NotWaiting("r1".into()))
        );
    }
}
