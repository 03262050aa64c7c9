//! The fleet: machines, units and their placement, as stored in the key
//! space and served by `/api/v1/machines` and `/api/v1/units`.
//!
//! Key layout (all JSON values, hidden under `/_shoal` so listings of `/`
//! stay clean, but readable and watchable like any key):
//! - `/_shoal/machines/<machine id>`: [`Machine`], TTL lease renewed by the agent.
//! - `/_shoal/units/<unit name>`: [`Unit`]; [`Unit::container_revision`] tells
//!   whether a change must recreate its containers.
//! - `/_shoal/placements/<instance>`: [`Placement`], written by the engine with
//!   compare-and-swap (`prevExist=false` to place, `prevIndex` to move/remove).
//! - `/_shoal/states/<instance>`: [`InstanceState`], written by the agent running it.
//! - `/_shoal/unplaced/<instance>`: why the engine cannot place it (a JSON string).
//! - `/_shoal/history/events/<in-order key>`: [`ClusterEvent`], written by the
//!   leader's engine, the oldest deleted beyond [`MAX_EVENTS`].
//!
//! An instance is `<unit>` for a single unit, `<unit>@<n>` (n = 1..replicas)
//! for a replicated one, and `<unit>@<machine id>` for a global one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Key-space directory of machine records.
pub const MACHINES_DIR: &str = "/_shoal/machines";
/// Key-space directory of unit specs.
pub const UNITS_DIR: &str = "/_shoal/units";
/// Key-space directory of placements.
pub const PLACEMENTS_DIR: &str = "/_shoal/placements";
/// Key-space directory of reported instance states.
pub const STATES_DIR: &str = "/_shoal/states";
/// Key-space directory of reasons instances are not placed.
pub const UNPLACED_DIR: &str = "/_shoal/unplaced";
/// Key-space directory of journal requests: `<machine id>/<request id>`, each
/// a [`JournalRequest`] the machine's agent answers by posting the logs.
pub const JOURNALS_DIR: &str = "/_shoal/journals";
/// Key-space directory of cluster events (in-order keys).
pub const EVENTS_DIR: &str = "/_shoal/history/events";
/// Most cluster events kept; the engine deletes older ones.
pub const MAX_EVENTS: usize = 1000;

/// One cluster event: a machine joined or was lost, an instance placed or
/// moved, a member became leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterEvent {
    /// When the leader saw it.
    pub at: DateTime<Utc>,
    /// `machine_joined`, `machine_lost`, `instance_placed`, `instance_moved`, `leader_elected`.
    pub kind: String,
    /// The machine it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// The instance it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Details in words.
    #[serde(default)]
    pub detail: String,
}

/// A host in the fleet, as its agent registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Machine {
    /// Stable machine id (from `/etc/machine-id` unless overridden).
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Addresses other machines reach it on.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Operator metadata, e.g. `region=eu`, `disk=ssd`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Memory capacity in MiB.
    pub memory_mb: u64,
    /// Docker engine version, if reachable.
    #[serde(default)]
    pub docker_version: String,
    /// OS version (filled in by the update engine).
    #[serde(default)]
    pub os_version: String,
    /// Active A/B slot (filled in by the update engine).
    #[serde(default)]
    pub active_slot: String,
    /// True while the machine asks to have its units moved away.
    #[serde(default)]
    pub draining: bool,
    /// Where the agent serves its instances' journals (its local endpoint).
    #[serde(default)]
    pub agent_url: String,
}

/// What the operator wants of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Submitted, not placed.
    #[default]
    Inactive,
    /// Placed and running.
    Launched,
}

/// How many copies of an instance may run during faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// At least once: moved as soon as its machine's lease lapses.
    #[default]
    Replicated,
    /// At most once: the agent stops it when it cannot renew its lease, and
    /// the engine moves it only after a grace period beyond the lease TTL.
    Exclusive,
}

