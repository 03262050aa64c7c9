//! Group commit: concurrent proposals on the leader are gathered into one
//! raft entry ([`Batch`]), so one log append — one fsync on each member —
//! commits many client writes. A few batches may be in flight at once, so the
//! next batch fills while the previous one replicates.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::keyspace::{Command, Event, Op};
use crate::member::ServeError;
use crate::raft::{Applied, Batch, Raft};

/// The most commands in one raft entry.
const MAX_BATCH: usize = 512;
/// Batches replicating at the same time.
const IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<Event, ServeError>>;

/// The handle writers propose through.
#[derive(Debug, Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<(Op, Reply)>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Self { queue }
    }

    /// Proposes one operation and waits for its outcome.
    pub async fn propose(&self, op: Op) -> Result<Event, ServeError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((op, tx))
            .map_err(|_| ServeError::Unavailable("member is shutting down".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(ServeError::Unavailable("member is shutting down".into())))
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<(Op, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

/// Proposes one batch and answers every writer in it.
async fn commit(raft: &Raft, batch: Vec<(Op, Reply)>) {
    let now = crate::clock::now();
    let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
    let commands = ops.into_iter().map(|op| Command { now, op }).collect();
    let outcomes: Vec<Result<Event, ServeError>> = match raft.client_write(Batch(commands)).await {
        Ok(resp) => match resp.data {
            Applied::Keys(results) => results
                .into_iter()
                .map(|r| r.map_err(ServeError::Key))
                .collect(),
            Applied::Nothing => vec![],
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            replies.iter().map(|_| Err(ServeError::NotLeader)).collect()
        }
        Err(e) => replies
            .iter()
            .map(|_| Err(ServeError::Unavailable(e.to_string())))
            .collect(),
    };
    let mut outcomes = outcomes.into_iter();
    for reply in replies {
        let outcome = outcomes.next().unwrap_or_else(|| {
            Err(ServeError::Unavailable(
                "batch produced too few results".into(),
            ))
        });
        // A writer that gave up (timed out) no longer listens; that is fine.
        let _ = reply.send(outcome);
    }
}
