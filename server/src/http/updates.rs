//! `/api/v1/updates`: payload upload and download, channels, agent check-ins,
//! the machines' update states and the update history (`crate::updates` decides).
//!
//! Uploads stream the request body to disk, so their routes (`upload_router`)
//! sit outside the JSON body limit; every other route is in `router`.

use std::sync::Arc;

use api::updates::{ChannelUpdate, CheckIn, HaltRequest, UploadQuery};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::api_error;
use crate::updates::replicate::LOCAL_ONLY_HEADER;
use crate::updates::{Location, UpdateError, Updates};

/// Most history events one request returns.
const MAX_HISTORY: usize = 10_000;

/// Longest reason a manual halt may give, in bytes.
const MAX_HALT_REASON: usize = 1024;

/// The reason of a halt that gives none.
const DEFAULT_HALT_REASON: &str = "halted by an operator";

/// The routes that read JSON bodies (the caller applies the body limit).
pub fn router(updates: Arc<Updates>) -> Router {
    Router::new()
        .route("/api/v1/updates/payloads/{sha256}", get(download))
        .route("/api/v1/updates/channels", get(channels))
        .route(
            "/api/v1/updates/channels/{name}",
            get(channel).put(update_channel),
        )
        .route("/api/v1/updates/channels/{name}/pause", post(pause))
        .route("/api/v1/updates/channels/{name}/resume", post(resume))
        .route("/api/v1/updates/channels/{name}/halt", post(halt))
        .route("/api/v1/updates/checkin", post(checkin))
        .route("/api/v1/updates/machines", get(machines))
        .route("/api/v1/updates/history", get(history))
        .with_state(updates)
}

/// The upload route (and the listing on the same path), without a body limit.
pub fn upload_router(updates: Arc<Updates>) -> Router {
    Router::new()
        .route("/api/v1/updates/payloads", get(payloads).post(upload))
        .with_state(updates)
}

fn error(e: &UpdateError) -> Response {
    let (status, code) = match e {
        UpdateError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        UpdateError::BadSignature(_) => (StatusCode::BAD_REQUEST, "bad_signature"),
        UpdateError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        UpdateError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        UpdateError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        UpdateError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
        UpdateError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        UpdateError::Unreachable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    api_error(status, code, e.to_string())
}

fn answer<T: serde::Serialize>(r: Result<T, UpdateError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(&e),
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// `POST /api/v1/updates/payloads?version=V&signature=S[&channel=C]` with the
/// payload as the body: 201 with its metadata, 200 when the version already
/// holds these bytes, 400 `bad_signature`, 409 `conflict` for other bytes.
#[utoipa::path(
    post,
    path = "/api/v1/updates/payloads",
    tag = "updates",
    params(api::updates::UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The payload"),
    responses(
        (status = 200, description = "The version already holds these bytes", body = api::updates::PayloadMeta),
        (status = 201, description = "Stored", body = api::updates::PayloadMeta),
        (status = 400, description = "Bad query or signature; code `bad_request` or `bad_signature`", body = api::error::ApiErrorBody),
        (status = 409, description = "The version holds other bytes; code `conflict`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn upload(
    State(updates): State<Arc<Updates>>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    body: axum::body::Body,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return bad_request(format!("{} (need version and signature)", e.body_text())),
    };
    match updates.upload(query, body.into_data_stream()).await {
        Ok((meta, true)) => (StatusCode::CREATED, Json(meta)).into_response(),
        Ok((meta, false)) => Json(meta).into_response(),
        Err(e) => error(&e),
    }
}

/// `GET /api/v1/updates/payloads`: every payload's metadata.
#[utoipa::path(
    get,
    path = "/api/v1/updates/payloads",
    tag = "updates",
    responses(
        (status = 200, description = "Every payload's metadata", body = [api::updates::PayloadMeta]),
    )
)]
pub async fn payloads(State(updates): State<Arc<Updates>>) -> Response {
    Json(updates.payloads()).into_response()
}

/// `GET /api/v1/updates/payloads/{sha256}`: the bytes, with Range support;
/// a 307 to a member holding them while this one does not (yet). With the
/// `x-shoal-local-only` header (members asking each other): 404 instead.
#[utoipa::path(
    get,
    path = "/api/v1/updates/payloads/{sha256}",
    tag = "updates",
    params(("sha256" = String, Path, description = "The payload's SHA-256, hex")),
    responses(
        (status = 200, description = "The payload bytes (Range supported)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 307, description = "Another member holds the bytes"),
        (status = 404, description = "No such payload; code `not_found`", body = api::error::ApiErrorBody),
    )
)]
pub async fn download(
    State(updates): State<Arc<Updates>>,
    Path(sha256): Path<String>,
    req: Request,
) -> Response {
    let local_only = req.headers().contains_key(LOCAL_ONLY_HEADER);
    match updates.locate(&sha256, local_only).await {
        Ok(Location::Here(path)) => match ServeFile::new(path).oneshot(req).await {
            Ok(resp) => resp.map(axum::body::Body::new),
            Err(never) => match never {},
        },
        Ok(Location::Member(url)) => Redirect::temporary(&format!(
            "{}/api/v1/updates/payloads/{sha256}",
            url.trim_end_matches('/')
        ))
        .into_response(),
        Err(e) => error(&e),
    }
}

/// `GET /api/v1/updates/channels`.
#[utoipa::path(
    get,
    path = "/api/v1/updates/channels",
    tag = "updates",
    responses(
        (status = 200, description = "Every channel", body = [api::updates::Channel]),
    )
)]
pub async fn channels(State(updates): State<Arc<Updates>>) -> Response {
    Json(updates.channels()).into_response()
}

