//! Who may do what: a pure function of the caller's role, the method and the
//! (percent-decoded) path. No IO; the HTTP layer (`crate::http::auth`)
//! authenticates first and then asks [`authorize`].
//!
//! Levels, lowest first: *read* (`GET` of the API, for every role), the
//! *dashboard* (its pages and read-only server functions: people, so not
//! node tokens), *operate* (units, updates, locks, elections, key writes:
//! operator and admin) and *admin* (tokens, members, and anything not listed
//! here: unknown routes are admin only). Node tokens get reads and, on top, a
//! few writes bound to their machine; some of those need the request body or
//! the stored value, which [`Decision::Check`] names for the HTTP layer.

use axum::http::Method;

use super::AUTH_DIR;
use api::fleet::{MACHINES_DIR, STATES_DIR};

/// The caller, as far as authorization cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// Everything.
    Admin,
    /// Everything but tokens and members.
    Operator,
    /// Reads.
    Viewer,
    /// An agent bound to this machine id.
    Node(&'a str),
}

/// One request, as authorization sees it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The HTTP method.
    pub method: &'a Method,
    /// The percent-decoded path; for `/v2/keys` with the key cleaned as the store cleans it.
    pub path: &'a str,
    /// A `/v2/keys` long poll with `recursive=true` (it reports hidden keys too).
    pub recursive_watch: bool,
}

/// What the HTTP layer must verify before a node's request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A `PUT` of `/_shoal/states/<instance>`: the value's `machine_id` is the node's.
    StateValue,
    /// A `DELETE` of `/_shoal/states/<instance>`: the stored value's `machine_id` is the node's.
    StoredState,
    /// A lock acquire/release: the body's `holder` is the node's machine id.
    LockHolder,
    /// A FleetLock call: the body's `client_params.id` is the node's machine id.
    FleetLockId,
    /// An update check-in: the body's `machine_id` is the node's.
    CheckIn,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 403, with the reason.
    Deny(String),
    /// Allowed for this node if the check passes.
    Check(Check),
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Dashboard,
    Operate,
    /// Operate, or a node whose request passes the check.
    OperateOrNode(Check),
    Admin,
    /// A key-space request: decided by [`keys`].
    Keys,
}

/// Requests anyone may make: health, version and the dashboard's static files.
pub fn is_public(method: &Method, path: &str) -> bool {
    is_read(method)
        && (matches!(path, "/health" | "/version" | "/favicon.ico") || path.starts_with("/pkg/"))
}

fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// The key of a `/v2/keys` path, or `None` for other paths.
pub fn key_of(path: &str) -> Option<&str> {
    match path.strip_prefix("/v2/keys")? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// Decides one request of an authenticated caller.
pub fn authorize(subject: Subject<'_>, access: &Access<'_>) -> Decision {
    if let Some(machine) = journal_answer(access) {
        return match subject {
            Subject::Admin => Decision::Allow,
            Subject::Node(m) if m == machine => Decision::Allow,
            Subject::Node(m) => Decision::Deny(format!(
                "a node token (machine {m}) answers only its own machine's journal requests"
            )),
            Subject::Operator | Subject::Viewer => Decision::Deny(
                "journal requests are answered by the machine's agent, with its node token".into(),
            ),
        };
    }
    let need = need(access.method, access.path);
    if need == Need::Keys {
        return keys(subject, access);
    }
    match (subject, need) {
        (Subject::Admin, _)
        | (_, Need::Read)
        | (Subject::Operator | Subject::Viewer, Need::Dashboard)
        | (Subject::Operator, Need::Operate | Need::OperateOrNode(_)) => Decision::Allow,
        (Subject::Node(_), Need::OperateOrNode(check)) => Decision::Check(check),
        (Subject::Node(_), Need::Dashboard) => {
            Decision::Deny("node tokens are for agents, not the dashboard".into())
        }
        (Subject::Viewer, Need::Operate | Need::OperateOrNode(_)) => {
            Decision::Deny("the viewer role is read only".into())
        }
        (Subject::Node(m), Need::Operate) => Decision::Deny(format!(
            "a node token (machine {m}) may not do this; it needs the operator role"
        )),
        (_, _) => Decision::Deny("this needs the admin role".into()),
    }
}

/// The machine of a journal answer (`POST /api/v1/journals/{machine}/{id}`).
fn journal_answer<'a>(access: &Access<'a>) -> Option<&'a str> {
    if *access.method != Method::POST {
        return None;
    }
    let segments: Vec<&str> = access.path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["api", "v1", "journals", machine, _] => Some(machine),
        _ => None,
    }
}

