//! Authentication, authorization and the audit log on the client port;
//! `/api/v1/tokens` and `/api/v1/audit`.
//!
//! [`require`] is the outermost layer of the client router: it takes the
//! token from `Authorization: Bearer <token>` or HTTP Basic (the password is
//! the token, the user name is free, as etcd v2 clients send it), looks it
//! up (`crate::auth::Auth`) and asks `crate::auth::policy::authorize`.
//! No or an unknown token: 401; too few rights: 403; both with the reason,
//! as etcd v2's error 110 on `/v2/keys`, as the `/api/v1` error body on
//! `/api/*`, as FleetLock's on `/v1/*`, and as `{"message":...}` elsewhere.
//!
//! Node tokens' writes that depend on content are checked here: the body
//! of a state write, lock call, FleetLock call or check-in must name the
//! token's machine, and a state may be deleted only if the stored one is
//! that machine's. Keys requests are parsed exactly as `keys::handle` will
//! parse them, so the key checked is the key written.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::Utc;
use futures::StreamExt as _;
use percent_encoding::percent_decode_str;

use super::api_error;
use super::form::{self, Form};
use super::keys::KeyRequest;
use crate::auth::audit::{self, Who};
use crate::auth::limits::{Limited, WatchSlot};
use crate::auth::policy::{self, Access, Check, Decision, Subject};
use crate::auth::{Auth, TokenError, MEMBER_ID};
use crate::keyspace::ErrorCode;
use crate::member::ServeError;

/// State of the [`require`] layer.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Token lookup and records.
    pub auth: Arc<Auth>,
    /// Largest body read for a check (the body limit of the routes behind).
    pub max_body: usize,
}

/// `/api/v1/tokens`: `GET` lists, `POST` creates, `DELETE /{id}` revokes (admins only, by policy).
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/api/v1/tokens", get(list).post(create))
        .route("/api/v1/tokens/{id}", delete(revoke))
        .route("/api/v1/audit", get(audit_log))
        .with_state(auth)
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "auth",
    responses(
        (status = 200, description = "Every token (without secrets); admins only", body = api::auth::TokenList),
    )
)]
async fn list(State(auth): State<Arc<Auth>>) -> Json<api::auth::TokenList> {
    Json(api::auth::TokenList {
        tokens: auth.list(),
    })
}

