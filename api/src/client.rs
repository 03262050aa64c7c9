//! A typed async HTTP client for Shoal (and for any etcd v2 server on `/v2/*`).
//!
//! The client holds a list of endpoints and tries them in order, starting from the
//! last one that answered; it moves to the next endpoint only when a connection
//! could not be made, so a request that reached a server is never sent twice.
//! Keys requests are form-encoded as etcd v2 clients send them (DELETE carries its
//! parameters in the query string, as etcd's own Go client does, since Go servers
//! do not read DELETE bodies); `/api/v1` requests carry JSON.
//!
//! Errors keep the server's own codes: etcd's numeric body becomes
//! [`ClientError::Etcd`], Shoal's `{"error":{"code","message"}}` becomes
//! [`ClientError::Api`]. [`Watcher`] turns the long-poll `watch` into an ordered
//! stream that resumes from `modifiedIndex + 1` and re-reads after error 401.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::elections::{CampaignRequest, Leader, ResignRequest};
use crate::error::{ApiErrorBody, EtcdError};
use crate::keys::KeysResponse;
use crate::locks::{AcquireRequest, LockConfig, LockList, LockState, ReleaseRequest};
use crate::members::{AddMember, Health, Member, MemberList, Version};
use crate::tls::{trusting, untrusted_certificate, TrustedCa};

/// Time allowed for any request that is not a long poll (plus any server-side wait).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to open a connection to one endpoint before trying the next.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The endpoint used when none is given, as etcdctl does.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";
/// Header carrying the key space index at the time of an etcd v2 answer.
pub const ETCD_INDEX_HEADER: &str = "X-Etcd-Index";
/// etcd v2 error code: the key does not exist.
pub const ETCD_KEY_NOT_FOUND: u32 = 100;
/// etcd v2 error code: a compare-and-swap/delete condition failed.
pub const ETCD_TEST_FAILED: u32 = 101;
/// etcd v2 error code: the watched index is older than the event history.
pub const ETCD_EVENT_INDEX_CLEARED: u32 = 401;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// etcd v2 error body from `/v2/*`, shown as etcdctl shows it.
    #[error("{}: {} ({}) [{}]", .0.error_code, .0.message, .0.cause, .0.index)]
    Etcd(EtcdError),
    /// Shoal `/api/v1` error body with its stable code.
    #[error("{code}: {message}")]
    Api {
        /// HTTP status of the answer.
        status: u16,
        /// Stable machine-readable code, e.g. `lock_busy`.
        code: String,
        /// Human-readable message.
        message: String,
    },
    /// A non-success answer whose body is neither error shape.
    #[error("HTTP {status}: {message}")]
    Http {
        /// HTTP status of the answer.
        status: u16,
        /// The body (or its `message` field), trimmed.
        message: String,
    },
    /// No endpoint accepted a connection.
    #[error("no endpoint reachable (tried {tried})")]
    Unreachable {
        /// The endpoints tried, comma separated.
        tried: String,
        /// The connection error of the last endpoint tried.
        #[source]
        source: reqwest::Error,
    },
    /// The request reached a server but failed on the way (timeout, reset, body).
    #[error("request to {url} failed")]
    Request {
        /// The URL requested.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// A success answer that could not be understood.
    #[error("invalid answer from {url}: {reason}")]
    InvalidResponse {
        /// The URL requested.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An endpoint that is not an http(s) base URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// The endpoint list was empty.
    #[error("no endpoints given")]
    NoEndpoints,
    /// A token that cannot be sent in a header (control characters).
    #[error("the token holds characters not allowed in a header")]
    InvalidToken,
    /// The HTTP client could not be built (TLS backend setup).
    #[error("cannot build HTTP client")]
    Build(#[source] reqwest::Error),
    /// An endpoint's TLS certificate is not signed by a trusted CA (or not
    /// valid for its name), so no request was sent.
    #[error(
        "the server certificate of {url} was not trusted: {reason} (is --ca-file the CA that signed it?)"
    )]
    Untrusted {
        /// The URL requested.
        url: String,
        /// What the TLS library said about the certificate.
        reason: String,
    },
}

impl ClientError {
    /// The etcd error code, when the server answered with an etcd error body.
    pub fn etcd_code(&self) -> Option<u32> {
        match self {
            ClientError::Etcd(e) => Some(e.error_code),
            _ => None,
        }
    }

    /// The `/api/v1` error code, when the server answered with one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when the server answered at all (the request reached a cluster member).
    pub fn is_server_answer(&self) -> bool {
        matches!(
            self,
            ClientError::Etcd(_) | ClientError::Api { .. } | ClientError::Http { .. }
        )
    }
}

/// A successful `/v2/keys` answer with the index header that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysAnswer {
    /// The JSON body.
    pub body: KeysResponse,
    /// The `X-Etcd-Index` header: the key space index when the answer was made.
    pub etcd_index: u64,
}

/// Options of a keys `GET`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// List a directory's whole subtree.
    pub recursive: bool,
    /// Sort directory listings by key.
    pub sorted: bool,
    /// Linearizable read through the leader.
    pub quorum: bool,
}

