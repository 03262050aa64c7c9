//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, through `fantoccini`), against
//! a real `shoal-server` and three `shoal-agent`s running containers.
//!
//! Proves: each view (Overview, Topology, Units) hydrates and shows what the
//! REST API says (members and leader, counts, machine cards per region with
//! their instances, units with where each instance runs and why one cannot
//! be placed); the Overview's live chart draws the indexes the event stream
//! brought; the navigation links switch views in the page (no reload);
//! the Topology filter works in the browser; a unit submitted from the page
//! becomes running there by itself (the event stream), and a bad one gets
//! the server's error next to the form with the typed text kept; an
//! instance's journal followed from the Units page shows lines as the
//! container writes them, until Stop; Pause on the Updates page pauses the
//! rollout and Halt halts it (the API says so); a payload uploaded from the
//! Updates page drives its progress bar to complete and is in the API, and
//! a refused one (its version taken) shows the server's reason with the
//! fields kept; a key edited on
//! the Key space page fires the page's watch; the Events page lists the
//! machines joining and filters by kind. Screenshots of the views go to
//! `docs/screenshots/` (the README shows them).
//!
//! Needs Chromium and chromedriver (fails rather than skips when
//! `SHOAL_REQUIRE_BROWSER=1`), the wasm package (`scripts/build-frontend`;
//! required when `SHOAL_REQUIRE_WASM=1`) and Docker (`SHOAL_REQUIRE_DOCKER=1`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::agents::{
    get, remove_containers, running, submit, wait_machines, wait_unit, Agent, FleetRun, IMAGE,
};
use crate::harness::{free_port, seeded_bytes};

#[path = "../examples/common/chromium.rs"]
mod chromium;
use chromium::{browser_tools, Chromedriver};

/// How long the fleet may take to converge, and the page to show it.
const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium() -> Result<()> {
    let Some(tools) = browser_tools()? else {
        return Ok(());
    };
    let Some(fleet) = FleetRun::start("br").await? else {
        return Ok(());
    };
    let (run, base) = (fleet.run.clone(), fleet.base.clone());
    let _containers = RemoveOnDrop(run.clone());
    if !wasm_served(&base).await? {
        return Ok(());
    }
    let started = Instant::now();
    let dir = tempfile::tempdir()?;

    eprintln!("--- three agents, two units that run and one that cannot be placed");
    let m = |n: u32| format!("{run}-m{n}");
    let agents = [
        Agent::start(dir.path(), &base, &m(1), "region=eu,disk=ssd")?,
        Agent::start(dir.path(), &base, &m(2), "region=eu,disk=hdd")?,
        Agent::start(dir.path(), &base, &m(3), "region=us,disk=ssd")?,
    ];
    wait_machines(&base, &agents.iter().collect::<Vec<_>>()).await?;
    let sleep = json!(["sleep", "3600"]);
    // db writes a line a second, for its journal on the Units page.
    let ticking = json!([
        "sh",
        "-c",
        "for i in $(seq 3600); do echo \"db tick $i\"; sleep 1; done"
    ]);
    for unit in [
        json!({"name": "web", "image": IMAGE, "command": sleep, "desired": "launched",
               "placement": {"replicas": 2, "conflicts": ["web*"]}}),
        json!({"name": "db", "image": IMAGE, "command": ticking, "desired": "launched",
               "placement": {"machine-metadata": {"region": ["us"]}}}),
        json!({"name": "gpu", "image": IMAGE, "command": sleep, "desired": "launched",
               "placement": {"machine-metadata": {"gpu": ["yes"]}}}),
    ] {
        submit(&base, &unit).await?;
    }
    wait_unit(&base, "web", CONVERGE, "web running twice", |s| {
        running(s).len() == 2
    })
    .await?;
    wait_unit(&base, "db", CONVERGE, "db running", |s| {
        running(s).len() == 1
    })
    .await?;
    wait_unit(&base, "gpu", CONVERGE, "gpu refused", |s| {
        s["instances"][0]["unplaced_reason"].is_string()
    })
    .await?;
    let channel = reqwest::Client::new()
        .put(format!("{base}/api/v1/updates/channels/stable"))
        .json(&json!({"max_reboots": 2, "canaries": 1, "windows": ["Sat 02:00 4h"]}))
        .send()
        .await?;
    ensure!(
        channel.status().is_success(),
        "channel: {}",
        channel.status()
    );
    let key = reqwest::Client::new()
        .put(format!("{base}/v2/keys/dash/colour"))
        .form(&[("value", "blue")])
        .send()
        .await?;
    ensure!(key.status().is_success(), "key: {}", key.status());
    eprintln!("    fleet ready after {:?}", started.elapsed());

    let driver = Chromedriver::start(&tools, dir.path(), free_port())?;
    let client = driver.session(&tools, dir.path()).await?;
    let result = browse(&client, &base, &run, dir.path()).await;
    let log = browser_log(&client).await;
    let _ = client.close().await;
    result?;
    // The unit submitted with a mistake and the payload under a version
    // taken by other bytes are refused on purpose: their one failed request each is expected.
    let refused = |e: &Value| {
        e["message"].as_str().is_some_and(|m| {
            (m.contains("/ui/fn/submit_unit") && m.contains("status of 500"))
                || (m.contains("/api/v1/updates/payloads") && m.contains("status of 409"))
        })
    };
    let severe: Vec<&Value> = log
        .iter()
        .filter(|e| e["level"] == "SEVERE" && !refused(e))
        .collect();
    ensure!(
        severe.is_empty(),
        "the browser console has errors: {severe:?}"
    );
    eprintln!("    browser console: {} entries, no error", log.len());
    eprintln!("    browser part done after {:?}", started.elapsed());

    crate::agents::destroy_all(&base, &run, &["web", "db", "gpu", "worker"]).await?;
    Ok(())
}

