//! The dashboard without a browser: a real `shoal-server`, a machine
//! registered the way an agent does (a TTL'd record under `/_shoal/machines`),
//! units submitted through the API; the server-rendered pages must show what
//! the API says (members with leader and health, an empty live chart, each
//! channel's rollout at a glance, machines grouped by metadata with their
//! instances, units with placements, the reason one cannot be placed and a
//! Journal button on each placed instance; a channel's policy, a machine's
//! update state, the reboot-lock holder and the payload upload form; a
//! key-space directory with values and indexes; the cluster events the
//! leader recorded), the dashboard's actions (its server functions under
//! `/ui/fn`) must change what the API says or answer the API's error in
//! words, and `/api/v1/events` must deliver a key-space change as a
//! server-sent event, under `/_shoal` or under a chosen prefix. A Topology
//! of 1,000 machines shows every group's count and a bounded number of cards;
//! a machine rebooting into an update, and one whose lease lapsed with an
//! instance still placed on it, say so on their cards.
//! With `SHOAL_REQUIRE_WASM=1` (CI, after scripts/build-frontend) the wasm
//! package must be served at `/pkg`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use reqwest::Method;
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

/// Registers a machine the way an agent does: a TTL'd record under `/_shoal/machines`.
async fn register(http: &reqwest::Client, base: &str, machine: &Value) -> Result<()> {
    let id = machine["id"].as_str().context("machine id")?;
    let resp = http
        .put(format!("{base}/v2/keys/_shoal/machines/{id}"))
        .form(&[("value", machine.to_string()), ("ttl", "600".into())])
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "machine {id}: {}",
        resp.status()
    );
    Ok(())
}

/// Sends `body` as JSON with `method` to `base` + `path`; fails unless answered 2xx.
async fn api_write(
    http: &reqwest::Client,
    method: Method,
    base: &str,
    path: &str,
    body: &Value,
) -> Result<()> {
    let resp = http
        .request(method, format!("{base}{path}"))
        .json(body)
        .send()
        .await?;
    ensure!(resp.status().is_success(), "{path}: {}", resp.status());
    Ok(())
}

/// Makes channel `stable` with `policy`, then checks `machine` in on it,
/// updating from 1.0.0 to 1.1.0 in update state `state`.
async fn stable_with_check_in(
    http: &reqwest::Client,
    base: &str,
    policy: Value,
    machine: &str,
    state: &str,
) -> Result<()> {
    let channel = "/api/v1/updates/channels/stable";
    api_write(http, Method::PUT, base, channel, &policy).await?;
    let check_in = json!({"machine_id": machine, "channel": "stable", "version": "1.0.0",
                          "state": state, "target": "1.1.0"});
    api_write(
        http,
        Method::POST,
        base,
        "/api/v1/updates/checkin",
        &check_in,
    )
    .await
}

