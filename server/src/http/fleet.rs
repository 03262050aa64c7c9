//! `/api/v1/machines` and `/api/v1/units`: the fleet's REST API.
//!
//! Reads come from this member's applied key space; writes go through the
//! log. Units are stored at `/_shoal/units/<name>`; the engine
//! (`crate::engine`) turns them into placements. Journals are streamed from
//! the agent that runs the instance.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::fleet::{Desired, InstanceStatus, Machine, Unit, UnitStatus, UNITS_DIR};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::api_error;
use crate::engine::view::{instance_names, unit_of, FleetView, UnitView};
use crate::keyspace::{ErrorCode, Op, Precondition};
use crate::member::{Member, ServeError};

/// The most replicas a unit may ask for.
pub const MAX_REPLICAS: u32 = 1000;
/// How often start/stop retries a compare-and-swap that lost a race.
const CAS_ATTEMPTS: usize = 20;

fn bad_request(message: impl Into<String>) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found(what: &str, name: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what} named {name:?}"),
    )
}

fn unavailable(e: &ServeError) -> Response {
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

/// A unit name: 1-64 of `[A-Za-z0-9._-]`, not starting with `.` or `_`.
pub fn valid_unit_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['.', '_'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks a submitted unit; the error says what is wrong, in words.
pub fn validate(unit: &Unit) -> Result<(), String> {
    if !valid_unit_name(&unit.name) {
        return Err(format!(
            "unit name {:?} must be 1-64 of [A-Za-z0-9._-] (no '@'), not starting with '.' or '_'",
            unit.name
        ));
    }
    if unit.image.trim().is_empty() || unit.image.chars().any(char::is_whitespace) {
        return Err("image must be a non-empty image reference without spaces".into());
    }
    let p = &unit.placement;
    if p.replicas > MAX_REPLICAS {
        return Err(format!("replicas must be at most {MAX_REPLICAS}"));
    }
    if p.global && p.replicas > 1 {
        return Err("a global unit runs one instance per machine; it cannot set replicas".into());
    }
    if let Some(of) = &p.machine_of {
        if !valid_unit_name(of) {
            return Err(format!("machine_of {of:?} is not a unit name"));
        }
        if *of == unit.name {
            return Err("machine_of cannot name the unit itself".into());
        }
    }
    if p.machine_id.as_ref().is_some_and(|m| m.trim().is_empty()) {
        return Err("machine_id must not be empty".into());
    }
    if p.conflicts.iter().any(|c| c.is_empty() || c.len() > 128) {
        return Err("conflicts must be names or globs of 1-128 characters".into());
    }
    if p.spread.as_ref().is_some_and(String::is_empty) {
        return Err("spread must name a metadata key".into());
    }
    for (key, values) in &p.machine_metadata {
        if key.is_empty() || values.is_empty() {
            return Err(format!(
                "machine_metadata {key:?} needs a key and at least one value"
            ));
        }
    }
    for port in &unit.ports {
        if port.container == 0 {
            return Err("a published port needs a container port".into());
        }
        if port.protocol != "tcp" && port.protocol != "udp" {
            return Err(format!(
                "port protocol {:?} must be tcp or udp",
                port.protocol
            ));
        }
    }
    if unit.volumes.iter().any(|v| !v.contains(':')) {
        return Err("volumes are host:container[:ro]".into());
    }
    Ok(())
}

/// Instances of each unit that have a placement, state or reason, by unit name.
fn instances_by_unit(view: &FleetView) -> BTreeMap<&str, Vec<&str>> {
    let mut by_unit: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let known = view
        .placements
        .keys()
        .chain(view.states.keys())
        .chain(view.unplaced.keys());
    for instance in known {
        let list = by_unit.entry(unit_of(instance)).or_default();
        if !list.contains(&instance.as_str()) {
            list.push(instance);
        }
    }
    by_unit
}

/// A unit's status: its wanted instances, then any others still placed or reported.
fn status_of(view: &FleetView, uv: &UnitView, known: &[&str]) -> UnitStatus {
    let mut names = if uv.unit.desired == Desired::Launched {
        instance_names(&uv.unit, &view.machines)
    } else {
        Vec::new()
    };
    let mut extra: Vec<&str> = known
        .iter()
        .copied()
        .filter(|i| !names.iter().any(|n| n == i))
        .collect();
    extra.sort_unstable();
    names.extend(extra.into_iter().map(str::to_owned));
    let instances = names
        .into_iter()
        .map(|instance| InstanceStatus {
            machine_id: view
                .placements
                .get(&instance)
                .map(|p| p.assignment.machine_id.clone()),
            actual: view.states.get(&instance).cloned(),
            unplaced_reason: view.unplaced.get(&instance).cloned(),
            instance,
        })
        .collect();
    UnitStatus {
        unit: uv.unit.clone(),
        revision: uv.revision,
        instances,
    }
}

fn view(member: &Member) -> FleetView {
    member.fleet_view(crate::clock::now())
}

fn unit_status(member: &Member, name: &str) -> Option<UnitStatus> {
    let view = view(member);
    let uv = view.units.get(name)?;
    let by_unit = instances_by_unit(&view);
    let known = by_unit.get(name).map_or(&[][..], Vec::as_slice);
    Some(status_of(&view, uv, known))
}

fn unit_key(name: &str) -> String {
    format!("{UNITS_DIR}/{name}")
}

/// `GET /api/v1/machines`: every machine with a live lease.
#[utoipa::path(
    get,
    path = "/api/v1/machines",
    tag = "fleet",
    responses(
        (status = 200, description = "Every machine with a live lease", body = [api::fleet::Machine]),
    )
)]
pub async fn machines(State(member): State<Arc<Member>>) -> Json<Vec<Machine>> {
    Json(view(&member).machines.into_values().collect())
}