/// `limit` of `GET /api/v1/audit` (default 100, at most the log's bound).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "auth",
    params(AuditQuery),
    responses(
        (status = 200, description = "The newest audit entries, newest first; admins only", body = api::auth::AuditLog),
    )
)]
async fn audit_log(
    State(auth): State<Arc<Auth>>,
    Query(q): Query<AuditQuery>,
) -> Json<api::auth::AuditLog> {
    let limit = q.limit.unwrap_or(100).min(audit::MAX_AUDIT);
    Json(api::auth::AuditLog {
        entries: audit::newest(auth.member(), limit),
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "auth",
    request_body = api::auth::CreateToken,
    responses(
        (status = 201, description = "The new token, its secret shown once; admins only", body = api::auth::CreatedToken),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
async fn create(
    State(auth): State<Arc<Auth>>,
    body: Result<Json<api::auth::CreateToken>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    match auth.create(req).await {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(e) => token_error(&e),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "auth",
    params(("id" = String, Path, description = "The token id")),
    responses(
        (status = 200, description = "The revoked token; admins only", body = api::auth::TokenInfo),
        (status = 404, description = "No such token; code `not_found`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
async fn revoke(State(auth): State<Arc<Auth>>, Path(id): Path<String>) -> Response {
    match auth.revoke(&id).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => token_error(&e),
    }
}

fn token_error(e: &TokenError) -> Response {
    match e {
        TokenError::BadRequest(m) => api_error(StatusCode::BAD_REQUEST, "bad_request", m.clone()),
        TokenError::NotFound(_) => api_error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        TokenError::Serve(ServeError::Key(k)) if k.code == ErrorCode::NodeExist => api_error(
            StatusCode::CONFLICT,
            "exists",
            "a token with this id exists; try again",
        ),
        TokenError::Serve(s) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            s.to_string(),
        ),
    }
}

/// The token a request presents: `Ok(None)` without an `Authorization` header.
fn presented(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Some(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("the Basic credentials are not base64 of user:token")?;
        let (_, password) = decoded
            .split_once(':')
            .ok_or("the Basic credentials are not user:token")?;
        if !password.is_empty() {
            return Ok(Some(password.to_owned()));
        }
    }
    Err("the Authorization header must be `Bearer <token>` or Basic with the token as password")
}

/// Which error shape an answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Etcd,
    Api,
    FleetLock,
    Message,
}

fn shape(path: &str) -> Shape {
    if policy::key_of(path).is_some() {
        Shape::Etcd
    } else if path.starts_with("/api/") {
        Shape::Api
    } else if path.starts_with("/v1/") {
        Shape::FleetLock
    } else {
        Shape::Message
    }
}

/// A 401 or 403 with the reason, in the shape of the API asked.
fn refuse(status: StatusCode, path: &str, reason: &str, index: u64) -> Response {
    let shape = shape(path);
    let mut resp = match shape {
        Shape::Etcd => {
            let body = api::error::EtcdError {
                error_code: 110,
                message: "The request requires user authentication".into(),
                cause: reason.to_owned(),
                index,
            };
            let mut resp = (status, Json(body)).into_response();
            resp.headers_mut()
                .insert("X-Etcd-Index", HeaderValue::from(index));
            resp
        }
        Shape::Api => {
            let code = if status == StatusCode::UNAUTHORIZED {
                "unauthenticated"
            } else {
                "forbidden"
            };
            api_error(status, code, reason)
        }
        Shape::FleetLock => {
            let kind = if status == StatusCode::UNAUTHORIZED {
                "unauthenticated"
            } else {
                "forbidden"
            };
            let body = serde_json::json!({ "kind": kind, "value": reason });
            (status, Json(body)).into_response()
        }
        Shape::Message => (status, Json(serde_json::json!({ "message": reason }))).into_response(),
    };
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if shape == Shape::Api {
            "Bearer realm=\"shoal\""
        } else {
            "Basic realm=\"shoal\""
        };
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    resp
}

/// The layer: passes public and permitted requests on, refuses the others,
/// and, with auth on, hands every write it passed or refused (401, 403) to
/// the audit log.
pub async fn require(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let mut who = Who::Unauthenticated;
    if !guard.auth.enabled() || method == Method::GET || method == Method::HEAD {
        return guarded(&guard, req, next, &mut who).await;
    }
    let path = percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let resp = guarded(&guard, req, next, &mut who).await;
    if audit::audited(&method, resp.status()) {
        guard.auth.audit(audit::entry(
            &who,
            &method,
            &path,
            resp.status(),
            Utc::now(),
        ));
    }
    resp
}

/// [`require`] without the audit: sets `who` once the caller is known.
async fn guarded(guard: &Guard, req: Request, next: Next, who: &mut Who) -> Response {
    let auth = &guard.auth;
    if !auth.enabled() {
        return next.run(req).await;
    }
    let raw_path = req.uri().path().to_owned();
    let decoded = percent_decode_str(&raw_path)
        .decode_utf8_lossy()
        .into_owned();
    if policy::is_public(req.method(), &decoded) {
        return next.run(req).await;
    }
    let index = || auth.member().keys.read().index();
    let principal = match presented(req.headers()) {
        Ok(Some(token)) => match auth.authenticate(&token) {
            Some(p) => p,
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    &decoded,
                    "unknown or revoked token",
                    index(),
                )
            }
        },
        Ok(None) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                &decoded,
                "no credentials: send Authorization: Bearer <token> (or HTTP Basic with the token as password)",
                index(),
            )
        }
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, &decoded, why, index()),
    };
    *who = Who::Token(principal.clone());
    let limited = principal.id != MEMBER_ID;
    if limited {
        if let Err(e) = auth.limits().admit(&principal.id) {
            return too_many(&decoded, &e, index());
        }
    }
    let subject = principal.subject();
    let method = req.method().clone();

    // Keys requests: buffer the (small, limited) body and parse as the handler will.
    let (req, keys) = if raw_path == "/v2/keys" || raw_path.starts_with("/v2/keys/") {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, guard.max_body).await {
            Ok(b) => b,
            Err(_) => return too_large(guard.max_body),
        };
        let raw_key = raw_path.strip_prefix("/v2/keys").unwrap_or("/");
        let parsed = form::decode(&raw_key.replace('+', "%2B"))
            .and_then(|key| Form::parse(&bytes, parts.uri.query()).map(|f| (key, f)))
            .and_then(|(key, f)| KeyRequest::parse(&method, &key, &f));
        // On a parse error the handler answers the same etcd error without
        // touching the store; the cleaned key is authorized all the same.
        (
            Request::from_parts(parts, Body::from(bytes)),
            Some(parsed.ok()),
        )
    } else {
        (req, None)
    };
    let (path, recursive_watch) = match &keys {
        Some(Some(k)) => (format!("/v2/keys{}", k.key), k.wait && k.recursive),
        Some(None) => {
            let key = crate::keyspace::path::clean(decoded.strip_prefix("/v2/keys").unwrap_or("/"));
            (format!("/v2/keys{key}"), false)
        }
        // An event stream is a recursive watch of its prefix (default `/_shoal`).
        None if decoded == "/api/v1/events" => match events_prefix(req.uri().query()) {
            Some(prefix) => (format!("/v2/keys{prefix}"), true),
            None => (decoded.clone(), false),
        },
        None => (decoded.clone(), false),
    };
    let watching = match &keys {
        Some(Some(k)) => k.wait,
        Some(None) => false,
        None => decoded == "/api/v1/events",
    };
    let slot = if watching && limited {
        match auth.limits().watch(&principal.id) {
            Ok(slot) => Some(slot),
            Err(e) => return too_many(&decoded, &e, index()),
        }
    } else {
        None
    };
    // The slot is held until the answer's body ends: a long poll's or a stream's.
    let run = |req| async move { held(next.run(req).await, slot) };
    let access = Access {
        method: &method,
        path: &path,
        recursive_watch,
    };
    let check = match policy::authorize(subject, &access) {
        Decision::Allow => return run(req).await,
        Decision::Deny(why) => return refuse(StatusCode::FORBIDDEN, &decoded, &why, index()),
        Decision::Check(check) => check,
    };
    let Subject::Node(machine) = subject else {
        return refuse(StatusCode::FORBIDDEN, &decoded, "not permitted", index());
    };
    let machine = machine.to_owned();
    let (req, passed) = match (check, keys) {
        (Check::StateValue, Some(Some(k))) => {
            let ok = k
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str::<api::fleet::InstanceState>(v).ok())
                .is_some_and(|s| s.machine_id == machine);
            (req, ok)
        }
        (Check::StoredState, Some(Some(k))) => {
            let ok = auth.may_delete_state(&k.key, &machine);
            (req, ok)
        }
        (Check::LockHolder | Check::FleetLockId | Check::CheckIn, None) => {
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, guard.max_body).await {
                Ok(b) => b,
                Err(_) => return too_large(guard.max_body),
            };
            let ok = body_names(check, &bytes, &machine);
            (Request::from_parts(parts, Body::from(bytes)), ok)
        }
        _ => (req, false),
    };
    if passed {
        return run(req).await;
    }
    let why = match check {
        Check::StateValue => {
            format!("a node token writes only states whose machine_id is {machine}")
        }
        Check::StoredState => format!("this state was not reported by machine {machine}"),
        Check::LockHolder => {
            format!("a node token takes and releases lock slots only as holder {machine}")
        }
        Check::FleetLockId => {
            format!("a node token speaks FleetLock only with client_params.id {machine}")
        }
        Check::CheckIn => format!("a node token checks in only as machine_id {machine}"),
    };
    refuse(StatusCode::FORBIDDEN, &decoded, &why, index())
}

