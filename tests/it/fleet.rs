//! The fleet end to end: one server, three `shoal-agent` processes (distinct
//! machine ids and metadata, sharing this host's Docker engine, told apart by
//! labels), units placed by the engine and run as real containers.
//!
//! Proves: every placement rule (replicas with `Conflicts` and `spread`,
//! required metadata, a `machine_id` pin, `machine_of`, a global unit); a
//! container stopped behind the agent's back is restarted; a lost machine's
//! replicated instances come back elsewhere while instances that only fit
//! there say why they cannot be placed; a restarted agent adopts its
//! containers or removes the ones moved away, never duplicating them;
//! `shoalctl journal` shows a container's output through its agent;
//! destroying units removes their containers. And self-fencing across
//! processes: an agent cut off from the cluster stops its exclusive
//! container before the engine starts it elsewhere.
//! Needs Docker: fails (does not skip) when `SHOAL_REQUIRE_DOCKER=1`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::agents::{
    containers, destroy_all, get, remove_containers, running, submit, wait_containers,
    wait_machines, wait_unit, Agent, FleetRun, IMAGE,
};
use crate::harness::{shoalctl, shoalctl_ok};
use crate::proxy::Proxy;
use crate::update_host::path_str;

/// How long any convergence may take before the test fails.
const CONVERGE: Duration = Duration::from_secs(60);

