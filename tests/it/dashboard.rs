//! The dashboard without a browser: a real `shoal-server`, a machine
//! registered the way an agent does (a TTL'd record under `/_shoal/machines`),
//! units submitted through the API; the server-rendered pages must show what
//! the API says (members and leader, machines grouped by metadata with their
//! instances, units with placements and the reason one cannot be placed), and
//! `/api/v1/events` must deliver a key-space change as a server-sent event.
//! With `SHOAL_REQUIRE_WASM=1` (CI, after scripts/build-frontend) the wasm
//! package must be served at `/pkg`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::harness::{Cluster, Flavor};

/// How long the engine may take to place or refuse instances.
const CONVERGE: Duration = Duration::from_secs(30);

async fn page(http: &reqwest::Client, base: &str, path: &str) -> Result<String> {
    let resp = http.get(format!("{base}{path}")).send().await?;
    ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
    let html = resp.text().await?;
    ensure!(
        html.contains("/pkg/frontend.js"),
        "GET {path}: no hydration script in the page"
    );
    Ok(html)
}

fn must_contain(html: &str, path: &str, wanted: &[&str]) -> Result<()> {
    for w in wanted {
        ensure!(html.contains(w), "GET {path} lacks {w:?}:\n{html}");
    }
    Ok(())
}

