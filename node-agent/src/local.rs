//! The local endpoint: an HTTP server on `--local-endpoint` (127.0.0.1:4001)
//! that serves the key API to containers on this host by forwarding to the
//! cluster. `/v2/keys/*` goes upstream as is; `/v1/keys/*` (as the seed's
//! example spells it) is rewritten to `/v2/keys/*`. The upstream status,
//! headers and body are streamed back, so long-poll watches work through it.
//!
//! Containers see only the keys of the [`Scope`] (`--local-prefix`, default
//! `/`), and never a reserved directory (a top-level name starting with `_`,
//! such as `/_shoal` and `/_auth`), whatever the prefix: the agent's own
//! token stays the agent's. The key is decoded and cleaned as the server
//! does it, checked, and forwarded re-encoded, so the key checked is the key
//! the server sees.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use url::Url;

use crate::lease::error_chain;

/// Largest request body forwarded upstream.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why the local endpoint could not run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("local endpoint failed")]
    Serve(#[source] std::io::Error),
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client")]
    Client(#[source] reqwest::Error),
}

/// The raw (still percent-encoded) key of a local keys path, or `None` when
/// the path is not forwarded.
pub fn raw_key(path: &str) -> Option<&str> {
    ["/v2/keys", "/v1/keys"]
        .iter()
        .find_map(|prefix| match path.strip_prefix(prefix)? {
            "" => Some("/"),
            rest if rest.starts_with('/') => Some(rest),
            _ => None,
        })
}

/// Decodes and cleans a raw key as the server does (`+` stays a plus; `.`,
/// `..` and empty segments go), or `None` when it is not UTF-8.
pub fn clean_key(raw: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The keys the local endpoint serves: those under one prefix, never a
/// reserved top-level directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    prefix: String,
}

impl Scope {
    /// The scope of `prefix` (cleaned); a reserved directory is refused.
    pub fn new(prefix: &str) -> Result<Self, String> {
        let prefix = clean_key(prefix).ok_or_else(|| format!("{prefix:?} is not UTF-8"))?;
        if reserved(&prefix) {
            return Err(format!(
                "{prefix} is reserved (top-level names starting with _ hold the cluster's own state)"
            ));
        }
        Ok(Scope { prefix })
    }

    /// The prefix, cleaned.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `Ok` when containers may reach the cleaned `key`, else why not.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if reserved(key) {
            return Err(format!(
                "{key} is reserved for the cluster; containers see keys under {}",
                self.prefix
            ));
        }
        let within = self.prefix == "/"
            || key == self.prefix
            || key.starts_with(&format!("{}/", self.prefix));
        if within {
            Ok(())
        } else {
            Err(format!(
                "{key} is outside {}, the key prefix this host's containers may use",
                self.prefix
            ))
        }
    }
}

/// True for keys in a top-level directory whose name starts with `_`.
fn reserved(key: &str) -> bool {
    key.trim_start_matches('/').starts_with('_')
}

/// etcd v2's refusal (error 110) with the reason.
fn refused(reason: &str) -> Response {
    let body = api::error::EtcdError {
        error_code: 110,
        message: "The request requires user authentication".into(),
        cause: reason.to_owned(),
        index: 0,
    };
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// Hop-by-hop headers, never forwarded.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Shared state of the local endpoint.
#[derive(Debug)]
pub struct Forwarder {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    preferred: AtomicUsize,
    token: Option<String>,
    scope: Scope,
}

impl Forwarder {
    /// A forwarder to `endpoints` (tried in order while connections fail) of
    /// the keys in `scope`, adding `Authorization: Bearer <token>` when the
    /// request has none; `https` endpoints are verified against `ca` when given.
    pub fn new(
        endpoints: Vec<Url>,
        token: Option<String>,
        scope: Scope,
        ca: Option<&api::tls::TrustedCa>,
    ) -> Result<Arc<Self>, LocalError> {
        let http = api::tls::trusting(reqwest::Client::builder(), ca)
            .connect_timeout(api::client::DEFAULT_CONNECT_TIMEOUT)
            .build()
            .map_err(LocalError::Client)?;
        Ok(Arc::new(Forwarder {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            token,
            scope,
        }))
    }

    /// Forwards a keys request for the cleaned `key` to `/v2/keys<key>`.
    async fn forward(&self, req: Request, key: String) -> Response {
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("cannot read body: {e}\n"))
                    .into_response()
            }
        };
        let query = parts.uri.query().map(str::to_owned);
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(token) = &self.token {
            if !headers.contains_key(header::AUTHORIZATION) {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                    headers.insert(header::AUTHORIZATION, v);
                }
            }
        }
        let n = self.endpoints.len();
        if n == 0 {
            return (StatusCode::BAD_GATEWAY, "no cluster endpoints\n").into_response();
        }
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut last_error = String::new();
        for attempt in 0..n {
            let idx = (start + attempt) % n;
            let mut url = self.endpoints[idx].clone();
            if let Ok(mut segments) = url.path_segments_mut() {
                // Each segment percent-encoded: the server decodes exactly `key`.
                segments.clear().extend(["v2", "keys"]);
                segments.extend(key.split('/').skip(1));
            }
            url.set_query(query.as_deref());
            let sent = self
                .http
                .request(parts.method.clone(), url)
                .headers(headers.clone())
                .body(body.clone())
                .send()
                .await;
            let upstream = match sent {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    last_error = error_chain(&e);
                    continue;
                }
                Err(e) => {
                    return (
                        StatusCode::BAD_GATEWAY,
                        format!("upstream failed: {}\n", error_chain(&e)),
                    )
                        .into_response()
                }
            };
            self.preferred.store(idx, Ordering::Relaxed);
            let mut response = Response::builder().status(upstream.status());
            if let Some(h) = response.headers_mut() {
                for (name, value) in upstream.headers() {
                    if !hop_by_hop(name) {
                        h.append(name.clone(), value.clone());
                    }
                }
            }
            let body = Body::from_stream(upstream.bytes_stream());
            return response
                .body(body)
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
        }
        (
            StatusCode::BAD_GATEWAY,
            format!("no cluster endpoint reachable: {last_error}\n"),
        )
            .into_response()
    }
}

