//! `/v2/keys`: etcd v2's key API — reads, writes, compare-and-swap, in-order
//! keys and long-poll watches.

use std::sync::Arc;

use api::keys::KeysResponse;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::form::{self, bad, Form};
use crate::keyspace::{path, ErrorCode, KeyError, Op, Precondition, ReadOptions};
use crate::member::{Member, StoreStats};

/// The longest TTL accepted, in seconds (100 years); longer is refused as not a number.
pub const MAX_TTL: u64 = 100 * 365 * 24 * 3600;
/// The longest key accepted, in bytes once cleaned.
pub const MAX_KEY_BYTES: usize = 4096;
/// The largest value accepted, in bytes (the body limit bounds the whole request).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Everything a `/v2/keys` request asks for, validated as etcd validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    /// Cleaned key.
    pub key: String,
    /// `value`, if given.
    pub value: Option<String>,
    /// `dir=true`.
    pub dir: bool,
    /// `ttl` (empty means none).
    pub ttl: Option<u64>,
    /// `refresh=true`.
    pub refresh: bool,
    /// `prevExist`, `prevValue`, `prevIndex`.
    pub cond: Precondition,
    /// `wait=true`.
    pub wait: bool,
    /// `waitIndex` (0 means from now).
    pub wait_index: u64,
    /// `recursive=true`.
    pub recursive: bool,
    /// `quorum=true`.
    pub quorum: bool,
}

