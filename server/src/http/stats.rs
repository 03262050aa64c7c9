//! `/version`, `/health` and `/v2/stats/*`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ServerState;
use serde_json::json;

use crate::member::Member;
use crate::raft::id_hex;

/// `GET /version`.
pub async fn version() -> Json<api::members::Version> {
    Json(api::members::Version {
        etcdserver: "3.4.23".into(),
        etcdcluster: "3.4.0".into(),
        shoal: env!("CARGO_PKG_VERSION").into(),
    })
}

/// `GET /health`: healthy while a leader is known.
pub async fn health(State(member): State<Arc<Member>>) -> Response {
    let healthy = member.leader().is_some();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(api::members::Health {
            health: healthy.to_string(),
        }),
    )
        .into_response()
}

/// `GET /v2/stats/self`.
pub async fn self_stats(State(member): State<Arc<Member>>) -> Json<serde_json::Value> {
    let metrics = member.raft.metrics().borrow().clone();
    let state = match metrics.state {
        ServerState::Leader => "StateLeader",
        ServerState::Candidate => "StateCandidate",
        _ => "StateFollower",
    };
    Json(json!({
        "name": member.name,
        "id": id_hex(member.id),
        "state": state,
        "startTime": member.started.to_rfc3339(),
        "leaderInfo": { "leader": metrics.current_leader.map(id_hex).unwrap_or_default() },
        "term": metrics.current_term,
        "lastApplied": metrics.last_applied.map_or(0, |l| l.index),
        "snapshotIndex": metrics.snapshot.map_or(0, |l| l.index),
        "purgedIndex": metrics.purged.map_or(0, |l| l.index),
    }))
}

/// `GET /v2/stats/leader`: replication progress of each follower, on the leader only.
pub async fn leader_stats(State(member): State<Arc<Member>>) -> Response {
    let metrics = member.raft.metrics().borrow().clone();
    let Some(replication) = metrics
        .replication
        .filter(|_| metrics.state == ServerState::Leader)
    else {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "message": "not current leader" })),
        )
            .into_response();
    };
    let followers: serde_json::Map<String, serde_json::Value> = replication
        .iter()
        .filter(|(id, _)| **id != member.id)
        .map(|(id, matched)| {
            (
                id_hex(*id),
                json!({ "matchIndex": matched.map_or(0, |l| l.index) }),
            )
        })
        .collect();
    Json(json!({ "leader": id_hex(member.id), "followers": followers })).into_response()
}

/// `GET /v2/stats/store`.
pub async fn store_stats(State(member): State<Arc<Member>>) -> Json<serde_json::Value> {
    let s = &member.stats;
    Json(json!({
        "getsSuccess": s.gets_success.load(Ordering::Relaxed),
        "getsFail": s.gets_fail.load(Ordering::Relaxed),
        "writesSuccess": s.writes_success.load(Ordering::Relaxed),
        "writesFail": s.writes_fail.load(Ordering::Relaxed),
        "keys": member.keys.read().len(),
        "watchers": member.keys.watchers(),
    }))
}
