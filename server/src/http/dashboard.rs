//! The dashboard: pages rendered by the `frontend` crate (Leptos) on the
//! server, its server functions under `/ui/fn`, and the browser's wasm
//! package at `/pkg`. Its data comes from the same handlers that answer
//! `/v2/members`, `/v2/stats/*`, `/v2/keys`, `/api/v1/machines`,
//! `/api/v1/units`, `/api/v1/locks` and `/api/v1/updates` (other members'
//! stats over their client URLs), so the dashboard shows exactly what the API
//! says; its actions (submit, start, stop, destroy, pause, resume, halt, key
//! writes) call those same handlers in-process: no private back door.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::fleet::{parse_unit, ClusterEvent, Desired, UnitFormat, UnitKind, UnitStatus, EVENTS_DIR};
use api::keys::{KeysResponse, Node};
use api::locks::LockList;
use api::members::Member as WireMember;
use api::updates::{
    Channel, HaltRequest, HistoryEvent, MachineUpdate, PayloadMeta, UpdateState, REBOOT_LOCK,
};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use chrono::{DateTime, Utc};
use frontend::backend::{Answer, Backend, SharedBackend};
use frontend::model::{
    ChannelRow, HistoryRow, InstanceRow, KeyDir, KeyNode, LockHolderRow, MachineCard,
    MachineProgress, MemberRow, Overview, PayloadRow, PlacedInstance, RolloutRow, UnitRow,
    UnitVerb, UpdatesView,
};
use futures::future::join_all;
use leptos::prelude::{provide_context, LeptosOptions};
use leptos_axum::LeptosRoutes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower_http::services::ServeDir;

use super::{fleet, keys, locks, members, stats, updates};
use crate::engine::view::{instance_names, unit_of, FleetView};
use crate::member::Member;
use crate::raft::id_hex;
use crate::updates::Updates;

/// How long another member's stats may take before it is shown unreachable.
const PEER_STATS_TIMEOUT: Duration = Duration::from_millis(800);
/// The largest answer read back from a local handler.
const BODY_LIMIT: usize = 64 << 20;
/// How many update history entries the Updates page shows.
const UPDATE_HISTORY: usize = 50;
/// How many cluster events the Events page shows.
const EVENT_HISTORY: usize = 200;
/// What a key keeps unescaped in a `/v2/keys` path: its slashes and the usual safe characters.
const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@')
    .remove(b':');

/// The dashboard's routes: pages at `/` and `/ui/*`, server functions, `/pkg/*`.
pub fn router(member: Arc<Member>, updates: Arc<Updates>, pkg_dir: &Path) -> Router {
    let site_root = pkg_dir
        .parent()
        .map_or_else(|| ".".to_string(), |p| p.display().to_string());
    let options = LeptosOptions::builder()
        .output_name("frontend")
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .build();
    let routes = leptos_axum::generate_route_list(frontend::App);
    let backend: SharedBackend = Arc::new(Source::new(member, updates));
    let shell_options = options.clone();
    Router::new()
        .leptos_routes_with_context(
            &options,
            routes,
            move || provide_context(backend.clone()),
            move || frontend::shell(shell_options.clone()),
        )
        .nest_service(
            "/pkg",
            ServeDir::new(pkg_dir)
                .precompressed_br()
                .precompressed_gzip(),
        )
        .with_state(options)
}

/// Where the wasm package is: the configured directory, else `target/site/pkg`
/// found from the binary (`target/debug/shoal-server` → `target/site/pkg`) or
/// from the working directory.
pub fn pkg_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_owned();
    }
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .map(|bin| vec![bin.join("../site/pkg"), bin.join("site/pkg")])
        .unwrap_or_default();
    let fallback = PathBuf::from("target/site/pkg");
    let found = beside_binary
        .into_iter()
        .chain([fallback.clone()])
        .find(|dir| dir.join("frontend.js").is_file());
    match found {
        Some(dir) => dir,
        None => {
            tracing::warn!(
                "no dashboard wasm package found (run scripts/build-frontend); \
                 pages render but do not hydrate"
            );
            fallback
        }
    }
}

/// The dashboard's data source: this member's REST handlers.
struct Source {
    member: Arc<Member>,
    updates: Arc<Updates>,
    /// For other members' client URLs: the member's client-port client (never
    /// the peer client: it carries the cluster token).
    http: reqwest::Client,
}

impl Source {
    fn new(member: Arc<Member>, updates: Arc<Updates>) -> Self {
        Self {
            http: member.client_http.clone(),
            member,
            updates,
        }
    }