fn need(method: &Method, path: &str) -> Need {
    if key_of(path).is_some() {
        return Need::Keys;
    }
    let read = is_read(method);
    let post = *method == Method::POST;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let by_method = |read_need: Need, write: Option<(&Method, Need)>| {
        if read {
            read_need
        } else {
            match write {
                Some((m, need)) if m == method => need,
                _ => Need::Admin,
            }
        }
    };
    match segments.as_slice() {
        ["v2", "members"] => by_method(Need::Read, Some((&Method::POST, Need::Admin))),
        ["v2", "members", "leader"] | ["v2", "machines"] | ["v2", "stats", _] => {
            by_method(Need::Read, None)
        }
        ["v2", "members", _] => by_method(Need::Admin, None),
        ["v1", "pre-reboot" | "steady-state"] if post => Need::OperateOrNode(Check::FleetLockId),
        ["api", "v1", "tokens", ..] => Need::Admin,
        ["api", "v1", "machines"]
        | ["api", "v1", "machines", _]
        | ["api", "v1", "events"]
        | ["api", "v1", "openapi.json"]
        | ["api", "v1", "units", _, "journal"]
        | ["api", "v1", "locks"]
        | ["api", "v1", "updates", "payloads", _]
        | ["api", "v1", "updates", "channels"]
        | ["api", "v1", "updates", "machines"]
        | ["api", "v1", "updates", "history"] => by_method(Need::Read, None),
        ["api", "v1", "units"] | ["api", "v1", "updates", "payloads"] => {
            by_method(Need::Read, Some((&Method::POST, Need::Operate)))
        }
        ["api", "v1", "units", _] => by_method(Need::Read, Some((&Method::DELETE, Need::Operate))),
        ["api", "v1", "locks", _] | ["api", "v1", "updates", "channels", _] => {
            by_method(Need::Read, Some((&Method::PUT, Need::Operate)))
        }
        ["api", "v1", "elections", _] => by_method(Need::Read, None),
        ["api", "v1", "units", _, "start" | "stop"]
        | ["api", "v1", "elections", _, "campaign" | "resign"]
        | ["api", "v1", "updates", "channels", _, "pause" | "resume" | "halt"]
            if post =>
        {
            Need::Operate
        }
        ["api", "v1", "locks", _, "acquire" | "release"] if post => {
            Need::OperateOrNode(Check::LockHolder)
        }
        ["api", "v1", "updates", "checkin"] if post => Need::OperateOrNode(Check::CheckIn),
        ["ui", "fn", name] => server_fn(name),
        ["api" | "v1" | "v2" | "raft", ..] => Need::Admin,
        _ if read => Need::Dashboard,
        _ => Need::Admin,
    }
}

/// The dashboard's server functions: reads for viewers, fleet actions for
/// operators; the key browser reaches every key (the token records too), so admins only.
fn server_fn(name: &str) -> Need {
    match name {
        "overview" | "machines" | "units" | "updates" | "events" => Need::Dashboard,
        "submit_unit" | "unit_action" | "set_paused" | "halt_channel" => Need::Operate,
        _ => Need::Admin,
    }
}