/// `GET /api/v1/machines/{id}`, or 404 `not_found`.
#[utoipa::path(
    get,
    path = "/api/v1/machines/{id}",
    tag = "fleet",
    params(("id" = String, Path, description = "The machine id")),
    responses(
        (status = 200, description = "The machine", body = api::fleet::Machine),
        (status = 404, description = "No such machine; code `not_found`", body = api::error::ApiErrorBody),
    )
)]
pub async fn machine(State(member): State<Arc<Member>>, Path(id): Path<String>) -> Response {
    match view(&member).machines.remove(&id) {
        Some(m) => Json(m).into_response(),
        None => not_found("machine", &id),
    }
}

/// `GET /api/v1/units`: every unit with its instances, desired and actual side by side.
#[utoipa::path(
    get,
    path = "/api/v1/units",
    tag = "fleet",
    responses(
        (status = 200, description = "Every unit with its instances", body = [api::fleet::UnitStatus]),
    )
)]
pub async fn units(State(member): State<Arc<Member>>) -> Json<Vec<UnitStatus>> {
    let view = view(&member);
    let by_unit = instances_by_unit(&view);
    let list = view
        .units
        .iter()
        .map(|(name, uv)| {
            let known = by_unit.get(name.as_str()).map_or(&[][..], Vec::as_slice);
            status_of(&view, uv, known)
        })
        .collect();
    Json(list)
}

/// `GET /api/v1/units/{name}`, or 404 `not_found`.
#[utoipa::path(
    get,
    path = "/api/v1/units/{name}",
    tag = "fleet",
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 200, description = "The unit's status", body = api::fleet::UnitStatus),
        (status = 404, description = "No such unit; code `not_found`", body = api::error::ApiErrorBody),
    )
)]
pub async fn unit(State(member): State<Arc<Member>>, Path(name): Path<String>) -> Response {
    match unit_status(&member, &name) {
        Some(s) => Json(s).into_response(),
        None => not_found("unit", &name),
    }
}