/// `resp` with its body holding `slot` (if any) until the body is done or dropped.
fn held(resp: Response, slot: Option<WatchSlot>) -> Response {
    let Some(slot) = slot else {
        return resp;
    };
    resp.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _open = &slot;
            chunk
        }))
    })
}

/// A 429 for a limited token, in the shape of the API asked, with `Retry-After`
/// when the rate is the limit.
fn too_many(path: &str, why: &Limited, index: u64) -> Response {
    let reason = why.to_string();
    let mut resp = match shape(path) {
        Shape::Etcd => {
            let body = api::error::EtcdError {
                error_code: 429,
                message: "Too many requests".into(),
                cause: reason,
                index,
            };
            (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
        }
        Shape::Api => api_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", reason),
        Shape::FleetLock => {
            let body = serde_json::json!({ "kind": "too_many_requests", "value": reason });
            (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
        }
        Shape::Message => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(serde_json::json!({ "message": reason })),
        )
            .into_response(),
    };
    if let Limited::Rate { retry_after, .. } = why {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

/// The cleaned `prefix` of an `/api/v1/events` query, decoded as the handler's `Query` does.
fn events_prefix(query: Option<&str>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Q {
        prefix: Option<String>,
    }
    let q: Q = serde_urlencoded::from_str(query.unwrap_or_default()).ok()?;
    q.prefix.map(|p| crate::keyspace::path::clean(&p))
}

/// True when the JSON body names `machine` where the check looks.
fn body_names(check: Check, body: &Bytes, machine: &str) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let named = match check {
        Check::LockHolder => &value["holder"],
        Check::FleetLockId => &value["client_params"]["id"],
        Check::CheckIn => &value["machine_id"],
        Check::StateValue | Check::StoredState => return false,
    };
    named.as_str() == Some(machine)
}

fn too_large(max_body: usize) -> Response {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body larger than {max_body} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        assert_eq!(presented(&HeaderMap::new()), Ok(None));
        assert_eq!(presented(&headers("Bearer abc")), Ok(Some("abc".into())));
        assert_eq!(presented(&headers("bearer  abc ")), Ok(Some("abc".into())));
        let basic = base64::engine::general_purpose::STANDARD.encode("root:s3cret:x");
        assert_eq!(
            presented(&headers(&format!("Basic {basic}"))),
            Ok(Some("s3cret:x".into()))
        );
        assert!(presented(&headers("Basic !!!")).is_err());
        let no_password = base64::engine::general_purpose::STANDARD.encode("root:");
        assert!(presented(&headers(&format!("Basic {no_password}"))).is_err());
        assert!(presented(&headers("Token abc")).is_err());
        assert!(presented(&headers("Bearer")).is_err());
    }

    #[test]
    fn bodies_must_name_the_machine() {
        let m = "m1";
        let body = |s: &str| Bytes::from(s.to_owned());
        assert!(body_names(
            Check::LockHolder,
            &body(r#"{"holder":"m1","ttl":5}"#),
            m
        ));
        assert!(!body_names(
            Check::LockHolder,
            &body(r#"{"holder":"m2"}"#),
            m
        ));
        assert!(!body_names(Check::LockHolder, &body("not json"), m));
        assert!(body_names(
            Check::FleetLockId,
            &body(r#"{"client_params":{"id":"m1","group":"default"}}"#),
            m
        ));
        assert!(!body_names(Check::CheckIn, &body(r#"{"machine_id":1}"#), m));
        assert!(body_names(
            Check::CheckIn,
            &body(r#"{"machine_id":"m1"}"#),
            m
        ));
    }

    #[test]
    fn event_prefixes_are_decoded_and_cleaned() {
        assert_eq!(events_prefix(None), None);
        assert_eq!(
            events_prefix(Some("prefix=%2F_auth")).as_deref(),
            Some("/_auth")
        );
        assert_eq!(
            events_prefix(Some("x=1&prefix=/a/../_auth/")).as_deref(),
            Some("/_auth")
        );
        assert_eq!(events_prefix(Some("prefix=")).as_deref(), Some("/"));
    }

    #[test]
    fn refusals_take_each_api_shape() {
        let r = refuse(StatusCode::UNAUTHORIZED, "/v2/keys/a", "no", 7);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(shape("/api/v1/units"), Shape::Api);
        assert_eq!(shape("/v1/pre-reboot"), Shape::FleetLock);
        assert_eq!(shape("/v2/members"), Shape::Message);
        assert_eq!(shape("/v2/keys"), Shape::Etcd);
    }
}