    /// A member's `/v2/stats/self`: this member's from its handler, others' over HTTP.
    async fn self_stats(&self, m: &WireMember) -> Option<Value> {
        if m.id == id_hex(self.member.id) {
            return Some(stats::self_stats(State(self.member.clone())).await.0);
        }
        self.remote(m, "/v2/stats/self").await
    }

    /// The leader's `/v2/stats/leader`.
    async fn leader_stats(&self, leader: &WireMember) -> Option<Value> {
        if leader.id == id_hex(self.member.id) {
            let resp = stats::leader_stats(State(self.member.clone())).await;
            return json_of(resp).await.ok();
        }
        self.remote(leader, "/v2/stats/leader").await
    }

    async fn remote(&self, m: &WireMember, path: &str) -> Option<Value> {
        let base = m.client_urls.first()?.trim_end_matches('/');
        let resp = self
            .http
            .get(format!("{base}{path}"))
            .timeout(PEER_STATS_TIMEOUT)
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?;
        resp.json().await.ok()
    }

    async fn units_status(&self) -> Vec<UnitStatus> {
        fleet::units(State(self.member.clone())).await.0
    }

    /// The fleet as the engine reads it, parsed once, the key space locked only for the copy.
    fn fleet(&self) -> FleetView {
        self.member.fleet_view(crate::clock::now())
    }

    async fn read_overview(&self) -> Result<Overview, String> {
        let list = members::list(State(self.member.clone())).await.0.members;
        let all_stats = join_all(list.iter().map(|m| self.self_stats(m))).await;
        let is_leader = |s: &Option<Value>| {
            s.as_ref()
                .is_some_and(|s| s["state"].as_str() == Some("StateLeader"))
        };
        let leader = list
            .iter()
            .zip(&all_stats)
            .find(|(_, s)| is_leader(s))
            .map(|(m, _)| m);
        let replication = match leader {
            Some(l) => self.leader_stats(l).await,
            None => None,
        };
        let members: Vec<MemberRow> = list
            .iter()
            .zip(&all_stats)
            .map(|(m, s)| member_row(m, s.as_ref(), replication.as_ref()))
            .collect();
        let commit = replication.as_ref().map(|_| quorum_index(&members));
        let view = self.fleet();
        let (instances_desired, instances_running) = launched_instances(&view);
        let held = locks::list(State(self.member.clone())).await.0.locks;
        let (channels, machines) = self.channels_and_machines().await?;
        let rollouts = channels
            .into_iter()
            .map(|c| rollout_row(channel_row(c), &machines))
            .collect();
        Ok(Overview {
            leader: leader.map(|l| l.name.clone()),
            term: members.iter().filter_map(|m| m.term).max().unwrap_or(0),
            commit,
            etcd_index: self.member.keys.read().index(),
            members,
            machines: view.machines.len(),
            units: view.units.len(),
            instances_desired,
            instances_running,
            locks: held.len(),
            lock_holders: held.iter().map(|l| l.holders.len()).sum(),
            rollouts,
        })
    }

    /// Every machine's last check-in, as `/api/v1/updates/machines` lists them.
    async fn check_ins(&self) -> Result<Vec<MachineUpdate>, String> {
        let query = updates::MachinesQuery { channel: None };
        json_of(updates::machines(State(self.updates.clone()), Ok(Query(query))).await).await
    }

    /// Every channel, and every machine's last check-in, as `/api/v1/updates` lists them.
    async fn channels_and_machines(&self) -> Result<(Vec<Channel>, Vec<MachineUpdate>), String> {
        let channels = json_of(updates::channels(State(self.updates.clone())).await).await?;
        Ok((channels, self.check_ins().await?))
    }