/// `/v2/keys`: the token records are admins' alone; viewers read; operators
/// write; a node writes the application space (keys whose first segment does
/// not start with `_`), its own machine record and its own states.
fn keys(subject: Subject<'_>, access: &Access<'_>) -> Decision {
    let key = key_of(access.path).unwrap_or("/");
    let admin_only = |why: &str| match subject {
        Subject::Admin => Decision::Allow,
        _ => Decision::Deny(why.into()),
    };
    if is_within(key, AUTH_DIR) {
        return admin_only("the token records under /_auth are readable by admins only");
    }
    if access.recursive_watch && is_within(AUTH_DIR, key) {
        return admin_only(
            "a recursive watch of / reports the token records under /_auth too; \
             admins only (watch a directory below it)",
        );
    }
    if is_read(access.method) {
        return Decision::Allow;
    }
    match subject {
        Subject::Admin | Subject::Operator => Decision::Allow,
        Subject::Viewer => Decision::Deny("the viewer role is read only".into()),
        Subject::Node(machine) => node_key_write(machine, access.method, key),
    }
}

fn node_key_write(machine: &str, method: &Method, key: &str) -> Decision {
    let first = key.trim_start_matches('/').split('/').next().unwrap_or("");
    if !first.is_empty() && !first.starts_with('_') {
        return Decision::Allow;
    }
    let child_of = |dir: &str| {
        key.strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|name| !name.is_empty() && !name.contains('/'))
    };
    let own_record = child_of(MACHINES_DIR) == Some(machine);
    let is_write = *method == Method::PUT || *method == Method::DELETE;
    if own_record && is_write {
        return Decision::Allow;
    }
    if child_of(STATES_DIR).is_some() {
        if *method == Method::PUT {
            return Decision::Check(Check::StateValue);
        }
        if *method == Method::DELETE {
            return Decision::Check(Check::StoredState);
        }
    }
    Decision::Deny(format!(
        "a node token (machine {machine}) writes only {MACHINES_DIR}/{machine}, \
         its own states under {STATES_DIR} and keys outside the reserved _ prefixes"
    ))
}