/// Docker restart policy of a unit's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart whenever it stops.
    #[default]
    Always,
    /// Restart when it exits non-zero.
    OnFailure,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Port {
    /// Port on the host (0: let Docker choose).
    #[serde(default)]
    pub host: u16,
    /// Port inside the container.
    pub container: u16,
    /// `tcp` or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Host address to bind (default all).
    #[serde(default)]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// Where a unit may and may not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub struct Placement {
    /// Number of instances (`name@1..N`); 0 or 1 means a single instance named `name`.
    #[serde(default)]
    pub replicas: u32,
    /// One instance on every matching machine.
    #[serde(default)]
    pub global: bool,
    /// Required machine metadata: each key must have one of the listed values (fleet's `MachineMetadata`).
    #[serde(default)]
    pub machine_metadata: BTreeMap<String, Vec<String>>,
    /// Run only on this machine (fleet's `MachineID`).
    #[serde(default)]
    pub machine_id: Option<String>,
    /// Run on the machine where this unit's instance runs (fleet's `MachineOf`).
    #[serde(default)]
    pub machine_of: Option<String>,
    /// Never share a machine with instances of units matching these names or globs (fleet's `Conflicts`).
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Spread instances evenly across the values of this metadata key.
    #[serde(default)]
    pub spread: Option<String>,
}

/// A unit: a container spec plus placement rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unit {
    /// Unit name: `[A-Za-z0-9._-]`, no `@`.
    pub name: String,
    /// Container image.
    pub image: String,
    /// Command and arguments (empty: the image's default).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Bind mounts, `host:container[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// CPU request in millicores.
    #[serde(default)]
    pub cpu_millis: u64,
    /// Memory request in MiB.
    #[serde(default)]
    pub memory_mb: u64,
    /// Extra container labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Docker network mode: empty for Docker's default bridge, `host` to share
    /// the host's network (and reach the agent's local endpoint on loopback),
    /// `none`, or the name of a network.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// Placement rules.
    #[serde(default)]
    pub placement: Placement,
    /// Replicated (at least once) or exclusive (at most once).
    #[serde(default)]
    pub kind: UnitKind,
    /// Desired state.
    #[serde(default)]
    pub desired: Desired,
}

impl Unit {
    /// A launched, replicated unit running `image` with every other field at
    /// its default (the image's command, no ports, one instance, no rules).
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Unit {
        Unit {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            env: BTreeMap::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            restart: RestartPolicy::default(),
            cpu_millis: 0,
            memory_mb: 0,
            labels: BTreeMap::new(),
            network: String::new(),
            placement: Placement::default(),
            kind: UnitKind::default(),
            desired: Desired::Launched,
        }
    }

    /// The revision of what runs in the container: a digest of the fields
    /// Docker sees (image, command, env, ports, volumes, restart policy,
    /// resources, labels, network). Starting, stopping, scaling or re-placing a unit
    /// leaves it unchanged, so those never recreate running containers.
    pub fn container_revision(&self) -> u64 {
        let fields = serde_json::json!([
            self.image,
            self.command,
            self.env,
            self.ports,
            self.volumes,
            self.restart,
            self.cpu_millis,
            self.memory_mb,
            self.labels,
            self.kind,
            self.network,
        ]);
        let digest = Sha256::digest(fields.to_string().as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        // Stays within i64 so it survives every store and label round trip.
        u64::from_be_bytes(bytes) >> 1
    }
}

/// The engine's decision for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    /// Unit name.
    pub unit: String,
    /// Instance name.
    pub instance: String,
    /// The machine that runs it.
    pub machine_id: String,
    /// The container revision ([`Unit::container_revision`]) it should run.
    pub revision: u64,
}

/// A request for an instance's container logs, written by the member a
/// client asked (`GET /api/v1/units/{name}/journal`) under
/// `JOURNALS_DIR/<machine id>/<request id>`. The machine's agent, which
/// watches the key space anyway, answers with
/// `POST {reply_to}/api/v1/journals/<machine id>/<request id>`, its body the
/// logs: the agent connects out to the cluster, so journals reach across hosts
/// over the agent's own (TLS, token) connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRequest {
    /// The instance whose container's logs are wanted.
    pub instance: String,
    /// Keep streaming new output.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    #[serde(default)]
    pub tail: Option<u64>,
    /// Client URL of the member holding the client's request.
    pub reply_to: String,
}

/// What an agent reports about one instance it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceState {
    /// Instance name.
    pub instance: String,
    /// The reporting machine.
    pub machine_id: String,
    /// Docker container id.
    #[serde(default)]
    pub container_id: String,
    /// Docker's state: `created`, `running`, `exited`, ... or `pulling`, `failed`.
    pub state: String,
    /// Last exit code, if it exited.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// How many times it was restarted.
    #[serde(default)]
    pub restarts: u64,
    /// When the container last started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Published ports as `host_ip:host_port->container_port/proto`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The last error, in words.
    #[serde(default)]
    pub error: String,
    /// The container revision running.
    #[serde(default)]
    pub revision: u64,
}

