//! The only module that talks to Docker (through bollard): list this
//! machine's containers by label, make sure an image is present, create,
//! start, stop, remove and inspect containers, stream their logs, and watch
//! their events.
//!
//! Every container the agent makes carries the labels [`LABEL_MACHINE`],
//! [`LABEL_UNIT`], [`LABEL_INSTANCE`] and [`LABEL_REVISION`], so several
//! agents can share one Docker engine and an agent restarted finds (adopts)
//! what it made before.
//!
//! Every container also gets the environment of [`instance_env`]: its unit,
//! instance and machine, and the agent's local key-space endpoint, so an app
//! on the host network can find the cluster at `$SHOAL_LOCAL_ENDPOINT`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use api::fleet::{RestartPolicy, Unit};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding, PortMap,
    RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest as _, Sha256};

/// Label naming the machine that owns a container.
pub const LABEL_MACHINE: &str = "shoal.machine";
/// Label naming the unit a container runs.
pub const LABEL_UNIT: &str = "shoal.unit";
/// Label naming the instance a container runs.
pub const LABEL_INSTANCE: &str = "shoal.instance";
/// Label holding the unit revision a container was made from.
pub const LABEL_REVISION: &str = "shoal.revision";
/// Label holding the unit kind (`replicated` or `exclusive`), so self-fencing
/// can stop exclusive containers without reaching the cluster.
pub const LABEL_KIND: &str = "shoal.kind";

/// Seconds Docker waits after SIGTERM before SIGKILL when stopping.
const STOP_TIMEOUT_SECS: i32 = 10;
/// Seconds allowed for any Docker API call.
const DOCKER_TIMEOUT_SECS: u64 = 120;

/// What a Docker call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The Docker endpoint could not be used.
    #[error("cannot connect to Docker at {endpoint}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The bollard error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The image is not present and could not be pulled.
    #[error("image {image} is not present and cannot be pulled: {reason}")]
    Image {
        /// The image reference.
        image: String,
        /// What the pull said.
        reason: String,
    },
    /// The container does not exist (any more).
    #[error("no such container {0}")]
    NotFound(String),
    /// Any other Docker API failure.
    #[error("docker {op} failed")]
    Api {
        /// The operation, e.g. `create shoal-web`.
        op: String,
        /// The bollard error.
        #[source]
        source: bollard::errors::Error,
    },
}

fn api_error(op: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let op = op.into();
    move |source| match &source {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => DockerError::NotFound(op),
        _ => DockerError::Api { op, source },
    }
}

/// One of this machine's containers as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Container name (without the leading `/`).
    pub name: String,
    /// Value of the unit label.
    pub unit: String,
    /// Value of the instance label.
    pub instance: String,
    /// Value of the revision label (0 if missing or unparsable).
    pub revision: u64,
    /// True when the kind label says `exclusive`.
    pub exclusive: bool,
    /// Docker's state: `created`, `running`, `exited`, `restarting`, ...
    pub state: String,
    /// Exit code of the last run, when it is not running.
    pub exit_code: Option<i64>,
    /// Docker's restart count.
    pub restart_count: u64,
    /// When it last started.
    pub started_at: Option<DateTime<Utc>>,
    /// Published ports as `host_ip:host_port->container_port/proto`, sorted.
    pub ports: Vec<String>,
}

impl ContainerInfo {
    /// True while Docker runs (or is restarting) it.
    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "running" | "restarting" | "paused")
    }
}

/// The container name for `instance` on `machine_id`:
/// `shoal-<instance, @ as _>-<machine>`, where `<machine>` is the machine id
/// when it has at most 24 characters, else its first 12 characters and 8 hex
/// digits of its SHA-256 (distinct machines sharing an engine never collide).
pub fn container_name(instance: &str, machine_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let machine = if machine_id.chars().count() <= 24 {
        machine_id.to_owned()
    } else {
        let prefix: String = machine_id.chars().take(12).collect();
        let digest = Sha256::digest(machine_id.as_bytes());
        format!(
            "{prefix}-{:08x}",
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        )
    };
    format!("shoal-{}-{}", clean(instance), clean(&machine))
}

