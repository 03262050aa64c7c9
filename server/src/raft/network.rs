//! Outbound peer RPC: raft messages as JSON over HTTP to `{peer_url}/raft/*`.
//!
//! The inbound side is `http::peer`. Peers never use the client port.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{chunk, MemberNode, NodeId, TypeConfig};

/// Makes one [`PeerClient`] per target member, sharing one HTTP connection pool.
#[derive(Clone, Debug)]
pub struct Network {
    http: reqwest::Client,
}

impl Network {
    /// A network over a shared HTTP client.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Self::Network {
        PeerClient {
            http: self.http.clone(),
            target,
            base: node.peer_url.trim_end_matches('/').to_owned(),
        }
    }
}

/// A peer that answered with an HTTP error instead of a raft result (403:
/// this member's cluster token is not the peer's).
#[derive(Debug, thiserror::Error)]
#[error("{url} answered {status}: {reason}")]
struct Refused {
    url: String,
    status: u16,
    reason: String,
}

/// Sends raft RPCs to one member.
#[derive(Debug)]
pub struct PeerClient {
    http: reqwest::Client,
    target: NodeId,
    base: String,
}

impl PeerClient {
    /// Sends `req` as JSON.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.post(path, body, timeout).await
    }

    /// Posts an encoded body and reads the JSON `Result` the peer answers.
    async fn post<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}/raft/{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let reason = resp.text().await.unwrap_or_default();
            let refused = Refused {
                url,
                status: status.as_u16(),
                reason,
            };
            return Err(RPCError::Network(NetworkError::new(&refused)));
        }
        let body: Result<Resp, RaftError<NodeId, E>> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        self.call("append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MemberNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let body = chunk::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.post("snapshot", body, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}
