//! Makes Docker match this machine's placements, and reports what runs.
//!
//! Desired: every `/_shoal/placements/<instance>` whose `machine_id` is this
//! machine and whose unit exists and is `launched`. Actual: every container
//! labelled with this machine. [`plan`] is the pure diff between the two;
//! [`Reconciler::pass`] reads both sides, runs the plan, and writes each
//! instance's [`InstanceState`] to `/_shoal/states/<instance>` when it differs
//! from what is stored there (and removes this machine's states of instances
//! it no longer runs).
//!
//! Fencing: right before any `docker start`, the placement is read again
//! with a quorum read and must still name this machine at the modified index
//! the plan saw. Self-fencing: while the lease may have lapsed
//! ([`LeaseState::is_fenced`]), the pass only stops running containers of
//! exclusive units ([`fence_plan`]) and reports nothing.
//!
//! Adoption: for one lease TTL after the agent starts, containers of
//! instances that have no placement at all are kept ([`hold_unassigned`]): a
//! machine that comes back finds the placements of what it ran gone (the
//! engine saw it missing) and the engine places those instances on it again
//! within moments, so its running containers are adopted instead of being
//! removed and recreated. Containers of instances placed on another machine
//! are removed at once.
//!
//! A pass runs when the key-space watch on `/_shoal` sees a placement or unit
//! change, when Docker reports an event for this machine's containers, when
//! the fencing verdict flips, and every resync period.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use api::client::{
    DeleteOptions, GetOptions, SetOptions, WatchCursor, WatchEvent, ETCD_KEY_NOT_FOUND,
};
use api::fleet::{
    Assignment, Desired, InstanceState, RestartPolicy, Unit, UnitKind, PLACEMENTS_DIR, STATES_DIR,
    UNITS_DIR,
};
use api::keys::Node;
use api::{Client, ClientError};
use futures::StreamExt;
use tokio::sync::Notify;

use crate::docker::{ContainerInfo, Docker, DockerError};
use crate::journal;
use crate::lease::{error_chain, LeaseState};

/// How often a full pass runs even without any event.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(5);

/// What a pass can fail with as a whole (single actions fail per instance).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading or writing the key space failed.
    #[error("key space")]
    Client(#[from] ClientError),
    /// Docker failed.
    #[error("docker")]
    Docker(#[from] DockerError),
}

/// One instance this machine should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredInstance {
    /// Instance name.
    pub instance: String,
    /// Its unit spec.
    pub unit: Unit,
    /// The revision to run: [`api::fleet::Unit::container_revision`].
    pub revision: u64,
    /// Modified index of the placement (the fencing token).
    pub placement_index: u64,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop and remove a container.
    Remove {
        /// Instance label of the container.
        instance: String,
        /// The container.
        container_id: String,
        /// Why.
        reason: RemoveReason,
    },
    /// Stop a running container but keep it (self-fencing).
    Stop {
        /// Instance label of the container.
        instance: String,
        /// The container.
        container_id: String,
    },
    /// Create and start a container for a desired instance.
    Create {
        /// The instance.
        instance: String,
    },
    /// Start an existing container again (never started, or dead and its
    /// restart policy says so).
    Start {
        /// The instance.
        instance: String,
        /// The container.
        container_id: String,
    },
}

/// Why a container is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its instance is no longer placed on this machine.
    Unassigned,
    /// It runs an older (or newer) revision than the one desired.
    Outdated,
    /// Another container runs the same instance.
    Duplicate,
}

/// True when a stopped container should be started again under `policy`.
pub fn should_restart(c: &ContainerInfo, policy: RestartPolicy) -> bool {
    if c.is_running() {
        return false;
    }
    if c.state == "created" {
        return true;
    }
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => c.exit_code != Some(0),
        RestartPolicy::No => false,
    }
}

/// Orders the containers of one instance best first: running, then most
/// recently started, then by id (deterministic).
fn best_first(a: &&ContainerInfo, b: &&ContainerInfo) -> std::cmp::Ordering {
    b.is_running()
        .cmp(&a.is_running())
        .then(b.started_at.cmp(&a.started_at))
        .then(a.id.cmp(&b.id))
}

