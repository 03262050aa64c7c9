//! The audit log: every write on the client port (any method but `GET` and
//! `HEAD`) that went through or was refused for want of credentials or rights
//! (401, 403) is one [`ClusterEvent`] of kind [`KIND`] under [`AUDIT_DIR`]:
//! who (token id and role, or unauthenticated), what (method and path:
//! never the body, the query or a token), the status and when. Only with
//! `--auth`: without it there is nobody to name, and an entry per write
//! would double the writes and shift every etcd index a v2 client sees. The
//! directory is inside `/_auth`, so the policy keeps it to admins; the newest
//! [`MAX_AUDIT`] are kept, written in the background by the engine history's
//! [`Recorder`](crate::engine::history::Recorder).

use api::fleet::ClusterEvent;
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};

use super::Principal;
use crate::engine::history::{self, Log};
use crate::member::Member;

/// Key-space directory of audit entries (in-order keys; admins only, inside `/_auth`).
pub const AUDIT_DIR: &str = "/_auth/audit";
/// Most audit entries kept; older ones are deleted.
pub const MAX_AUDIT: usize = 10_000;
/// The event kind of an audit entry.
pub const KIND: &str = "audit";

/// The audit log's place in the key space.
pub const AUDIT_LOG: Log = Log {
    dir: AUDIT_DIR,
    keep: MAX_AUDIT,
    what: "audit log",
};

/// Who made a request, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Auth is on and no valid token came with the request.
    Unauthenticated,
    /// A known token.
    Token(Principal),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Unauthenticated => f.write_str("unauthenticated"),
            Who::Token(p) => match &p.machine_id {
                Some(m) => write!(f, "token {} ({}, machine {m})", p.id, p.role),
                None => write!(f, "token {} ({})", p.id, p.role),
            },
        }
    }
}

/// True when a request with this method and answer belongs in the audit log.
pub fn audited(method: &Method, status: StatusCode) -> bool {
    let write = *method != Method::GET && *method != Method::HEAD;
    let counted = status.is_success()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN;
    write && counted
}

/// The audit entry of one request; `path` is the percent-decoded path only.
pub fn entry(
    who: &Who,
    method: &Method,
    path: &str,
    status: StatusCode,
    at: DateTime<Utc>,
) -> ClusterEvent {
    let machine = match who {
        Who::Token(p) => p.machine_id.clone(),
        Who::Unauthenticated => None,
    };
    ClusterEvent {
        machine,
        ..history::event(
            at,
            KIND,
            format!("{who}: {method} {path} → {}", status.as_u16()),
        )
    }
}

/// The newest `limit` audit entries, newest first, as `member` has applied them.
pub fn newest(member: &Member, limit: usize) -> Vec<ClusterEvent> {
    let entries = member.keys.read().children(AUDIT_DIR);
    entries
        .iter()
        .rev()
        .filter_map(|(_, e)| serde_json::from_str(e.value.as_deref()?).ok())
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use api::auth::Role;

    use super::*;

    #[test]
    fn writes_that_passed_or_were_refused_are_audited() {
        assert!(audited(&Method::PUT, StatusCode::OK));
        assert!(audited(&Method::POST, StatusCode::CREATED));
        assert!(audited(&Method::DELETE, StatusCode::FORBIDDEN));
        assert!(audited(&Method::PUT, StatusCode::UNAUTHORIZED));
        assert!(!audited(&Method::GET, StatusCode::OK));
        assert!(!audited(&Method::HEAD, StatusCode::FORBIDDEN));
        assert!(!audited(&Method::PUT, StatusCode::NOT_FOUND));
        assert!(!audited(&Method::POST, StatusCode::PRECONDITION_FAILED));
    }

    #[test]
    fn entries_name_the_token_the_request_and_the_status() {
        let at = Utc::now();
        let node = Who::Token(Principal {
            role: Role::Node,
            machine_id: Some("m1".into()),
            id: "0123456789abcdef".into(),
        });
        let e = entry(
            &node,
            &Method::PUT,
            "/v2/keys/_shoal/machines/m2",
            StatusCode::FORBIDDEN,
            at,
        );
        assert_eq!(e.kind, KIND);
        assert_eq!(e.at, at);
        assert_eq!(e.machine.as_deref(), Some("m1"));
        assert_eq!(
            e.detail,
            "token 0123456789abcdef (node, machine m1): PUT /v2/keys/_shoal/machines/m2 → 403"
        );
        let anon = entry(
            &Who::Unauthenticated,
            &Method::DELETE,
            "/v2/keys/a",
            StatusCode::UNAUTHORIZED,
            at,
        );
        assert_eq!(anon.detail, "unauthenticated: DELETE /v2/keys/a → 401");
        assert_eq!(anon.machine, None);
    }

    #[test]
    fn the_audit_log_is_under_the_admins_only_directory() {
        assert!(AUDIT_DIR.starts_with(&format!("{}/", super::super::AUTH_DIR)));
    }
}