/// The browser's part: load, hydrate, compare with the API, navigate, follow
/// a change; `dir` holds the payload file the Updates page uploads.
async fn browse(client: &Client, base: &str, run: &str, dir: &Path) -> Result<()> {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&shots)?;

    eprintln!("--- Overview: loaded, hydrated, live, and what the API says");
    client.goto(&format!("{base}/")).await?;
    wait_js(
        client,
        "the page hydrated and the event stream open",
        LIVE_JS,
        |v| v == "live",
    )
    .await?;
    until_shown(client, base, View::Overview).await?;
    // A full page load would lose this; navigation in the page keeps it.
    client
        .execute("window.__shoalMarker = 'same page'; return null;", vec![])
        .await?;

    eprintln!("--- Topology, by its link: machine cards per region with their instances");
    click_nav(client, "/ui/topology").await?;
    let shown = until_shown(client, base, View::Topology).await?;
    let cards: usize = shown["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["machines"].as_array().map_or(0, Vec::len))
        .sum();
    ensure!(cards == 3, "three machine cards expected: {shown}");
    same_page(client, "/ui/topology").await?;
    screenshot(client, &shots.join("topology.png")).await?;

    eprintln!("--- Topology's filter works in the browser");
    let wanted = format!("{run}-m3");
    client
        .find(Locator::Css("input[name=q]"))
        .await?
        .send_keys(&wanted)
        .await?;
    wait_js(client, "only the filtered card", CARD_IDS_JS, |v| {
        *v == json!([wanted])
    })
    .await?;

    eprintln!("--- Units, by its link: where each instance runs, why gpu is not placed");
    click_nav(client, "/ui/units").await?;
    let shown = until_shown(client, base, View::Units).await?;
    let unit = |name: &str| {
        shown
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let running_rows = |u: &Value| {
        u["instances"].as_array().map_or(0, |is| {
            is.iter().filter(|i| i["state"] == "running").count()
        })
    };
    ensure!(
        running_rows(&unit("web")) == 2 && running_rows(&unit("db")) == 1,
        "web should show 2 running, db 1: {shown}"
    );
    let gpu = &unit("gpu")["instances"][0];
    ensure!(
        gpu["machine"] == "—" && gpu["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "gpu should show no machine and a reason: {shown}"
    );
    same_page(client, "/ui/units").await?;

    eprintln!(
        "--- a unit with a mistake, submitted from the page: the error in words, the text kept"
    );
    let bad = r#"{"name": "worker", "image": 7}"#;
    client
        .find(Locator::Css("details.submit summary"))
        .await?
        .click()
        .await?;
    type_into(client, "#submit-unit textarea", bad).await?;
    client
        .find(Locator::Css("#submit-unit button[type=submit]"))
        .await?
        .click()
        .await?;
    let shown = wait_js(client, "the submit error", SUBMIT_JS, |v| {
        v["error"].as_str().is_some_and(|e| !e.is_empty())
    })
    .await?;
    ensure!(
        shown["text"] == bad
            && shown["error"]
                .as_str()
                .is_some_and(|e| e.contains("not a valid unit")),
        "the error should say why and keep the text: {shown}"
    );

    eprintln!("--- a unit submitted from the page becomes running on the page");
    let worker = json!({"name": "worker", "image": IMAGE, "command": ["sleep", "3600"],
                        "desired": "launched", "placement": {"machine-metadata": {"disk": ["ssd"]}}});
    type_into(client, "#submit-unit textarea", &worker.to_string()).await?;
    client
        .find(Locator::Css("#submit-unit button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_js(client, "worker shown running", UNITS_JS, |v| {
        v.as_array()
            .into_iter()
            .flatten()
            .any(|u| u["name"] == "worker" && u["instances"][0]["state"] == "running")
    })
    .await?;
    until_shown(client, base, View::Units).await?;
    same_page(client, "/ui/units").await?;

    eprintln!("--- db's journal, followed live from the page, until Stop");
    follow_journal(client, "db", &shots.join("journal.png")).await?;
    screenshot(client, &shots.join("units.png")).await?;

    eprintln!("--- back to Overview, by its link: the new counts");
    click_nav(client, "/").await?;
    let shown = until_shown(client, base, View::Overview).await?;
    ensure!(
        shown["units"] == "4" && shown["instances"] == "4 / 5",
        "Overview should count 4 units, 4 of 5 instances running: {shown}"
    );
    wait_js(client, "the live chart drew the indexes", CHART_JS, |v| {
        v["samples"].as_str().and_then(|n| n.parse::<u32>().ok()) >= Some(2)
            && v["etcd"].as_str().is_some_and(|p| p.contains(' '))
    })
    .await?;
    same_page(client, "/").await?;
    screenshot(client, &shots.join("overview.png")).await?;

    eprintln!("--- Updates, by its link: the channel's policy; Pause pauses it in the API");
    click_nav(client, "/ui/updates").await?;
    wait_js(client, "the stable channel rolling", CHANNEL_JS, |v| {
        v["status"] == "rolling" && v["policy"] == json!(["2", "1", "Sat 02:00 4h (UTC)"])
    })
    .await?;
    client
        .find(Locator::Css("tr[data-channel=stable] button.pause"))
        .await?
        .click()
        .await?;
    stable_policy_says(base, "paused").await?;
    wait_js(client, "the page says paused", CHANNEL_JS, |v| {
        v["status"] == "paused" && v["button"] == "Resume" && v["halt"] == true
    })
    .await?;
    eprintln!("--- Halt beside Resume halts the rollout in the API; the page drops Halt");
    client
        .find(Locator::Css("tr[data-channel=stable] button.halt"))
        .await?
        .click()
        .await?;
    stable_policy_says(base, "halted").await?;
    wait_js(client, "the page says halted", CHANNEL_JS, |v| {
        v["status"] == "halted: halted from the dashboard"
            && v["button"] == "Resume"
            && v["halt"] == false
    })
    .await?;
    upload_payload(client, base, dir).await?;
    same_page(client, "/ui/updates").await?;
    screenshot(client, &shots.join("updates.png")).await?;

    eprintln!("--- Key space, by its link: edit a key, the page's watch fires");
    click_nav(client, "/ui/keys").await?;
    click_live(client, "tr[data-key='/dash'] a").await?;
    click_live(client, "tr[data-key='/dash/colour'] a").await?;
    wait_js(client, "the form holds the key", KEY_FORM_JS, |v| {
        *v == json!(["/dash/colour", "blue"])
    })
    .await?;
    type_into(client, "#key-form textarea", "green").await?;
    client
        .find(Locator::Css("#key-form button.save"))
        .await?
        .click()
        .await?;
    let watched = wait_js(client, "the watch fired", WATCH_JS, |v| {
        v.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["key"] == "/dash/colour" && e["action"] == "set")
    })
    .await?;
    let key = get(&format!("{base}/v2/keys/dash/colour")).await?;
    ensure!(
        key["node"]["value"] == "green",
        "the API should say green: {key}"
    );
    ensure!(
        watched
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e["key"].as_str().is_some_and(|k| k.starts_with("/dash"))),
        "the watch shows only /dash: {watched}"
    );
    wait_js(
        client,
        "the tree shows green",
        "return document.querySelector(\"tr[data-key='/dash/colour'] .value\")?.textContent;",
        |v| v == "green",
    )
    .await?;
    same_page(client, "/ui/keys").await?;
    screenshot(client, &shots.join("keys.png")).await?;

    eprintln!("--- Events, by its link: three machines joined; the kind filter");
    click_nav(client, "/ui/events").await?;
    let joined = format!("machine={run}-m");
    // Distinct machines: on a loaded machine a lease can lapse and the
    // machine join again, which adds rows but not machines.
    wait_js(client, "three machines joined", EVENTS_JS, |v| {
        let rows = v.as_array().map(Vec::as_slice).unwrap_or_default();
        let machines: std::collections::BTreeSet<&str> = rows
            .iter()
            .filter(|r| r["kind"] == "machine_joined")
            .filter_map(|r| r["about"].as_str())
            .filter(|a| a.contains(&joined))
            .collect();
        machines.len() == 3 && rows.iter().any(|r| r["kind"] == "instance_placed")
    })
    .await?;
    client
        .find(Locator::Css(
            "select[name=kind] option[value=machine_joined]",
        ))
        .await?
        .click()
        .await?;
    wait_js(client, "only machine_joined rows", EVENTS_JS, |v| {
        v.as_array().is_some_and(|rows| {
            !rows.is_empty() && rows.iter().all(|r| r["kind"] == "machine_joined")
        })
    })
    .await?;
    same_page(client, "/ui/events").await?;
    screenshot(client, &shots.join("events.png")).await?;
    Ok(())
}