/// `POST /api/v1/units`: 201 with the status of a new unit, 200 for a new
/// revision, 200 without a new revision when the spec is unchanged.
#[utoipa::path(
    post,
    path = "/api/v1/units",
    tag = "fleet",
    request_body = api::fleet::Unit,
    responses(
        (status = 200, description = "A new revision, or the same spec again", body = api::fleet::UnitStatus),
        (status = 201, description = "A new unit", body = api::fleet::UnitStatus),
        (status = 400, description = "Malformed body or invalid name; code `bad_request`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn submit(
    State(member): State<Arc<Member>>,
    body: Result<Json<Unit>, JsonRejection>,
) -> Response {
    let unit = match body {
        Ok(Json(u)) => u,
        Err(e) => return bad_request(e.body_text()),
    };
    if let Err(why) = validate(&unit) {
        return bad_request(why);
    }
    let unchanged = {
        let keys = member.keys.read();
        let current = keys.lookup(&unit_key(&unit.name)).ok();
        let stored = current.and_then(|e| e.value.and_then(|v| serde_json::from_str(&v).ok()));
        stored.as_ref() == Some(&unit)
    };
    if unchanged {
        // The same spec again: no new revision, so nothing restarts.
        if let Some(s) = unit_status(&member, &unit.name) {
            return Json(s).into_response();
        }
    }
    let value = match serde_json::to_string(&unit) {
        Ok(v) => v,
        Err(e) => return bad_request(e.to_string()),
    };
    let op = Op::Put {
        key: unit_key(&unit.name),
        value: Some(value),
        ttl: None,
        refresh: false,
        cond: Precondition::default(),
    };
    match member.write(op).await {
        Ok(event) => {
            let status = if event.body.prev_node.is_none() {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            match unit_status(&member, &unit.name) {
                Some(s) => (status, Json(s)).into_response(),
                // Destroyed again between the write and the read.
                None => not_found("unit", &unit.name),
            }
        }
        Err(e) => unavailable(&e),
    }
}

/// Sets a unit's desired state by compare-and-swap on its index, retrying lost races.
async fn set_desired(member: &Member, name: &str, desired: Desired) -> Response {
    let key = unit_key(name);
    for _ in 0..CAS_ATTEMPTS {
        let entry = match member.keys.read().lookup(&key) {
            Ok(e) => e,
            Err(_) => return not_found("unit", name),
        };
        let mut unit: Unit = match entry.value.as_deref().map(serde_json::from_str) {
            Some(Ok(u)) => u,
            _ => {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt",
                    format!("unit {name} is not a valid unit record"),
                )
            }
        };
        if unit.desired != desired {
            unit.desired = desired;
            let value = match serde_json::to_string(&unit) {
                Ok(v) => v,
                Err(e) => return bad_request(e.to_string()),
            };
            let op = Op::Put {
                key: key.clone(),
                value: Some(value),
                ttl: None,
                refresh: false,
                cond: Precondition {
                    prev_index: Some(entry.modified_index),
                    ..Precondition::default()
                },
            };
            match member.write(op).await {
                Ok(_) => {}
                Err(ServeError::Key(e))
                    if matches!(e.code, ErrorCode::TestFailed | ErrorCode::KeyNotFound) =>
                {
                    continue
                }
                Err(e) => return unavailable(&e),
            }
        }
        return match unit_status(member, name) {
            Some(s) => Json(s).into_response(),
            None => not_found("unit", name),
        };
    }
    api_error(
        StatusCode::CONFLICT,
        "conflict",
        format!("unit {name} kept changing; try again"),
    )
}

/// `POST /api/v1/units/{name}/start`: desired `launched`.
#[utoipa::path(
    post,
    path = "/api/v1/units/{name}/start",
    tag = "fleet",
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 200, description = "Desired `launched`", body = api::fleet::UnitStatus),
        (status = 404, description = "No such unit; code `not_found`", body = api::error::ApiErrorBody),
        (status = 409, description = "The unit kept changing; code `conflict`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn start(State(member): State<Arc<Member>>, Path(name): Path<String>) -> Response {
    set_desired(&member, &name, Desired::Launched).await
}

