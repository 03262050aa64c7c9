//! The FleetLock protocol (`POST /v1/pre-reboot`, `POST /v1/steady-state`), so
//! Fedora CoreOS hosts running Zincati can use Shoal as their reboot lock server.
//!
//! Each group is a semaphore of `/api/v1/locks` (`default` is `reboot`, the lock
//! Shoal's agents take; group `g` is `reboot-g`, see `api::locks::fleetlock_lock_name`)
//! and the client id is the holder, so FleetLock clients, Shoal's agents and
//! `shoalctl lock` share the slots. pre-reboot takes a slot with the lock's
//! configured limit, else the limit its current holders took it with, else 1;
//! taking it again as the same id keeps the one slot. steady-state gives the slot
//! back and answers 200 whether or not it was held. Slots last
//! `api::locks::FLEETLOCK_TTL_SECS`, since the protocol never renews them.
//!
//! Errors are `{"kind":...,"value":...}`: 400 `missing_fleet_lock_header`, 400
//! `bad_client_params`, 409 `failed_lock_semaphore_full`, 503 `unavailable`.

use std::sync::Arc;

use api::locks::{
    fleetlock_lock_name, valid_fleetlock_group, AcquireRequest, FleetLockClient, FleetLockError,
    FleetLockRequest, FLEETLOCK_BAD_REQUEST, FLEETLOCK_HEADER, FLEETLOCK_MISSING_HEADER,
    FLEETLOCK_SEMAPHORE_FULL, FLEETLOCK_TTL_SECS, FLEETLOCK_UNAVAILABLE,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::locks::{acquire_slot, busy_message, is_busy, lock_state, release_slot, valid_name};
use crate::member::{Member, ServeError};

/// The note stored with a FleetLock slot, so `shoalctl lock status` tells them apart.
const SLOT_NOTE: &str = "fleetlock";

fn error(status: StatusCode, kind: &str, value: impl Into<String>) -> Response {
    let body = FleetLockError {
        kind: kind.to_owned(),
        value: value.into(),
    };
    (status, Json(body)).into_response()
}

fn unavailable(e: &ServeError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        FLEETLOCK_UNAVAILABLE,
        e.to_string(),
    )
}

/// Checks the header and the body, and names the client's semaphore. The body
/// is read whatever its content type (Zincati sends JSON; `curl -d` does not say so).
fn client(headers: &HeaderMap, body: &[u8]) -> Result<(FleetLockClient, String), Box<Response>> {
    let flagged = headers
        .get(FLEETLOCK_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true");
    if !flagged {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            FLEETLOCK_MISSING_HEADER,
            format!("the request must carry the header `{FLEETLOCK_HEADER}: true`"),
        )));
    }
    let bad = |why: String| Box::new(error(StatusCode::BAD_REQUEST, FLEETLOCK_BAD_REQUEST, why));
    let FleetLockRequest { client_params } = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "body is not {{\"client_params\":{{\"id\",\"group\"}}}}: {e}"
        ))
    })?;
    if !valid_fleetlock_group(&client_params.group) {
        return Err(bad(format!(
            "group {:?} must match ^[a-zA-Z0-9.-]+$",
            client_params.group
        )));
    }
    if !valid_name(&client_params.id) {
        return Err(bad(format!(
            "id {:?} must be 1-128 of [A-Za-z0-9-_.:@], not starting with '_'",
            client_params.id
        )));
    }
    let lock = fleetlock_lock_name(&client_params.group);
    if !valid_name(&lock) {
        return Err(bad(format!("group {:?} is too long", client_params.group)));
    }
    Ok((client_params, lock))
}

/// `POST /v1/pre-reboot`: 200 when the client holds a slot of its group (taken
/// now or before), 409 `failed_lock_semaphore_full` when every slot is held.
pub async fn pre_reboot(
    State(member): State<Arc<Member>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (client, lock) = match client(&headers, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let state = lock_state(&member, &lock);
    let limit = state
        .configured_limit
        .unwrap_or(if state.limit > 0 { state.limit } else { 1 });
    let req = AcquireRequest {
        holder: client.id,
        limit,
        ttl: FLEETLOCK_TTL_SECS,
        value: SLOT_NOTE.to_owned(),
        wait: 0,
    };
    match acquire_slot(&member, &lock, req).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) if is_busy(&e) => error(
            StatusCode::CONFLICT,
            FLEETLOCK_SEMAPHORE_FULL,
            busy_message(&lock_state(&member, &lock), limit),
        ),
        Err(e) => unavailable(&e),
    }
}

/// `POST /v1/steady-state`: 200 once the client holds no slot of its group.
pub async fn steady_state(
    State(member): State<Arc<Member>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (client, lock) = match client(&headers, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match release_slot(&member, &lock, &client.id).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(headers: &HeaderMap, body: &str) -> Result<(String, String), String> {
        match client(headers, body.as_bytes()) {
            Ok((c, lock)) => Ok((c.id, lock)),
            Err(r) => Err(format!("{}", r.status().as_u16())),
        }
    }

    #[test]
    fn fleetlock_requests_need_the_header_and_client_params() {
        let mut headers = HeaderMap::new();
        let body = r#"{"client_params":{"id":"c988d2509fdf","group":"default"}}"#;
        assert_eq!(kind(&headers, body), Err("400".into()));
        headers.insert(FLEETLOCK_HEADER, "false".parse().expect("value"));
        assert_eq!(kind(&headers, body), Err("400".into()));
        headers.insert(FLEETLOCK_HEADER, "true".parse().expect("value"));
        assert_eq!(
            kind(&headers, body),
            Ok(("c988d2509fdf".into(), "reboot".into()))
        );
        assert_eq!(
            kind(
                &headers,
                r#"{"client_params":{"id":"a","group":"workers"},"x":1}"#
            ),
            Ok(("a".into(), "reboot-workers".into()))
        );
        for bad in [
            "",
            "{}",
            r#"{"client_params":{"id":"a"}}"#,
            r#"{"client_params":{"id":"","group":"default"}}"#,
            r#"{"client_params":{"id":"a","group":""}}"#,
            r#"{"client_params":{"id":"a","group":"a_b"}}"#,
            r#"{"client_params":{"id":"_x","group":"default"}}"#,
            r#"{"client_params":{"id":"a/b","group":"default"}}"#,
        ] {
            assert_eq!(kind(&headers, bad), Err("400".into()), "{bad}");
        }
        let long = format!(
            r#"{{"client_params":{{"id":"a","group":"{}"}}}}"#,
            "g".repeat(125)
        );
        assert_eq!(kind(&headers, &long), Err("400".into()));
    }
}
