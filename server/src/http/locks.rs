//! `/api/v1/locks` and `/api/v1/elections`: counting semaphores (a mutex is
//! limit 1) and leader election, both as TTL-backed slots in the key space
//! under `/_shoal/locks/<name>/<holder>` and `/_shoal/elections/<name>/<candidate>`.
//!
//! Taking a slot is one replicated `Acquire` command, so the holder count is
//! checked and changed atomically; the slot's modified index is the fencing token.
//! A lock's configured limit (`PUT /api/v1/locks/{name}`, for clients that name
//! none, such as FleetLock's) is the hidden key `/_shoal/locks/<name>/_limit`:
//! hidden keys are not listed, so it never counts as a holder, and no holder can
//! be called `_limit` since holder names never start with `_`.

use std::sync::Arc;
use std::time::Duration;

use api::elections::{CampaignRequest, Leader, ResignRequest};
use api::locks::{AcquireRequest, Holder, LockConfig, LockList, LockState, ReleaseRequest};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::Instant;

use super::api_error;
use crate::keyspace::{ErrorCode, Op, Precondition};
use crate::member::{Member, ServeError};

const LOCKS: &str = "/_shoal/locks";
const ELECTIONS: &str = "/_shoal/elections";
/// The hidden key, inside a lock's directory, holding its configured limit.
const LIMIT_KEY: &str = "_limit";
/// The longest a request may ask to wait for a slot.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Lock, holder and candidate names are one path component of safe characters.
pub(super) fn valid_name(s: &str) -> bool {
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

/// The live holders of the slot directory `root/name`, oldest first; the limit
/// is the one the newest holder acquired with.
fn state(member: &Member, root: &str, name: &str) -> LockState {
    let dir = format!("{root}/{name}");
    let keys = member.keys.read();
    let now = crate::clock::now();
    let mut slots: Vec<(Holder, u32)> = keys
        .children(&dir)
        .into_iter()
        .filter(|(_, entry)| entry.expiration.is_none_or(|at| at > now))
        .map(|(key, entry)| {
            let slot: serde_json::Value =
                serde_json::from_str(entry.value.as_deref().unwrap_or("{}")).unwrap_or_default();
            let limit = slot["limit"]
                .as_u64()
                .and_then(|l| u32::try_from(l).ok())
                .unwrap_or_default();
            let holder = Holder {
                holder: crate::keyspace::path::base(&key).to_owned(),
                value: slot["value"].as_str().unwrap_or_default().to_owned(),
                token: entry.modified_index,
                expiration: entry.expiration,
            };
            (holder, limit)
        })
        .collect();
    slots.sort_by_key(|(h, _)| h.token);
    let configured_limit = keys
        .lookup(&format!("{dir}/{LIMIT_KEY}"))
        .ok()
        .and_then(|e| e.value?.parse().ok());
    LockState {
        name: name.to_owned(),
        limit: slots.last().map_or(0, |(_, limit)| *limit),
        configured_limit,
        holders: slots.into_iter().map(|(h, _)| h).collect(),
    }
}

/// The state of lock `name`.
pub(super) fn lock_state(member: &Member, name: &str) -> LockState {
    state(member, LOCKS, name)
}

/// True when a write failed because every slot is held.
pub(super) fn is_busy(e: &ServeError) -> bool {
    matches!(e, ServeError::Key(k) if k.code == ErrorCode::TestFailed)
}

/// Takes (or renews) `holder`'s slot of lock `name`, waiting up to `wait` for one to free.
pub(super) async fn acquire_slot(
    member: &Member,
    name: &str,
    req: AcquireRequest,
) -> Result<(), ServeError> {
    let op = Op::Acquire {
        dir: format!("{LOCKS}/{name}"),
        holder: req.holder,
        limit: req.limit,
        ttl: req.ttl,
        value: req.value,
    };
    take(member, op, Duration::from_secs(req.wait)).await
}

/// Gives back `holder`'s slot of lock `name`; `Ok(false)` when it held none.
pub(super) async fn release_slot(
    member: &Member,
    name: &str,
    holder: &str,
) -> Result<bool, ServeError> {
    give_back(member, LOCKS, name, holder).await
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
#[utoipa::path(
    get,
    path = "/api/v1/locks",
    tag = "locks",
    responses(
        (status = 200, description = "Every lock with holders", body = api::locks::LockList),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/locks/{name}",
    tag = "locks",
    params(("name" = String, Path, description = "The lock's name")),
    responses(
        (status = 200, description = "The lock's state", body = api::locks::LockState),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
    )
)]
pub async fn show(State(member): State<Arc<Member>>, Path(name): Path<String>) -> Response {
    if let Err(r) = check(&[("lock", &name)]) {
        return *r;
    }
    Json(state(&member, LOCKS, &name)).into_response()
}

/// `PUT /api/v1/locks/{name}`: sets the limit of clients that name none (FleetLock).
#[utoipa::path(
    put,
    path = "/api/v1/locks/{name}",
    tag = "locks",
    params(("name" = String, Path, description = "The lock's name")),
    request_body = api::locks::LockConfig,
    responses(
        (status = 200, description = "The lock's state", body = api::locks::LockState),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn configure(
    State(member): State<Arc<Member>>,
    Path(name): Path<String>,
    req: Result<Json<LockConfig>, JsonRejection>,
) -> Response {
    let req = match body(req) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if let Err(r) = check(&[("lock", &name)]) {
        return *r;
    }
    if req.limit == 0 {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be at least 1",
        );
    }
    let op = Op::Put {
        key: format!("{LOCKS}/{name}/{LIMIT_KEY}"),
        value: Some(req.limit.to_string()),
        ttl: None,
        refresh: false,
        cond: Precondition::default(),
    };
    match member.write(op).await {
        Ok(_) => Json(state(&member, LOCKS, &name)).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `POST /api/v1/locks/{name}/acquire`: 200 with the lock's state, or 409 `lock_busy`.
#[utoipa::path(
    post,
    path = "/api/v1/locks/{name}/acquire",
    tag = "locks",
    params(("name" = String, Path, description = "The lock's name")),
    request_body = api::locks::AcquireRequest,
    responses(
        (status = 200, description = "Held; the lock's state", body = api::locks::LockState),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 409, description = "All slots are held; code `lock_busy`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
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
    let limit = req.limit;
    match acquire_slot(&member, &name, req).await {
        Ok(()) => Json(state(&member, LOCKS, &name)).into_response(),
        Err(e) if is_busy(&e) => api_error(
            StatusCode::CONFLICT,
            "lock_busy",
            busy_message(&lock_state(&member, &name), limit),
        ),
        Err(e) => unavailable(&e),
    }
}

/// Why an acquire was refused: who holds the lock.
pub(super) fn busy_message(s: &LockState, limit: u32) -> String {
    let who: Vec<&str> = s.holders.iter().map(|h| h.holder.as_str()).collect();
    format!(
        "lock {} is held by {} of {limit}: {}",
        s.name,
        who.len(),
        who.join(", ")
    )
}

/// `POST /api/v1/locks/{name}/release`: 200, or 404 `not_held`. Any client may
/// free any holder's slot: this is also the administrator's force-release.
#[utoipa::path(
    post,
    path = "/api/v1/locks/{name}/release",
    tag = "locks",
    params(("name" = String, Path, description = "The lock's name")),
    request_body = api::locks::ReleaseRequest,
    responses(
        (status = 200, description = "Released; the lock's state", body = api::locks::LockState),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 404, description = "The holder does not hold it; code `not_held`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
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
    match release_slot(&member, &name, &req.holder).await {
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
#[utoipa::path(
    get,
    path = "/api/v1/elections/{name}",
    tag = "elections",
    params(("name" = String, Path, description = "The election's name")),
    responses(
        (status = 200, description = "The leader", body = api::elections::Leader),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 404, description = "Nobody leads; code `no_leader`", body = api::error::ApiErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/elections/{name}/campaign",
    tag = "elections",
    params(("name" = String, Path, description = "The election's name")),
    request_body = api::elections::CampaignRequest,
    responses(
        (status = 200, description = "The candidate leads", body = api::elections::Leader),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 409, description = "Another candidate leads; code `election_lost`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/elections/{name}/resign",
    tag = "elections",
    params(("name" = String, Path, description = "The election's name")),
    request_body = api::elections::ResignRequest,
    responses(
        (status = 200, description = "Resigned"),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 404, description = "The candidate does not lead; code `not_leader`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
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