impl KeyRequest {
    /// Parses the key (already percent-decoded) and the form, or answers etcd's 2xx errors.
    pub fn parse(method: &Method, key: &str, f: &Form) -> Result<Self, KeyError> {
        let prev_index = f.uint(
            "prevIndex",
            ErrorCode::IndexNaN,
            r#"invalid value for "prevIndex""#,
        )?;
        let wait_index = f.uint(
            "waitIndex",
            ErrorCode::IndexNaN,
            r#"invalid value for "waitIndex""#,
        )?;
        let recursive = f.bool("recursive", r#"invalid value for "recursive""#)?;
        f.bool("sorted", r#"invalid value for "sorted""#)?;
        let wait = f.bool("wait", r#"invalid value for "wait""#)?;
        let dir = f.bool("dir", r#"invalid value for "dir""#)?;
        let quorum = f.bool("quorum", r#"invalid value for "quorum""#)?;
        f.bool("stream", r#"invalid value for "stream""#)?;
        if wait && method != Method::GET {
            return Err(bad(
                ErrorCode::InvalidField,
                r#""wait" can only be used with GET requests"#,
            ));
        }
        let prev_value = f.get("prevValue").map(str::to_owned);
        if prev_value.as_deref() == Some("") {
            return Err(bad(
                ErrorCode::PrevValueRequired,
                r#""prevValue" cannot be empty"#,
            ));
        }
        let ttl = match f.get("ttl") {
            Some(v) if !v.is_empty() => Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|t| *t <= MAX_TTL)
                    .ok_or_else(|| bad(ErrorCode::TtlNaN, r#"invalid value for "ttl""#))?,
            ),
            _ => None,
        };
        let prev_exist = match f.get("prevExist") {
            Some(v) => Some(
                form::parse_bool(v)
                    .ok_or_else(|| bad(ErrorCode::InvalidField, "invalid value for prevExist"))?,
            ),
            None => None,
        };
        let refresh = match f.get("refresh") {
            Some(v) => form::parse_bool(v)
                .ok_or_else(|| bad(ErrorCode::InvalidField, "invalid value for refresh"))?,
            None => false,
        };
        if refresh {
            if f.get("value").is_some_and(|v| !v.is_empty()) {
                return Err(bad(
                    ErrorCode::RefreshValue,
                    "A value was provided on a refresh",
                ));
            }
            if ttl.is_none() {
                return Err(bad(ErrorCode::RefreshTtlRequired, "No TTL value set"));
            }
        }
        let key = path::clean(key);
        if key.len() > MAX_KEY_BYTES {
            return Err(bad(
                ErrorCode::InvalidField,
                &format!(
                    "the key is {} bytes, over the {MAX_KEY_BYTES} allowed",
                    key.len()
                ),
            ));
        }
        let value = f.get("value");
        if let Some(v) = value.filter(|v| v.len() > MAX_VALUE_BYTES) {
            return Err(bad(
                ErrorCode::InvalidField,
                &format!(
                    "the value is {} bytes, over the {MAX_VALUE_BYTES} allowed",
                    v.len()
                ),
            ));
        }
        Ok(Self {
            key,
            value: value.map(str::to_owned),
            dir,
            ttl,
            refresh,
            cond: Precondition {
                prev_exist,
                prev_value,
                prev_index: prev_index.filter(|i| *i > 0),
            },
            wait,
            wait_index: wait_index.unwrap_or_default(),
            recursive,
            quorum,
        })
    }

    /// The replicated operation a write request stands for.
    pub fn to_op(&self, method: &Method) -> Option<Op> {
        let value = if self.dir {
            None
        } else {
            Some(self.value.clone().unwrap_or_default())
        };
        match *method {
            Method::PUT => Some(Op::Put {
                key: self.key.clone(),
                value,
                ttl: self.ttl,
                refresh: self.refresh,
                cond: self.cond.clone(),
            }),
            Method::POST => Some(Op::CreateInOrder {
                dir: self.key.clone(),
                value,
                ttl: self.ttl,
            }),
            Method::DELETE => Some(Op::Delete {
                key: self.key.clone(),
                dir: self.dir,
                recursive: self.recursive,
                cond: Precondition {
                    prev_exist: None,
                    ..self.cond.clone()
                },
            }),
            _ => None,
        }
    }
}

/// Handles every method on `/v2/keys/*`.
pub async fn handle(
    State(member): State<Arc<Member>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let raw = uri.path().strip_prefix("/v2/keys").unwrap_or("/");
    let parsed = form::decode(&raw.replace('+', "%2B"))
        .and_then(|key| Form::parse(&body, uri.query()).map(|f| (key, f)))
        .and_then(|(key, f)| KeyRequest::parse(&method, &key, &f));
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    match method {
        Method::GET | Method::HEAD if req.wait => watch(&member, &req).await,
        Method::GET | Method::HEAD => read(&member, &req, method == Method::HEAD).await,
        _ => match req.to_op(&method) {
            Some(op) => write(&member, op).await,
            None => (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response(),
        },
    }
}

async fn read(member: &Member, req: &KeyRequest, head: bool) -> Response {
    if req.quorum {
        if let Err(e) = member.read_barrier().await {
            return error(&e.to_key_error(member.keys.read().index()));
        }
    }
    let (answer, index) = {
        let keys = member.keys.read();
        (
            keys.get(
                &req.key,
                ReadOptions {
                    recursive: req.recursive,
                },
                crate::clock::now(),
            ),
            keys.index(),
        )
    };
    match answer {
        Ok(body) => {
            StoreStats::count(&member.stats.gets_success);
            let mut resp = json(member, StatusCode::OK, &body, index);
            if head {
                *resp.body_mut() = axum::body::Body::empty();
            }
            resp
        }
        Err(e) => {
            StoreStats::count(&member.stats.gets_fail);
            error(&e)
        }
    }
}

async fn write(member: &Member, op: Op) -> Response {
    match member.write(op).await {
        Ok(event) => {
            let created = event.body.action == "create"
                || (event.body.action == "set" && event.body.prev_node.is_none());
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json(member, status, &event.body, event.index)
        }
        Err(e) => error(&e.to_key_error(member.keys.read().index())),
    }
}

/// Long-polls for the first event at or after `waitIndex` (from now if 0).
async fn watch(member: &Member, req: &KeyRequest) -> Response {
    let mut changed = member.keys.subscribe();
    let start = member.keys.read().index();
    let since = if req.wait_index == 0 {
        start + 1
    } else {
        req.wait_index
    };
    loop {
        let found = {
            let keys = member.keys.read();
            keys.history()
                .scan(&req.key, req.recursive, since, start, keys.index())
        };
        match found {
            Err(e) => return error(&e),
            Ok(Some(event)) => return json(member, StatusCode::OK, &event.body, start),
            Ok(None) => {}
        }
        if changed.changed().await.is_err() {
            return error(&KeyError::new(
                ErrorCode::RaftInternal,
                "member is shutting down",
                start,
            ));
        }
    }
}

/// A JSON answer with etcd's index headers.
pub fn json(member: &Member, status: StatusCode, body: &KeysResponse, etcd_index: u64) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    headers(member, resp.headers_mut(), etcd_index);
    resp
}

/// An etcd error answer with its status and headers.
pub fn error(e: &KeyError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, axum::Json(e.to_wire())).into_response();
    resp.headers_mut()
        .insert("X-Etcd-Index", HeaderValue::from(e.index));
    resp
}

/// etcd's index headers; errors carry only `X-Etcd-Index`, as in etcd.
fn headers(member: &Member, h: &mut HeaderMap, etcd_index: u64) {
    let (term, raft_index) = member.raft_position();
    h.insert("X-Etcd-Index", HeaderValue::from(etcd_index));
    h.insert("X-Raft-Index", HeaderValue::from(raft_index));
    h.insert("X-Raft-Term", HeaderValue::from(term));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, body: &str) -> Result<KeyRequest, KeyError> {
        KeyRequest::parse(&method, "/a//b/", &Form::parse(body.as_bytes(), None)?)
    }

    fn code(r: Result<KeyRequest, KeyError>) -> Option<u32> {
        r.err().map(|e| e.code.code())
    }

    #[test]
    fn parses_like_etcd() -> Result<(), KeyError> {
        let r = parse(Method::PUT, "value=v&ttl=&prevExist=false&prevIndex=0")?;
        assert_eq!(r.key, "/a/b");
        assert_eq!(r.ttl, None, "empty ttl means none");
        assert_eq!(r.cond.prev_exist, Some(false));
        assert_eq!(r.cond.prev_index, None, "prevIndex=0 means none");
        Ok(())
    }

    #[test]
    fn overlong_keys_and_values_are_refused_with_their_size() {
        let long_key = format!("/{}", "k".repeat(MAX_KEY_BYTES));
        let err = KeyRequest::parse(&Method::PUT, &long_key, &Form::default()).err();
        assert_eq!(err.as_ref().map(|e| e.code.code()), Some(209));
        assert!(err.is_some_and(|e| e.cause.contains("4097 bytes")));
        let body = format!("value={}", "v".repeat(MAX_VALUE_BYTES + 1));
        let err = parse(Method::PUT, &body).err();
        assert!(err.is_some_and(|e| e.code.code() == 209 && e.cause.contains("value")));
        assert!(parse(
            Method::PUT,
            &format!("value={}", "v".repeat(MAX_VALUE_BYTES))
        )
        .is_ok());
    }

    #[test]
    fn bad_parameters_get_etcd_codes() {
        assert_eq!(code(parse(Method::PUT, "ttl=abc")), Some(202));
        assert_eq!(code(parse(Method::PUT, "ttl=-1")), Some(202));
        assert_eq!(
            code(parse(Method::PUT, "ttl=18446744073709551615")),
            Some(202)
        );
        assert_eq!(code(parse(Method::PUT, "prevIndex=x")), Some(203));
        assert_eq!(code(parse(Method::PUT, "prevExist=maybe")), Some(209));
        assert_eq!(code(parse(Method::PUT, "prevValue=")), Some(201));
        assert_eq!(code(parse(Method::PUT, "refresh=true")), Some(212));
        assert_eq!(
            code(parse(Method::PUT, "refresh=true&ttl=5&value=x")),
            Some(211)
        );
        assert_eq!(code(parse(Method::PUT, "wait=true")), Some(209));
        assert_eq!(
            parse(Method::PUT, "ttl=abc").err().map(|e| e.index),
            Some(0)
        );
    }
}