    async fn read_machines(&self) -> Result<Vec<MachineCard>, String> {
        let updating: HashMap<String, UpdateState> = self
            .check_ins()
            .await?
            .into_iter()
            .map(|m| (m.machine_id, m.state))
            .collect();
        let view = self.fleet();
        let mut placed: BTreeMap<String, Vec<PlacedInstance>> = BTreeMap::new();
        for (instance, p) in &view.placements {
            if !view.units.contains_key(unit_of(instance)) {
                continue;
            }
            let state = view.states.get(instance).map(|s| s.state.clone());
            placed
                .entry(p.assignment.machine_id.clone())
                .or_default()
                .push(PlacedInstance {
                    state: state.unwrap_or_else(|| "pending".into()),
                    instance: instance.clone(),
                });
        }
        let live: Vec<MachineCard> = view
            .machines
            .into_values()
            .map(|m| MachineCard {
                instances: placed.remove(&m.id).unwrap_or_default(),
                state: machine_state(m.draining, updating.get(&m.id).copied()).into(),
                id: m.id,
                hostname: m.hostname,
                addresses: m.addresses,
                metadata: m.metadata,
                os_version: m.os_version,
                active_slot: m.active_slot,
                cpu_millis: m.cpu_millis,
                memory_mb: m.memory_mb,
            })
            .collect();
        // What is left is placed on machines without a lease: lost until the
        // engine moves their instances.
        let lost = placed.into_iter().map(|(id, instances)| MachineCard {
            id,
            instances,
            state: "lease lost".into(),
            hostname: String::new(),
            addresses: Vec::new(),
            metadata: BTreeMap::new(),
            os_version: String::new(),
            active_slot: String::new(),
            cpu_millis: 0,
            memory_mb: 0,
        });
        Ok(live.into_iter().chain(lost).collect())
    }

    async fn read_units(&self) -> Result<Vec<UnitRow>, String> {
        Ok(self
            .units_status()
            .await
            .into_iter()
            .map(unit_row)
            .collect())
    }

    async fn submit(&self, text: String) -> Result<String, String> {
        let unit = parse_unit(&text, UnitFormat::guess(&text), None).map_err(|e| e.to_string())?;
        let name = unit.name.clone();
        let resp = fleet::submit(State(self.member.clone()), Ok(axum::Json(unit))).await;
        body_of(resp).await.map(|_| name)
    }

    async fn act(&self, name: String, verb: UnitVerb) -> Result<(), String> {
        let (state, path) = (State(self.member.clone()), UrlPath(name));
        let resp = match verb {
            UnitVerb::Start => fleet::start(state, path).await,
            UnitVerb::Stop => fleet::stop(state, path).await,
            UnitVerb::Destroy => fleet::destroy(state, path).await,
        };
        body_of(resp).await.map(drop)
    }

    async fn read_updates(&self) -> Result<UpdatesView, String> {
        let u = || State(self.updates.clone());
        let (channels, machines) = self.channels_and_machines().await?;
        let mut stored: Vec<PayloadMeta> = json_of(updates::payloads(u()).await).await?;
        stored.sort_by_key(|p| std::cmp::Reverse(p.uploaded_at));
        let payloads = stored
            .into_iter()
            .map(|p| payload_row(p, &channels))
            .collect();
        let query = updates::HistoryQuery {
            limit: Some(UPDATE_HISTORY),
        };
        let history: Vec<HistoryEvent> =
            json_of(updates::history(u(), Ok(Query(query))).await).await?;
        let LockList { locks } = locks::list(State(self.member.clone())).await.0;
        let reboot_prefix = format!("{REBOOT_LOCK}-");
        let holders = locks
            .into_iter()
            .filter(|l| l.name == REBOOT_LOCK || l.name.starts_with(&reboot_prefix))
            .flat_map(|l| {
                let lock = l.name;
                l.holders.into_iter().map(move |h| LockHolderRow {
                    lock: lock.clone(),
                    holder: h.holder,
                    token: h.token,
                    expiration: h.expiration.map(clock),
                })
            })
            .collect();
        Ok(UpdatesView {
            channels: channels.into_iter().map(channel_row).collect(),
            payloads,
            machines: machines.into_iter().map(progress).collect(),
            holders,
            history: history.into_iter().rev().map(update_history_row).collect(),
        })
    }

    async fn pause(&self, channel: String, paused: bool) -> Result<(), String> {
        let (state, path) = (State(self.updates.clone()), UrlPath(channel));
        let resp = if paused {
            updates::pause(state, path).await
        } else {
            updates::resume(state, path).await
        };
        json_of::<Channel>(resp).await.map(drop)
    }

    async fn halt(&self, channel: String, reason: Option<String>) -> Result<(), String> {
        let body = serde_json::to_vec(&HaltRequest { reason }).map_err(|e| e.to_string())?;
        let resp = updates::halt(State(self.updates.clone()), UrlPath(channel), body.into()).await;
        json_of::<Channel>(resp).await.map(drop)
    }