/// The Docker port key (`80/tcp`) and binding of a unit port.
pub fn port_binding(port: &api::fleet::Port) -> (String, PortBinding) {
    let proto = if port.protocol.is_empty() {
        "tcp"
    } else {
        port.protocol.as_str()
    };
    let host_ip = if port.host_ip.is_empty() {
        "0.0.0.0".to_owned()
    } else {
        port.host_ip.clone()
    };
    let host_port = if port.host == 0 {
        String::new()
    } else {
        port.host.to_string()
    };
    (
        format!("{}/{proto}", port.container),
        PortBinding {
            host_ip: Some(host_ip),
            host_port: Some(host_port),
        },
    )
}

/// The labels of a container for `instance` of `unit` at `revision`; the
/// unit's own labels first, so Shoal's cannot be overridden.
pub fn labels(
    machine_id: &str,
    unit: &Unit,
    instance: &str,
    revision: u64,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = unit
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MACHINE.into(), machine_id.into());
    labels.insert(LABEL_UNIT.into(), unit.name.clone());
    labels.insert(LABEL_INSTANCE.into(), instance.into());
    labels.insert(LABEL_REVISION.into(), revision.to_string());
    let kind = match unit.kind {
        api::fleet::UnitKind::Replicated => "replicated",
        api::fleet::UnitKind::Exclusive => "exclusive",
    };
    labels.insert(LABEL_KIND.into(), kind.into());
    labels
}