/// Opens `instance`'s journal with its Journal button: lines arrive while
/// the page follows it (a later tick than the first one shown; then the
/// screenshot `shot` of it), and Stop stops it.
async fn follow_journal(client: &Client, instance: &str, shot: &Path) -> Result<()> {
    client
        .find(Locator::Css(&format!(
            "button.journal[data-journal='{instance}']"
        )))
        .await?
        .click()
        .await?;
    let ticks = |v: &Value| -> Vec<u64> {
        v["text"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("db tick ")?.trim().parse().ok())
            .collect()
    };
    let first = wait_js(client, "the journal's first lines", JOURNAL_JS, |v| {
        v["state"] == "following" && v["instance"] == instance && !ticks(v).is_empty()
    })
    .await?;
    let last = ticks(&first).into_iter().max().unwrap_or_default();
    wait_js(
        client,
        "a new line in the followed journal",
        JOURNAL_JS,
        |v| v["state"] == "following" && ticks(v).into_iter().max() > Some(last),
    )
    .await?;
    client
        .execute(
            "document.getElementById('journal').scrollIntoView({block: 'end'}); return null;",
            vec![],
        )
        .await?;
    screenshot(client, shot).await?;
    client
        .execute("window.scrollTo(0, 0); return null;", vec![])
        .await?;
    client
        .find(Locator::Css("#journal button.stop"))
        .await?
        .click()
        .await?;
    wait_js(client, "the journal stopped", JOURNAL_JS, |v| {
        v["state"] == "stopped" && v["stopDisabled"] == true && !ticks(v).is_empty()
    })
    .await?;
    Ok(())
}