    /// Calls the `/v2/keys` handler as an HTTP request would.
    async fn keys_request(
        &self,
        method: Method,
        key: &str,
        query: &str,
        form: String,
    ) -> Result<KeysResponse, String> {
        if !key.starts_with('/') {
            return Err(format!("{key:?} is not a key: keys start with /"));
        }
        let path = utf8_percent_encode(key, KEY_PATH);
        let uri: Uri = format!("/v2/keys{path}{query}")
            .parse()
            .map_err(|e| format!("{key:?} is not a key: {e}"))?;
        let resp = keys::handle(State(self.member.clone()), method, uri, Bytes::from(form)).await;
        json_of(resp).await
    }

    async fn list_keys(&self, dir: String) -> Result<KeyDir, String> {
        let answer = self
            .keys_request(
                Method::GET,
                &dir,
                "?recursive=true&sorted=true",
                String::new(),
            )
            .await?;
        let mut nodes = Vec::new();
        flatten(answer.node.nodes.unwrap_or_default(), 0, &mut nodes);
        Ok(KeyDir {
            dir,
            index: self.member.keys.read().index(),
            nodes,
        })
    }

    async fn write_key(&self, key: String, value: String) -> Result<u64, String> {
        let form = form_urlencoded(&[("value", &value)]);
        let answer = self.keys_request(Method::PUT, &key, "", form).await?;
        Ok(answer.node.modified_index)
    }

    /// The newest cluster events, newest first, read through `/v2/keys`.
    async fn read_events(&self) -> Result<Vec<HistoryRow>, String> {
        if self.member.keys.read().lookup(EVENTS_DIR).is_err() {
            return Ok(Vec::new());
        }
        let answer = self
            .keys_request(Method::GET, EVENTS_DIR, "?sorted=true", String::new())
            .await?;
        let nodes = answer.node.nodes.unwrap_or_default();
        Ok(nodes
            .iter()
            .rev()
            .filter_map(|n| serde_json::from_str::<ClusterEvent>(n.value.as_deref()?).ok())
            .take(EVENT_HISTORY)
            .map(event_row)
            .collect())
    }

    /// The newest audit log entries, newest first (the route is admins only, by policy).
    async fn read_audit(&self) -> Result<Vec<HistoryRow>, String> {
        Ok(crate::auth::audit::newest(&self.member, EVENT_HISTORY)
            .into_iter()
            .map(event_row)
            .collect())
    }

    async fn remove_key(&self, key: String) -> Result<u64, String> {
        let answer = self
            .keys_request(Method::DELETE, &key, "", String::new())
            .await?;
        Ok(answer.node.modified_index)
    }
}

impl Backend for Source {
    fn overview(&self) -> Answer<'_, Overview> {
        Box::pin(self.read_overview())
    }

    fn machines(&self) -> Answer<'_, Vec<MachineCard>> {
        Box::pin(self.read_machines())
    }

    fn units(&self) -> Answer<'_, Vec<UnitRow>> {
        Box::pin(self.read_units())
    }

    fn submit_unit(&self, text: String) -> Answer<'_, String> {
        Box::pin(self.submit(text))
    }

    fn unit_action(&self, name: String, verb: UnitVerb) -> Answer<'_, ()> {
        Box::pin(self.act(name, verb))
    }

    fn updates(&self) -> Answer<'_, UpdatesView> {
        Box::pin(self.read_updates())
    }

    fn set_paused(&self, channel: String, paused: bool) -> Answer<'_, ()> {
        Box::pin(self.pause(channel, paused))
    }

    fn halt_channel(&self, channel: String, reason: Option<String>) -> Answer<'_, ()> {
        Box::pin(self.halt(channel, reason))
    }

    fn keys(&self, dir: String) -> Answer<'_, KeyDir> {
        Box::pin(self.list_keys(dir))
    }

    fn put_key(&self, key: String, value: String) -> Answer<'_, u64> {
        Box::pin(self.write_key(key, value))
    }

    fn delete_key(&self, key: String) -> Answer<'_, u64> {
        Box::pin(self.remove_key(key))
    }

    fn events(&self) -> Answer<'_, Vec<HistoryRow>> {
        Box::pin(self.read_events())
    }

    fn audit(&self) -> Answer<'_, Vec<HistoryRow>> {
        Box::pin(self.read_audit())
    }
}

/// A handler's answer body, or its error message in words.
async fn body_of(resp: Response) -> Result<Bytes, String> {
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(error_words(status, &body))
    }
}

/// A handler's JSON answer as `T`, or its error message in words.
async fn json_of<T: DeserializeOwned>(resp: Response) -> Result<T, String> {
    let body = body_of(resp).await?;
    serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))
}

