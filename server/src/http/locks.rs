//! `/api/v1/locks` and `/api/v1/elections`: counting semaphores (a mutex is
//! limit 1) and leader election, both as TTL-backed slots in the key space
//! under `/_shoal/locks/<name>/<holder>` and `/_shoal/elections/<name>/<candidate>`.
//!
//! Taking a slot is one replicated `Acquire` command, so the holder count is
//! checked and changed atomically; the slot's modified index is the fencing token.

use std::sync::Arc;
use std::time::Duration;

use api::elections::{CampaignRequest, Leader, ResignRequest};
use api::locks::{AcquireRequest, Holder, LockList, LockState, ReleaseRequest};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use tokio::time::Instant;

use super::api_error;
use crate::keyspace::{ErrorCode, Op};
use crate::member::{Member, ServeError};

const LOCKS: &str = "/_shoal/locks";
const ELECTIONS: &str = "/_shoal/elections";
/// The longest a request may ask to wait for a slot.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Lock, holder and candidate names are one path component of safe characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
}

fn check(names: &[(&str, &str)]) -> Result<(), Box<Response>> {
    for (what, name) in names {
        if !valid_name(name) {
            return Err(Box::new(api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{what} {name:?} must be 1-128 of [A-Za-z0-9-_.:@], not starting with '_'"),
            )));
        }
    }
    Ok(())
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Box<Response>> {
    b.map(|Json(t)| t).map_err(|e| {
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.body_text(),
        ))
    })
}

/// Parses a JSON body that names a slot holder, and checks both names.
fn slot_request<T>(
    b: Result<Json<T>, JsonRejection>,
    (kind, name): (&str, &str),
    who_kind: &str,
    who: impl Fn(&T) -> &str,
) -> Result<T, Box<Response>> {
    let req = body(b)?;
    check(&[(kind, name), (who_kind, who(&req))])?;
    Ok(req)
}

/// Gives back `holder`'s slot under `root/name`; `Ok(false)` when it held none.
async fn give_back(
    member: &Member,
    root: &str,
    name: &str,
    holder: &str,
) -> Result<bool, ServeError> {
    let op = Op::Release {
        dir: format!("{root}/{name}"),
        holder: holder.to_owned(),
    };
    match member.write(op).await {
        Ok(_) => Ok(true),
        Err(ServeError::Key(e)) if e.code == ErrorCode::KeyNotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The holders of the slot directory `dir`, oldest first.
fn state(member: &Member, root: &str, name: &str) -> LockState {
    let dir = format!("{root}/{name}");
    let keys = member.keys.read();
    let mut limit = 0;
    let mut holders: Vec<Holder> = keys
        .children(&dir)
        .into_iter()
        .map(|(key, entry)| {
            let slot: serde_json::Value =
                serde_json::from_str(entry.value.as_deref().unwrap_or("{}")).unwrap_or_default();
            limit = slot["limit"]
                .as_u64()
                .and_then(|l| u32::try_from(l).ok())
                .unwrap_or(limit);
            Holder {
                holder: crate::keyspace::path::base(&key).to_owned(),
                value: slot["value"].as_str().unwrap_or_default().to_owned(),
                token: entry.modified_index,
                expiration: entry.expiration,
            }
        })
        .filter(|h| h.expiration.is_none_or(|at| at > Utc::now()))
        .collect();
    holders.sort_by_key(|h| h.token);
    LockState {
        name: name.to_owned(),
        limit,
        holders,
    }
}

/// Tries to take a slot until it succeeds or `wait` runs out.
async fn take(member: &Member, op: Op, wait: Duration) -> Result<(), ServeError> {
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    let mut changed = member.keys.subscribe();
    loop {
        match member.write(op.clone()).await {
            Err(ServeError::Key(e))
                if e.code == ErrorCode::TestFailed && Instant::now() < deadline =>
            {
                // Busy: wait for the key space to change (a release or an expiry), then retry.
                if tokio::time::timeout_at(deadline, changed.changed())
                    .await
                    .is_err()
                {
                    return Err(ServeError::Key(e));
                }
            }
            other => return other.map(|_| ()),
        }
    }
}

fn unavailable(e: &ServeError) -> Response {
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

/// `GET /api/v1/locks`.
pub async fn list(State(member): State<Arc<Member>>) -> Json<LockList> {
    let names: Vec<String> = member
        .keys
        .read()
        .children(LOCKS)
        .into_iter()
        .map(|(k, _)| crate::keyspace::path::base(&k).to_owned())
        .collect();
    let locks = names
        .iter()
        .map(|n| state(&member, LOCKS, n))
        .filter(|s| !s.holders.is_empty())
        .collect();
    Json(LockList { locks })
}

/// `GET /api/v1/locks/{name}`.
pub async fn show(State(member): State<Arc<Member>>, Path(name): Path<String>) -> Response {
    if let Err(r) = check(&[("lock", &name)]) {
        return *r;
    }
    Json(state(&member, LOCKS, &name)).into_response()
}

/// `POST /api/v1/locks/{name}/acquire`: 200 with the lock's state, or 409 `lock_busy`.
pub async fn acquire(
    State(member): State<Arc<Member>>,
    Path(name): Path<String>,
    req: Result<Json<AcquireRequest>, JsonRejection>,
) -> Response {
    let req = match slot_request(req, ("lock", &name), "holder", |r: &AcquireRequest| {
        &r.holder
    }) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if req.limit == 0 || req.ttl == 0 {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit and ttl must be at least 1",
        );
    }
    let op = Op::Acquire {
        dir: format!("{LOCKS}/{name}"),
        holder: req.holder.clone(),
        limit: req.limit,
        ttl: req.ttl,
        value: req.value,
    };
    match take(&member, op, Duration::from_secs(req.wait)).await {
        Ok(()) => Json(state(&member, LOCKS, &name)).into_response(),
        Err(ServeError::Key(e)) if e.code == ErrorCode::TestFailed => {
            let s = state(&member, LOCKS, &name);
            let who: Vec<&str> = s.holders.iter().map(|h| h.holder.as_str()).collect();
            api_error(
                StatusCode::CONFLICT,
                "lock_busy",
                format!(
                    "lock {name} is held by {} of {}: {}",
                    who.len(),
                    req.limit,
                    who.join(", ")
                ),
            )
        }
        Err(e) => unavailable(&e),
    }
}

/// `POST /api/v1/locks/{name}/release`: 200, or 404 `not_held`.
pub async fn release(
    State(member): State<Arc<Member>>,
    Path(name): Path<String>,
    req: Result<Json<ReleaseRequest>, JsonRejection>,
) -> Response {
    let req = match slot_request(req, ("lock", &name), "holder", |r: &ReleaseRequest| {
        &r.holder
    }) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match give_back(&member, LOCKS, &name, &req.holder).await {
        Ok(true) => Json(state(&member, LOCKS, &name)).into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            "not_held",
            format!("{} does not hold lock {name}", req.holder),
        ),
        Err(e) => unavailable(&e),
    }
}

fn leader_of(member: &Member, name: &str) -> Option<Leader> {
    let s = state(member, ELECTIONS, name);
    s.holders.into_iter().next().map(|h| Leader {
        name: name.to_owned(),
        leader: h.holder,
        value: h.value,
        token: h.token,
    })
}

/// `GET /api/v1/elections/{name}`: the leader, or 404 `no_leader`.
pub async fn leader(State(member): State<Arc<Member>>, Path(name): Path<String>) -> Response {
    if let Err(r) = check(&[("election", &name)]) {
        return *r;
    }
    match leader_of(&member, &name) {
        Some(l) => Json(l).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "no_leader",
            format!("election {name} has no leader"),
        ),
    }
}

