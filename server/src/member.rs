//! One running member: its raft handle, its key space, and the write and read
//! paths every API goes through.
//!
//! Writes go to the leader: a follower forwards the operation to the leader's
//! peer URL (`/raft/write`), and the leader stamps it with its clock and
//! proposes it. Linearizable reads run through openraft's read index: the
//! leader confirms its leadership with a quorum, and a follower asks the
//! leader for that index and waits until it has applied it locally.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use crate::engine::view::{FleetView, RawFleet};
use crate::journals::Journals;
use crate::keyspace::{ErrorCode, Event, KeyError, Op};
pub use crate::proposer::Proposer;
use crate::raft::state_machine::Shared;
use crate::raft::{MemberNode, NodeId, Raft};
use crate::read_index::ReadIndex;

/// Why a write or a linearizable read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ServeError {
    /// The key space refused the operation (etcd error).
    #[error("{0}")]
    Key(#[from] KeyError),
    /// This member is not the leader: nothing was proposed, retrying is safe.
    #[error("not the leader")]
    NotLeader,
    /// No leader is known, or no quorum answered in time: the outcome is unknown.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
}

/// Why a call to the leader's peer port failed.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    /// The request never left: retrying cannot apply it twice.
    #[error("leader unreachable: {0}")]
    NotSent(String),
    /// The request may have reached the leader: its outcome is unknown.
    #[error("lost contact with the leader: {0}")]
    Unknown(String),
}

impl From<ForwardError> for ServeError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NotSent(why) | ForwardError::Unknown(why) => Self::Unavailable(why),
        }
    }
}

impl ServeError {
    /// The etcd error a client sees: key errors as they are, unavailability as 300/301.
    pub fn to_key_error(&self, index: u64) -> KeyError {
        match self {
            Self::Key(e) => e.clone(),
            Self::NotLeader => KeyError::new(ErrorCode::LeaderElect, "no leader", index),
            Self::Unavailable(why) if why.contains("no leader") => {
                KeyError::new(ErrorCode::LeaderElect, why.clone(), index)
            }
            Self::Unavailable(why) => KeyError::new(ErrorCode::RaftInternal, why.clone(), index),
        }
    }
}

/// Counters behind `/v2/stats/store`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Successful reads.
    pub gets_success: AtomicU64,
    /// Failed reads.
    pub gets_fail: AtomicU64,
    /// Successful writes.
    pub writes_success: AtomicU64,
    /// Failed writes.
    pub writes_fail: AtomicU64,
}

impl StoreStats {
    /// Counts one outcome.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Timings of the member's API paths.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a write may wait for a leader and a quorum before it is reported unknown.
    pub write: Duration,
}

/// A running member.
pub struct Member {
    /// This member's id.
    pub id: NodeId,
    /// This member's name.
    pub name: String,
    /// URLs clients reach this member on.
    pub client_urls: Vec<String>,
    /// The raft handle.
    pub raft: Raft,
    /// The applied key space.
    pub keys: Arc<Shared>,
    /// HTTP client for peer calls.
    pub http: reqwest::Client,
    /// HTTP client for other members' client URLs (payload replication, the
    /// dashboard's stats): no redirects, bounded connects and stalls, and the
    /// members' credential when auth is on (never the cluster token).
    pub client_http: reqwest::Client,
    /// When this member started.
    pub started: DateTime<Utc>,
    /// Store operation counters.
    pub stats: StoreStats,
    /// API timings.
    pub timeouts: Timeouts,
    /// Batches this member's proposals while it leads.
    pub proposer: Proposer,
    /// Coalesces linearizable reads while it leads.
    pub read_index: ReadIndex,
    /// Journal requests waiting for their agent.
    pub journals: Journals,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A member's public facts, as `/raft/info` returns them to peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Member name.
    pub name: String,
    /// Client URLs.
    pub client_urls: Vec<String>,
}

impl Member {
    /// The fleet in the applied key space as of `now` (expired leases are gone).
    pub fn fleet_view(&self, now: DateTime<Utc>) -> FleetView {
        // Copied under the read lock, parsed after it is released.
        let raw = RawFleet::read(&self.keys.read());
        FleetView::from_raw(raw, now)
    }