/// Uploads a payload from the Updates page: under a version the API
/// already holds with other bytes, the server's reason shows and the fields
/// stay; under a new version the progress bar reaches the file's size and
/// the API lists the payload with the file's hash. (The server trusts no
/// key here, so any well-formed signature passes.)
async fn upload_payload(client: &Client, base: &str, dir: &Path) -> Result<()> {
    let signature = format!("{}==", "A".repeat(86));
    let taken = reqwest::Client::new()
        .post(format!(
            "{base}/api/v1/updates/payloads?version=9.0.0&signature={}",
            signature.replace('=', "%3D")
        ))
        .body(b"other bytes".to_vec())
        .send()
        .await?;
    ensure!(taken.status() == 201, "upload 9.0.0: {}", taken.status());
    let data = seeded_bytes(256 * 1024 + 7, 11);
    let file = dir.join("payload.img");
    std::fs::write(&file, &data)?;
    let sha256: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    client
        .find(Locator::Css("details.submit summary"))
        .await?
        .click()
        .await?;
    client
        .find(Locator::Css("#upload-payload input[type=file]"))
        .await?
        .send_keys(&file.display().to_string())
        .await?;
    type_into(client, "#upload-payload input[name=version]", "9.0.0").await?;
    type_into(client, "#upload-payload input[name=signature]", &signature).await?;
    let upload = || async {
        client
            .find(Locator::Css("#upload-payload button[type=submit]"))
            .await?
            .click()
            .await
    };
    upload().await?;
    let shown = wait_js(client, "the upload's error", UPLOAD_JS, |v| {
        v["error"].as_str().is_some_and(|e| !e.is_empty())
    })
    .await?;
    ensure!(
        shown["error"]
            .as_str()
            .is_some_and(|e| e.contains("already exists"))
            && shown["version"] == "9.0.0"
            && shown["signature"] == signature.as_str()
            && shown["files"] == 1,
        "the error should say why and keep the fields: {shown}"
    );
    let version = "9.1.0";
    type_into(client, "#upload-payload input[name=version]", version).await?;
    upload().await?;
    let shown = wait_js(client, "the upload complete", UPLOAD_JS, |v| {
        v["done"].as_str().is_some_and(|d| !d.is_empty())
    })
    .await?;
    let size = data.len();
    ensure!(
        shown["max"].as_f64() == Some(size as f64)
            && shown["value"] == shown["max"]
            && shown["done"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("uploaded {version}: {size} bytes"))),
        "the progress bar should be full and the page say what was stored: {shown}"
    );
    let payloads = get(&format!("{base}/api/v1/updates/payloads")).await?;
    ensure!(
        payloads.as_array().into_iter().flatten().any(|p| {
            p["version"] == version && p["size"] == size && p["sha256"] == sha256.as_str()
        }),
        "the API should list {version} with the file's size and hash: {payloads}"
    );
    let row = format!("#payloads tr[data-version='{version}'] td");
    let cells = format!(
        "return [...document.querySelectorAll(\"{row}\")].map(c => c.title || c.textContent);"
    );
    let listed = wait_js(client, "the new version in Versions", &cells, |v| {
        v.as_array().is_some_and(|c| !c.is_empty())
    })
    .await?;
    ensure!(
        listed[0] == version
            && listed[1] == format!("{size} bytes").as_str()
            && listed[2] == sha256.as_str(),
        "the Versions table should list {version} with its size and hash: {listed}"
    );
    Ok(())
}