/// The environment of a container: the unit's own variables, then Shoal's
/// (which win): `SHOAL_UNIT`, `SHOAL_INSTANCE`, `SHOAL_INSTANCE_INDEX` (the
/// `N` of `name@N`, when there is one), `SHOAL_MACHINE_ID` and, when the agent
/// serves one, `SHOAL_LOCAL_ENDPOINT` (`host:port`).
pub fn instance_env(host: &Host, unit: &Unit, instance: &str) -> Vec<String> {
    let mut env: BTreeMap<&str, String> = unit
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    env.insert("SHOAL_UNIT", unit.name.clone());
    env.insert("SHOAL_INSTANCE", instance.to_owned());
    if let Some((_, index)) = instance.split_once('@') {
        env.insert("SHOAL_INSTANCE_INDEX", index.to_owned());
    }
    env.insert("SHOAL_MACHINE_ID", host.machine_id.clone());
    if let Some(local) = host.local_endpoint {
        env.insert("SHOAL_LOCAL_ENDPOINT", local.to_string());
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The create body for `instance` of `unit` at `revision` on `host`.
pub fn create_body(host: &Host, unit: &Unit, instance: &str, revision: u64) -> ContainerCreateBody {
    let mut exposed = HashMap::new();
    let mut bindings: PortMap = HashMap::new();
    for port in &unit.ports {
        let (key, binding) = port_binding(port);
        exposed.insert(key.clone(), HashMap::new());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    let restart = match unit.restart {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
    };
    let host_config = HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        binds: (!unit.volumes.is_empty()).then(|| unit.volumes.clone()),
        restart_policy: Some(DockerRestart {
            name: Some(restart),
            maximum_retry_count: None,
        }),
        memory: (unit.memory_mb > 0)
            .then(|| i64::try_from(unit.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        nano_cpus: (unit.cpu_millis > 0)
            .then(|| i64::try_from(unit.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
        // Docker's init as PID 1 forwards signals (a shell or busybox as PID 1
        // ignores SIGTERM, so every stop would wait for SIGKILL) and reaps zombies.
        init: Some(true),
        network_mode: (!unit.network.is_empty()).then(|| unit.network.clone()),
        ..HostConfig::default()
    };
    ContainerCreateBody {
        image: Some(unit.image.clone()),
        cmd: (!unit.command.is_empty()).then(|| unit.command.clone()),
        env: Some(instance_env(host, unit, instance)),
        labels: Some(labels(&host.machine_id, unit, instance, revision)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

fn format_ports(map: &PortMap) -> Vec<String> {
    let mut out = Vec::new();
    for (key, bindings) in map {
        for b in bindings.iter().flatten() {
            let ip = b.host_ip.as_deref().unwrap_or("");
            let port = b.host_port.as_deref().unwrap_or("");
            if port.is_empty() {
                continue;
            }
            out.push(format!("{ip}:{port}->{key}"));
        }
    }
    out.sort();
    out
}

/// Turns an inspect answer into a [`ContainerInfo`].
fn info_from_inspect(c: ContainerInspectResponse) -> ContainerInfo {
    let labels = c
        .config
        .as_ref()
        .and_then(|cfg| cfg.labels.clone())
        .unwrap_or_default();
    let state = c.state.clone().unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let started_at = state
        .started_at
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0);
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        unit: labels.get(LABEL_UNIT).cloned().unwrap_or_default(),
        instance: labels.get(LABEL_INSTANCE).cloned().unwrap_or_default(),
        revision: labels
            .get(LABEL_REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        exclusive: labels.get(LABEL_KIND).is_some_and(|k| k == "exclusive"),
        exit_code: if running || status == "created" {
            None
        } else {
            state.exit_code
        },
        state: status,
        restart_count: c
            .restart_count
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        started_at,
        ports: c
            .network_settings
            .and_then(|n| n.ports)
            .map(|p| format_ports(&p))
            .unwrap_or_default(),
    }
}

/// The machine containers are made for, as they see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The machine's id (labels and `SHOAL_MACHINE_ID`).
    pub machine_id: String,
    /// The agent's local key-space endpoint (`SHOAL_LOCAL_ENDPOINT`), if served.
    pub local_endpoint: Option<SocketAddr>,
}

/// A connection to the Docker engine on behalf of one machine.
#[derive(Debug, Clone)]
pub struct Docker {
    inner: bollard::Docker,
    host: Host,
}

impl Docker {
    /// Connects to `endpoint` (`unix://`, `tcp://`, `http://` or a socket path)
    /// for `host`. Nothing is sent until the first call.
    pub fn connect(endpoint: &str, host: Host) -> Result<Self, DockerError> {
        let version = bollard::API_DEFAULT_VERSION;
        let inner = if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            bollard::Docker::connect_with_http(endpoint, DOCKER_TIMEOUT_SECS, version)
        } else if let Some(path) = endpoint.strip_prefix("unix://") {
            bollard::Docker::connect_with_unix(path, DOCKER_TIMEOUT_SECS, version)
        } else {
            bollard::Docker::connect_with_unix(endpoint, DOCKER_TIMEOUT_SECS, version)
        }
        .map_err(|source| DockerError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        Ok(Docker { inner, host })
    }

    /// The machine these containers belong to.
    pub fn machine_id(&self) -> &str {
        &self.host.machine_id
    }

    /// The engine's version string (fails when Docker is unreachable).
    pub async fn version(&self) -> Result<String, DockerError> {
        let v = self.inner.version().await.map_err(api_error("version"))?;
        Ok(v.version.unwrap_or_default())
    }

    /// Ids of every container (any state) labelled with this machine.
    pub async fn list_ids(&self) -> Result<Vec<String>, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_MACHINE}={}", self.host.machine_id)],
        )]);
        let list = self
            .inner
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await
            .map_err(api_error("list containers"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Every container of this machine, inspected; ones that vanish meanwhile are skipped.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let mut out = Vec::new();
        for id in self.list_ids().await? {
            match self.inspect(&id).await {
                Ok(info) => out.push(info),
                Err(DockerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Inspects one container.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let c = self
            .inner
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(api_error(format!("inspect {id}")))?;
        Ok(info_from_inspect(c))
    }

    /// Makes sure `image` is present: inspects it, and pulls it if missing.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        match self.inner.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(source) => {
                return Err(DockerError::Api {
                    op: format!("inspect image {image}"),
                    source,
                })
            }
        }
        let (from_image, tag) = split_image(image);
        let pull = self
            .inner
            .create_image(
                Some(CreateImageOptions {
                    from_image: Some(from_image),
                    tag: Some(tag),
                    ..CreateImageOptions::default()
                }),
                None,
                None,
            )
            .try_collect::<Vec<_>>()
            .await;
        if let Err(e) = pull {
            return Err(DockerError::Image {
                image: image.to_owned(),
                reason: e.to_string(),
            });
        }
        match self.inner.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(DockerError::Image {
                image: image.to_owned(),
                reason: format!("pull finished but the image is absent: {e}"),
            }),
        }
    }

    /// Creates (does not start) the container for `instance` of `unit` at
    /// `revision`, pulling the image if needed; answers its id.
    pub async fn create(
        &self,
        unit: &Unit,
        instance: &str,
        revision: u64,
    ) -> Result<String, DockerError> {
        self.ensure_image(&unit.image).await?;
        let name = container_name(instance, &self.host.machine_id);
        let body = create_body(&self.host, unit, instance, revision);
        let created = self
            .inner
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..CreateContainerOptions::default()
                }),
                body,
            )
            .await
            .map_err(api_error(format!("create {name}")))?;
        Ok(created.id)
    }

    /// Starts a container (already running is fine).
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.inner
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(api_error(format!("start {id}")))
    }

    /// Stops a container (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(&self, id: &str) -> Result<(), DockerError> {
        match self
            .inner
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(STOP_TIMEOUT_SECS),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(api_error(format!("stop {id}"))(e)),
        }
    }

    /// Stops and removes a container; one already gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        match self.stop(id).await {
            Ok(()) | Err(DockerError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        match self
            .inner
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await
            .map_err(api_error(format!("remove {id}")))
        {
            Ok(()) | Err(DockerError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The container's output (stdout and stderr interleaved), the last `tail`
    /// lines (`None`: all), following new output when `follow`.
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> impl Stream<Item = Result<bytes::Bytes, DockerError>> + Send + 'static {
        let op = format!("logs {id}");
        self.inner
            .logs(
                id,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
                    ..LogsOptions::default()
                }),
            )
            .map(move |item| {
                item.map(|out| out.into_bytes())
                    .map_err(|source| DockerError::Api {
                        op: op.clone(),
                        source,
                    })
            })
    }

    /// A stream that yields once per container event of this machine (start,
    /// die, destroy, ...), for waking the reconciler.
    pub fn events(&self) -> impl Stream<Item = Result<(), DockerError>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("{LABEL_MACHINE}={}", self.host.machine_id)],
            ),
        ]);
        self.inner
            .events(Some(EventsOptions {
                filters: Some(filters),
                ..EventsOptions::default()
            }))
            .map(|e| {
                e.map(|_| ()).map_err(|source| DockerError::Api {
                    op: "events".into(),
                    source,
                })
            })
    }
}