/// The message of an error answer: `/api/v1`'s `{"error":{"message"}}` or
/// etcd's `{"message","cause"}`.
fn error_words(status: StatusCode, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(m) = v["error"]["message"].as_str() {
        return m.to_owned();
    }
    match (v["message"].as_str(), v["cause"].as_str()) {
        (Some(m), Some(c)) if !c.is_empty() => format!("{m}: {c}"),
        (Some(m), _) => m.to_owned(),
        _ => format!("the server answered {status}"),
    }
}

/// A form body of `pairs`.
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A recursive listing as rows, depth first.
fn flatten(nodes: Vec<Node>, depth: usize, out: &mut Vec<KeyNode>) {
    for n in nodes {
        out.push(KeyNode {
            key: n.key.unwrap_or_default(),
            depth,
            dir: n.dir,
            value: n.value,
            modified_index: n.modified_index,
            created_index: n.created_index,
            ttl: n.ttl,
        });
        flatten(n.nodes.unwrap_or_default(), depth + 1, out);
    }
}

/// A time as the pages show it.
fn clock(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn channel_row(c: Channel) -> ChannelRow {
    let p = c.policy;
    ChannelRow {
        name: c.name,
        version: c.version,
        max_reboots: p.max_reboots,
        canaries: p.canaries,
        windows: p.windows,
        timezone: p.timezone,
        failure_threshold: p.failure_threshold,
        paused: p.paused,
        halted: p.halted,
        halt_reason: p.halt_reason,
    }
}

/// A payload with the channels pointing at its version.
fn payload_row(p: PayloadMeta, channels: &[Channel]) -> PayloadRow {
    let pointing = channels
        .iter()
        .filter(|c| c.version.as_deref() == Some(p.version.as_str()))
        .map(|c| c.name.clone())
        .collect();
    PayloadRow {
        version: p.version,
        size: p.size,
        sha256: p.sha256,
        uploaded_at: clock(p.uploaded_at),
        channels: pointing,
    }
}

fn progress(m: MachineUpdate) -> MachineProgress {
    MachineProgress {
        machine_id: m.machine_id,
        channel: m.channel,
        version: m.version,
        state: m.state.as_str().into(),
        target: m.target,
        error: m.error,
        proceed: m.proceed,
        since: clock(m.since),
    }
}

/// `name=value` for each subject a history entry names.
fn subjects<const N: usize>(pairs: [(&str, Option<String>); N]) -> Vec<String> {
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect()
}

fn event_row(e: ClusterEvent) -> HistoryRow {
    HistoryRow {
        at: clock(e.at),
        kind: e.kind,
        subjects: subjects([("machine", e.machine), ("instance", e.instance)]),
        detail: e.detail,
    }
}

fn update_history_row(e: HistoryEvent) -> HistoryRow {
    HistoryRow {
        at: clock(e.at),
        kind: e.kind,
        subjects: subjects([
            ("machine", e.machine),
            ("channel", e.channel),
            ("version", e.version),
        ]),
        detail: e.detail,
    }
}

fn member_row(m: &WireMember, stats: Option<&Value>, replication: Option<&Value>) -> MemberRow {
    let role = match stats.map(|s| s["state"].as_str()) {
        None => "unreachable",
        Some(Some("StateLeader")) => "leader",
        Some(Some("StateCandidate")) => "candidate",
        Some(_) => "follower",
    };
    let applied = stats.and_then(|s| s["lastApplied"].as_u64());
    let matched = if role == "leader" {
        applied
    } else {
        replication.and_then(|r| r["followers"][&m.id]["matchIndex"].as_u64())
    };
    MemberRow {
        id: m.id.clone(),
        name: m.name.clone(),
        client_url: m.client_urls.first().cloned().unwrap_or_default(),
        role: role.into(),
        term: stats.and_then(|s| s["term"].as_u64()),
        applied,
        matched,
    }
}

/// A live machine's state on its card: `draining` (by an operator, or for
/// its update), `rebooting` into an update, else `up`.
fn machine_state(draining: bool, update: Option<UpdateState>) -> &'static str {
    match update {
        _ if draining => "draining",
        Some(UpdateState::Draining) => "draining",
        Some(UpdateState::Rebooting) => "rebooting",
        _ => "up",
    }
}