/// True when `key` is `dir` or below it (both cleaned).
fn is_within(key: &str, dir: &str) -> bool {
    crate::keyspace::path::is_within(key, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(subject: Subject<'_>, method: Method, path: &str) -> Decision {
        authorize(
            subject,
            &Access {
                method: &method,
                path,
                recursive_watch: false,
            },
        )
    }

    fn allowed(subject: Subject<'_>, method: Method, path: &str) -> bool {
        decide(subject, method, path) == Decision::Allow
    }

    const M1: Subject<'static> = Subject::Node("m1");

    #[test]
    fn only_health_version_and_static_files_are_public() {
        assert!(is_public(&Method::GET, "/health"));
        assert!(is_public(&Method::GET, "/version"));
        assert!(is_public(&Method::GET, "/pkg/frontend.js"));
        assert!(!is_public(&Method::POST, "/health"));
        assert!(!is_public(&Method::GET, "/v2/keys/a"));
        assert!(!is_public(&Method::GET, "/"));
    }

    #[test]
    fn admin_may_do_anything() {
        for (m, p) in [
            (Method::POST, "/api/v1/tokens"),
            (Method::DELETE, "/v2/members/abc"),
            (Method::GET, "/v2/keys/_auth/tokens/x"),
            (Method::PATCH, "/no/such/route"),
        ] {
            assert!(allowed(Subject::Admin, m, p), "{p}");
        }
    }

    #[test]
    fn operator_runs_the_fleet_but_not_tokens_or_members() {
        let op = Subject::Operator;
        assert!(allowed(op, Method::POST, "/api/v1/units"));
        assert!(allowed(op, Method::DELETE, "/api/v1/units/web"));
        assert!(allowed(op, Method::POST, "/api/v1/units/web/start"));
        assert!(allowed(op, Method::PUT, "/api/v1/locks/reboot"));
        assert!(allowed(op, Method::POST, "/api/v1/locks/reboot/release"));
        assert!(allowed(op, Method::POST, "/api/v1/updates/payloads"));
        assert!(allowed(op, Method::PUT, "/api/v1/updates/channels/stable"));
        assert!(allowed(op, Method::PUT, "/v2/keys/_shoal/placements/web"));
        assert!(allowed(op, Method::POST, "/ui/fn/submit_unit"));
        assert!(!allowed(op, Method::GET, "/api/v1/tokens"));
        assert!(!allowed(op, Method::POST, "/v2/members"));
        assert!(!allowed(op, Method::DELETE, "/v2/members/abc"));
        assert!(!allowed(op, Method::GET, "/v2/keys/_auth/tokens/x"));
        assert!(!allowed(op, Method::POST, "/ui/fn/put_key"));
    }

    #[test]
    fn viewer_only_reads() {
        let v = Subject::Viewer;
        for p in [
            "/v2/keys/a",
            "/v2/members",
            "/v2/stats/self",
            "/api/v1/units/web",
            "/api/v1/locks",
            "/api/v1/updates/channels/stable",
            "/api/v1/events",
            "/api/v1/openapi.json",
            "/",
            "/topology",
        ] {
            assert!(allowed(v, Method::GET, p), "{p}");
        }
        for (m, p) in [
            (Method::PUT, "/v2/keys/a"),
            (Method::DELETE, "/v2/keys/a"),
            (Method::POST, "/api/v1/units"),
            (Method::POST, "/api/v1/locks/reboot/acquire"),
            (Method::POST, "/v1/pre-reboot"),
            (Method::POST, "/ui/fn/unit_action"),
            (Method::GET, "/api/v1/tokens"),
        ] {
            assert!(
                matches!(decide(v, m.clone(), p), Decision::Deny(_)),
                "{m} {p}"
            );
        }
        assert!(allowed(v, Method::POST, "/ui/fn/overview"));
    }

    #[test]
    fn nobody_but_admins_sees_the_token_records() {
        for s in [Subject::Operator, Subject::Viewer, M1] {
            assert!(!allowed(s, Method::GET, "/v2/keys/_auth"));
            assert!(!allowed(s, Method::GET, "/v2/keys/_auth/tokens/abc"));
            let watch_root = Access {
                method: &Method::GET,
                path: "/v2/keys",
                recursive_watch: true,
            };
            assert!(matches!(authorize(s, &watch_root), Decision::Deny(_)));
            let watch_dir = Access {
                path: "/v2/keys/_shoal",
                ..watch_root
            };
            assert_eq!(authorize(s, &watch_dir), Decision::Allow);
            assert!(allowed(s, Method::GET, "/v2/keys"));
        }
    }

    #[test]
    fn a_node_writes_only_what_is_its_own() {
        assert!(allowed(M1, Method::PUT, "/v2/keys/_shoal/machines/m1"));
        assert!(allowed(M1, Method::DELETE, "/v2/keys/_shoal/machines/m1"));
        assert!(!allowed(M1, Method::PUT, "/v2/keys/_shoal/machines/m2"));
        assert!(!allowed(M1, Method::PUT, "/v2/keys/_shoal/machines/m1/x"));
        assert!(!allowed(M1, Method::PUT, "/v2/keys/_shoal/machines"));
        assert!(!allowed(M1, Method::PUT, "/v2/keys/_shoal/placements/web"));
        assert!(!allowed(
            M1,
            Method::DELETE,
            "/v2/keys/_shoal/placements/web"
        ));
        assert!(!allowed(M1, Method::PUT, "/v2/keys/_shoal/units/web"));
        assert!(!allowed(M1, Method::POST, "/v2/keys/_shoal/states"));
        assert_eq!(
            decide(M1, Method::PUT, "/v2/keys/_shoal/states/web@1"),
            Decision::Check(Check::StateValue)
        );
        assert_eq!(
            decide(M1, Method::DELETE, "/v2/keys/_shoal/states/web@1"),
            Decision::Check(Check::StoredState)
        );
        assert_eq!(
            decide(M1, Method::POST, "/api/v1/locks/reboot/release"),
            Decision::Check(Check::LockHolder)
        );
        assert_eq!(
            decide(M1, Method::POST, "/v1/pre-reboot"),
            Decision::Check(Check::FleetLockId)
        );
        assert_eq!(
            decide(M1, Method::POST, "/api/v1/updates/checkin"),
            Decision::Check(Check::CheckIn)
        );
        // Journal answers: its own machine's requests only, and only from agents.
        assert!(allowed(M1, Method::POST, "/api/v1/journals/m1/r1"));
        assert!(!allowed(M1, Method::POST, "/api/v1/journals/m2/r1"));
        assert!(!allowed(
            Subject::Operator,
            Method::POST,
            "/api/v1/journals/m1/r1"
        ));
        assert!(!allowed(
            Subject::Viewer,
            Method::POST,
            "/api/v1/journals/m1/r1"
        ));
        assert!(allowed(
            Subject::Admin,
            Method::POST,
            "/api/v1/journals/m1/r1"
        ));
        // What containers need: the application key space.
        assert!(allowed(M1, Method::PUT, "/v2/keys/services/api/web@1"));
        assert!(allowed(M1, Method::POST, "/v2/keys/queue"));
        assert!(!allowed(M1, Method::PUT, "/v2/keys/_other/x"));
        assert!(!allowed(M1, Method::PUT, "/v2/keys"));
        // Reads an agent makes.
        assert!(allowed(M1, Method::GET, "/v2/keys/_shoal"));
        assert!(allowed(M1, Method::GET, "/api/v1/updates/payloads/abc"));
        // Not the engine's or an operator's business.
        for (m, p) in [
            (Method::POST, "/api/v1/units"),
            (Method::POST, "/api/v1/units/web/stop"),
            (Method::PUT, "/api/v1/locks/reboot"),
            (Method::POST, "/api/v1/elections/x/campaign"),
            (Method::PUT, "/api/v1/updates/channels/stable"),
            (Method::GET, "/"),
            (Method::POST, "/ui/fn/overview"),
        ] {
            assert!(
                matches!(decide(M1, m.clone(), p), Decision::Deny(_)),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn unknown_routes_and_methods_are_admin_only() {
        for s in [Subject::Operator, Subject::Viewer, M1] {
            assert!(!allowed(s, Method::DELETE, "/api/v1/machines/m1"));
            assert!(!allowed(s, Method::GET, "/api/v1/unknown"));
            assert!(!allowed(s, Method::PUT, "/api/v1/events"));
            assert!(!allowed(s, Method::POST, "/ui/fn/new_thing"));
        }
    }

    #[test]
    fn the_audit_log_is_admins_only() {
        assert!(allowed(Subject::Admin, Method::GET, "/api/v1/audit"));
        assert!(allowed(Subject::Admin, Method::GET, "/v2/keys/_auth/audit"));
        assert!(allowed(Subject::Admin, Method::GET, "/ui/fn/audit"));
        for s in [Subject::Operator, Subject::Viewer, M1] {
            assert!(!allowed(s, Method::GET, "/api/v1/audit"));
            assert!(!allowed(s, Method::GET, "/v2/keys/_auth/audit"));
            assert!(!allowed(s, Method::DELETE, "/v2/keys/_auth/audit/00000001"));
            assert!(!allowed(s, Method::POST, "/ui/fn/audit"));
        }
    }

    #[test]
    fn key_paths() {
        assert_eq!(key_of("/v2/keys"), Some("/"));
        assert_eq!(key_of("/v2/keys/"), Some("/"));
        assert_eq!(key_of("/v2/keys/a/b"), Some("/a/b"));
        assert_eq!(key_of("/v2/keysx"), None);
        assert_eq!(key_of("/v2/members"), None);
    }
}
