//! HTTP: the only module that knows HTTP. The client router serves etcd's v2
//! API and Shoal's `/api/v1`; the peer router serves raft and leader-only
//! calls between members. Peers never reach the client port and clients have
//! no business on the peer port.

pub mod auth;
pub mod dashboard;
pub mod events;
pub mod fleet;
pub mod fleetlock;
pub mod form;
pub mod journals;
pub mod keys;
pub mod locks;
pub mod members;
pub mod openapi;
pub mod peer;
pub mod stats;
pub mod updates;

use std::path::Path;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use tower_http::limit::RequestBodyLimitLayer;

use crate::keyspace::{ErrorCode, KeyError};
use crate::member::Member;
use crate::updates::Updates;

/// Routes on the client port. Payload uploads stream to disk and journal
/// answers stream through, both outside the body limit; the auth layer
/// (`auth::require`) is outermost, so it covers them too.
pub fn client_router(
    member: Arc<Member>,
    max_body: usize,
    updates: Arc<Updates>,
    pkg_dir: &Path,
    auth: Arc<crate::auth::Auth>,
) -> Router {
    let dashboard = dashboard::router(member.clone(), updates.clone(), pkg_dir);
    let journal_answers = Router::new()
        .route("/api/v1/journals/{machine}/{id}", post(journals::answer))
        .with_state(member.clone());
    Router::new()
        .route("/v2/keys", any(keys::handle))
        .route("/v2/keys/", any(keys::handle))
        .route("/v2/keys/{*key}", any(keys::handle))
        .route("/v2/members", get(members::list).post(members::add))
        .route("/v2/members/leader", get(members::leader))
        .route("/v2/machines", get(members::machines))
        .route("/v2/members/{id}", axum::routing::delete(members::remove))
        .route("/version", get(stats::version))
        .route("/health", get(stats::health))
        .route("/v2/stats/self", get(stats::self_stats))
        .route("/v2/stats/leader", get(stats::leader_stats))
        .route("/v2/stats/store", get(stats::store_stats))
        .route("/api/v1/machines", get(fleet::machines))
        .route("/api/v1/machines/{id}", get(fleet::machine))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/units", get(fleet::units).post(fleet::submit))
        .route(
            "/api/v1/units/{name}",
            get(fleet::unit).delete(fleet::destroy),
        )
        .route("/api/v1/units/{name}/start", post(fleet::start))
        .route("/api/v1/units/{name}/journal", get(journals::journal))
        .route("/api/v1/units/{name}/stop", post(fleet::stop))
        .route("/api/v1/locks", get(locks::list))
        .route(
            "/api/v1/locks/{name}",
            get(locks::show).put(locks::configure),
        )
        .route("/api/v1/locks/{name}/acquire", post(locks::acquire))
        .route("/api/v1/locks/{name}/release", post(locks::release))
        .route("/v1/pre-reboot", post(fleetlock::pre_reboot))
        .route("/v1/steady-state", post(fleetlock::steady_state))
        .route("/api/v1/elections/{name}", get(locks::leader))
        .route("/api/v1/elections/{name}/campaign", post(locks::campaign))
        .route("/api/v1/elections/{name}/resign", post(locks::resign))
        .route("/api/v1/openapi.json", get(openapi::document))
        .with_state(member)
        .merge(updates::router(updates.clone()))
        .merge(auth::router(auth.clone()))
        .merge(dashboard)
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            too_large_as_json(req, next, max_body)
        }))
        .merge(updates::upload_router(updates))
        .merge(journal_answers)
        .layer(middleware::from_fn_with_state(
            auth::Guard { auth, max_body },
            auth::require,
        ))
}

/// An `/api/v1` error answer: `{"error":{"code":...,"message":...}}` with `status`.
pub fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let error = api::error::ApiError {
        code: code.into(),
        message: message.into(),
    };
    (status, Json(api::error::ApiErrorBody { error })).into_response()
}

/// Rewrites the body-limit layer's plain-text 413 into the JSON error body of
/// the API the request was for.
async fn too_large_as_json(req: Request, next: Next, max_body: usize) -> Response {
    let etcd_style = !req.uri().path().starts_with("/api/");
    let resp = next.run(req).await;
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return resp;
    }
    let message = format!("request body larger than {max_body} bytes");
    if etcd_style {
        let body = KeyError::new(ErrorCode::InvalidForm, message, 0).to_wire();
        (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
    } else {
        api_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
}

/// Routes on the peer port, guarded by the cluster token.
pub fn peer_router(member: Arc<Member>, token: String) -> Router {
    peer::router(member, token)
}