/// A channel's rollout over the machines that checked in on it.
fn rollout_row(c: ChannelRow, machines: &[MachineUpdate]) -> RolloutRow {
    let on: Vec<&MachineUpdate> = machines.iter().filter(|m| m.channel == c.name).collect();
    let count = |f: &dyn Fn(&MachineUpdate) -> bool| on.iter().filter(|m| f(m)).count();
    RolloutRow {
        status: c.status(),
        machines: on.len(),
        on_version: count(&|m| c.version.as_deref() == Some(m.version.as_str())),
        updating: count(&|m| m.state.in_progress()),
        failed: count(&|m| m.state.is_failure()),
        channel: c.name,
        version: c.version,
    }
}

/// How many instances the launched units have (wanted, or still placed or
/// reported), and how many of them run: what `/api/v1/units` lists, counted
/// without building each unit's status.
fn launched_instances(view: &FleetView) -> (usize, usize) {
    let launched = |unit: &str| {
        view.units
            .get(unit)
            .is_some_and(|u| u.unit.desired == Desired::Launched)
    };
    let mut instances: HashSet<&str> = HashSet::new();
    let wanted: Vec<String> = view
        .units
        .values()
        .filter(|u| u.unit.desired == Desired::Launched)
        .flat_map(|u| instance_names(&u.unit, &view.machines))
        .collect();
    instances.extend(wanted.iter().map(String::as_str));
    let known = view
        .placements
        .keys()
        .chain(view.states.keys())
        .chain(view.unplaced.keys());
    instances.extend(known.map(String::as_str).filter(|i| launched(unit_of(i))));
    let running = instances
        .iter()
        .filter(|i| view.states.get(**i).is_some_and(|s| s.state == "running"))
        .count();
    (instances.len(), running)
}

/// The highest log index a majority of members holds, by the leader's view.
fn quorum_index(members: &[MemberRow]) -> u64 {
    let mut matched: Vec<u64> = members.iter().map(|m| m.matched.unwrap_or(0)).collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(matched.len() / 2).copied().unwrap_or(0)
}

fn unit_row(s: UnitStatus) -> UnitRow {
    UnitRow {
        desired: match s.unit.desired {
            Desired::Launched => "launched",
            Desired::Inactive => "inactive",
        }
        .into(),
        kind: match s.unit.kind {
            UnitKind::Replicated => "replicated",
            UnitKind::Exclusive => "exclusive",
        }
        .into(),
        name: s.unit.name,
        image: s.unit.image,
        revision: s.revision,
        instances: s
            .instances
            .into_iter()
            .map(|i| InstanceRow {
                instance: i.instance,
                machine_id: i.machine_id,
                actual: i.actual.map(|a| a.state),
                unplaced_reason: i.unplaced_reason,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(matched: Option<u64>) -> MemberRow {
        MemberRow {
            id: String::new(),
            name: String::new(),
            client_url: String::new(),
            role: "follower".into(),
            term: Some(1),
            applied: None,
            matched,
        }
    }

    #[test]
    fn commit_is_what_a_majority_holds() {
        assert_eq!(quorum_index(&[row(Some(7))]), 7);
        assert_eq!(quorum_index(&[row(Some(9)), row(Some(5)), row(None)]), 5);
        let five = [Some(10), Some(9), Some(3), Some(2), None].map(row);
        assert_eq!(quorum_index(&five), 3);
    }

    fn checked_in(channel: &str, version: &str, state: UpdateState) -> MachineUpdate {
        MachineUpdate {
            machine_id: format!("{channel}-{version}-{state}"),
            channel: channel.into(),
            version: version.into(),
            state,
            target: None,
            error: String::new(),
            proceed: false,
            since: Utc::now(),
            last_checkin: Utc::now(),
        }
    }

    #[test]
    fn a_rollout_counts_its_channels_machines() {
        let channel = ChannelRow {
            name: "stable".into(),
            version: Some("2.0".into()),
            max_reboots: 1,
            canaries: 0,
            windows: Vec::new(),
            timezone: "UTC".into(),
            failure_threshold: 1,
            paused: true,
            halted: false,
            halt_reason: String::new(),
        };
        let machines = [
            checked_in("stable", "2.0", UpdateState::Updated),
            checked_in("stable", "2.0", UpdateState::Idle),
            checked_in("stable", "1.0", UpdateState::Rebooting),
            checked_in("stable", "1.0", UpdateState::RolledBack),
            checked_in("beta", "2.0", UpdateState::Downloading),
        ];
        let r = rollout_row(channel, &machines);
        assert_eq!(r.status, "paused");
        assert_eq!(
            (r.machines, r.on_version, r.updating, r.failed),
            (4, 2, 1, 1)
        );
    }
}