/// Clicks the element at `css` in a view that re-renders on every event
/// (the key tree follows a watch of `/`): found anew when the one found was
/// replaced before the click, a bounded number of times.
async fn click_live(client: &Client, css: &str) -> Result<()> {
    for _ in 0..20 {
        let found = client.find(Locator::Css(css)).await?;
        match found.click().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_stale_element_reference() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{css} was replaced before every click")
}

/// Replaces the text of the field at `css` by `text`, as typing would.
async fn type_into(client: &Client, css: &str, text: &str) -> Result<()> {
    let field = client
        .find(Locator::Css(css))
        .await
        .with_context(|| format!("no field {css}"))?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

/// The dashboard's views, each read from the page by a script and from the API.
#[derive(Clone, Copy, Debug)]
enum View {
    Overview,
    Topology,
    Units,
}

impl View {
    fn script(self) -> &'static str {
        match self {
            View::Overview => OVERVIEW_JS,
            View::Topology => TOPOLOGY_JS,
            View::Units => UNITS_JS,
        }
    }

    /// What the page should show, from the REST API.
    async fn expected(self, base: &str) -> Result<Value> {
        let units = get(&format!("{base}/api/v1/units")).await?;
        let units = units.as_array().context("units")?;
        let machines = get(&format!("{base}/api/v1/machines")).await?;
        let machines = machines.as_array().context("machines")?;
        Ok(match self {
            View::Overview => {
                let list = get(&format!("{base}/v2/members")).await?;
                let mut members = Vec::new();
                let mut leader = "none".to_string();
                for m in list["members"].as_array().context("members")? {
                    let url = m["clientURLs"][0].as_str().context("client URL")?;
                    let stats = get(&format!("{url}/v2/stats/self")).await?;
                    let role = if stats["state"] == "StateLeader" {
                        leader = m["name"].as_str().unwrap_or_default().to_string();
                        "leader"
                    } else {
                        "follower"
                    };
                    members.push(json!({"name": m["name"], "id": m["id"], "role": role}));
                }
                let launched = units.iter().filter(|u| u["unit"]["desired"] == "launched");
                let instances =
                    launched.flat_map(|u| u["instances"].as_array().into_iter().flatten());
                let desired = instances.clone().count();
                let up = instances
                    .filter(|i| i["actual"]["state"] == "running")
                    .count();
                json!({
                    "h1": "Overview",
                    "leader": leader,
                    "machines": machines.len().to_string(),
                    "units": units.len().to_string(),
                    "instances": format!("{up} / {desired}"),
                    "members": members,
                })
            }
            View::Topology => {
                // Grouped by `region`, the first of the usual keys these machines have.
                let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                for m in machines {
                    let id = m["id"].as_str().context("machine id")?;
                    let mut instances: Vec<Value> = units
                        .iter()
                        .flat_map(|u| u["instances"].as_array().into_iter().flatten())
                        .filter(|i| i["machine_id"] == id)
                        .map(|i| {
                            let state = i["actual"]["state"].as_str().unwrap_or("pending");
                            json!([i["instance"], state])
                        })
                        .collect();
                    instances.sort_by_key(|i| i.to_string());
                    let region = m["metadata"]["region"].as_str().context("region")?;
                    groups
                        .entry(format!("region={region}"))
                        .or_default()
                        .push(json!({"id": id, "hostname": m["hostname"], "instances": instances}));
                }
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(label, mut machines)| {
                        machines.sort_by_key(|m| m["id"].to_string());
                        let count = format!("· {}", machines.len());
                        json!({"label": label, "count": count, "machines": machines})
                    })
                    .collect();
                json!({"h1": "Topology", "groups": groups})
            }
            View::Units => {
                let mut rows: Vec<Value> = units
                    .iter()
                    .map(|u| {
                        let instances: Vec<Value> = u["instances"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|i| {
                                json!({
                                    "instance": i["instance"],
                                    "machine": i["machine_id"].as_str().unwrap_or("—"),
                                    "state": i["actual"]["state"].as_str().unwrap_or("—"),
                                    "reason": i["unplaced_reason"].as_str().unwrap_or(""),
                                })
                            })
                            .collect();
                        json!({"name": u["unit"]["name"], "instances": instances})
                    })
                    .collect();
                rows.sort_by_key(|u| u["name"].to_string());
                Value::Array(rows)
            }
        })
    }
}