async fn handle(State(fwd): State<Arc<Forwarder>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some(raw) = raw_key(&path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let Some(key) = clean_key(raw) else {
        return refused("the key is not UTF-8");
    };
    match fwd.scope.check(&key) {
        Ok(()) => fwd.forward(req, key).await,
        Err(why) => refused(&why),
    }
}

/// The local endpoint's routes.
pub fn router(fwd: Arc<Forwarder>) -> Router {
    Router::new().fallback(handle).with_state(fwd)
}

/// Binds `addr` (answering the bound address) and serves until `shutdown`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, LocalError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LocalError::Bind { addr, source })
}

/// Serves the local endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    fwd: Arc<Forwarder>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), LocalError> {
    axum::serve(listener, router(fwd))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(LocalError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_keys() {
        assert_eq!(raw_key("/v2/keys"), Some("/"));
        assert_eq!(raw_key("/v2/keys/a/b"), Some("/a/b"));
        assert_eq!(raw_key("/v1/keys/database"), Some("/database"));
        assert_eq!(raw_key("/v1/keys"), Some("/"));
        assert_eq!(raw_key("/v2/keysx"), None);
        assert_eq!(raw_key("/v2/members"), None);
        assert_eq!(raw_key("/"), None);
        assert_eq!(clean_key("/a/./b//c/").as_deref(), Some("/a/b/c"));
        assert_eq!(clean_key("/apps/%2E%2E/_shoal").as_deref(), Some("/_shoal"));
        assert_eq!(clean_key("/a+b%2Fc").as_deref(), Some("/a+b/c"));
        assert_eq!(clean_key("/%FF"), None);
    }

    #[test]
    fn scope_keeps_containers_out_of_the_cluster_state() -> Result<(), String> {
        let all = Scope::new("/")?;
        assert!(all.check("/services/api").is_ok());
        assert!(all.check("/").is_ok());
        assert!(all.check("/_shoal/machines/m1").is_err());
        assert!(all.check("/_auth").is_err());
        let apps = Scope::new("apps/")?;
        assert_eq!(apps.prefix(), "/apps");
        assert!(apps.check("/apps").is_ok());
        assert!(apps.check("/apps/db/url").is_ok());
        assert!(apps.check("/appsx").is_err());
        assert!(apps.check("/").is_err());
        assert!(Scope::new("/_shoal").is_err());
        Ok(())
    }

    /// A tiny upstream that echoes method, path, query, auth and body.
    async fn echo_upstream() -> SocketAddr {
        let app = Router::new().fallback(|req: Request| async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1024).await.unwrap_or_default();
            let auth = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let text = format!(
                "{} {} {} {} {}",
                parts.method,
                parts.uri.path(),
                parts.uri.query().unwrap_or("-"),
                auth,
                String::from_utf8_lossy(&body)
            );
            (StatusCode::CREATED, [("X-Etcd-Index", "42")], text)
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    #[tokio::test]
    async fn forwards_and_rewrites_v1() {
        let upstream = echo_upstream().await;
        // A dead endpoint first: the forwarder falls through to the live one.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dead_addr = dead.local_addr().expect("addr");
        drop(dead);
        let endpoints =
            api::client::parse_endpoints(&format!("http://{dead_addr},http://{upstream}"))
                .expect("endpoints");
        let scope = Scope::new("/").expect("scope");
        let fwd = Forwarder::new(endpoints, Some("t0k".into()), scope, None).expect("forwarder");
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let local = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, fwd, std::future::pending()));

        let http = reqwest::Client::new();
        let r = http
            .put(format!("http://{local}/v1/keys/database?x=1"))
            .form(&[("value", "pg")])
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 201);
        assert_eq!(
            r.headers()
                .get("x-etcd-index")
                .and_then(|v| v.to_str().ok()),
            Some("42")
        );
        assert_eq!(
            r.text().await.expect("body"),
            "PUT /v2/keys/database x=1 Bearer t0k value=pg"
        );
        let r = http
            .get(format!("http://{local}/v2/keys/a"))
            .header("Authorization", "Bearer mine")
            .send()
            .await
            .expect("send");
        assert_eq!(
            r.text().await.expect("body"),
            "GET /v2/keys/a - Bearer mine "
        );
        // Decoded and cleaned before the check, re-encoded after it.
        let r = http
            .get(format!("http://{local}/v2/keys/a/%252E%252E/b%20c/../d"))
            .send()
            .await
            .expect("send");
        assert_eq!(
            r.text().await.expect("body"),
            "GET /v2/keys/a/%252E%252E/d - Bearer t0k "
        );
        for reserved in ["/v2/keys/_shoal/machines/m2", "/v2/keys/x/%2E%2E/_auth"] {
            let r = http
                .put(format!("http://{local}{reserved}"))
                .form(&[("value", "forged")])
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 403, "{reserved}");
        }
        let r = http
            .get(format!("http://{local}/other"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 404);
    }
}
