//! The dashboard: pages rendered by the `frontend` crate (Leptos) on the
//! server, its server functions under `/ui/fn`, and the browser's wasm
//! package at `/pkg`. Its data comes from the same handlers that answer
//! `/v2/members`, `/v2/stats/*`, `/api/v1/machines`, `/api/v1/units` and
//! `/api/v1/locks` (other members' stats over their client URLs), so the
//! dashboard shows exactly what the API says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::fleet::{Desired, UnitKind, UnitStatus};
use api::members::Member as WireMember;
use axum::extract::State;
use axum::Router;
use frontend::backend::{Answer, Backend, SharedBackend};
use frontend::model::{InstanceRow, MachineCard, MemberRow, Overview, PlacedInstance, UnitRow};
use futures::future::join_all;
use leptos::prelude::{provide_context, LeptosOptions};
use leptos_axum::LeptosRoutes;
use serde_json::Value;
use tower_http::services::ServeDir;

use super::{fleet, locks, members, stats};
use crate::member::Member;
use crate::raft::id_hex;

/// How long another member's stats may take before it is shown unreachable.
const PEER_STATS_TIMEOUT: Duration = Duration::from_millis(800);
/// The largest stats body read back from a local handler.
const STATS_BODY_LIMIT: usize = 1 << 20;

/// The dashboard's routes: pages at `/` and `/ui/*`, server functions, `/pkg/*`.
pub fn router(member: Arc<Member>, pkg_dir: &Path) -> Router {
    let site_root = pkg_dir
        .parent()
        .map_or_else(|| ".".to_string(), |p| p.display().to_string());
    let options = LeptosOptions::builder()
        .output_name("frontend")
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .build();
    let routes = leptos_axum::generate_route_list(frontend::App);
    let backend: SharedBackend = Arc::new(Source::new(member));
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
    /// For other members' client URLs (never the peer client: it carries the cluster token).
    http: reqwest::Client,
}

impl Source {
    fn new(member: Arc<Member>) -> Self {
        Self {
            member,
            http: reqwest::Client::new(),
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
            if !resp.status().is_success() {
                return None;
            }
            let body = axum::body::to_bytes(resp.into_body(), STATS_BODY_LIMIT)
                .await
                .ok()?;
            return serde_json::from_slice(&body).ok();
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
        let machines = fleet::machines(State(self.member.clone())).await.0.len();
        let units = self.units_status().await;
        let launched = units.iter().filter(|u| u.unit.desired == Desired::Launched);
        let instances_desired = launched.clone().map(|u| u.instances.len()).sum();
        let instances_running = launched
            .flat_map(|u| &u.instances)
            .filter(|i| i.actual.as_ref().is_some_and(|a| a.state == "running"))
            .count();
        let held = locks::list(State(self.member.clone())).await.0.locks;
        Ok(Overview {
            leader: leader.map(|l| l.name.clone()),
            term: members.iter().filter_map(|m| m.term).max().unwrap_or(0),
            commit,
            etcd_index: self.member.keys.read().index(),
            members,
            machines,
            units: units.len(),
            instances_desired,
            instances_running,
            locks: held.len(),
            lock_holders: held.iter().map(|l| l.holders.len()).sum(),
        })
    }

    async fn read_machines(&self) -> Result<Vec<MachineCard>, String> {
        let machines = fleet::machines(State(self.member.clone())).await.0;
        let mut placed: BTreeMap<String, Vec<PlacedInstance>> = BTreeMap::new();
        for unit in self.units_status().await {
            for i in unit.instances {
                if let Some(machine) = i.machine_id {
                    placed.entry(machine).or_default().push(PlacedInstance {
                        state: i.actual.map_or_else(|| "pending".into(), |a| a.state),
                        instance: i.instance,
                    });
                }
            }
        }
        Ok(machines
            .into_iter()
            .map(|m| MachineCard {
                instances: placed.remove(&m.id).unwrap_or_default(),
                state: if m.draining { "draining" } else { "up" }.into(),
                id: m.id,
                hostname: m.hostname,
                addresses: m.addresses,
                metadata: m.metadata,
                os_version: m.os_version,
                active_slot: m.active_slot,
                cpu_millis: m.cpu_millis,
                memory_mb: m.memory_mb,
            })
            .collect())
    }

    async fn read_units(&self) -> Result<Vec<UnitRow>, String> {
        Ok(self
            .units_status()
            .await
            .into_iter()
            .map(unit_row)
            .collect())
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
}