/// The pure diff of desired instances against this machine's containers.
/// Removals and stops come first (so a recreated container can take its
/// ports), then creations and starts, each group in instance order.
pub fn plan(desired: &BTreeMap<String, DesiredInstance>, actual: &[ContainerInfo]) -> Vec<Action> {
    let mut by_instance: BTreeMap<&str, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in actual {
        by_instance.entry(c.instance.as_str()).or_default().push(c);
    }
    let mut removals = Vec::new();
    let mut starts = Vec::new();
    let remove = |c: &ContainerInfo, reason| Action::Remove {
        instance: c.instance.clone(),
        container_id: c.id.clone(),
        reason,
    };
    for (instance, containers) in &by_instance {
        let Some(want) = desired.get(*instance) else {
            removals.extend(
                containers
                    .iter()
                    .map(|c| remove(c, RemoveReason::Unassigned)),
            );
            continue;
        };
        let mut current: Vec<&ContainerInfo> = Vec::new();
        for c in containers {
            if c.revision == want.revision {
                current.push(c);
            } else {
                removals.push(remove(c, RemoveReason::Outdated));
            }
        }
        current.sort_by(best_first);
        let mut current = current.into_iter();
        match current.next() {
            None => starts.push(Action::Create {
                instance: want.instance.clone(),
            }),
            Some(keep) => {
                if should_restart(keep, want.unit.restart) {
                    starts.push(Action::Start {
                        instance: want.instance.clone(),
                        container_id: keep.id.clone(),
                    });
                }
            }
        }
        removals.extend(current.map(|c| remove(c, RemoveReason::Duplicate)));
    }
    for instance in desired.keys() {
        if !by_instance.contains_key(instance.as_str()) {
            starts.push(Action::Create {
                instance: instance.clone(),
            });
        }
    }
    starts.sort_by(|a, b| action_instance(a).cmp(action_instance(b)));
    removals.extend(starts);
    removals
}

fn action_instance(a: &Action) -> &str {
    match a {
        Action::Remove { instance, .. }
        | Action::Stop { instance, .. }
        | Action::Create { instance }
        | Action::Start { instance, .. } => instance,
    }
}

/// What a fenced machine does: stop every running container of an exclusive unit.
pub fn fence_plan(actual: &[ContainerInfo]) -> Vec<Action> {
    actual
        .iter()
        .filter(|c| c.exclusive && c.is_running())
        .map(|c| Action::Stop {
            instance: c.instance.clone(),
            container_id: c.id.clone(),
        })
        .collect()
}

/// A placement as read from the key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementEntry {
    /// The engine's decision.
    pub assignment: Assignment,
    /// Modified index of the placement key.
    pub index: u64,
}

/// The instances `machine_id` should run: its placements whose unit exists
/// and is launched, each with its unit's container revision.
pub fn desired_instances(
    machine_id: &str,
    placements: &[PlacementEntry],
    units: &BTreeMap<String, Unit>,
) -> BTreeMap<String, DesiredInstance> {
    placements
        .iter()
        .filter(|p| p.assignment.machine_id == machine_id)
        .filter_map(|p| {
            let unit = units.get(&p.assignment.unit)?;
            (unit.desired == Desired::Launched).then(|| {
                (
                    p.assignment.instance.clone(),
                    DesiredInstance {
                        instance: p.assignment.instance.clone(),
                        unit: unit.clone(),
                        revision: unit.container_revision(),
                        placement_index: p.index,
                    },
                )
            })
        })
        .collect()
}

/// The state to report for a container of `instance`.
pub fn state_of(
    machine_id: &str,
    c: &ContainerInfo,
    extra_restarts: u64,
    error: Option<&str>,
) -> InstanceState {
    InstanceState {
        instance: c.instance.clone(),
        machine_id: machine_id.to_owned(),
        container_id: c.id.clone(),
        state: c.state.clone(),
        exit_code: c.exit_code,
        restarts: c.restart_count + extra_restarts,
        started_at: c.started_at,
        ports: c.ports.clone(),
        error: error.unwrap_or_default().to_owned(),
        revision: c.revision,
    }
}