/// One instance as `GET /api/v1/units` shows it: desired and actual side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceStatus {
    /// Instance name.
    pub instance: String,
    /// Where the engine placed it, if anywhere.
    pub machine_id: Option<String>,
    /// What the agent reports.
    pub actual: Option<InstanceState>,
    /// Why it is not placed, when it is not.
    pub unplaced_reason: Option<String>,
}

/// A unit with its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitStatus {
    /// The unit spec.
    pub unit: Unit,
    /// Its revision.
    pub revision: u64,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
}

/// How a unit file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitFormat {
    /// TOML (`shoalctl submit x.toml`).
    Toml,
    /// JSON, the API's own shape.
    Json,
}

impl UnitFormat {
    /// JSON when the text is a JSON object (starts with `{`), else TOML.
    pub fn guess(text: &str) -> Self {
        if text.trim_start().starts_with('{') {
            UnitFormat::Json
        } else {
            UnitFormat::Toml
        }
    }
}

/// Why a unit file cannot be read as a [`Unit`].
#[derive(Debug, thiserror::Error)]
pub enum UnitFileError {
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    /// Not TOML at all.
    #[error("not valid TOML: {0}")]
    Toml(toml::de::Error),
    /// TOML that has no JSON equivalent.
    #[error("TOML without a JSON form: {0}")]
    Convert(serde_json::Error),
    /// Neither the text nor the caller gives a name.
    #[error("the unit has no name")]
    NoName,
    /// Well-formed, but not a unit (a field missing or of the wrong type).
    #[error("not a valid unit: {0}")]
    Invalid(serde_json::Error),
}

/// Reads a unit file; `default_name` is used when the text names none (the CLI
/// passes the file's stem). Shared by `shoalctl submit` and the dashboard.
pub fn parse_unit(
    text: &str,
    format: UnitFormat,
    default_name: Option<&str>,
) -> Result<Unit, UnitFileError> {
    let mut value: serde_json::Value = match format {
        UnitFormat::Json => serde_json::from_str(text).map_err(UnitFileError::Json)?,
        UnitFormat::Toml => {
            let v: toml::Value = toml::from_str(text).map_err(UnitFileError::Toml)?;
            serde_json::to_value(v).map_err(UnitFileError::Convert)?
        }
    };
    if value.get("name").is_none() {
        let name = default_name.ok_or(UnitFileError::NoName)?;
        value["name"] = serde_json::Value::String(name.to_owned());
    }
    serde_json::from_value(value).map_err(UnitFileError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> Unit {
        serde_json::from_value(
            serde_json::json!({ "name": "web", "image": "busybox", "command": ["sleep", "9"] }),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn container_revision_ignores_placement_and_desired_state() {
        let base = unit();
        let mut scaled = base.clone();
        scaled.placement.replicas = 5;
        scaled.desired = Desired::Launched;
        assert_eq!(base.container_revision(), scaled.container_revision());
        let mut changed = base.clone();
        changed.env.insert("MODE".into(), "x".into());
        assert_ne!(base.container_revision(), changed.container_revision());
        assert!(i64::try_from(base.container_revision()).is_ok());
    }

    #[test]
    fn unit_files_are_toml_or_json() {
        let toml = "name = \"web\"\nimage = \"nginx\"\n[placement]\nreplicas = 2\n";
        let unit = parse_unit(toml, UnitFormat::guess(toml), None).expect("a TOML unit");
        assert_eq!((unit.name.as_str(), unit.placement.replicas), ("web", 2));
        let json = r#" {"image": "nginx"}"#;
        assert_eq!(UnitFormat::guess(json), UnitFormat::Json);
        let unit = parse_unit(json, UnitFormat::Json, Some("stem")).expect("a JSON unit");
        assert_eq!(unit.name, "stem");
        assert!(matches!(
            parse_unit(json, UnitFormat::Json, None),
            Err(UnitFileError::NoName)
        ));
        assert!(matches!(
            parse_unit("image = 3", UnitFormat::Toml, Some("x")),
            Err(UnitFileError::Invalid(_))
        ));
    }
}