/// `POST /api/v1/elections/{name}/campaign`: 200 when the candidate leads, 409 `election_lost`.
pub async fn campaign(
    State(member): State<Arc<Member>>,
    Path(name): Path<String>,
    req: Result<Json<CampaignRequest>, JsonRejection>,
) -> Response {
    let req = match slot_request(
        req,
        ("election", &name),
        "candidate",
        |r: &CampaignRequest| &r.candidate,
    ) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if req.ttl == 0 {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "ttl must be at least 1",
        );
    }
    let op = Op::Acquire {
        dir: format!("{ELECTIONS}/{name}"),
        holder: req.candidate.clone(),
        limit: 1,
        ttl: req.ttl,
        value: req.value,
    };
    match take(&member, op, Duration::from_secs(req.wait)).await {
        Ok(()) => match leader_of(&member, &name) {
            Some(l) => Json(l).into_response(),
            None => api_error(
                StatusCode::CONFLICT,
                "election_lost",
                "leadership lapsed before it could be read",
            ),
        },
        Err(ServeError::Key(e)) if e.code == ErrorCode::TestFailed => {
            let current = leader_of(&member, &name)
                .map(|l| l.leader)
                .unwrap_or_default();
            api_error(
                StatusCode::CONFLICT,
                "election_lost",
                format!("{current} leads election {name}"),
            )
        }
        Err(e) => unavailable(&e),
    }
}

/// `POST /api/v1/elections/{name}/resign`.
pub async fn resign(
    State(member): State<Arc<Member>>,
    Path(name): Path<String>,
    req: Result<Json<ResignRequest>, JsonRejection>,
) -> Response {
    let req = match slot_request(
        req,
        ("election", &name),
        "candidate",
        |r: &ResignRequest| &r.candidate,
    ) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match give_back(&member, ELECTIONS, &name, &req.candidate).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            "not_leader",
            format!("{} does not lead election {name}", req.candidate),
        ),
        Err(e) => unavailable(&e),
    }
}