/// Polls `/api/v1/units` until `done` holds for the list.
async fn wait_units(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let units: Vec<Value> = http
            .get(format!("{base}/api/v1/units"))
            .send()
            .await?
            .json()
            .await?;
        if done(&units) {
            return Ok(units);
        }
        if Instant::now() >= deadline {
            bail!("{what} not reached within {CONVERGE:?}: {units:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn instances<'a>(units: &'a [Value], name: &str) -> Vec<&'a Value> {
    units
        .iter()
        .filter(|u| u["unit"]["name"] == name)
        .flat_map(|u| u["instances"].as_array().into_iter().flatten())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_what_the_api_says() -> Result<()> {
    let cluster = Cluster::start_with(Flavor::Shoal, 1, &[]).await?;
    let base = cluster.members[0].client_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;

    eprintln!("--- a machine registers, two units are submitted");
    let machine = json!({
        "id": "dash-m1", "hostname": "dash-host-1", "addresses": ["10.9.0.1"],
        "metadata": {"region": "eu-west", "disk": "ssd"},
        "cpu_millis": 4000, "memory_mb": 8192, "os_version": "4081.2.0", "active_slot": "A"
    });
    let resp = http
        .put(format!("{base}/v2/keys/_shoal/machines/dash-m1"))
        .form(&[("value", machine.to_string()), ("ttl", "600".into())])
        .send()
        .await?;
    ensure!(resp.status().is_success(), "machine: {}", resp.status());
    for unit in [
        json!({"name": "web", "image": "nginx:alpine", "desired": "launched", "placement": {"replicas": 2}}),
        json!({"name": "mars", "image": "nginx:alpine", "desired": "launched",
               "placement": {"machine-metadata": {"region": ["mars"]}}}),
    ] {
        let resp = http
            .post(format!("{base}/api/v1/units"))
            .json(&unit)
            .send()
            .await?;
        ensure!(resp.status() == 201, "submit {unit}: {}", resp.status());
    }
    let units = wait_units(&http, &base, "web placed, mars refused", |units| {
        let web = instances(units, "web");
        let mars = instances(units, "mars");
        web.len() == 2
            && web.iter().all(|i| i["machine_id"] == "dash-m1")
            && mars.len() == 1
            && mars[0]["unplaced_reason"].is_string()
    })
    .await?;
    let reason = instances(&units, "mars")[0]["unplaced_reason"]
        .as_str()
        .context("reason")?
        .to_string();

    eprintln!("--- Overview: the member as leader, and the counts");
    let html = page(&http, &base, "/").await?;
    must_contain(
        &html,
        "/",
        &[
            "<td class=\"name\">n1</td>",
            "class=\"member leader\"",
            "<span>Leader</span><b>n1</b>",
            "<span>Machines</span><b>1</b>",
            "<span>Units</span><b>2</b>",
            "data-state=\"server-rendered\"",
        ],
    )?;
    let members: Value = http
        .get(format!("{base}/v2/members"))
        .send()
        .await?
        .json()
        .await?;
    let id = members["members"][0]["id"].as_str().context("member id")?;
    must_contain(&html, "/", &[id])?;

    eprintln!("--- Topology: the machine's card under its region, with its instances");
    let html = page(&http, &base, "/ui/topology").await?;
    must_contain(
        &html,
        "/ui/topology",
        &[
            "region=eu-west",
            "data-id=\"dash-m1\"",
            "dash-host-1",
            "OS 4081.2.0 (A)",
            "web@1",
            "web@2",
        ],
    )?;
    let html = page(&http, &base, "/ui/topology?group=disk").await?;
    must_contain(&html, "/ui/topology?group=disk", &["<h2>disk=ssd"])?;
    let html = page(&http, &base, "/ui/topology?q=nothing-matches").await?;
    must_contain(&html, "/ui/topology?q=…", &["No machine matches."])?;

    eprintln!("--- Units: placements and the reason mars cannot be placed");
    let html = page(&http, &base, "/ui/units").await?;
    must_contain(
        &html,
        "/ui/units",
        &[
            "data-unit=\"web\"",
            "data-unit=\"mars\"",
            "<td class=\"instance\">web@1</td>",
            "<td>dash-m1</td>",
            &reason,
        ],
    )?;

    if std::env::var_os("SHOAL_REQUIRE_WASM").is_some() {
        eprintln!("--- the wasm package is served");
        for file in ["frontend.js", "frontend_bg.wasm"] {
            let resp = http.get(format!("{base}/pkg/{file}")).send().await?;
            ensure!(resp.status() == 200, "/pkg/{file}: {}", resp.status());
        }
    } else if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/site/pkg/frontend.js")
        .is_file()
    {
        eprintln!(
            "--- no wasm package (scripts/build-frontend): pages are not checked for hydration"
        );
    }
    Ok(())
}

/// Reads the event stream until a `data:` line mentions `key`, at most `within`;
/// every event on the way must be under `/_shoal`.
async fn wait_event(resp: &mut reqwest::Response, key: &str, within: Duration) -> Result<Value> {
    let deadline = Instant::now() + within;
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .with_context(|| format!("no event for {key} within {within:?}; got {text:?}"))??
            .context("event stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                let event: Value = serde_json::from_str(data)?;
                let under = event["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("/_shoal"));
                ensure!(under, "an event outside /_shoal was sent: {event}");
                if event["key"] == key {
                    return Ok(event);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_key_space_changes() -> Result<()> {
    let cluster = Cluster::start_with(Flavor::Shoal, 1, &[]).await?;
    let base = cluster.members[0].client_url();
    let http = reqwest::Client::new();

    let mut stream = http.get(format!("{base}/api/v1/events")).send().await?;
    ensure!(stream.status() == 200, "events: {}", stream.status());
    let kind = stream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(kind.starts_with("text/event-stream"), "content type {kind}");

    eprintln!("--- a key outside /_shoal is not sent, one under it is");
    http.put(format!("{base}/v2/keys/elsewhere"))
        .form(&[("value", "1")])
        .send()
        .await?;
    let resp = http
        .put(format!("{base}/v2/keys/_shoal/dash/probe"))
        .form(&[("value", "1")])
        .send()
        .await?;
    let index: u64 = resp
        .headers()
        .get("x-etcd-index")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .context("X-Etcd-Index")?;
    let event = wait_event(&mut stream, "/_shoal/dash/probe", Duration::from_secs(10)).await?;
    ensure!(
        event["action"] == "set" && event["index"] == index,
        "event {event} for index {index}"
    );

    eprintln!("--- a reconnect with Last-Event-ID resumes after it");
    let mut resumed = http
        .get(format!("{base}/api/v1/events"))
        .header("Last-Event-ID", (index - 1).to_string())
        .send()
        .await?;
    let again = wait_event(&mut resumed, "/_shoal/dash/probe", Duration::from_secs(10)).await?;
    ensure!(again["index"] == index, "resumed event {again}");
    Ok(())
}