/// `GET /api/v1/updates/channels/{name}`, or 404 `not_found`.
#[utoipa::path(
    get,
    path = "/api/v1/updates/channels/{name}",
    tag = "updates",
    params(("name" = String, Path, description = "The channel's name")),
    responses(
        (status = 200, description = "The channel", body = api::updates::Channel),
        (status = 404, description = "No such channel; code `not_found`", body = api::error::ApiErrorBody),
    )
)]
pub async fn channel(State(updates): State<Arc<Updates>>, Path(name): Path<String>) -> Response {
    answer(updates.channel(&name))
}

/// `PUT /api/v1/updates/channels/{name}` with a [`ChannelUpdate`]: creates or changes it.
#[utoipa::path(
    put,
    path = "/api/v1/updates/channels/{name}",
    tag = "updates",
    params(("name" = String, Path, description = "The channel's name")),
    request_body = api::updates::ChannelUpdate,
    responses(
        (status = 200, description = "The channel as changed", body = api::updates::Channel),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn update_channel(
    State(updates): State<Arc<Updates>>,
    Path(name): Path<String>,
    body: Result<Json<ChannelUpdate>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(u)) => answer(updates.update_channel(&name, &u).await),
        Err(e) => bad_request(e.body_text()),
    }
}

/// `POST /api/v1/updates/channels/{name}/pause`.
#[utoipa::path(
    post,
    path = "/api/v1/updates/channels/{name}/pause",
    tag = "updates",
    params(("name" = String, Path, description = "The channel's name")),
    responses(
        (status = 200, description = "Paused", body = api::updates::Channel),
        (status = 404, description = "No such channel; code `not_found`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn pause(State(updates): State<Arc<Updates>>, Path(name): Path<String>) -> Response {
    answer(updates.set_paused(&name, true).await)
}

/// `POST /api/v1/updates/channels/{name}/resume`: also clears a halt.
#[utoipa::path(
    post,
    path = "/api/v1/updates/channels/{name}/resume",
    tag = "updates",
    params(("name" = String, Path, description = "The channel's name")),
    responses(
        (status = 200, description = "Resumed", body = api::updates::Channel),
        (status = 404, description = "No such channel; code `not_found`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn resume(State(updates): State<Arc<Updates>>, Path(name): Path<String>) -> Response {
    answer(updates.set_paused(&name, false).await)
}

/// `POST /api/v1/updates/channels/{name}/halt` with an optional [`HaltRequest`]:
/// halts the rollout (until a resume); a channel already halted keeps its reason.
#[utoipa::path(
    post,
    path = "/api/v1/updates/channels/{name}/halt",
    tag = "updates",
    params(("name" = String, Path, description = "The channel's name")),
    request_body(content = Option<api::updates::HaltRequest>, description = "Optional; an empty body halts with a default reason"),
    responses(
        (status = 200, description = "Halted", body = api::updates::Channel),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 404, description = "No such channel; code `not_found`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn halt(
    State(updates): State<Arc<Updates>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        HaltRequest::default()
    } else {
        match serde_json::from_slice::<HaltRequest>(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("halt body: {e}")),
        }
    };
    let reason = request
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_HALT_REASON.to_owned());
    if reason.len() > MAX_HALT_REASON || reason.chars().any(char::is_control) {
        return bad_request(format!(
            "reason must be at most {MAX_HALT_REASON} bytes on one line"
        ));
    }
    answer(updates.halt(&name, reason).await)
}

/// `POST /api/v1/updates/checkin` with a [`CheckIn`]: a `CheckInReply`.
#[utoipa::path(
    post,
    path = "/api/v1/updates/checkin",
    tag = "updates",
    request_body = api::updates::CheckIn,
    responses(
        (status = 200, description = "What the machine should do", body = api::updates::CheckInReply),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn checkin(
    State(updates): State<Arc<Updates>>,
    body: Result<Json<CheckIn>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(ci)) => answer(updates.checkin(ci).await),
        Err(e) => bad_request(e.body_text()),
    }
}

/// Query of `GET /api/v1/updates/machines`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MachinesQuery {
    /// Only machines on this channel.
    pub channel: Option<String>,
}

/// `GET /api/v1/updates/machines[?channel=C]`: every machine's last check-in.
#[utoipa::path(
    get,
    path = "/api/v1/updates/machines",
    tag = "updates",
    params(MachinesQuery),
    responses(
        (status = 200, description = "Every machine's last check-in", body = [api::updates::MachineUpdate]),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
    )
)]
pub async fn machines(
    State(updates): State<Arc<Updates>>,
    query: Result<Query<MachinesQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => Json(updates.machines(q.channel.as_deref())).into_response(),
        Err(e) => bad_request(e.body_text()),
    }
}

/// Query of `GET /api/v1/updates/history`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many of the newest events (default 100).
    pub limit: Option<usize>,
}

/// `GET /api/v1/updates/history[?limit=N]`: the newest N events, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/updates/history",
    tag = "updates",
    params(HistoryQuery),
    responses(
        (status = 200, description = "The newest events, oldest first", body = [api::updates::HistoryEvent]),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
    )
)]
pub async fn history(
    State(updates): State<Arc<Updates>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => {
            let limit = q.limit.unwrap_or(100).min(MAX_HISTORY);
            Json(updates.history(limit)).into_response()
        }
        Err(e) => bad_request(e.body_text()),
    }
}