/// The leaf nodes under a listed directory, depth first.
fn leaves(node: &Node, out: &mut Vec<Node>) {
    match &node.nodes {
        Some(children) => children.iter().for_each(|n| leaves(n, out)),
        None if !node.dir => out.push(node.clone()),
        None => {}
    }
}

/// The instances `machine_id` should run (its placements of launched
/// units), and the instances placed on other machines; a `quorum` read when
/// a decision must not rest on a stale answer.
pub async fn read_desired(
    client: &Client,
    machine_id: &str,
    quorum: bool,
) -> Result<(BTreeMap<String, DesiredInstance>, BTreeSet<String>), ClientError> {
    let (placements, units) = read_placements(client, quorum).await?;
    let elsewhere = placements
        .iter()
        .filter(|p| p.assignment.machine_id != machine_id)
        .map(|p| p.assignment.instance.clone())
        .collect();
    Ok((
        desired_instances(machine_id, &placements, &units),
        elsewhere,
    ))
}

/// Every placement and every unit by name (unreadable ones are skipped).
pub async fn read_placements(
    client: &Client,
    quorum: bool,
) -> Result<(Vec<PlacementEntry>, BTreeMap<String, Unit>), ClientError> {
    let mut placements = Vec::new();
    for node in list_dir(client, PLACEMENTS_DIR, quorum).await? {
        let value = node.value.as_deref().unwrap_or_default();
        match serde_json::from_str::<Assignment>(value) {
            Ok(assignment) => placements.push(PlacementEntry {
                assignment,
                index: node.modified_index,
            }),
            Err(e) => tracing::warn!(key = ?node.key, error = %e, "unreadable placement"),
        }
    }
    let mut units = BTreeMap::new();
    for node in list_dir(client, UNITS_DIR, quorum).await? {
        let value = node.value.as_deref().unwrap_or_default();
        match serde_json::from_str::<Unit>(value) {
            Ok(unit) => {
                units.insert(unit.name.clone(), unit);
            }
            Err(e) => tracing::warn!(key = ?node.key, error = %e, "unreadable unit"),
        }
    }
    Ok((placements, units))
}