/// Options of a keys `PUT`; the `prev_*` fields make it a compare-and-swap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Seconds until the key expires.
    pub ttl: Option<u64>,
    /// `Some(false)`: create only; `Some(true)`: update only.
    pub prev_exist: Option<bool>,
    /// Swap only if the current value is this.
    pub prev_value: Option<String>,
    /// Swap only if the current modified index is this.
    pub prev_index: Option<u64>,
    /// Create a directory instead of a key (the value is ignored).
    pub dir: bool,
    /// Only reset the TTL, without a value and without notifying watchers.
    pub refresh: bool,
}

/// Options of a keys `DELETE`; the `prev_*` fields make it a compare-and-delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete a directory (empty unless `recursive`).
    pub dir: bool,
    /// Delete a directory and everything under it.
    pub recursive: bool,
    /// Delete only if the current value is this.
    pub prev_value: Option<String>,
    /// Delete only if the current modified index is this.
    pub prev_index: Option<u64>,
}

/// Options of a keys long-poll watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch the whole subtree.
    pub recursive: bool,
    /// First index of interest; `None` waits for the next change.
    pub wait_index: Option<u64>,
}

/// Splits etcdctl-style `--endpoints` (comma separated) into base URLs; a bare
/// `host:port` gets `http://`.
pub fn parse_endpoints(list: &str) -> Result<Vec<Url>, ClientError> {
    let endpoints = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_endpoint)
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(ClientError::NoEndpoints);
    }
    Ok(endpoints)
}

fn parse_endpoint(raw: &str) -> Result<Url, ClientError> {
    let invalid = |reason: String| ClientError::InvalidEndpoint {
        endpoint: raw.to_owned(),
        reason,
    };
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment".into()));
    }
    Ok(url)
}

/// The reqwest client behind a [`Client`]: bounded connects, `ca` (if any) as
/// the only trusted roots. No client-wide timeout: watches are long polls;
/// every other request sets its own.
fn http_client(
    connect_timeout: Duration,
    ca: Option<&TrustedCa>,
) -> Result<reqwest::Client, ClientError> {
    trusting(reqwest::Client::builder(), ca)
        .connect_timeout(connect_timeout)
        .build()
        .map_err(ClientError::Build)
}

/// `base` + the given path segments (each percent-encoded); an empty last
/// segment leaves a trailing slash.
fn endpoint_url(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The path segments of `/v2/keys/<key>`; the root (`/` or empty) keeps a trailing slash.
fn keys_segments(key: &str) -> Vec<&str> {
    let mut segments = vec!["v2", "keys"];
    segments.extend(key.split('/').filter(|s| !s.is_empty()));
    if segments.len() == 2 {
        segments.push("");
    }
    segments
}

/// A streamed answer as it is when it succeeded, else its error body decoded.
async fn streamed(
    url: impl std::fmt::Display,
    response: reqwest::Response,
) -> Result<reqwest::Response, ClientError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|source| ClientError::Request {
            url: url.to_string(),
            source,
        })?;
    Err(decode_error(status, &body))
}

/// Turns a non-success answer into the most specific error its body allows.
fn decode_error(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(e) = serde_json::from_slice::<EtcdError>(body) {
        return ClientError::Etcd(e);
    }
    if let Ok(ApiErrorBody { error }) = serde_json::from_slice::<ApiErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        };
    }
    /// etcd's `/v2/members` errors: `{"message":"..."}`.
    #[derive(Deserialize)]
    struct MessageOnly {
        message: String,
    }
    let message = match serde_json::from_slice::<MessageOnly>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let message = if message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned()
    } else {
        message
    };
    ClientError::Http {
        status: status.as_u16(),
        message,
    }
}

fn etcd_index(url: &Url, headers: &HeaderMap) -> Result<u64, ClientError> {
    let invalid = |reason: String| ClientError::InvalidResponse {
        url: url.to_string(),
        reason,
    };
    let value = headers
        .get(ETCD_INDEX_HEADER)
        .ok_or_else(|| invalid(format!("no {ETCD_INDEX_HEADER} header")))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| invalid(format!("bad {ETCD_INDEX_HEADER} header {value:?}")))
}

fn bool_param(v: bool) -> String {
    if v { "true" } else { "false" }.to_owned()
}

/// A raw answer: where it came from, status, headers and body.
struct Answer {
    url: Url,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::InvalidResponse {
            url: self.url.to_string(),
            reason: e.to_string(),
        })
    }

    fn error_unless_success(self) -> Result<Self, ClientError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(decode_error(self.status, &self.body))
        }
    }
}

/// Shared state behind a cheap-to-clone [`Client`].
#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    /// Index of the endpoint that last accepted a connection; tried first.
    preferred: AtomicUsize,
    request_timeout: Duration,
    /// Time allowed to connect, kept to rebuild the HTTP client in [`Client::with_ca`].
    connect_timeout: Duration,
    /// `Authorization: Bearer <token>`, sent with every request when set.
    authorization: Option<HeaderValue>,
}