/// Splits `repo[:tag]` (a registry port is not a tag) into repo and tag
/// (`latest` when absent); a digest reference is kept whole.
pub fn split_image(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_owned(), String::new());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_owned(),
            image[last_slash + i + 1..].to_owned(),
        ),
        None => (image.to_owned(), "latest".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::fleet::Port;

    fn unit() -> Unit {
        serde_json::from_value(serde_json::json!({
            "name": "web",
            "image": "shoal-test/busybox:latest",
            "command": ["httpd", "-f", "-p", "8080"],
            "env": {"A": "1"},
            "ports": [{"host": 18080, "container": 8080}, {"container": 53, "protocol": "udp", "host_ip": "127.0.0.1"}],
            "volumes": ["/tmp:/data:ro"],
            "restart": "on-failure",
            "cpu_millis": 500,
            "memory_mb": 64,
            "labels": {"shoal.machine": "spoof", "team": "a"},
            "network": "host"
        }))
        .expect("unit")
    }

    #[test]
    fn names_are_docker_safe_and_per_machine() {
        let long = container_name("web@3", "3d1219c7c4c5404aaa1f6d2a48adfda4");
        assert!(long.starts_with("shoal-web_3-3d1219c7c4c5-"), "{long}");
        assert_eq!(long.len(), "shoal-web_3-3d1219c7c4c5-".len() + 8);
        assert_ne!(
            long,
            container_name("web@3", "3d1219c7c4c5ffffffffffffffffffff")
        );
        assert_eq!(container_name("db", "m1"), "shoal-db-m1");
        assert_eq!(
            container_name("db", "fence30466-m1"),
            "shoal-db-fence30466-m1"
        );
        assert_ne!(container_name("db", "m1"), container_name("db", "m2"));
    }

    #[test]
    fn images_split_into_repo_and_tag() {
        assert_eq!(split_image("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            split_image("shoal-test/busybox:1.35"),
            ("shoal-test/busybox".into(), "1.35".into())
        );
        assert_eq!(
            split_image("reg:5000/a/b"),
            ("reg:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_image("reg:5000/a/b:v2"),
            ("reg:5000/a/b".into(), "v2".into())
        );
    }

    #[test]
    fn create_body_carries_the_spec_and_labels() {
        let host = Host {
            machine_id: "m1".into(),
            local_endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 4001))),
        };
        let body = create_body(&host, &unit(), "web@1", 42);
        let labels = body.labels.clone().expect("labels");
        assert_eq!(labels.get(LABEL_MACHINE).map(String::as_str), Some("m1"));
        assert_eq!(labels.get(LABEL_UNIT).map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(LABEL_INSTANCE).map(String::as_str),
            Some("web@1")
        );
        assert_eq!(labels.get(LABEL_REVISION).map(String::as_str), Some("42"));
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            body.env,
            Some(
                [
                    "A=1",
                    "SHOAL_INSTANCE=web@1",
                    "SHOAL_INSTANCE_INDEX=1",
                    "SHOAL_LOCAL_ENDPOINT=127.0.0.1:4001",
                    "SHOAL_MACHINE_ID=m1",
                    "SHOAL_UNIT=web",
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            body.cmd,
            Some(vec![
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                "8080".into()
            ])
        );
        let hc = body.host_config.expect("host config");
        assert_eq!(hc.memory, Some(64 * 1024 * 1024));
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.binds, Some(vec!["/tmp:/data:ro".to_owned()]));
        assert_eq!(hc.init, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::ON_FAILURE)
        );
        let ports = hc.port_bindings.expect("ports");
        assert_eq!(
            ports.get("8080/tcp"),
            Some(&Some(vec![PortBinding {
                host_ip: Some("0.0.0.0".into()),
                host_port: Some("18080".into())
            }]))
        );
        assert_eq!(
            ports.get("53/udp"),
            Some(&Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new())
            }]))
        );
        let exposed = body.exposed_ports.expect("exposed");
        assert!(exposed.contains_key("8080/tcp") && exposed.contains_key("53/udp"));
    }

    #[test]
    fn ports_are_formatted_sorted() {
        let (key, b) = port_binding(&Port {
            host: 1,
            container: 2,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
        });
        let map: PortMap = HashMap::from([
            (key, Some(vec![b])),
            ("9/udp".to_owned(), None),
            (
                "3/tcp".to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some("4".into()),
                }]),
            ),
        ]);
        assert_eq!(
            format_ports(&map),
            vec![
                "0.0.0.0:4->3/tcp".to_owned(),
                "127.0.0.1:1->2/tcp".to_owned()
            ]
        );
    }
}