/// `#live`'s `data-state`: `server-rendered` until the app hydrates, `live` once the stream is open.
const LIVE_JS: &str = "const e = document.getElementById('live'); return e && e.dataset.state;";

const OVERVIEW_JS: &str = "
const txt = (el) => el ? el.textContent.trim() : null;
const q = (sel) => txt(document.querySelector(sel));
return {
  h1: q('main h1'),
  leader: q('#leader b'),
  machines: q('#machines b'),
  units: q('#units b'),
  instances: q('#instances b'),
  members: Array.from(document.querySelectorAll('#members tbody tr')).map((r) => ({
    name: txt(r.cells[0]), id: txt(r.cells[1]), role: txt(r.cells[2]),
  })),
};";

const TOPOLOGY_JS: &str = "
const txt = (el) => el ? el.textContent.trim() : null;
const own = (el, sel) => { const c = el.querySelector(sel);
  return el.textContent.replace(c ? c.textContent : '', '').trim(); };
const byKey = (a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0);
return {
  h1: txt(document.querySelector('main h1')),
  groups: Array.from(document.querySelectorAll('#topology section.group')).map((s) => ({
    label: own(s.querySelector('h2'), 'small'),
    count: txt(s.querySelector('h2 small')),
    machines: Array.from(s.querySelectorAll('article.machine'))
      .map((a) => ({
        id: a.dataset.id,
        hostname: own(a.querySelector('h3'), 'small'),
        instances: Array.from(a.querySelectorAll('li.instance'))
          .map((li) => [own(li, '.state'), txt(li.querySelector('.state'))])
          .sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1)),
      }))
      .map((m) => ({ k: JSON.stringify(m.id), m }))
      .sort(byKey)
      .map((x) => x.m),
  })),
};";