/// Typed client for a Shoal cluster; clones share connections and endpoint preference.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client for etcdctl-style comma-separated endpoints.
    pub fn new(endpoints: &str) -> Result<Self, ClientError> {
        Self::with_endpoints(parse_endpoints(endpoints)?)
    }

    /// A client for already-parsed endpoint base URLs, tried in the given order.
    pub fn with_endpoints(endpoints: Vec<Url>) -> Result<Self, ClientError> {
        Self::with_timeouts(endpoints, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// Like [`Client::with_endpoints`] with explicit connect and request timeouts.
    pub fn with_timeouts(
        endpoints: Vec<Url>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for e in &endpoints {
            if e.cannot_be_a_base() {
                return Err(ClientError::InvalidEndpoint {
                    endpoint: e.to_string(),
                    reason: "not a base URL".into(),
                });
            }
        }
        Ok(Client {
            inner: Arc::new(Inner {
                http: http_client(connect_timeout, None)?,
                endpoints,
                preferred: AtomicUsize::new(0),
                request_timeout,
                connect_timeout,
                authorization: None,
            }),
        })
    }

    /// This client, verifying `https` endpoints against `ca` only (it gets
    /// connections of its own; the token, if any, stays).
    pub fn with_ca(self, ca: &TrustedCa) -> Result<Self, ClientError> {
        let inner = &self.inner;
        Ok(Client {
            inner: Arc::new(Inner {
                http: http_client(inner.connect_timeout, Some(ca))?,
                endpoints: inner.endpoints.clone(),
                preferred: AtomicUsize::new(inner.preferred.load(Ordering::Relaxed)),
                request_timeout: inner.request_timeout,
                connect_timeout: inner.connect_timeout,
                authorization: inner.authorization.clone(),
            }),
        })
    }

    /// This client, sending `Authorization: Bearer <token>` with every request
    /// (clones made before keep their own credentials; connections are shared).
    pub fn with_token(self, token: &str) -> Result<Self, ClientError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| ClientError::InvalidToken)?;
        value.set_sensitive(true);
        let inner = &self.inner;
        Ok(Client {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                endpoints: inner.endpoints.clone(),
                preferred: AtomicUsize::new(inner.preferred.load(Ordering::Relaxed)),
                request_timeout: inner.request_timeout,
                connect_timeout: inner.connect_timeout,
                authorization: Some(value),
            }),
        })
    }

    /// This client (credentials and connections shared) for `endpoint` only.
    pub fn at(&self, endpoint: Url) -> Client {
        let inner = &self.inner;
        Client {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                endpoints: vec![endpoint],
                preferred: AtomicUsize::new(0),
                request_timeout: inner.request_timeout,
                connect_timeout: inner.connect_timeout,
                authorization: inner.authorization.clone(),
            }),
        }
    }

    /// The endpoints this client tries, in order.
    pub fn endpoints(&self) -> &[Url] {
        &self.inner.endpoints
    }

    /// Sends one request, trying endpoints in order while connections fail,
    /// and returns the response unread (so a caller can stream it).
    /// `timeout: None` means no limit (long poll).
    async fn open(
        &self,
        method: Method,
        segments: &[&str],
        timeout: Option<Duration>,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<(Url, reqwest::Response), ClientError> {
        let endpoints = &self.inner.endpoints;
        let start = self.inner.preferred.load(Ordering::Relaxed) % endpoints.len();
        let mut last_connect_error = None;
        let mut untrusted = None;
        for attempt in 0..endpoints.len() {
            let idx = (start + attempt) % endpoints.len();
            let url = endpoint_url(&endpoints[idx], segments);
            let mut request = build(self.inner.http.request(method.clone(), url.clone()));
            if let Some(auth) = &self.inner.authorization {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if let Some(t) = timeout {
                request = request.timeout(t);
            }
            match request.send().await {
                Ok(response) => {
                    self.inner.preferred.store(idx, Ordering::Relaxed);
                    return Ok((url, response));
                }
                Err(e) if e.is_connect() => {
                    if let Some(reason) = untrusted_certificate(&e) {
                        untrusted = Some(ClientError::Untrusted {
                            url: url.to_string(),
                            reason,
                        });
                    }
                    last_connect_error = Some(e);
                }
                Err(source) => {
                    return Err(ClientError::Request {
                        url: url.to_string(),
                        source,
                    })
                }
            }
        }
        let tried = endpoints
            .iter()
            .map(Url::as_str)
            .collect::<Vec<_>>()
            .join(",");
        if let Some(refused) = untrusted {
            return Err(refused);
        }
        match last_connect_error {
            Some(source) => Err(ClientError::Unreachable { tried, source }),
            None => Err(ClientError::NoEndpoints),
        }
    }

    /// Sends one request (as [`Self::open`]) and reads its whole answer.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        timeout: Option<Duration>,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Answer, ClientError> {
        let (url, response) = self.open(method, segments, timeout, build).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|source| ClientError::Request {
                url: url.to_string(),
                source,
            })?
            .to_vec();
        Ok(Answer {
            url,
            status,
            headers,
            body,
        })
    }

    /// `GET /api/v1/units/{unit}/journal`: the logs of one instance's container,
    /// streamed from the agent that runs it. Read the answer with `chunk()`.
    pub async fn journal(
        &self,
        unit: &str,
        instance: Option<&str>,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut query: Vec<(&str, String)> = vec![("follow", bool_param(follow))];
        if let Some(i) = instance {
            query.push(("instance", i.to_owned()));
        }
        if let Some(t) = tail {
            query.push(("tail", t.to_string()));
        }
        let timeout = (!follow).then_some(self.inner.request_timeout);
        let (url, response) = self
            .open(
                Method::GET,
                &["api", "v1", "units", unit, "journal"],
                timeout,
                |r| r.query(&query),
            )
            .await?;
        streamed(url, response).await
    }

    /// `POST /api/v1/journals/{machine}/{id}` (the machine's node token): answers
    /// journal request `id` with `logs`, streamed until they end or the
    /// member stops reading (the client went away).
    pub async fn answer_journal<S>(
        &self,
        machine: &str,
        id: &str,
        logs: S,
    ) -> Result<(), ClientError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    {
        let logs = std::sync::Mutex::new(Some(logs));
        self.send(
            Method::POST,
            &["api", "v1", "journals", machine, id],
            None,
            |r| {
                let taken = logs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                match taken {
                    Some(s) => r
                        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                        .body(reqwest::Body::wrap_stream(s)),
                    None => r,
                }
            },
        )
        .await?
        .error_unless_success()
        .map(drop)
    }

    /// `POST /api/v1/journals/{machine}/{id}?refused=<why>`: answers journal
    /// request `id` with why its logs cannot be given.
    pub async fn refuse_journal(
        &self,
        machine: &str,
        id: &str,
        why: &str,
    ) -> Result<(), ClientError> {
        self.send(
            Method::POST,
            &["api", "v1", "journals", machine, id],
            None,
            |r| r.query(&[("refused", why)]),
        )
        .await?
        .error_unless_success()
        .map(drop)
    }

    /// A keys request whose success body is a [`KeysResponse`].
    async fn keys_call(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> Result<Option<KeysAnswer>, ClientError> {
        let answer = self
            .send(method, &keys_segments(key), timeout, |r| {
                let r = if query.is_empty() { r } else { r.query(query) };
                if form.is_empty() {
                    r
                } else {
                    r.form(form)
                }
            })
            .await?
            .error_unless_success()?;
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            // A long poll the server ended without an event.
            return Ok(None);
        }
        Ok(Some(KeysAnswer {
            body: answer.json()?,
            etcd_index: etcd_index(&answer.url, &answer.headers)?,
        }))
    }

    /// Like `keys_call`, for requests that must answer with a body.
    async fn keys_call_some(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
    ) -> Result<KeysAnswer, ClientError> {
        let timeout = Some(self.inner.request_timeout);
        match self.keys_call(method, key, query, form, timeout).await? {
            Some(a) => Ok(a),
            None => Err(ClientError::InvalidResponse {
                url: key.to_owned(),
                reason: "empty body".into(),
            }),
        }
    }

    /// `GET` a JSON resource.
    async fn fetch<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        self.call::<(), _>(Method::GET, segments, None).await
    }

    /// A JSON request (with `body`, if any) whose success body is a JSON `T`.
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.json_call(method, segments, body, Duration::ZERO)
            .await?
            .json()
    }

    /// A JSON request (with `body`, if any) whose success body is not needed.
    async fn act<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.json_call(method, segments, body, Duration::ZERO)
            .await
            .map(drop)
    }

    async fn json_call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
        extra_wait: Duration,
    ) -> Result<Answer, ClientError> {
        let timeout = Some(self.inner.request_timeout + extra_wait);
        self.send(method, segments, timeout, |r| match body {
            Some(b) => r.json(b),
            None => r,
        })
        .await?
        .error_unless_success()
    }

    /// `GET /v2/keys/<key>`: a key, or a directory listing.
    pub async fn get(&self, key: &str, opts: GetOptions) -> Result<KeysAnswer, ClientError> {
        let mut query = Vec::new();
        if opts.recursive {
            query.push(("recursive", bool_param(true)));
        }
        if opts.sorted {
            query.push(("sorted", bool_param(true)));
        }
        if opts.quorum {
            query.push(("quorum", bool_param(true)));
        }
        self.keys_call_some(Method::GET, key, &query, &[]).await
    }

    /// `PUT /v2/keys/<key>`: set, create, update, compare-and-swap, mkdir or refresh.
    pub async fn set(
        &self,
        key: &str,
        value: &str,
        opts: SetOptions,
    ) -> Result<KeysAnswer, ClientError> {
        let mut form = Vec::new();
        if !opts.dir && !opts.refresh {
            form.push(("value", value.to_owned()));
        }
        if opts.dir {
            form.push(("dir", bool_param(true)));
        }
        if opts.refresh {
            form.push(("refresh", bool_param(true)));
        }
        if let Some(ttl) = opts.ttl {
            form.push(("ttl", ttl.to_string()));
        }
        if let Some(prev_exist) = opts.prev_exist {
            form.push(("prevExist", bool_param(prev_exist)));
        }
        if let Some(prev_value) = opts.prev_value {
            form.push(("prevValue", prev_value));
        }
        if let Some(prev_index) = opts.prev_index {
            form.push(("prevIndex", prev_index.to_string()));
        }
        self.keys_call_some(Method::PUT, key, &[], &form).await
    }

    /// `POST /v2/keys/<dir>`: creates a key with the next in-order name under `dir`.
    pub async fn create_in_order(
        &self,
        dir: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<KeysAnswer, ClientError> {
        let mut form = vec![("value", value.to_owned())];
        if let Some(ttl) = ttl {
            form.push(("ttl", ttl.to_string()));
        }
        self.keys_call_some(Method::POST, dir, &[], &form).await
    }

    /// `DELETE /v2/keys/<key>`: delete, rmdir or compare-and-delete.
    pub async fn delete(&self, key: &str, opts: DeleteOptions) -> Result<KeysAnswer, ClientError> {
        let mut query = Vec::new();
        if opts.dir {
            query.push(("dir", bool_param(true)));
        }
        if opts.recursive {
            query.push(("recursive", bool_param(true)));
        }
        if let Some(prev_value) = opts.prev_value {
            query.push(("prevValue", prev_value));
        }
        if let Some(prev_index) = opts.prev_index {
            query.push(("prevIndex", prev_index.to_string()));
        }
        self.keys_call_some(Method::DELETE, key, &query, &[]).await
    }

    /// One long poll `GET /v2/keys/<key>?wait=true`; `Ok(None)` when the server
    /// ended the poll without an event (ask again with the same index).
    pub async fn watch(
        &self,
        key: &str,
        opts: WatchOptions,
    ) -> Result<Option<KeysAnswer>, ClientError> {
        let mut query = vec![("wait", bool_param(true))];
        if opts.recursive {
            query.push(("recursive", bool_param(true)));
        }
        if let Some(index) = opts.wait_index {
            query.push(("waitIndex", index.to_string()));
        }
        self.keys_call(Method::GET, key, &query, &[], None).await
    }

    /// A resumable watch of `key` starting at `cursor`.
    pub fn watcher(&self, key: &str, recursive: bool, cursor: WatchCursor) -> Watcher {
        Watcher {
            client: self.clone(),
            key: key.to_owned(),
            recursive,
            cursor,
        }
    }

    /// `GET /v2/members`.
    pub async fn member_list(&self) -> Result<MemberList, ClientError> {
        self.fetch(&["v2", "members"]).await
    }

    /// `GET /v2/members/leader`: the member currently leading.
    pub async fn member_leader(&self) -> Result<Member, ClientError> {
        self.fetch(&["v2", "members", "leader"]).await
    }

    /// `POST /v2/members`: adds a (not yet started) member; answers the new member.
    pub async fn member_add(&self, peer_urls: Vec<String>) -> Result<Member, ClientError> {
        let body = AddMember { peer_urls };
        self.call(Method::POST, &["v2", "members"], Some(&body))
            .await
    }

    /// `DELETE /v2/members/<id>` with the id in hex.
    pub async fn member_remove(&self, id_hex: &str) -> Result<(), ClientError> {
        self.act::<()>(Method::DELETE, &["v2", "members", id_hex], None)
            .await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, ClientError> {
        self.fetch(&["version"]).await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.fetch(&["health"]).await
    }

    /// `POST /api/v1/locks/{name}/acquire`; fails with code `lock_busy` when no
    /// slot freed within `req.wait` seconds.
    pub async fn acquire(
        &self,
        name: &str,
        req: &AcquireRequest,
    ) -> Result<LockState, ClientError> {
        self.json_call(
            Method::POST,
            &["api", "v1", "locks", name, "acquire"],
            Some(req),
            Duration::from_secs(req.wait),
        )
        .await?
        .json()
    }

    /// `POST /api/v1/locks/{name}/release`; fails with code `not_held`.
    pub async fn release(
        &self,
        name: &str,
        req: &ReleaseRequest,
    ) -> Result<LockState, ClientError> {
        self.call(
            Method::POST,
            &["api", "v1", "locks", name, "release"],
            Some(req),
        )
        .await
    }

    /// `PUT /api/v1/locks/{name}`: sets the limit of clients that name none (FleetLock).
    pub async fn configure_lock(
        &self,
        name: &str,
        config: &LockConfig,
    ) -> Result<LockState, ClientError> {
        self.call(Method::PUT, &["api", "v1", "locks", name], Some(config))
            .await
    }

    /// `GET /api/v1/locks/{name}`.
    pub async fn lock(&self, name: &str) -> Result<LockState, ClientError> {
        self.fetch(&["api", "v1", "locks", name]).await
    }

    /// `GET /api/v1/locks`: every lock with a holder.
    pub async fn locks(&self) -> Result<LockList, ClientError> {
        self.fetch(&["api", "v1", "locks"]).await
    }

    /// `POST /api/v1/elections/{name}/campaign`; fails with code `election_lost`
    /// when another candidate still leads after `req.wait` seconds.
    pub async fn campaign(&self, name: &str, req: &CampaignRequest) -> Result<Leader, ClientError> {
        self.json_call(
            Method::POST,
            &["api", "v1", "elections", name, "campaign"],
            Some(req),
            Duration::from_secs(req.wait),
        )
        .await?
        .json()
    }

    /// `POST /api/v1/elections/{name}/resign`.
    pub async fn resign(&self, name: &str, req: &ResignRequest) -> Result<(), ClientError> {
        self.act(
            Method::POST,
            &["api", "v1", "elections", name, "resign"],
            Some(req),
        )
        .await
    }

    /// `GET /api/v1/machines`: every machine with a live lease.
    pub async fn machines(&self) -> Result<Vec<crate::fleet::Machine>, ClientError> {
        self.fetch(&["api", "v1", "machines"]).await
    }

    /// `POST /api/v1/units`: submits a unit, or a new revision of one.
    pub async fn submit_unit(
        &self,
        unit: &crate::fleet::Unit,
    ) -> Result<crate::fleet::UnitStatus, ClientError> {
        self.call(Method::POST, &["api", "v1", "units"], Some(unit))
            .await
    }

    /// `GET /api/v1/units`: every unit with its instances, desired and actual.
    pub async fn units(&self) -> Result<Vec<crate::fleet::UnitStatus>, ClientError> {
        self.fetch(&["api", "v1", "units"]).await
    }

    /// `GET /api/v1/units/{name}`; fails with code `not_found`.
    pub async fn unit(&self, name: &str) -> Result<crate::fleet::UnitStatus, ClientError> {
        self.fetch(&["api", "v1", "units", name]).await
    }

    /// `POST /api/v1/units/{name}/start` or `/stop`: sets the desired state.
    pub async fn set_unit_desired(
        &self,
        name: &str,
        launched: bool,
    ) -> Result<crate::fleet::UnitStatus, ClientError> {
        let action = if launched { "start" } else { "stop" };
        self.call::<(), _>(Method::POST, &["api", "v1", "units", name, action], None)
            .await
    }

    /// `DELETE /api/v1/units/{name}`: destroys a unit; its containers go away.
    pub async fn destroy_unit(&self, name: &str) -> Result<(), ClientError> {
        self.act::<()>(Method::DELETE, &["api", "v1", "units", name], None)
            .await
    }

    /// `POST /api/v1/tokens` (admin): a new token; its secret is in the answer only.
    pub async fn create_token(
        &self,
        req: &crate::auth::CreateToken,
    ) -> Result<crate::auth::CreatedToken, ClientError> {
        self.call(Method::POST, &["api", "v1", "tokens"], Some(req))
            .await
    }

    /// `GET /api/v1/tokens` (admin): every token, without secrets.
    pub async fn tokens(&self) -> Result<crate::auth::TokenList, ClientError> {
        self.fetch(&["api", "v1", "tokens"]).await
    }

    /// `DELETE /api/v1/tokens/{id}` (admin): revokes a token; answers what it was.
    pub async fn revoke_token(&self, id: &str) -> Result<crate::auth::TokenInfo, ClientError> {
        self.call::<(), _>(Method::DELETE, &["api", "v1", "tokens", id], None)
            .await
    }

    /// `GET /api/v1/elections/{name}`; fails with code `no_leader`.
    pub async fn leader(&self, name: &str) -> Result<Leader, ClientError> {
        self.fetch(&["api", "v1", "elections", name]).await
    }

    /// `POST /api/v1/updates/payloads`: uploads a payload, streamed from the
    /// body `open_body` makes (called again only if a connection to an endpoint
    /// could not be made, before any byte was sent). `progress` gets the total
    /// bytes sent so far. Fails with codes `bad_signature`, `conflict`, `bad_request`.
    pub async fn upload_payload<S, F>(
        &self,
        query: &crate::updates::UploadQuery,
        open_body: F,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<crate::updates::PayloadMeta, ClientError>
    where
        F: Fn() -> S,
        S: futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    {
        use futures::TryStreamExt as _;
        let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(progress);
        self.send(
            Method::POST,
            &["api", "v1", "updates", "payloads"],
            None,
            |r| {
                let progress = progress.clone();
                let mut sent = 0u64;
                let counted = open_body().inspect_ok(move |chunk| {
                    sent += chunk.len() as u64;
                    progress(sent);
                });
                r.query(query)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(reqwest::Body::wrap_stream(counted))
            },
        )
        .await?
        .error_unless_success()?
        .json()
    }

    /// `GET /api/v1/updates/payloads`: every payload's metadata.
    pub async fn payloads(&self) -> Result<Vec<crate::updates::PayloadMeta>, ClientError> {
        self.fetch(&["api", "v1", "updates", "payloads"]).await
    }

    /// `GET` an offer's payload (its `url` path), from byte `offset` on (a Range
    /// request, so an interrupted download resumes). Redirects are followed;
    /// read the answer with `chunk()` or `bytes_stream()`. No overall timeout.
    pub async fn download_payload(
        &self,
        url_path: &str,
        offset: u64,
    ) -> Result<reqwest::Response, ClientError> {
        let segments: Vec<&str> = url_path.split('/').filter(|s| !s.is_empty()).collect();
        let (url, response) = self
            .open(Method::GET, &segments, None, |r| {
                if offset > 0 {
                    r.header(reqwest::header::RANGE, format!("bytes={offset}-"))
                } else {
                    r
                }
            })
            .await?;
        streamed(url, response).await
    }

    /// `GET /api/v1/updates/channels`.
    pub async fn channels(&self) -> Result<Vec<crate::updates::Channel>, ClientError> {
        self.fetch(&["api", "v1", "updates", "channels"]).await
    }

    /// `GET /api/v1/updates/channels/{name}`; fails with code `not_found`.
    pub async fn channel(&self, name: &str) -> Result<crate::updates::Channel, ClientError> {
        self.fetch(&["api", "v1", "updates", "channels", name])
            .await
    }

    /// `PUT /api/v1/updates/channels/{name}`: creates or changes a channel.
    pub async fn update_channel(
        &self,
        name: &str,
        update: &crate::updates::ChannelUpdate,
    ) -> Result<crate::updates::Channel, ClientError> {
        self.call(
            Method::PUT,
            &["api", "v1", "updates", "channels", name],
            Some(update),
        )
        .await
    }

    /// `POST /api/v1/updates/channels/{name}/pause` (or `/resume`, which also clears a halt).
    pub async fn pause_channel(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<crate::updates::Channel, ClientError> {
        let action = if paused { "pause" } else { "resume" };
        self.call::<(), _>(
            Method::POST,
            &["api", "v1", "updates", "channels", name, action],
            None,
        )
        .await
    }

    /// `POST /api/v1/updates/channels/{name}/halt`: stops the rollout until a resume.
    pub async fn halt_channel(
        &self,
        name: &str,
        reason: Option<&str>,
    ) -> Result<crate::updates::Channel, ClientError> {
        let body = crate::updates::HaltRequest {
            reason: reason.map(str::to_owned),
        };
        self.call(
            Method::POST,
            &["api", "v1", "updates", "channels", name, "halt"],
            Some(&body),
        )
        .await
    }

    /// `POST /api/v1/updates/checkin`: an agent's report; the answer says what to do.
    pub async fn checkin(
        &self,
        report: &crate::updates::CheckIn,
    ) -> Result<crate::updates::CheckInReply, ClientError> {
        self.call(
            Method::POST,
            &["api", "v1", "updates", "checkin"],
            Some(report),
        )
        .await
    }

    /// `GET /api/v1/updates/machines[?channel=C]`: the machines' last check-ins.
    pub async fn update_machines(
        &self,
        channel: Option<&str>,
    ) -> Result<Vec<crate::updates::MachineUpdate>, ClientError> {
        let query: Vec<(&str, &str)> = channel.map(|c| ("channel", c)).into_iter().collect();
        self.send(
            Method::GET,
            &["api", "v1", "updates", "machines"],
            Some(self.inner.request_timeout),
            |r| r.query(&query),
        )
        .await?
        .error_unless_success()?
        .json()
    }

    /// `GET /api/v1/updates/history?limit=N`: the newest N events, oldest first.
    pub async fn update_history(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::updates::HistoryEvent>, ClientError> {
        let query = [("limit", limit.to_string())];
        self.send(
            Method::GET,
            &["api", "v1", "updates", "history"],
            Some(self.inner.request_timeout),
            |r| r.query(&query),
        )
        .await?
        .error_unless_success()?
        .json()
    }
}

/// Where a watch resumes: the next `waitIndex` to ask for. Pure bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCursor {
    next: Option<u64>,
}

impl WatchCursor {
    /// Waits for the next change after the request reaches the server.
    pub fn from_now() -> Self {
        WatchCursor { next: None }
    }

    /// Delivers events with an index greater than `index` (etcdctl `--after-index`).
    pub fn after(index: u64) -> Self {
        WatchCursor {
            next: Some(index.saturating_add(1)),
        }
    }

    /// The `waitIndex` of the next poll, if any.
    pub fn wait_index(&self) -> Option<u64> {
        self.next
    }

    /// Records a delivered event; the cursor never moves backwards.
    pub fn observe_event(&mut self, modified_index: u64) {
        self.advance_past(modified_index);
    }

    /// Records a re-read after error 401: resume after the re-read's `X-Etcd-Index`.
    pub fn resync(&mut self, etcd_index: u64) {
        self.advance_past(etcd_index);
    }

    fn advance_past(&mut self, index: u64) {
        let candidate = index.saturating_add(1);
        self.next = Some(self.next.map_or(candidate, |n| n.max(candidate)));
    }
}

/// What a [`Watcher`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// One change, in index order.
    Change(KeysAnswer),
    /// Events were lost (error 401): the current state was re-read, and the
    /// watch resumes after `etcd_index`. `state` is `None` when the key is absent.
    Resync {
        /// Index of the re-read; the watch resumes after it.
        etcd_index: u64,
        /// The re-read key or subtree.
        state: Option<KeysAnswer>,
    },
}

/// An ordered, gap-aware watch: resumes from `modifiedIndex + 1` after each
/// event, and on error 401 re-reads the key and resumes after `X-Etcd-Index`.
#[derive(Debug, Clone)]
pub struct Watcher {
    client: Client,
    key: String,
    recursive: bool,
    cursor: WatchCursor,
}

impl Watcher {
    /// Where the next poll starts.
    pub fn cursor(&self) -> WatchCursor {
        self.cursor
    }

    /// Waits for the next event; a failed call leaves the cursor in place, so
    /// calling again after an error resumes without gaps.
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        loop {
            let opts = WatchOptions {
                recursive: self.recursive,
                wait_index: self.cursor.wait_index(),
            };
            match self.client.watch(&self.key, opts).await {
                Ok(Some(answer)) => {
                    self.cursor.observe_event(answer.body.node.modified_index);
                    return Ok(WatchEvent::Change(answer));
                }
                Ok(None) => continue,
                Err(ClientError::Etcd(e)) if e.error_code == ETCD_EVENT_INDEX_CLEARED => {
                    return self.resync().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn resync(&mut self) -> Result<WatchEvent, ClientError> {
        let opts = GetOptions {
            recursive: self.recursive,
            sorted: true,
            quorum: true,
        };
        match self.client.get(&self.key, opts).await {
            Ok(answer) => {
                self.cursor.resync(answer.etcd_index);
                Ok(WatchEvent::Resync {
                    etcd_index: answer.etcd_index,
                    state: Some(answer),
                })
            }
            Err(ClientError::Etcd(e)) if e.error_code == ETCD_KEY_NOT_FOUND => {
                self.cursor.resync(e.index);
                Ok(WatchEvent::Resync {
                    etcd_index: e.index,
                    state: None,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &str) -> Vec<String> {
        match parse_endpoints(list) {
            Ok(v) => v.into_iter().map(String::from).collect(),
            Err(e) => panic!("{list:?}: {e}"),
        }
    }

    #[test]
    fn endpoints_split_trim_and_default_scheme() {
        assert_eq!(
            urls(" http://127.0.0.1:2379, https://a.example:4001/ ,127.0.0.2:2379,,"),
            vec![
                "http://127.0.0.1:2379/",
                "https://a.example:4001/",
                "http://127.0.0.2:2379/",
            ]
        );
    }

    #[test]
    fn endpoints_refuse_nonsense() {
        assert!(matches!(parse_endpoints(""), Err(ClientError::NoEndpoints)));
        assert!(matches!(
            parse_endpoints(" , "),
            Err(ClientError::NoEndpoints)
        ));
        for bad in ["ftp://x:1", "http://", "http://h:1/?a=b", "http://h:99999"] {
            assert!(
                matches!(
                    parse_endpoints(bad),
                    Err(ClientError::InvalidEndpoint { .. })
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn key_urls_encode_segments_and_keep_base_path() {
        let base = Url::parse("http://h:1/").expect("url");
        let url = |key| endpoint_url(&base, &keys_segments(key)).to_string();
        assert_eq!(url("/foo/bar"), "http://h:1/v2/keys/foo/bar");
        assert_eq!(url("foo//bar/"), "http://h:1/v2/keys/foo/bar");
        assert_eq!(url("/"), "http://h:1/v2/keys/");
        assert_eq!(url(""), "http://h:1/v2/keys/");
        assert_eq!(url("/a b/c?d#e"), "http://h:1/v2/keys/a%20b/c%3Fd%23e");
        let prefixed = Url::parse("http://h:1/shoal/").expect("url");
        assert_eq!(
            endpoint_url(&prefixed, &["api", "v1", "locks", "a/b"]).to_string(),
            "http://h:1/shoal/api/v1/locks/a%2Fb"
        );
    }

    #[test]
    fn error_bodies_decode_to_the_right_variant() {
        let etcd = decode_error(
            StatusCode::NOT_FOUND,
            br#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":7}"#,
        );
        assert_eq!(etcd.etcd_code(), Some(100));
        assert_eq!(etcd.to_string(), "100: Key not found (/foo) [7]");

        let api = decode_error(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"lock_busy","message":"2 of 2 slots held"}}"#,
        );
        assert_eq!(api.api_code(), Some("lock_busy"));
        assert!(matches!(api, ClientError::Api { status: 409, .. }));

        let members = decode_error(StatusCode::CONFLICT, br#"{"message":"peerURL exists"}"#);
        assert_eq!(members.to_string(), "HTTP 409: peerURL exists");

        let text = decode_error(StatusCode::BAD_GATEWAY, b"  upstream down\n");
        assert_eq!(text.to_string(), "HTTP 502: upstream down");
        let empty = decode_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(empty.to_string(), "HTTP 503: Service Unavailable");
    }

    #[test]
    fn watch_cursor_resumes_after_events_and_resyncs() {
        let mut c = WatchCursor::from_now();
        assert_eq!(c.wait_index(), None);
        c.observe_event(10);
        assert_eq!(c.wait_index(), Some(11));
        c.observe_event(12);
        assert_eq!(c.wait_index(), Some(13));
        // An event can never move the cursor back (e.g. a duplicate delivery).
        c.observe_event(5);
        assert_eq!(c.wait_index(), Some(13));
        // Error 401 then a re-read at X-Etcd-Index 2000: resume right after it.
        c.resync(2000);
        assert_eq!(c.wait_index(), Some(2001));

        let mut a = WatchCursor::after(7);
        assert_eq!(a.wait_index(), Some(8));
        a.resync(3);
        assert_eq!(a.wait_index(), Some(8));
        assert_eq!(WatchCursor::after(u64::MAX).wait_index(), Some(u64::MAX));
    }

    /// A dead first endpoint is skipped; the live one is then tried first.
    #[tokio::test]
    async fn connection_errors_fall_through_to_the_next_endpoint() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dead_addr = dead.local_addr().expect("addr");
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live_addr = live.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut sock, _) = live.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await.expect("read");
                let body = r#"{"action":"get","node":{"key":"/k","value":"v","modifiedIndex":3,"createdIndex":3}}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Etcd-Index: 9\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(reply.as_bytes()).await.expect("write");
            }
        });

        let client =
            Client::new(&format!("http://{dead_addr},http://{live_addr}")).expect("client");
        for _ in 0..2 {
            let answer = client.get("/k", GetOptions::default()).await.expect("get");
            assert_eq!(answer.etcd_index, 9);
            assert_eq!(answer.body.node.value.as_deref(), Some("v"));
        }
        assert_eq!(client.inner.preferred.load(Ordering::Relaxed), 1);
        server.await.expect("server");

        let nobody = Client::new(&format!("http://{dead_addr}")).expect("client");
        let err = nobody
            .get("/k", GetOptions::default())
            .await
            .expect_err("unreachable");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    }
}