/// Calls a dashboard server function with a form; its status and body.
async fn server_fn(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    form: &[(&str, &str)],
) -> Result<(u16, String)> {
    let resp = http
        .post(format!("{base}/ui/fn/{name}"))
        .form(form)
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

async fn api_get(http: &reqwest::Client, base: &str, path: &str) -> Result<Value> {
    let resp = http.get(format!("{base}{path}")).send().await?;
    ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
    Ok(resp.json().await?)
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
    register(&http, &base, &machine).await?;
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
            "<td class=\"health\">healthy</td>",
            "No update channels.",
            "data-state=\"server-rendered\"",
            "id=\"writes-chart\"",
            "id=\"index-chart\"",
            "id=\"live-chart\" data-samples=\"0\"",
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
            "data-journal=\"web@1\"",
            "data-journal=\"web@2\"",
            "<section id=\"journal\" data-state=\"idle\"",
            "Choose Journal on a placed instance",
        ],
    )?;
    ensure!(
        !html.contains("data-journal=\"mars@1\""),
        "an instance placed nowhere has no journal to follow"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_shows_rebooting_and_lost_machines() -> Result<()> {
    let cluster = Cluster::start_with(Flavor::Shoal, 1, &[]).await?;
    let base = cluster.members[0].client_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;

    eprintln!("--- a machine checks in rebooting into an update");
    register(
        &http,
        &base,
        &json!({"id": "reboot-m1", "hostname": "reboot-host", "cpu_millis": 1000, "memory_mb": 512}),
    )
    .await?;
    stable_with_check_in(
        &http,
        &base,
        json!({"max_reboots": 1}),
        "reboot-m1",
        "rebooting",
    )
    .await?;

    eprintln!("--- a machine with an exclusive instance loses its lease");
    let lost =
        json!({"id": "lost-m1", "hostname": "lost-host", "cpu_millis": 1000, "memory_mb": 512});
    let resp = http
        .put(format!("{base}/v2/keys/_shoal/machines/lost-m1"))
        .form(&[("value", lost.to_string()), ("ttl", "2".into())])
        .send()
        .await?;
    ensure!(resp.status().is_success(), "lost-m1: {}", resp.status());
    let unit = json!({"name": "solo", "image": "nginx:alpine", "desired": "launched",
                      "kind": "exclusive", "placement": {"machine-id": "lost-m1"}});
    let resp = http
        .post(format!("{base}/api/v1/units"))
        .json(&unit)
        .send()
        .await?;
    ensure!(resp.status() == 201, "submit solo: {}", resp.status());
    wait_units(&http, &base, "solo placed on lost-m1", |units| {
        instances(units, "solo")
            .first()
            .is_some_and(|i| i["machine_id"] == "lost-m1")
    })
    .await?;

    // The exclusive instance stays placed through the engine's grace period
    // (30 s) after the lease lapses: the card says so meanwhile.
    let deadline = Instant::now() + CONVERGE;
    let html = loop {
        let html = page(&http, &base, "/ui/topology").await?;
        if html.contains("data-id=\"lost-m1\" class=\"machine lease-lost\"") {
            break html;
        }
        ensure!(
            Instant::now() < deadline,
            "no lease-lost card for lost-m1 within {CONVERGE:?}; the page's cards: {:?}",
            html.match_indices("<article")
                .map(|(i, _)| &html[i..html.len().min(i + 300)])
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    must_contain(
        &html,
        "/ui/topology",
        &[
            "<span class=\"state\">lease lost</span>",
            "unknown host",
            "solo",
            "data-id=\"reboot-m1\" class=\"machine rebooting\"",
            "<span class=\"state\">rebooting</span>",
        ],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_actions_go_through_the_api() -> Result<()> {
    let cluster = Cluster::start_with(Flavor::Shoal, 1, &[]).await?;
    let base = cluster.members[0].client_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;

    eprintln!("--- Updates: a channel, a machine's check-in, a reboot-lock holder");
    let policy = json!({"max_reboots": 2, "canaries": 1, "windows": ["Mon..Fri 04:00 2h"]});
    stable_with_check_in(&http, &base, policy, "upd-m1", "downloading").await?;
    api_write(
        &http,
        Method::POST,
        &base,
        "/api/v1/locks/reboot/acquire",
        &json!({"holder": "upd-m9", "limit": 2, "ttl": 600}),
    )
    .await?;
    let html = page(&http, &base, "/ui/updates").await?;
    must_contain(
        &html,
        "/ui/updates",
        &[
            "data-channel=\"stable\"",
            "<td>2</td><td>1</td><td>Mon..Fri 04:00 2h (UTC)</td>",
            "<td class=\"status\">rolling</td>",
            "data-machine=\"upd-m1\"",
            "<td class=\"state\">downloading</td>",
            "<td>1.1.0</td>",
            "<td class=\"holder\">upd-m9</td>",
            "channel_changed",
            "<form id=\"upload-payload\"",
            "<input type=\"file\" name=\"payload\"",
            "name=\"version\"",
            "name=\"signature\"",
            "name=\"channel\"",
            "<progress id=\"upload-progress\"",
        ],
    )?;
    eprintln!("--- Overview: the channel's rollout at a glance");
    let html = page(&http, &base, "/").await?;
    must_contain(
        &html,
        "/",
        &[
            "<tr data-channel=\"stable\"><td class=\"name\">stable</td><td>—</td><td class=\"status\">rolling</td>",
            "<td class=\"on-version\">0 / 1</td><td class=\"updating\">1</td><td class=\"failed\">0</td>",
        ],
    )?;

    eprintln!("--- Pause through the dashboard: the API says paused, the page says Resume");
    let (status, body) = server_fn(
        &http,
        &base,
        "set_paused",
        &[("channel", "stable"), ("paused", "true")],
    )
    .await?;
    ensure!(status == 200, "set_paused: {status} {body}");
    let channel = api_get(&http, &base, "/api/v1/updates/channels/stable").await?;
    ensure!(channel["policy"]["paused"] == true, "not paused: {channel}");
    let html = page(&http, &base, "/ui/updates").await?;
    must_contain(
        &html,
        "/ui/updates",
        &["<td class=\"status\">paused</td>", ">Resume</button>"],
    )?;
    let (status, body) = server_fn(
        &http,
        &base,
        "set_paused",
        &[("channel", "nope"), ("paused", "false")],
    )
    .await?;
    ensure!(
        status >= 400 && body.contains("nope"),
        "resume of a missing channel: {status} {body}"
    );

    eprintln!("--- Halt through the dashboard: the API says halted, the page offers Resume only");
    let (status, body) = server_fn(
        &http,
        &base,
        "halt_channel",
        &[("channel", "stable"), ("reason", "seen on the dashboard")],
    )
    .await?;
    ensure!(status == 200, "halt_channel: {status} {body}");
    let channel = api_get(&http, &base, "/api/v1/updates/channels/stable").await?;
    ensure!(
        channel["policy"]["halted"] == true
            && channel["policy"]["halt_reason"] == "seen on the dashboard",
        "not halted: {channel}"
    );
    let html = page(&http, &base, "/ui/updates").await?;
    must_contain(
        &html,
        "/ui/updates",
        &[
            "<td class=\"status\">halted: seen on the dashboard</td>",
            ">Resume</button>",
        ],
    )?;
    ensure!(
        !html.contains(">Halt</button>"),
        "a halted channel offers Halt"
    );
    let (status, body) = server_fn(&http, &base, "halt_channel", &[("channel", "nope")]).await?;
    ensure!(
        status >= 400 && body.contains("nope"),
        "halt of a missing channel: {status} {body}"
    );

    eprintln!("--- Key space: a directory listed with values and indexes");
    let resp = http
        .put(format!("{base}/v2/keys/dash/app/colour"))
        .form(&[("value", "blue")])
        .send()
        .await?;
    let index = resp
        .headers()
        .get("x-etcd-index")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .context("X-Etcd-Index")?;
    let html = page(&http, &base, "/ui/keys?dir=/dash").await?;
    must_contain(
        &html,
        "/ui/keys?dir=/dash",
        &[
            "data-key=\"/dash/app\"",
            "data-key=\"/dash/app/colour\"",
            "<code>blue</code>",
            &format!("<td>{index} / {index}</td>"),
        ],
    )?;

    eprintln!("--- Key writes through the dashboard land in /v2/keys; errors come back in words");
    let (status, body) = server_fn(
        &http,
        &base,
        "put_key",
        &[("key", "/dash/app/colour"), ("value", "green")],
    )
    .await?;
    ensure!(status == 200, "put_key: {status} {body}");
    let key = api_get(&http, &base, "/v2/keys/dash/app/colour").await?;
    ensure!(key["node"]["value"] == "green", "not written: {key}");
    ensure!(
        body.contains(&key["node"]["modifiedIndex"].to_string()),
        "put_key answers the index: {body}"
    );
    let (status, body) = server_fn(
        &http,
        &base,
        "put_key",
        &[("key", "/dash/app"), ("value", "x")],
    )
    .await?;
    ensure!(
        status >= 400 && body.contains("Not a file"),
        "writing a directory: {status} {body}"
    );
    let (status, body) =
        server_fn(&http, &base, "delete_key", &[("key", "/dash/app/colour")]).await?;
    ensure!(status == 200, "delete_key: {status} {body}");
    let gone = http
        .get(format!("{base}/v2/keys/dash/app/colour"))
        .send()
        .await?;
    ensure!(gone.status() == 404, "still there: {}", gone.status());

    eprintln!("--- Units through the dashboard: TOML submitted, then destroyed; errors in words");
    let toml = "name = \"hello\"\nimage = \"busybox\"\n[placement]\nreplicas = 2\n";
    let (status, body) = server_fn(&http, &base, "submit_unit", &[("text", toml)]).await?;
    ensure!(
        status == 200 && body.contains("hello"),
        "submit_unit: {status} {body}"
    );
    let unit = api_get(&http, &base, "/api/v1/units/hello").await?;
    ensure!(
        unit["unit"]["placement"]["replicas"] == 2,
        "submitted: {unit}"
    );
    let (status, body) = server_fn(
        &http,
        &base,
        "submit_unit",
        &[("text", "name = \"x\"\nimage = 3")],
    )
    .await?;
    ensure!(
        status >= 400 && body.contains("not a valid unit"),
        "bad TOML: {status} {body}"
    );
    let (status, body) = server_fn(
        &http,
        &base,
        "unit_action",
        &[("name", "hello"), ("verb", "destroy")],
    )
    .await?;
    ensure!(status == 200, "destroy: {status} {body}");
    let gone = http
        .get(format!("{base}/api/v1/units/hello"))
        .send()
        .await?;
    ensure!(gone.status() == 404, "unit still there: {}", gone.status());
    let (status, body) = server_fn(
        &http,
        &base,
        "unit_action",
        &[("name", "hello"), ("verb", "start")],
    )
    .await?;
    ensure!(
        status >= 400 && body.contains("hello"),
        "start of a missing unit: {status} {body}"
    );

    eprintln!("--- Events: the leader recorded its election, a machine joining, a placement");
    let machine =
        json!({"id": "ev-m1", "hostname": "ev-host", "cpu_millis": 1000, "memory_mb": 512});
    register(&http, &base, &machine).await?;
    let unit = json!({"name": "evweb", "image": "nginx", "desired": "launched"});
    let resp = http
        .post(format!("{base}/api/v1/units"))
        .json(&unit)
        .send()
        .await?;
    ensure!(resp.status() == 201, "submit evweb: {}", resp.status());
    let deadline = Instant::now() + CONVERGE;
    let kinds = loop {
        let listing = api_get(&http, &base, "/v2/keys/_shoal/history/events?sorted=true").await;
        let kinds: Vec<String> = listing
            .ok()
            .and_then(|l| l["node"]["nodes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| serde_json::from_str::<Value>(n["value"].as_str()?).ok())
            .filter_map(|e| Some(e["kind"].as_str()?.to_string()))
            .collect();
        let all = ["leader_elected", "machine_joined", "instance_placed"];
        if all.iter().all(|k| kinds.iter().any(|have| have == k)) {
            break kinds;
        }
        ensure!(
            Instant::now() < deadline,
            "events not recorded within {CONVERGE:?}: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("    recorded: {kinds:?}");
    let html = page(&http, &base, "/ui/events").await?;
    must_contain(
        &html,
        "/ui/events",
        &[
            "data-kind=\"leader_elected\"",
            "data-kind=\"machine_joined\"",
            "machine=ev-m1",
            "instance=evweb",
            "member n1 leads in term",
        ],
    )?;
    Ok(())
}

/// Reads the event stream until a `data:` line mentions `key`, at most `within`;
/// every event on the way must be under `/_shoal`.
/// Machines in the large Topology test, in [`REGIONS`] regions.
const MANY: usize = 1_000;
/// Regions the [`MANY`] machines spread over.
const REGIONS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_of_a_thousand_machines_is_bounded() -> Result<()> {
    use futures::{StreamExt as _, TryStreamExt as _};

    let cluster = Cluster::start_with(Flavor::Shoal, 1, &[]).await?;
    let base = cluster.members[0].client_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    eprintln!("--- {MANY} machines register in {REGIONS} regions, each on its own rack");
    futures::stream::iter(0..MANY)
        .map(|i| {
            let machine = json!({
                "id": format!("big-{i:04}"), "hostname": format!("host-{i:04}"),
                "addresses": [format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)],
                "metadata": {"region": format!("r{}", i % REGIONS), "rack": format!("rack-{i:04}")},
                "cpu_millis": 4000, "memory_mb": 8192,
            });
            let (http, base) = (&http, &base);
            async move { register(http, base, &machine).await }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;

    eprintln!("--- by region: every group's count, {CARDS} cards each, a Show all");
    let html = page(&http, &base, "/ui/topology").await?;
    let per_region = MANY / REGIONS;
    must_contain(&html, "/ui/topology", &[&format!("{MANY}<!> machines")])?;
    for r in 0..REGIONS {
        let group = format!("<h2>region=r{r}<small> · <!>{per_region}</small></h2>");
        must_contain(&html, "/ui/topology", &[&group])?;
    }
    let cards = html.matches("data-id=\"big-").count();
    ensure!(cards == REGIONS * CARDS, "{cards} cards shown");
    let more = html
        .matches(&format!(">Show all {per_region}</button>"))
        .count();
    ensure!(more == REGIONS, "{more} Show all buttons");
    eprintln!("/ui/topology with {MANY} machines: {} bytes", html.len());
    ensure!(html.len() < MAX_PAGE, "{} bytes", html.len());

    eprintln!("--- by rack: {MANY} groups, each counted, only the first {OPEN} open");
    let html = page(&http, &base, "/ui/topology?group=rack").await?;
    for i in 0..MANY {
        let group = format!("<h2>rack=rack-{i:04}<small> · <!>1</small></h2>");
        must_contain(&html, "/ui/topology?group=rack", &[&group])?;
    }
    let cards = html.matches("data-id=\"big-").count();
    ensure!(cards == OPEN, "{cards} cards shown");
    ensure!(html.len() < MAX_PAGE, "{} bytes", html.len());
    Ok(())
}

/// Cards a Topology group shows before "Show all" (the frontend's limit).
const CARDS: usize = 24;
/// Groups open as the Topology page loads (the frontend's limit).
const OPEN: usize = 12;
/// Most bytes the Topology page of [`MANY`] machines may take: the cards are
/// bounded, the rest (group headings, the hydration data) grows with the fleet.
const MAX_PAGE: usize = 1_000_000;

async fn wait_event(resp: &mut reqwest::Response, key: &str, within: Duration) -> Result<Value> {
    wait_event_under(resp, "/_shoal", key, within).await
}

/// [`wait_event`] for a stream of the changes under `prefix`.
async fn wait_event_under(
    resp: &mut reqwest::Response,
    prefix: &str,
    key: &str,
    within: Duration,
) -> Result<Value> {
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
                let under = event["key"].as_str().is_some_and(|k| k.starts_with(prefix));
                ensure!(under, "an event outside {prefix} was sent: {event}");
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

    eprintln!("--- a stream of another prefix sends its changes only; a bad prefix is refused");
    let mut app = http
        .get(format!("{base}/api/v1/events?prefix=/dash/app"))
        .send()
        .await?;
    ensure!(app.status() == 200, "events?prefix: {}", app.status());
    for key in ["_shoal/dash/other", "dash/elsewhere", "dash/app/x"] {
        http.put(format!("{base}/v2/keys/{key}"))
            .form(&[("value", "1")])
            .send()
            .await?;
    }
    wait_event_under(
        &mut app,
        "/dash/app",
        "/dash/app/x",
        Duration::from_secs(10),
    )
    .await?;
    for bad in ["dash", "/dash/", "/a/../b"] {
        let resp = http
            .get(format!("{base}/api/v1/events"))
            .query(&[("prefix", bad)])
            .send()
            .await?;
        ensure!(resp.status() == 400, "prefix {bad:?}: {}", resp.status());
    }
    Ok(())
}