/// `POST /api/v1/units/{name}/stop`: desired `inactive`.
#[utoipa::path(
    post,
    path = "/api/v1/units/{name}/stop",
    tag = "fleet",
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 200, description = "Desired `inactive`", body = api::fleet::UnitStatus),
        (status = 404, description = "No such unit; code `not_found`", body = api::error::ApiErrorBody),
        (status = 409, description = "The unit kept changing; code `conflict`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn stop(State(member): State<Arc<Member>>, Path(name): Path<String>) -> Response {
    set_desired(&member, &name, Desired::Inactive).await
}

/// `DELETE /api/v1/units/{name}`: 204; the engine then removes its placements.
#[utoipa::path(
    delete,
    path = "/api/v1/units/{name}",
    tag = "fleet",
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 404, description = "No such unit; code `not_found`", body = api::error::ApiErrorBody),
        (status = 503, description = "No leader or the write failed; code `unavailable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn destroy(State(member): State<Arc<Member>>, Path(name): Path<String>) -> Response {
    if !valid_unit_name(&name) {
        return not_found("unit", &name);
    }
    let op = Op::Delete {
        key: unit_key(&name),
        dir: false,
        recursive: false,
        cond: Precondition::default(),
    };
    match member.write(op).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(ServeError::Key(e)) if e.code == ErrorCode::KeyNotFound => not_found("unit", &name),
        Err(e) => unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(json: serde_json::Value) -> Unit {
        serde_json::from_value(json).expect("a unit")
    }

    #[test]
    fn names_are_checked() {
        for ok in ["web", "web-1", "a.b_c", "W9"] {
            assert!(valid_unit_name(ok), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "web@1",
            "_hidden",
            ".",
            "..",
            "a/b",
            "a b",
            long.as_str(),
        ] {
            assert!(!valid_unit_name(bad), "{bad}");
        }
    }

    #[test]
    fn units_are_validated() {
        let ok = unit(serde_json::json!({"name": "web", "image": "nginx"}));
        assert_eq!(validate(&ok), Ok(()));
        let bad = [
            serde_json::json!({"name": "web@1", "image": "nginx"}),
            serde_json::json!({"name": "web", "image": ""}),
            serde_json::json!({"name": "web", "image": "nginx", "placement": {"replicas": 1001}}),
            serde_json::json!({"name": "web", "image": "nginx", "placement": {"global": true, "replicas": 2}}),
            serde_json::json!({"name": "web", "image": "nginx", "placement": {"machine-of": "web"}}),
            serde_json::json!({"name": "web", "image": "nginx", "placement": {"conflicts": [""]}}),
            serde_json::json!({"name": "web", "image": "nginx", "placement": {"machine-metadata": {"region": []}}}),
            serde_json::json!({"name": "web", "image": "nginx", "ports": [{"container": 0}]}),
            serde_json::json!({"name": "web", "image": "nginx", "ports": [{"container": 80, "protocol": "sctp"}]}),
            serde_json::json!({"name": "web", "image": "nginx", "volumes": ["/data"]}),
        ];
        for b in bad {
            assert!(validate(&unit(b.clone())).is_err(), "{b}");
        }
    }

    #[test]
    fn status_lists_wanted_then_leftover_instances() {
        let mut view = FleetView::default();
        let u = unit(serde_json::json!({
            "name": "web", "image": "nginx", "desired": "launched", "placement": {"replicas": 2}
        }));
        let uv = UnitView {
            unit: u,
            revision: 4,
        };
        view.unplaced.insert("web@2".into(), "no machines".into());
        let s = status_of(&view, &uv, &["web@3", "web@2"]);
        let names: Vec<&str> = s.instances.iter().map(|i| i.instance.as_str()).collect();
        assert_eq!(names, ["web@1", "web@2", "web@3"]);
        assert_eq!(
            s.instances[1].unplaced_reason.as_deref(),
            Some("no machines")
        );
        assert_eq!(s.revision, 4);
    }
}
