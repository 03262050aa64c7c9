//! The peer port: inbound raft RPC and the leader-only calls followers forward.
//! Every request must carry the cluster token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use subtle::ConstantTimeEq as _;

use crate::keyspace::{Event, Op};
use crate::member::{Member, MemberInfo, ServeError};
use crate::raft::{chunk, NodeId, TypeConfig};

/// The header that carries the cluster token between peers.
pub const TOKEN_HEADER: &str = "x-shoal-cluster-token";

/// The peer router, refusing requests without the cluster token.
///
/// Bodies have no size limit here: only token holders get past the check, and
/// openraft bounds what they send (entries per append, bytes per snapshot
/// chunk), while a limit below that would stop replication for good.
pub fn router(member: Arc<Member>, token: String) -> Router {
    let token = Arc::new(token);
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/write", post(write))
        .route("/raft/read-index", post(read_index))
        .route("/raft/members/add", post(add_member))
        .route("/raft/members/remove", post(remove_member))
        .route("/raft/info", get(info))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                let given = req
                    .headers()
                    .get(TOKEN_HEADER)
                    .map(|v| v.as_bytes())
                    .unwrap_or_default();
                // Constant time: the answer's timing says nothing about the token.
                if !bool::from(given.ct_eq(token.as_bytes())) {
                    return (StatusCode::FORBIDDEN, "wrong or missing cluster token")
                        .into_response();
                }
                next.run(req).await
            }
        }))
        .with_state(member)
}

async fn append(
    State(m): State<Arc<Member>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(m.raft.append_entries(req).await)
}

async fn vote(
    State(m): State<Arc<Member>>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(m.raft.vote(req).await)
}

async fn snapshot(
    State(m): State<Arc<Member>>,
    body: Bytes,
) -> Result<
    Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>,
    (StatusCode, String),
> {
    let req = chunk::decode(&body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(m.raft.install_snapshot(req).await))
}

async fn write(
    State(m): State<Arc<Member>>,
    Json(op): Json<Op>,
) -> Json<Result<Event, ServeError>> {
    Json(m.propose(op).await)
}

async fn read_index(State(m): State<Arc<Member>>) -> Json<Result<u64, ServeError>> {
    Json(m.read_index().await)
}

async fn add_member(
    State(m): State<Arc<Member>>,
    Json(peer_url): Json<String>,
) -> Json<Result<NodeId, ServeError>> {
    Json(m.add_member(peer_url).await)
}

async fn remove_member(
    State(m): State<Arc<Member>>,
    Json(id): Json<NodeId>,
) -> Json<Result<(), ServeError>> {
    Json(m.remove_member(id).await)
}

async fn info(State(m): State<Arc<Member>>) -> Json<MemberInfo> {
    Json(MemberInfo {
        name: m.name.clone(),
        client_urls: m.client_urls.clone(),
    })
}