/// `(instance, machine)` pairs of the running containers of `unit`.
fn in_docker(all: &[(String, String, String)], unit: &str) -> BTreeSet<(String, String)> {
    all.iter()
        .filter(|(i, _, state)| state == "running" && i.split('@').next() == Some(unit))
        .map(|(i, m, _)| (i.clone(), m.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_run_as_containers_and_survive_a_lost_machine() -> Result<()> {
    let Some(fleet) = FleetRun::start("it").await? else {
        return Ok(());
    };
    let (run, base) = (fleet.run.clone(), fleet.base.clone());
    let dir = tempfile::tempdir()?;
    let (m1, m2, m3) = (
        format!("{run}-m1"),
        format!("{run}-m2"),
        format!("{run}-m3"),
    );

    eprintln!("--- three agents: two in region eu, one in us");
    let mut agents = vec![
        Agent::start(dir.path(), &base, &m1, "region=eu")?,
        Agent::start(dir.path(), &base, &m2, "region=eu")?,
        Agent::start(dir.path(), &base, &m3, "region=us")?,
    ];
    wait_machines(&base, &agents.iter().collect::<Vec<_>>()).await?;

    eprintln!("--- one unit per placement rule");
    let sleep = json!(["sleep", "3600"]);
    let units = [
        json!({"name": "web", "image": IMAGE, "command": sleep, "desired": "launched",
               "placement": {"replicas": 2, "conflicts": ["web*"], "spread": "region"}}),
        json!({"name": "db", "image": IMAGE, "desired": "launched",
               "command": ["sh", "-c", "echo db-says-hello; exec sleep 3600"],
               "placement": {"machine-metadata": {"region": ["us"]}}}),
        json!({"name": "pinned", "image": IMAGE, "command": sleep, "desired": "launched",
               "placement": {"machine-id": m2}}),
        json!({"name": "sidecar", "image": IMAGE, "command": sleep, "desired": "launched",
               "placement": {"machine-of": "db"}}),
        json!({"name": "node", "image": IMAGE, "command": sleep, "desired": "launched",
               "placement": {"global": true}}),
    ];
    for unit in &units {
        submit(&base, unit).await?;
    }
    let web = wait_unit(&base, "web", CONVERGE, "web running twice", |s| {
        running(s).len() == 2
    })
    .await?;
    let web_on: BTreeSet<String> = running(&web).into_iter().map(|(_, m)| m).collect();
    ensure!(
        web_on.len() == 2 && web_on.contains(&m3),
        "web must spread over both regions, one per machine: {web}"
    );
    let want_one = |unit: &str, machine: &str| {
        let (unit, machine) = (unit.to_owned(), machine.to_owned());
        move |s: &Value| running(s) == vec![(unit.clone(), machine.clone())]
    };
    wait_unit(
        &base,
        "db",
        CONVERGE,
        "db on the us machine",
        want_one("db", &m3),
    )
    .await?;
    wait_unit(
        &base,
        "pinned",
        CONVERGE,
        "pinned on m2",
        want_one("pinned", &m2),
    )
    .await?;
    wait_unit(
        &base,
        "sidecar",
        CONVERGE,
        "sidecar beside db",
        want_one("sidecar", &m3),
    )
    .await?;
    let node = wait_unit(&base, "node", CONVERGE, "node on every machine", |s| {
        running(s).len() == 3
    })
    .await?;
    let node_on: BTreeSet<String> = running(&node).into_iter().map(|(_, m)| m).collect();
    ensure!(node_on.len() == 3, "one node instance per machine: {node}");
    wait_containers(&run, "8 running containers", |c| {
        c.len() == 8 && c.iter().all(|(_, _, state)| state == "running")
    })
    .await?;

    eprintln!("--- shoalctl journal db: the container's output, through the agent that runs it");
    let text = shoalctl_ok(&base, &["journal", "db", "-n", "10"])?;
    ensure!(text.contains("db-says-hello"), "journal: {text}");

    eprintln!("--- docker stop the pinned container: its agent starts it again");
    let pinned = Command::new("docker")
        .args(["ps", "-q", "--filter", "label=shoal.instance=pinned"])
        .args(["--filter", &format!("label=shoal.machine={m2}")])
        .output()?;
    let pinned = String::from_utf8_lossy(&pinned.stdout).trim().to_owned();
    ensure!(!pinned.is_empty(), "pinned's container on m2");
    let stopped = Command::new("docker")
        .args(["stop", "-t", "1", &pinned])
        .stdout(Stdio::null())
        .status()?;
    ensure!(stopped.success(), "docker stop pinned");
    wait_unit(&base, "pinned", CONVERGE, "pinned restarted", |s| {
        running(s).len() == 1 && s["instances"][0]["actual"]["restarts"].as_u64() >= Some(1)
    })
    .await?;

    eprintln!("--- kill the us agent: web moves, db and sidecar say why they cannot be placed");
    let db = get(&format!("{base}/api/v1/units/db")).await?;
    let db_container = db["instances"][0]["actual"]["container_id"].clone();
    ensure!(db_container.is_string(), "db's container id: {db}");
    agents[2].kill();
    let web = wait_unit(&base, "web", CONVERGE, "web back to two eu machines", |s| {
        let on: BTreeSet<String> = running(s).into_iter().map(|(_, m)| m).collect();
        on == BTreeSet::from([m1.clone(), m2.clone()])
    })
    .await?;
    eprintln!("    web is now {:?}", running(&web));
    for unit in ["db", "sidecar"] {
        let status = wait_unit(&base, unit, CONVERGE, "an unplaced reason", |s| {
            s["instances"][0]["unplaced_reason"].is_string()
        })
        .await?;
        eprintln!("    {unit}: {}", status["instances"][0]["unplaced_reason"]);
    }
    let db = get(&format!("{base}/api/v1/units/db")).await?;
    let why = db["instances"][0]["unplaced_reason"].as_str().unwrap_or("");
    ensure!(
        why.contains("region"),
        "db's reason must name the rule: {why}"
    );

    eprintln!("--- restart the us agent: it adopts db, sidecar and node, and drops its old web");
    let before: BTreeSet<String> = containers(&run)?
        .into_iter()
        .filter(|(i, m, _)| *m == m3 && (i == "db" || i == "sidecar"))
        .map(|(i, _, _)| i)
        .collect();
    ensure!(
        before.len() == 2,
        "db and sidecar containers stay on m3 while its agent is down"
    );
    agents[2].spawn()?;
    wait_containers(&run, "8 containers, each instance once", |c| {
        let instances: BTreeSet<&str> = c
            .iter()
            .map(|(i, m, _)| {
                if i.starts_with("node@") {
                    m.as_str()
                } else {
                    i.as_str()
                }
            })
            .collect();
        c.len() == 8
            && instances.len() == 8
            && c.iter().all(|(_, _, state)| state == "running")
            && in_docker(c, "web").iter().all(|(_, m)| *m != m3)
            && in_docker(c, "db") == BTreeSet::from([("db".to_owned(), m3.clone())])
    })
    .await?;
    let db = wait_unit(
        &base,
        "db",
        CONVERGE,
        "db placed on m3 again",
        want_one("db", &m3),
    )
    .await?;
    ensure!(
        db["instances"][0]["actual"]["container_id"] == db_container,
        "db must be adopted, not recreated: was {db_container}, now {db}"
    );

    eprintln!("--- destroy every unit: their containers go away");
    destroy_all(&base, &run, &["web", "db", "pinned", "sidecar", "node"]).await?;
    drop(agents);
    remove_containers(&run);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_stops_its_exclusive_unit_before_it_moves() -> Result<()> {
    let Some(fleet) = FleetRun::start("fence").await? else {
        return Ok(());
    };
    let (run, base) = (fleet.run.clone(), fleet.base.clone());
    let server: std::net::SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .context("server address")?;
    let proxy = Proxy::start(server).await?;
    let dir = tempfile::tempdir()?;
    let (m1, m2) = (format!("{run}-m1"), format!("{run}-m2"));

    eprintln!("--- m1 reaches the cluster through a proxy; the exclusive unit runs there");
    let via_proxy = format!("http://{}", proxy.addr);
    let a1 = Agent::start(dir.path(), &via_proxy, &m1, "role=any")?;
    wait_machines(&base, &[&a1]).await?;
    let solo = json!({"name": "solo", "image": IMAGE, "command": ["sleep", "3600"],
                      "desired": "launched", "kind": "exclusive"});
    submit(&base, &solo).await?;
    wait_unit(&base, "solo", CONVERGE, "solo on m1", |s| {
        running(s) == vec![("solo".to_owned(), m1.clone())]
    })
    .await?;
    let a2 = Agent::start(dir.path(), &base, &m2, "role=any")?;
    wait_machines(&base, &[&a1, &a2]).await?;

    eprintln!("--- partition m1: it must stop solo before m2 starts it");
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stopped_on_m1 = false;
    loop {
        let now = containers(&run)?;
        let solo_running = in_docker(&now, "solo");
        ensure!(
            solo_running.len() <= 1,
            "solo runs on two machines at once: {now:?}"
        );
        if !solo_running.contains(&("solo".to_owned(), m1.clone())) {
            stopped_on_m1 = true;
        }
        if solo_running.contains(&("solo".to_owned(), m2.clone())) {
            ensure!(stopped_on_m1, "m2 started solo while m1 still ran it");
            break;
        }
        ensure!(Instant::now() < deadline, "solo never moved to m2: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("--- heal: m1 comes back and removes its stopped copy");
    proxy.heal();
    wait_containers(&run, "only m2's solo left", |c| {
        c.len() == 1 && in_docker(c, "solo") == BTreeSet::from([("solo".to_owned(), m2.clone())])
    })
    .await?;
    destroy_all(&base, &run, &["solo"]).await?;
    drop((a1, a2));
    remove_containers(&run);
    Ok(())
}

/// `shoalctl` drives the fleet as fleetctl does: `submit` a TOML unit file
/// (inactive: nothing runs), `start` (its instances run on distinct machines),
/// `list-units`/`status`/`list-machines` show desired and actual side by side,
/// `stop` removes the containers but keeps the unit, `start` brings them
/// back, `destroy` removes both; a bad unit file is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoalctl_submits_starts_stops_and_destroys_units() -> Result<()> {
    let Some(fleet) = FleetRun::start("ctl").await? else {
        return Ok(());
    };
    let (run, base) = (fleet.run.clone(), fleet.base.clone());
    let dir = tempfile::tempdir()?;
    let (m1, m2) = (format!("{run}-m1"), format!("{run}-m2"));
    let agents = [
        Agent::start(dir.path(), &base, &m1, "region=eu,disk=ssd")?,
        Agent::start(dir.path(), &base, &m2, "region=us")?,
    ];
    wait_machines(&base, &agents.iter().collect::<Vec<_>>()).await?;

    eprintln!("--- list-machines: both machines with their metadata");
    let machines = shoalctl_ok(&base, &["list-machines"])?;
    for want in [m1.as_str(), m2.as_str(), "disk=ssd,region=eu", "region=us"] {
        ensure!(
            machines.contains(want),
            "list-machines lacks {want}:\n{machines}"
        );
    }

    eprintln!("--- a bad unit file is refused with the reason");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "image = 3\n")?;
    let (ok, out, err) = shoalctl(&base, &["submit", path_str(&bad)?])?;
    ensure!(
        !ok && err.contains("bad.toml"),
        "bad unit accepted: {out}{err}"
    );

    eprintln!("--- submit web.toml: inactive, nothing runs");
    let file = dir.path().join("web.toml");
    std::fs::write(
        &file,
        format!(
            "image = \"{IMAGE}\"\ncommand = [\"sleep\", \"3600\"]\n\
             [placement]\nreplicas = 2\nconflicts = [\"web*\"]\n"
        ),
    )?;
    shoalctl_ok(&base, &["submit", path_str(&file)?])?;
    let listed = shoalctl_ok(&base, &["list-units"])?;
    ensure!(
        listed
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("inactive")),
        "web listed inactive:\n{listed}"
    );
    ensure!(
        containers(&run)?.is_empty(),
        "an inactive unit runs nothing"
    );

    eprintln!("--- start web: two instances, one per machine");
    shoalctl_ok(&base, &["start", "web"])?;
    wait_containers(&run, "web running on both machines", |c| {
        in_docker(c, "web")
            .iter()
            .map(|(_, m)| m)
            .collect::<BTreeSet<_>>()
            .len()
            == 2
    })
    .await?;
    wait_unit(&base, "web", CONVERGE, "both reported running", |s| {
        running(s).len() == 2
    })
    .await?;
    let status = shoalctl_ok(&base, &["status", "web"])?;
    for instance in ["web@1", "web@2"] {
        ensure!(
            status.lines().any(|l| l.starts_with(instance)
                && l.contains("launched")
                && l.contains("running")),
            "status shows {instance} launched and running:\n{status}"
        );
    }
    let json: Value = serde_json::from_str(&shoalctl_ok(&base, &["-o", "json", "list-units"])?)
        .context("list-units -o json")?;
    ensure!(
        json.as_array()
            .is_some_and(|u| u.len() == 1 && u[0]["unit"]["name"] == "web"),
        "list-units -o json: {json}"
    );

    eprintln!("--- stop web: the containers go, the unit stays");
    shoalctl_ok(&base, &["stop", "web"])?;
    wait_containers(&run, "web's containers removed", <[_]>::is_empty).await?;
    let listed = shoalctl_ok(&base, &["list-units"])?;
    ensure!(
        listed
            .lines()
            .any(|l| l.starts_with("web") && l.contains("inactive")),
        "a stopped unit stays listed, inactive:\n{listed}"
    );

    eprintln!("--- start again, then destroy: containers and unit are gone");
    shoalctl_ok(&base, &["start", "web"])?;
    wait_containers(&run, "web running again", |c| {
        in_docker(c, "web").len() == 2
    })
    .await?;
    shoalctl_ok(&base, &["destroy", "web"])?;
    wait_containers(&run, "containers removed by destroy", <[_]>::is_empty).await?;
    let listed = shoalctl_ok(&base, &["list-units"])?;
    ensure!(
        !listed.contains("web"),
        "destroyed unit still listed:\n{listed}"
    );
    let (ok, _, err) = shoalctl(&base, &["status", "web"])?;
    ensure!(
        !ok && err.contains("web"),
        "status of a destroyed unit: {err}"
    );
    drop(agents);
    remove_containers(&run);
    Ok(())
}