    /// True while this member is the raft leader.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// The current leader, if one is known.
    pub fn leader(&self) -> Option<(NodeId, MemberNode)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// `(term, applied log index)` for the `X-Raft-*` headers.
    pub fn raft_position(&self) -> (u64, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_term, m.last_applied.map_or(0, |l| l.index))
    }

    /// Writes through the leader (forwarding if needed); waits at most the write timeout.
    /// The answer comes once this member has applied the write too, so a read
    /// on the same member right after it sees it (read-your-writes).
    pub async fn write(&self, op: Op) -> Result<Event, ServeError> {
        let write_and_catch_up = async {
            let event = self.write_inner(op).await?;
            let mut applied = self.keys.subscribe();
            // The sender lives as long as the member; if it is gone we are shutting down anyway.
            let _ = applied.wait_for(|index| *index >= event.index).await;
            Ok(event)
        };
        let outcome = tokio::time::timeout(self.timeouts.write, write_and_catch_up).await;
        let result = outcome.unwrap_or_else(|_| {
            Err(ServeError::Unavailable(format!(
                "no quorum answered within {:?}; the write may or may not have happened",
                self.timeouts.write
            )))
        });
        let counter = if result.is_ok() {
            &self.stats.writes_success
        } else {
            &self.stats.writes_fail
        };
        StoreStats::count(counter);
        result
    }

    async fn write_inner(&self, op: Op) -> Result<Event, ServeError> {
        loop {
            let outcome = if self.is_leader() {
                self.propose(op.clone()).await
            } else if let Some((_, node)) = self.leader() {
                match self.forward::<_, Event>(&node, "write", &op).await {
                    Ok(r) => r,
                    Err(ForwardError::NotSent(why)) => {
                        tracing::debug!(%why, "the leader is unreachable; retrying");
                        Err(ServeError::NotLeader)
                    }
                    Err(e @ ForwardError::Unknown(_)) => Err(e.into()),
                }
            } else {
                Err(ServeError::NotLeader)
            };
            match outcome {
                Err(ServeError::NotLeader) => {}
                other => return other,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes on this member, which must be the leader (used by `/raft/write`).
    /// Concurrent proposals are batched into one raft entry by the [`Proposer`].
    pub async fn propose(&self, op: Op) -> Result<Event, ServeError> {
        self.proposer.propose(op).await
    }

    /// Waits until this member's key space reflects every write acknowledged
    /// before the call (a linearizable read barrier).
    pub async fn read_barrier(&self) -> Result<(), ServeError> {
        let barrier = async {
            loop {
                if self.is_leader() {
                    if let Ok(index) = self.read_index().await {
                        return self.wait_applied(index).await;
                    }
                } else if let Some((_, node)) = self.leader() {
                    match self.forward::<_, u64>(&node, "read-index", &()).await {
                        Ok(Ok(index)) => return self.wait_applied(index).await,
                        Ok(Err(e)) => tracing::debug!(%e, "leader refused a read index"),
                        Err(why) => {
                            tracing::debug!(%why, "asking the leader for a read index failed")
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(self.timeouts.write, barrier)
            .await
            .unwrap_or_else(|_| {
                Err(ServeError::Unavailable(
                    "no quorum confirmed the leader in time".into(),
                ))
            })
    }

    /// The leader's read index: confirmed with a quorum, and applied locally.
    pub async fn read_index(&self) -> Result<u64, ServeError> {
        self.read_index.get(&self.raft).await
    }

    async fn wait_applied(&self, index: u64) -> Result<(), ServeError> {
        self.raft
            .wait(Some(self.timeouts.write))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| ServeError::Unavailable(e.to_string()))
    }

    /// Calls a leader-only peer endpoint; the outer error is transport trouble.
    async fn forward<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        node: &MemberNode,
        path: &str,
        req: &Req,
    ) -> Result<Result<Resp, ServeError>, ForwardError> {
        let url = format!("{}/raft/{path}", node.peer_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .json(req)
            .timeout(self.timeouts.write)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    ForwardError::NotSent(e.to_string())
                } else {
                    ForwardError::Unknown(e.to_string())
                }
            })?;
        resp.json()
            .await
            .map_err(|e| ForwardError::Unknown(e.to_string()))
    }

    /// Adds a member by peer URL: a learner now, a voter once it has caught up
    /// (the promotion runs in the background, as etcd's member add returns at once).
    pub async fn add_member(self: &Arc<Self>, peer_url: String) -> Result<NodeId, ServeError> {
        let id = crate::raft::member_id(&peer_url);
        if !self.is_leader() {
            let (_, node) = self
                .leader()
                .ok_or_else(|| ServeError::Unavailable("no leader".into()))?;
            return self
                .forward(&node, "members/add", &peer_url)
                .await
                .map_err(ServeError::from)?;
        }
        let node = MemberNode {
            name: String::new(),
            peer_url,
        };
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| ServeError::Unavailable(e.to_string()))?;
        let me = self.clone();
        tokio::spawn(async move {
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            if let Err(e) = me.raft.change_membership(change, false).await {
                tracing::warn!(%e, member = id, "promoting the new member to voter failed");
            }
        });
        Ok(id)
    }

    /// Removes a voting member.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ServeError> {
        if !self.is_leader() {
            let (_, node) = self
                .leader()
                .ok_or_else(|| ServeError::Unavailable("no leader".into()))?;
            return self
                .forward(&node, "members/remove", &id)
                .await
                .map_err(ServeError::from)?;
        }
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| ServeError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Every voter and learner with its node record.
    pub fn members(&self) -> Vec<(NodeId, MemberNode)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Asks a peer for its name and client URLs (this member answers for itself).
    pub async fn info_of(&self, id: NodeId, node: &MemberNode) -> Option<MemberInfo> {
        if id == self.id {
            return Some(MemberInfo {
                name: self.name.clone(),
                client_urls: self.client_urls.clone(),
            });
        }
        let url = format!("{}/raft/info", node.peer_url.trim_end_matches('/'));
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }
}
