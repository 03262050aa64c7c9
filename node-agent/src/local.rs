//! The local endpoint: an HTTP server on `--local-endpoint` (127.0.0.1:4001)
//! that serves the key API to containers on this host by forwarding to the
//! cluster. `/v2/keys/*` goes upstream as is; `/v1/keys/*` (as the seed's
//! example spells it) is rewritten to `/v2/keys/*`. The upstream status,
//! headers and body are streamed back, so long-poll watches work through it.
//!
//! It also serves `GET /api/v1/journal/<instance>[?follow=true&tail=N]`: the
//! logs of this machine's container for that instance (for `journal`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use url::Url;

use crate::docker::Docker;
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

/// Maps a local path to the upstream path, or `None` when it is not forwarded.
pub fn upstream_path(path: &str) -> Option<String> {
    let is_keys = |p: &str, prefix: &str| {
        p == prefix || p.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
    };
    if is_keys(path, "/v2/keys") {
        Some(path.to_owned())
    } else if is_keys(path, "/v1/keys") {
        Some(format!("/v2/keys{}", &path["/v1/keys".len()..]))
    } else {
        None
    }
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
    docker: Option<Docker>,
}

impl Forwarder {
    /// A forwarder to `endpoints` (tried in order while connections fail),
    /// adding `Authorization: Bearer <token>` when the request has none.
    pub fn new(
        endpoints: Vec<Url>,
        token: Option<String>,
        docker: Option<Docker>,
    ) -> Result<Arc<Self>, LocalError> {
        let http = reqwest::Client::builder()
            .connect_timeout(api::client::DEFAULT_CONNECT_TIMEOUT)
            .build()
            .map_err(LocalError::Client)?;
        Ok(Arc::new(Forwarder {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            token,
            docker,
        }))
    }

    async fn forward(&self, req: Request, path: String) -> Response {
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
            url.set_path(&path);
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

    async fn journal(&self, instance: &str, query: Option<&str>) -> Response {
        let Some(docker) = &self.docker else {
            return (StatusCode::SERVICE_UNAVAILABLE, "docker not connected\n").into_response();
        };
        let mut follow = false;
        let mut tail = None;
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("follow", v)) => follow = v == "true" || v == "1",
                Some(("tail", v)) => tail = v.parse().ok(),
                _ => {}
            }
        }
        let containers = match docker.list().await {
            Ok(c) => c,
            Err(e) => {
                return (StatusCode::BAD_GATEWAY, format!("{}\n", error_chain(&e))).into_response()
            }
        };
        let Some(c) = containers
            .iter()
            .filter(|c| c.instance == instance)
            .max_by_key(|c| (c.is_running(), c.started_at))
        else {
            return (
                StatusCode::NOT_FOUND,
                format!("instance {instance} does not run on this machine\n"),
            )
                .into_response();
        };
        let stream = docker
            .logs(&c.id, follow, tail)
            .map(|r| r.map_err(|e| std::io::Error::other(error_chain(&e))));
        Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

async fn handle(State(fwd): State<Arc<Forwarder>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if let Some(instance) = path.strip_prefix("/api/v1/journal/") {
        if req.method() != axum::http::Method::GET {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        let query = req.uri().query().map(str::to_owned);
        return fwd.journal(instance, query.as_deref()).await;
    }
    match upstream_path(&path) {
        Some(upstream) => fwd.forward(req, upstream).await,
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
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
    fn paths_map_to_v2_keys() {
        assert_eq!(upstream_path("/v2/keys").as_deref(), Some("/v2/keys"));
        assert_eq!(
            upstream_path("/v2/keys/a/b").as_deref(),
            Some("/v2/keys/a/b")
        );
        assert_eq!(
            upstream_path("/v1/keys/database").as_deref(),
            Some("/v2/keys/database")
        );
        assert_eq!(upstream_path("/v1/keys").as_deref(), Some("/v2/keys"));
        assert_eq!(upstream_path("/v2/keysx"), None);
        assert_eq!(upstream_path("/v2/members"), None);
        assert_eq!(upstream_path("/"), None);
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
        let fwd = Forwarder::new(endpoints, Some("t0k".into()), None).expect("forwarder");
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
        let r = http
            .get(format!("http://{local}/other"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 404);
        let r = http
            .get(format!("http://{local}/api/v1/journal/web"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 503);
    }
}