const UNITS_JS: &str = "
const txt = (el) => el ? el.textContent.trim() : null;
return Array.from(document.querySelectorAll('table#units tbody.unit'))
  .map((t) => ({
    name: t.dataset.unit,
    instances: Array.from(t.querySelectorAll('tr.instance')).map((r) => ({
      instance: txt(r.cells[0]), machine: txt(r.cells[3]),
      state: txt(r.cells[4]), reason: txt(r.cells[5]),
    })),
  }))
  .sort((a, b) => (JSON.stringify(a.name) < JSON.stringify(b.name) ? -1 : 1));";

/// Waits until the API says the `stable` channel's policy `flag` is true.
async fn stable_policy_says(base: &str, flag: &str) -> Result<()> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let channel = get(&format!("{base}/api/v1/updates/channels/stable")).await?;
        if channel["policy"][flag] == true {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the API does not say {flag}: {channel}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Overview's live chart: how many samples, the etcd index line's points.
const CHART_JS: &str = "
const c = document.getElementById('live-chart');
return c && { samples: c.dataset.samples, etcd: c.querySelector('polyline.etcd').getAttribute('points') };";

/// The submit form's text and its error.
const SUBMIT_JS: &str = "
const f = document.getElementById('submit-unit');
const e = f && f.querySelector('.error');
return { text: f && f.querySelector('textarea').value, error: e ? e.textContent.trim() : null };";

/// The `stable` channel's row: policy cells, rollout status, button label.
const CHANNEL_JS: &str = "
const r = document.querySelector('tr[data-channel=stable]');
if (!r) return null;
const t = (i) => r.cells[i].textContent.trim();
return { policy: [t(2), t(3), t(4)], status: t(6), button: r.querySelector('button').textContent.trim(),
  halt: r.querySelector('button.halt') !== null };";

/// The journal panel: its state, the instance, the lines, whether Stop is disabled.
const JOURNAL_JS: &str = "
const j = document.getElementById('journal');
const q = (sel) => j && j.querySelector(sel);
return j && { state: j.dataset.state, instance: q('code.instance')?.textContent,
  text: q('pre')?.textContent ?? '', stopDisabled: q('button.stop')?.disabled ?? null };";

/// The upload form's fields, progress bar and outcome.
const UPLOAD_JS: &str = "
const f = document.getElementById('upload-payload');
const p = document.getElementById('upload-progress');
const t = (sel) => f.querySelector(sel)?.textContent.trim() ?? null;
return { version: f.querySelector('input[name=version]').value,
  signature: f.querySelector('input[name=signature]').value,
  files: f.querySelector('input[type=file]').files.length,
  max: p.max, value: p.value, error: t('.error'), done: t('.done') };";

/// The key form's key and value.
const KEY_FORM_JS: &str = "
const f = document.getElementById('key-form');
return [f.querySelector('input[name=key]').value, f.querySelector('textarea').value];";

/// The watch's events, newest first.
const WATCH_JS: &str = "
return Array.from(document.querySelectorAll('#watch li')).map((li) => ({
  action: li.querySelector('b').textContent, key: li.querySelector('code').textContent }));";

/// The Events page's rows.
const EVENTS_JS: &str = "
return Array.from(document.querySelectorAll('#events tr.event')).map((r) => ({
  kind: r.dataset.kind, about: r.cells[2].textContent }));";

/// The ids of the machine cards shown.
const CARD_IDS_JS: &str =
    "return Array.from(document.querySelectorAll('article.machine')).map((a) => a.dataset.id);";

/// Polls until the page shows what the API says for `view` (both read anew
/// each round: the page follows the API through the event stream); what it shows.
async fn until_shown(client: &Client, base: &str, view: View) -> Result<Value> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let want = view.expected(base).await?;
        let shown = client.execute(view.script(), vec![]).await?;
        if shown == want {
            return Ok(shown);
        }
        if Instant::now() >= deadline {
            bail!("{view:?} does not show what the API says within {CONVERGE:?}\n  API:  {want}\n  page: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls a script until `done` holds for its result; the result.
async fn wait_js(
    client: &Client,
    what: &str,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let v = client.execute(script, vec![]).await?;
        if done(&v) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not shown within {CONVERGE:?}; the page has {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the header's link to `href`.
async fn click_nav(client: &Client, href: &str) -> Result<()> {
    client
        .find(Locator::Css(&format!("header nav a[href='{href}']")))
        .await
        .with_context(|| format!("no navigation link to {href}"))?
        .click()
        .await?;
    Ok(())
}

/// The page is at `path` and is still the document first loaded (no reload on the way).
async fn same_page(client: &Client, path: &str) -> Result<()> {
    let url = client.current_url().await?;
    ensure!(url.path() == path, "at {url}, expected {path}");
    let marker = client
        .execute("return window.__shoalMarker || null;", vec![])
        .await?;
    ensure!(
        marker == "same page",
        "the page was reloaded on the way to {path} (marker {marker})"
    );
    Ok(())
}

async fn screenshot(client: &Client, path: &Path) -> Result<()> {
    let png = client.screenshot().await?;
    ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    std::fs::write(path, png).with_context(|| format!("write {}", path.display()))?;
    eprintln!("    screenshot {}", path.display());
    Ok(())
}

/// The browser console so far (chromedriver's log command), empty if unavailable.
async fn browser_log(client: &Client) -> Vec<Value> {
    #[derive(Debug)]
    struct BrowserLog;
    impl WebDriverCompatibleCommand for BrowserLog {
        fn endpoint(
            &self,
            base: &url::Url,
            session: Option<&str>,
        ) -> Result<url::Url, url::ParseError> {
            base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
        }
        fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
            (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
        }
    }
    match client.issue_cmd(BrowserLog).await {
        Ok(Value::Array(entries)) => entries,
        Ok(other) => {
            eprintln!("    browser log: unexpected answer {other}");
            Vec::new()
        }
        Err(e) => {
            eprintln!("    browser log unavailable: {e}");
            Vec::new()
        }
    }
}

/// Is the wasm package served? Without it the pages do not hydrate: an error
/// with `SHOAL_REQUIRE_WASM=1`, else a notice and nothing to test.
async fn wasm_served(base: &str) -> Result<bool> {
    let resp = reqwest::get(format!("{base}/pkg/frontend_bg.wasm")).await?;
    if resp.status() == 200 {
        return Ok(true);
    }
    if std::env::var("SHOAL_REQUIRE_WASM").as_deref() == Ok("1") {
        bail!(
            "SHOAL_REQUIRE_WASM=1 but /pkg/frontend_bg.wasm answers {}: run scripts/build-frontend",
            resp.status()
        );
    }
    eprintln!("no wasm package (scripts/build-frontend): the browser test needs it, skipped");
    Ok(false)
}

/// Removes the run's containers when the test ends, passed or not.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_containers(&self.0);
    }
}