/// Lists the leaves under `dir`; an absent directory is empty.
pub(crate) async fn list_dir(
    client: &Client,
    dir: &str,
    quorum: bool,
) -> Result<Vec<Node>, ClientError> {
    let opts = GetOptions {
        recursive: true,
        sorted: true,
        quorum,
    };
    match client.get(dir, opts).await {
        Ok(answer) => {
            let mut out = Vec::new();
            leaves(&answer.body.node, &mut out);
            Ok(out)
        }
        Err(e) if e.etcd_code() == Some(ETCD_KEY_NOT_FOUND) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn last_segment(key: Option<&str>) -> &str {
    key.and_then(|k| k.rsplit('/').next()).unwrap_or_default()
}

/// Drops from `actions` the removals of unassigned containers whose
/// instance is not placed on another machine (the adoption grace after a
/// start); everything else stays.
pub fn hold_unassigned(actions: Vec<Action>, placed_elsewhere: &BTreeSet<String>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| match a {
            Action::Remove {
                reason: RemoveReason::Unassigned,
                instance,
                ..
            } => placed_elsewhere.contains(instance),
            _ => true,
        })
        .collect()
}

/// Drives Docker towards this machine's placements.
#[derive(Debug)]
pub struct Reconciler {
    client: Client,
    docker: Docker,
    machine_id: String,
    lease: Arc<LeaseState>,
    resync: Duration,
    /// Until then unassigned containers are kept (see [`hold_unassigned`]).
    adopt_until: Option<tokio::time::Instant>,
    /// Starts done by the agent (not Docker) per container id.
    agent_restarts: HashMap<String, u64>,
    /// The last error per instance (cleared when the instance runs).
    errors: HashMap<String, String>,
    wake: Arc<Notify>,
}

impl Reconciler {
    /// A reconciler for the machine `docker` acts for.
    pub fn new(client: Client, docker: Docker, lease: Arc<LeaseState>) -> Self {
        Reconciler {
            client,
            machine_id: docker.machine_id().to_owned(),
            docker,
            adopt_until: Some(tokio::time::Instant::now() + lease.ttl()),
            lease,
            resync: DEFAULT_RESYNC,
            agent_restarts: HashMap::new(),
            errors: HashMap::new(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Sets the period of full passes without events.
    pub fn with_resync(mut self, resync: Duration) -> Self {
        self.resync = resync;
        self
    }

    /// The fencing check right before `docker start`: the placement still
    /// names this machine at the index the plan saw (quorum read), and, for
    /// an exclusive unit, the lease has not lapsed.
    async fn still_placed(&self, want: &DesiredInstance) -> Result<bool, ClientError> {
        if want.unit.kind == UnitKind::Exclusive && self.lease.is_fenced() {
            return Ok(false);
        }
        let key = format!("{PLACEMENTS_DIR}/{}", want.instance);
        let opts = GetOptions {
            quorum: true,
            ..GetOptions::default()
        };
        match self.client.get(&key, opts).await {
            Ok(answer) => {
                let node = answer.body.node;
                let ours = node
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_str::<Assignment>(v).ok())
                    .is_some_and(|a| a.machine_id == self.machine_id);
                Ok(ours && node.modified_index == want.placement_index)
            }
            Err(e) if e.etcd_code() == Some(ETCD_KEY_NOT_FOUND) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Fencing check then start; answers whether it started.
    async fn fenced_start(&mut self, want: &DesiredInstance, id: &str) -> Result<bool, String> {
        match self.still_placed(want).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(instance = %want.instance, "placement moved before start; not starting");
                return Ok(false);
            }
            Err(e) => return Err(format!("fencing check failed: {}", error_chain(&e))),
        }
        self.docker
            .start(id)
            .await
            .map_err(|e| error_chain(&e))
            .map(|()| true)
    }

    async fn execute(&mut self, action: &Action, desired: &BTreeMap<String, DesiredInstance>) {
        match action {
            Action::Remove {
                instance,
                container_id,
                reason,
            } => {
                tracing::info!(%instance, %container_id, ?reason, "removing container");
                if let Err(e) = self.docker.remove(container_id).await {
                    tracing::warn!(%instance, error = %error_chain(&e), "remove failed");
                }
                self.agent_restarts.remove(container_id);
            }
            Action::Stop {
                instance,
                container_id,
            } => {
                tracing::warn!(%instance, %container_id, "lease lapsed: stopping exclusive container");
                if let Err(e) = self.docker.stop(container_id).await {
                    tracing::warn!(%instance, error = %error_chain(&e), "stop failed");
                }
            }
            Action::Create { instance } => {
                let Some(want) = desired.get(instance) else {
                    return;
                };
                tracing::info!(%instance, revision = want.revision, image = %want.unit.image, "creating container");
                let id = match self
                    .docker
                    .create(&want.unit, instance, want.revision)
                    .await
                {
                    Ok(id) => id,
                    Err(e) => {
                        let msg = error_chain(&e);
                        tracing::warn!(%instance, error = %msg, "create failed");
                        self.errors.insert(instance.clone(), msg);
                        return;
                    }
                };
                match self.fenced_start(want, &id).await {
                    Ok(true) => {
                        self.errors.remove(instance);
                    }
                    Ok(false) => {
                        if let Err(e) = self.docker.remove(&id).await {
                            tracing::warn!(%instance, error = %error_chain(&e), "remove failed");
                        }
                    }
                    Err(msg) => {
                        tracing::warn!(%instance, error = %msg, "start failed");
                        self.errors.insert(instance.clone(), msg);
                    }
                }
            }
            Action::Start {
                instance,
                container_id,
            } => {
                let Some(want) = desired.get(instance) else {
                    return;
                };
                tracing::info!(%instance, %container_id, "starting container");
                match self.fenced_start(want, container_id).await {
                    Ok(true) => {
                        *self.agent_restarts.entry(container_id.clone()).or_default() += 1;
                        self.errors.remove(instance);
                    }
                    Ok(false) => {}
                    Err(msg) => {
                        tracing::warn!(%instance, error = %msg, "start failed");
                        self.errors.insert(instance.clone(), msg);
                    }
                }
            }
        }
    }

    /// Writes the states of `desired` instances that differ from the stored
    /// ones, and removes stored states of this machine for other instances.
    async fn report(
        &self,
        desired: &BTreeMap<String, DesiredInstance>,
        actual: &[ContainerInfo],
    ) -> Result<(), ClientError> {
        let mut want: BTreeMap<String, InstanceState> = BTreeMap::new();
        for (instance, d) in desired {
            let error = self.errors.get(instance).map(String::as_str);
            let mut containers: Vec<&ContainerInfo> = actual
                .iter()
                .filter(|c| &c.instance == instance && c.revision == d.revision)
                .collect();
            containers.sort_by(best_first);
            let state = match containers.first() {
                Some(c) => state_of(
                    &self.machine_id,
                    c,
                    self.agent_restarts.get(&c.id).copied().unwrap_or(0),
                    error,
                ),
                None => InstanceState {
                    instance: instance.clone(),
                    machine_id: self.machine_id.clone(),
                    state: if error.is_some() { "failed" } else { "pending" }.into(),
                    error: error.unwrap_or_default().to_owned(),
                    revision: d.revision,
                    ..InstanceState::default()
                },
            };
            want.insert(instance.clone(), state);
        }

        let mut stored: BTreeMap<String, (InstanceState, u64)> = BTreeMap::new();
        for node in list_dir(&self.client, STATES_DIR, false).await? {
            let instance = last_segment(node.key.as_deref()).to_owned();
            let value = node.value.as_deref().unwrap_or_default();
            if let Ok(state) = serde_json::from_str::<InstanceState>(value) {
                stored.insert(instance, (state, node.modified_index));
            }
        }

        for (instance, state) in &want {
            if stored.get(instance).is_some_and(|(s, _)| s == state) {
                continue;
            }
            let value = serde_json::to_string(state).unwrap_or_default();
            self.client
                .set(
                    &format!("{STATES_DIR}/{instance}"),
                    &value,
                    SetOptions::default(),
                )
                .await?;
        }
        for (instance, (state, index)) in &stored {
            if state.machine_id != self.machine_id || want.contains_key(instance) {
                continue;
            }
            let opts = DeleteOptions {
                prev_index: Some(*index),
                ..DeleteOptions::default()
            };
            match self
                .client
                .delete(&format!("{STATES_DIR}/{instance}"), opts)
                .await
            {
                Ok(_) => {}
                // Someone else wrote it meanwhile (or it is gone): not ours to remove.
                Err(e) if e.etcd_code().is_some() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One full pass: read both sides, act, report.
    pub async fn pass(&mut self) -> Result<(), ReconcileError> {
        if self.lease.is_fenced() {
            let actual = self.docker.list().await?;
            for action in fence_plan(&actual) {
                self.execute(&action, &BTreeMap::new()).await;
            }
            return Ok(());
        }
        let (desired, elsewhere) = read_desired(&self.client, &self.machine_id, false).await?;
        let actual = self.docker.list().await?;
        let mut actions = plan(&desired, &actual);
        match self.adopt_until {
            Some(until) if tokio::time::Instant::now() < until => {
                actions = hold_unassigned(actions, &elsewhere);
            }
            _ => self.adopt_until = None,
        }
        for action in &actions {
            self.execute(action, &desired).await;
        }
        let actual = if actions.is_empty() {
            actual
        } else {
            self.docker.list().await?
        };
        let live: std::collections::HashSet<&str> = actual.iter().map(|c| c.id.as_str()).collect();
        self.agent_restarts
            .retain(|id, _| live.contains(id.as_str()));
        self.errors.retain(|i, _| desired.contains_key(i));
        if !self.lease.is_fenced() {
            self.report(&desired, &actual).await?;
        }
        Ok(())
    }

    /// Wakes the reconciler on placement/unit changes under `/_shoal`, and
    /// answers the journal requests for this machine it sees there.
    async fn watch_keys(client: Client, docker: Docker, wake: Arc<Notify>) {
        loop {
            let start = match client.get(PLACEMENTS_DIR, GetOptions::default()).await {
                Ok(a) => a.etcd_index,
                Err(ClientError::Etcd(e)) if e.error_code == ETCD_KEY_NOT_FOUND => e.index,
                Err(e) => {
                    tracing::debug!(error = %error_chain(&e), "watch start failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut watcher = client.watcher("/_shoal", true, WatchCursor::after(start));
            loop {
                match watcher.next().await {
                    Ok(WatchEvent::Change(answer)) => {
                        let node = &answer.body.node;
                        let key = node.key.as_deref().unwrap_or_default();
                        if key.starts_with(PLACEMENTS_DIR) || key.starts_with(UNITS_DIR) {
                            wake.notify_one();
                        }
                        let created = matches!(answer.body.action.as_str(), "set" | "create");
                        let request = journal::request_id(key, docker.machine_id())
                            .filter(|_| created)
                            .zip(node.value.as_ref());
                        if let Some((id, value)) = request {
                            let (client, docker) = (client.clone(), docker.clone());
                            tokio::spawn(journal::answer(
                                client,
                                docker,
                                id.to_owned(),
                                value.clone(),
                            ));
                        }
                    }
                    Ok(WatchEvent::Resync { .. }) => wake.notify_one(),
                    Err(e) => {
                        tracing::debug!(error = %error_chain(&e), "watch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Wakes the reconciler on Docker events of this machine's containers.
    async fn watch_docker(docker: Docker, wake: Arc<Notify>) {
        loop {
            let mut events = Box::pin(docker.events());
            while let Some(event) = events.next().await {
                match event {
                    Ok(()) => wake.notify_one(),
                    Err(e) => {
                        tracing::debug!(error = %error_chain(&e), "docker events failed");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Self-fencing independent of passes (a pass can hang on a partitioned
    /// cluster for a request timeout): while the lease may have lapsed, stop
    /// every running exclusive container, checking several times a second.
    async fn fence_loop(docker: Docker, lease: Arc<LeaseState>) {
        loop {
            if lease.is_fenced() {
                match docker.list().await {
                    Ok(actual) => {
                        for action in fence_plan(&actual) {
                            if let Action::Stop {
                                instance,
                                container_id,
                            } = action
                            {
                                tracing::warn!(%instance, %container_id, "lease lapsed: stopping exclusive container");
                                if let Err(e) = docker.stop(&container_id).await {
                                    tracing::warn!(%instance, error = %error_chain(&e), "stop failed");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "fencing: docker list failed")
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs passes until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let keys = tokio::spawn(Self::watch_keys(
            self.client.clone(),
            self.docker.clone(),
            self.wake.clone(),
        ));
        let events = tokio::spawn(Self::watch_docker(self.docker.clone(), self.wake.clone()));
        let fence = tokio::spawn(Self::fence_loop(self.docker.clone(), self.lease.clone()));
        tokio::pin!(shutdown);
        let mut fenced = self.lease.is_fenced();
        let mut last_pass = tokio::time::Instant::now();
        let mut due = true;
        loop {
            if due {
                last_pass = tokio::time::Instant::now();
                if let Err(e) = self.pass().await {
                    tracing::warn!(error = %error_chain(&e), "reconcile pass failed");
                }
            }
            let wait = self.resync.saturating_sub(last_pass.elapsed());
            // Wake at least every second to notice the lease lapsing and the
            // adoption grace ending.
            let tick = wait.min(Duration::from_secs(1));
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => due = true,
                () = tokio::time::sleep(tick) => {
                    let now_fenced = self.lease.is_fenced();
                    let grace_over = self
                        .adopt_until
                        .is_some_and(|until| tokio::time::Instant::now() >= until);
                    due = now_fenced != fenced
                        || grace_over
                        || last_pass.elapsed() >= self.resync;
                    fenced = now_fenced;
                }
            }
        }
        keys.abort();
        events.abort();
        fence.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, restart: RestartPolicy, kind: UnitKind) -> Unit {
        Unit {
            restart,
            kind,
            ..Unit::new(name, "img")
        }
    }

    fn want(instance: &str, revision: u64, restart: RestartPolicy) -> (String, DesiredInstance) {
        let unit_name = instance.split('@').next().unwrap_or(instance);
        (
            instance.to_owned(),
            DesiredInstance {
                instance: instance.into(),
                unit: unit(unit_name, restart, UnitKind::Replicated),
                revision,
                placement_index: 100,
            },
        )
    }

    fn container(id: &str, instance: &str, revision: u64, state: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("shoal-{instance}"),
            unit: instance.split('@').next().unwrap_or(instance).into(),
            instance: instance.into(),
            revision,
            state: state.into(),
            exit_code: (state == "exited").then_some(1),
            ..ContainerInfo::default()
        }
    }

    fn create(i: &str) -> Action {
        Action::Create { instance: i.into() }
    }

    fn remove(i: &str, id: &str, reason: RemoveReason) -> Action {
        Action::Remove {
            instance: i.into(),
            container_id: id.into(),
            reason,
        }
    }

    fn start(i: &str, id: &str) -> Action {
        Action::Start {
            instance: i.into(),
            container_id: id.into(),
        }
    }

    #[test]
    fn nothing_to_do_when_matching() {
        let desired = BTreeMap::from([want("web@1", 5, RestartPolicy::Always)]);
        let actual = vec![container("c1", "web@1", 5, "running")];
        assert_eq!(plan(&desired, &actual), vec![]);
        assert_eq!(plan(&BTreeMap::new(), &[]), vec![]);
    }

    #[test]
    fn missing_instances_are_created_in_order() {
        let desired = BTreeMap::from([
            want("web@2", 5, RestartPolicy::Always),
            want("db", 3, RestartPolicy::Always),
            want("web@1", 5, RestartPolicy::Always),
        ]);
        assert_eq!(
            plan(&desired, &[]),
            vec![create("db"), create("web@1"), create("web@2")]
        );
    }

    #[test]
    fn unassigned_containers_are_removed_first() {
        let desired = BTreeMap::from([want("web@1", 5, RestartPolicy::Always)]);
        let actual = vec![
            container("c9", "old", 1, "running"),
            container("c8", "gone@2", 1, "exited"),
        ];
        assert_eq!(
            plan(&desired, &actual),
            vec![
                remove("gone@2", "c8", RemoveReason::Unassigned),
                remove("old", "c9", RemoveReason::Unassigned),
                create("web@1"),
            ]
        );
    }

    #[test]
    fn the_adoption_grace_keeps_unplaced_instances_only() {
        let actions = vec![
            remove("gone", "c1", RemoveReason::Unassigned),
            remove("moved", "c2", RemoveReason::Unassigned),
            remove("web@1", "c3", RemoveReason::Outdated),
            create("web@1"),
        ];
        let elsewhere = BTreeSet::from(["moved".to_owned()]);
        assert_eq!(
            hold_unassigned(actions, &elsewhere),
            vec![
                remove("moved", "c2", RemoveReason::Unassigned),
                remove("web@1", "c3", RemoveReason::Outdated),
                create("web@1"),
            ]
        );
    }

    #[test]
    fn a_new_revision_recreates() {
        let desired = BTreeMap::from([want("web@1", 7, RestartPolicy::Always)]);
        let actual = vec![container("c1", "web@1", 5, "running")];
        assert_eq!(
            plan(&desired, &actual),
            vec![
                remove("web@1", "c1", RemoveReason::Outdated),
                create("web@1")
            ]
        );
    }

    #[test]
    fn running_containers_are_adopted_and_duplicates_removed() {
        let desired = BTreeMap::from([want("web@1", 5, RestartPolicy::Always)]);
        let mut newer = container("c2", "web@1", 5, "running");
        newer.started_at = chrono::DateTime::from_timestamp(2_000, 0);
        let mut older = container("c1", "web@1", 5, "running");
        older.started_at = chrono::DateTime::from_timestamp(1_000, 0);
        let dead = container("c0", "web@1", 5, "exited");
        let actual = vec![older, dead, newer];
        // The running, most recently started one stays; the rest go.
        assert_eq!(
            plan(&desired, &actual),
            vec![
                remove("web@1", "c1", RemoveReason::Duplicate),
                remove("web@1", "c0", RemoveReason::Duplicate),
            ]
        );
    }

    #[test]
    fn dead_containers_restart_by_policy() {
        let mut clean_exit = container("c3", "c", 1, "exited");
        clean_exit.exit_code = Some(0);
        let desired = BTreeMap::from([
            want("a", 1, RestartPolicy::Always),
            want("b", 1, RestartPolicy::OnFailure),
            want("c", 1, RestartPolicy::OnFailure),
            want("d", 1, RestartPolicy::No),
            want("e", 1, RestartPolicy::No),
        ]);
        let actual = vec![
            container("c1", "a", 1, "exited"),
            container("c2", "b", 1, "exited"),
            clean_exit,
            container("c4", "d", 1, "exited"),
            container("c5", "e", 1, "created"),
        ];
        assert_eq!(
            plan(&desired, &actual),
            vec![start("a", "c1"), start("b", "c2"), start("e", "c5")]
        );
        // Restarting (Docker is on it) is left alone.
        let desired = BTreeMap::from([want("a", 1, RestartPolicy::Always)]);
        assert_eq!(
            plan(&desired, &[container("c1", "a", 1, "restarting")]),
            vec![]
        );
    }

    #[test]
    fn fencing_stops_only_running_exclusive_containers() {
        let mut ex_running = container("c1", "lock", 1, "running");
        ex_running.exclusive = true;
        let mut ex_dead = container("c2", "lock2", 1, "exited");
        ex_dead.exclusive = true;
        let rep = container("c3", "web", 1, "running");
        assert_eq!(
            fence_plan(&[ex_running, ex_dead, rep]),
            vec![Action::Stop {
                instance: "lock".into(),
                container_id: "c1".into()
            }]
        );
    }

    #[test]
    fn desired_is_this_machines_launched_placements() {
        let units = BTreeMap::from([
            (
                "web".to_owned(),
                unit("web", RestartPolicy::Always, UnitKind::Replicated),
            ),
            ("idle".to_owned(), {
                let mut u = unit("idle", RestartPolicy::Always, UnitKind::Replicated);
                u.desired = Desired::Inactive;
                u
            }),
        ]);
        let p = |unit: &str, instance: &str, machine: &str, index| PlacementEntry {
            assignment: Assignment {
                unit: unit.into(),
                instance: instance.into(),
                machine_id: machine.into(),
                revision: 9,
            },
            index,
        };
        let placements = vec![
            p("web", "web@1", "m1", 20),
            p("web", "web@2", "m2", 21),
            p("idle", "idle", "m1", 22),
            p("destroyed", "destroyed", "m1", 23),
        ];
        let d = desired_instances("m1", &placements, &units);
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["web@1"]);
        let w = &d["web@1"];
        let revision = units["web"].container_revision();
        assert_eq!((w.revision, w.placement_index), (revision, 20));
    }

    #[test]
    fn states_carry_container_facts() {
        let mut c = container("c1", "web@1", 5, "running");
        c.restart_count = 2;
        c.ports = vec!["0.0.0.0:80->80/tcp".into()];
        let s = state_of("m1", &c, 1, Some("boom"));
        assert_eq!(s.instance, "web@1");
        assert_eq!(s.machine_id, "m1");
        assert_eq!(s.container_id, "c1");
        assert_eq!(s.state, "running");
        assert_eq!(s.restarts, 3);
        assert_eq!(s.revision, 5);
        assert_eq!(s.error, "boom");
        assert_eq!(s.ports, vec!["0.0.0.0:80->80/tcp".to_owned()]);
    }

    #[test]
    fn leaves_flatten_listings() {
        let listing: Node = serde_json::from_value(serde_json::json!({
            "key": "/_shoal/placements", "dir": true, "nodes": [
                {"key": "/_shoal/placements/a", "value": "1", "modifiedIndex": 3, "createdIndex": 3},
                {"key": "/_shoal/placements/sub", "dir": true, "nodes": [
                    {"key": "/_shoal/placements/sub/b", "value": "2", "modifiedIndex": 4, "createdIndex": 4}
                ]},
                {"key": "/_shoal/placements/empty", "dir": true}
            ]
        }))
        .expect("node");
        let mut out = Vec::new();
        leaves(&listing, &mut out);
        let keys: Vec<_> = out.iter().filter_map(|n| n.key.as_deref()).collect();
        assert_eq!(
            keys,
            vec!["/_shoal/placements/a", "/_shoal/placements/sub/b"]
        );
        assert_eq!(last_segment(Some("/_shoal/states/web@1")), "web@1");
    }
}
