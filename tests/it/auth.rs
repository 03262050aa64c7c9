//! Tokens and roles end to end: a server started with `--auth` and a known
//! admin token; every role (and no token, and a bad one) against a
//! representative request of each resource, answered exactly 2xx, 401 or
//! 403; node tokens confined to their machine; revocation; `etcdctl` with
//! HTTP Basic; `shoalctl --token`; the random first admin token; an agent
//! with a node token running a container and answering its journal (a node
//! token answering another machine's journal refused); the audit log of writes (admins
//! only); per-token limits (request rate, open watches, key and value size)
//! answered 429/400 with the reason; and no non-loopback listening without
//! `--auth`.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use api::auth::{CreateToken, Role};
use serde_json::{json, Value};

use crate::agents::{docker_ready, ensure_image, remove_containers, running, Agent, IMAGE};
use crate::harness::{
    free_port, heavy_test_lock, require_tool, run_with_timeout, shoal_binary, shoalctl_ok, Cluster,
    Flavor,
};

/// The known admin token the test servers start with.
const ADMIN: &str = "it-admin-token-0123456789abcdef";

/// A one-member server with `--auth`, and a token of each role.
struct Secured {
    base: String,
    operator: String,
    viewer: String,
    /// Bound to machine `m1`.
    node: String,
    _cluster: Cluster,
}

/// An admin client of `base`.
fn admin(base: &str) -> Result<api::Client> {
    Ok(api::Client::new(base)?.with_token(ADMIN)?)
}

/// Waits (bounded) until `client` may list tokens: the bootstrap write is in.
async fn wait_tokens(client: &api::Client) -> Result<()> {
    for _ in 0..100 {
        if client.tokens().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the admin token never worked")
}

async fn create(client: &api::Client, role: Role, machine: Option<&str>) -> Result<String> {
    let req = CreateToken {
        role,
        name: format!("it-{role}"),
        machine_id: machine.map(str::to_owned),
    };
    Ok(client.create_token(&req).await?.token)
}

impl Secured {
    async fn start() -> Result<Secured> {
        Secured::start_with(&[]).await
    }

    /// [`Secured::start`] with more server flags.
    async fn start_with(flags: &[&str]) -> Result<Secured> {
        let mut args = vec!["--auth", "--admin-token", ADMIN];
        args.extend_from_slice(flags);
        let cluster = Cluster::start_with(Flavor::Shoal, 1, &args).await?;
        let base = cluster.members[0].client_url();
        let client = admin(&base)?;
        wait_tokens(&client).await?;
        Ok(Secured {
            operator: create(&client, Role::Operator, None).await?,
            viewer: create(&client, Role::Viewer, None).await?,
            node: create(&client, Role::Node, Some("m1")).await?,
            base,
            _cluster: cluster,
        })
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str),
}

/// One request: method, path, a form or JSON body.
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    form: Vec<(&'static str, String)>,
    json: Option<Value>,
}

fn req(method: &'static str, path: &str) -> Req {
    Req {
        method,
        path: path.to_owned(),
        form: Vec::new(),
        json: None,
    }
}

impl Req {
    fn form(mut self, pairs: &[(&'static str, &str)]) -> Req {
        self.form = pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self
    }

    fn json(mut self, body: Value) -> Req {
        self.json = Some(body);
        self
    }
}

/// Sends `r` with `cred`: (status, body).
async fn send(base: &str, r: &Req, cred: Cred<'_>) -> Result<(u16, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let method = reqwest::Method::from_bytes(r.method.as_bytes())?;
    let mut b = http.request(method, format!("{base}{}", r.path));
    b = match cred {
        Cred::None => b,
        Cred::Bearer(t) => b.bearer_auth(t),
        Cred::Basic(t) => b.basic_auth("someone", Some(t)),
    };
    if !r.form.is_empty() {
        b = b.form(&r.form);
    }
    if let Some(j) = &r.json {
        b = b.json(j);
    }
    let resp = b.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// Sends `r` and fails unless the answer is `want`.
async fn expect(base: &str, r: &Req, cred: Cred<'_>, want: u16) -> Result<String> {
    let (status, body) = send(base, r, cred).await?;
    ensure!(
        status == want,
        "{} {} as {cred:?}: want {want}, got {status}: {body}",
        r.method,
        r.path
    );
    Ok(body)
}

fn state(instance: &str, machine: &str) -> String {
    json!({"instance": instance, "machine_id": machine, "state": "running"}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_by_endpoint_matrix() -> Result<()> {
    let s = Secured::start().await?;
    let base = s.base.as_str();
    let admin_c = admin(base)?;
    // What the matrix rewrites exists already, so every allowed write is a 200.
    let unit = json!({"name": "matrix", "image": IMAGE, "command": ["sleep", "3600"]});
    expect(
        base,
        &req("POST", "/api/v1/units").json(unit.clone()),
        Cred::Bearer(ADMIN),
        201,
    )
    .await?;
    expect(
        base,
        &req("PUT", "/v2/keys/app/k").form(&[("value", "v")]),
        Cred::Bearer(ADMIN),
        201,
    )
    .await?;
    let channel = json!({"max_reboots": 1});
    expect(
        base,
        &req("PUT", "/api/v1/updates/channels/stable").json(channel.clone()),
        Cred::Bearer(ADMIN),
        200,
    )
    .await?;
    let members = admin_c.member_list().await?;
    ensure!(members.members.len() == 1, "{members:?}");

    let bad = "shoal_0000000000000000000000000000000000000000000000000000000000000000";
    // Columns: admin, operator, viewer, node (m1); no token and a bad token are always 401.
    let rows: Vec<(Req, [u16; 4])> = vec![
        (req("GET", "/v2/keys/app/k"), [200, 200, 200, 200]),
        (
            req("PUT", "/v2/keys/app/k").form(&[("value", "w")]),
            [200, 200, 403, 200],
        ),
        (req("GET", "/v2/keys/_auth/tokens"), [200, 403, 403, 403]),
        (req("GET", "/v2/keys/?recursive=true"), [200, 200, 200, 200]),
        (
            req("PUT", "/v2/keys/_shoal/scratch").form(&[("value", "x")]),
            [201, 201, 403, 403],
        ),
        (
            req("POST", "/api/v1/units").json(unit),
            [200, 200, 403, 403],
        ),
        (req("GET", "/api/v1/units/matrix"), [200, 200, 200, 200]),
        (
            req("POST", "/api/v1/units/matrix/stop"),
            [200, 200, 403, 403],
        ),
        (req("GET", "/api/v1/machines"), [200, 200, 200, 200]),
        (req("GET", "/api/v1/locks"), [200, 200, 200, 200]),
        (
            req("POST", "/api/v1/locks/matrix/acquire").json(json!({"holder": "m1", "ttl": 60})),
            [200, 200, 403, 200],
        ),
        (
            req("PUT", "/api/v1/locks/matrix").json(json!({"limit": 2})),
            [200, 200, 403, 403],
        ),
        (req("GET", "/api/v1/updates/channels"), [200, 200, 200, 200]),
        (
            req("PUT", "/api/v1/updates/channels/stable").json(channel),
            [200, 200, 403, 403],
        ),
        (req("GET", "/api/v1/tokens"), [200, 403, 403, 403]),
        (
            req("POST", "/api/v1/tokens").json(json!({"role": "viewer"})),
            [201, 403, 403, 403],
        ),
        (req("GET", "/v2/members"), [200, 200, 200, 200]),
        (req("DELETE", "/v2/members/ffff"), [404, 403, 403, 403]),
        (req("GET", "/v2/stats/self"), [200, 200, 200, 200]),
        (req("GET", "/"), [200, 200, 200, 403]),
    ];
    for (r, want) in &rows {
        // The scratch write creates the key once: the admin's 201, then 200s.
        let creates = r.path == "/v2/keys/_shoal/scratch";
        for (i, token) in [ADMIN, &s.operator, &s.viewer, &s.node]
            .into_iter()
            .enumerate()
        {
            let want = if creates && i > 0 && want[i] == 201 {
                200
            } else {
                want[i]
            };
            expect(base, r, Cred::Bearer(token), want).await?;
        }
        let body = expect(base, r, Cred::None, 401).await?;
        ensure!(body.contains("credentials"), "no reason in {body}");
        let body = expect(base, r, Cred::Bearer(bad), 401).await?;
        ensure!(body.contains("unknown or revoked"), "no reason in {body}");
    }

    // Public: what health checks and browsers need before any token.
    for path in ["/health", "/version"] {
        expect(base, &req("GET", path), Cred::None, 200).await?;
    }
    // The event stream is a recursive watch: never of the token records but for admins.
    for token in [&s.operator, &s.viewer, &s.node] {
        for prefix in ["/_auth", "/", "/x/../_auth/tokens"] {
            let r = req("GET", &format!("/api/v1/events?prefix={prefix}"));
            expect(base, &r, Cred::Bearer(token), 403).await?;
        }
    }
    // The error shapes: etcd's code 110 on /v2/keys, the API's codes on /api/v1.
    let body = expect(base, &req("GET", "/v2/keys/app/k"), Cred::None, 401).await?;
    let v: Value = serde_json::from_str(&body)?;
    ensure!(v["errorCode"] == 110, "{v}");
    let body = expect(
        base,
        &req("PUT", "/v2/keys/app/k").form(&[("value", "x")]),
        Cred::Bearer(&s.viewer),
        403,
    )
    .await?;
    let v: Value = serde_json::from_str(&body)?;
    ensure!(
        v["errorCode"] == 110 && v["cause"].as_str().is_some_and(|c| c.contains("read only")),
        "{v}"
    );
    let body = expect(
        base,
        &req("GET", "/api/v1/tokens"),
        Cred::Bearer(&s.operator),
        403,
    )
    .await?;
    let v: Value = serde_json::from_str(&body)?;
    ensure!(v["error"]["code"] == "forbidden", "{v}");
    // Basic works like Bearer (the password is the token).
    expect(base, &req("GET", "/api/v1/tokens"), Cred::Basic(ADMIN), 200).await?;
    expect(
        base,
        &req("GET", "/api/v1/tokens"),
        Cred::Basic(&s.viewer),
        403,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_token_touches_only_its_machine() -> Result<()> {
    let s = Secured::start().await?;
    let base = s.base.as_str();
    let node = Cred::Bearer(&s.node);
    let record = json!({"id": "m1", "hostname": "h1"}).to_string();
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/machines/m1").form(&[("value", &record), ("ttl", "30")]),
        node,
        201,
    )
    .await?;
    let forged = json!({"id": "m2"}).to_string();
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/machines/m2").form(&[("value", &forged)]),
        node,
        403,
    )
    .await?;
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/machines/m1/../m2").form(&[("value", &forged)]),
        node,
        403,
    )
    .await?;
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/machines/%6D2").form(&[("value", &forged)]),
        node,
        403,
    )
    .await?;
    expect(
        base,
        &req("DELETE", "/v2/keys/_shoal/machines/m2"),
        node,
        403,
    )
    .await?;

    eprintln!("--- placements are the engine's");
    let placement =
        json!({"unit": "web", "instance": "web", "machine_id": "m1", "revision": 1}).to_string();
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/placements/web").form(&[("value", &placement)]),
        node,
        403,
    )
    .await?;
    expect(
        base,
        &req("POST", "/api/v1/units").json(json!({"name": "web", "image": IMAGE})),
        node,
        403,
    )
    .await?;

    eprintln!("--- states: its own only");
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/states/web").form(&[("value", &state("web", "m1"))]),
        node,
        201,
    )
    .await?;
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/states/web@2").form(&[("value", &state("web@2", "m2"))]),
        node,
        403,
    )
    .await?;
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/states/web@2").form(&[("value", &state("web@2", "m2"))]),
        Cred::Bearer(ADMIN),
        201,
    )
    .await?;
    expect(
        base,
        &req("DELETE", "/v2/keys/_shoal/states/web@2"),
        node,
        403,
    )
    .await?;
    expect(
        base,
        &req("DELETE", "/v2/keys/_shoal/states/web"),
        node,
        200,
    )
    .await?;

    eprintln!("--- lock slots, FleetLock and check-ins: as itself only");
    let take = |holder: &str| {
        req("POST", "/api/v1/locks/reboot/acquire")
            .json(json!({"holder": holder, "ttl": 60, "limit": 2}))
    };
    expect(base, &take("m2"), Cred::Bearer(ADMIN), 200).await?;
    expect(base, &take("m2"), node, 403).await?;
    let release =
        |holder: &str| req("POST", "/api/v1/locks/reboot/release").json(json!({"holder": holder}));
    let body = expect(base, &release("m2"), node, 403).await?;
    ensure!(body.contains("holder m1"), "{body}");
    expect(base, &take("m1"), node, 200).await?;
    expect(base, &release("m1"), node, 200).await?;
    let holders = admin(base)?.lock("reboot").await?;
    ensure!(
        holders.holders.iter().any(|h| h.holder == "m2"),
        "m2 lost its slot: {holders:?}"
    );
    let fleetlock = json!({"client_params": {"id": "m2", "group": "default"}});
    expect(
        base,
        &req("POST", "/v1/pre-reboot").json(fleetlock.clone()),
        node,
        403,
    )
    .await?;
    expect(
        base,
        &req("POST", "/v1/steady-state").json(fleetlock),
        node,
        403,
    )
    .await?;
    let checkin = json!({"machine_id": "m2", "channel": "stable", "version": "1"});
    expect(
        base,
        &req("POST", "/api/v1/updates/checkin").json(checkin),
        node,
        403,
    )
    .await?;

    eprintln!("--- the application key space is the containers'");
    expect(
        base,
        &req("PUT", "/v2/keys/services/api/a").form(&[("value", "x")]),
        node,
        201,
    )
    .await?;
    expect(base, &req("GET", "/v2/keys/_shoal/machines/m1"), node, 200).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_the_clients() -> Result<()> {
    let s = Secured::start().await?;
    let base = s.base.as_str();
    let client = admin(base)?;

    eprintln!("--- shoalctl --token: create, list, revoke");
    let out = shoalctl_ok(
        base,
        &[
            "--token", ADMIN, "token", "create", "--role", "viewer", "--name", "ci",
        ],
    )?;
    let token = out.trim().to_owned();
    ensure!(token.starts_with("shoal_"), "{out}");
    let id = api::auth::token_id(&token);
    let list = shoalctl_ok(base, &["--token", ADMIN, "token", "list"])?;
    ensure!(list.contains(&id) && list.contains("viewer"), "{list}");
    ensure!(!list.contains(&token), "list shows a secret: {list}");
    let viewer = api::Client::new(base)?.with_token(&token)?;
    ensure!(viewer.member_list().await?.members.len() == 1);
    shoalctl_ok(base, &["--token", ADMIN, "token", "revoke", &id])?;
    let err = viewer
        .get("/app", Default::default())
        .await
        .err()
        .context("a revoked token still works")?;
    ensure!(err.etcd_code() == Some(110), "{err}");
    ensure!(
        viewer.member_list().await.is_err(),
        "a revoked token still lists members"
    );
    let body = expect(base, &req("GET", "/v2/keys/app"), Cred::Bearer(&token), 401).await?;
    ensure!(body.contains("revoked"), "{body}");
    ensure!(client.tokens().await?.tokens.iter().all(|t| t.id != id));

    eprintln!("--- shoalctl without a token, and with a token file");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", s.operator))?;
    let file = file.display().to_string();
    shoalctl_ok(base, &["--token-file", &file, "set", "/ctl/a", "1"])?;
    let (ok, _, err) = crate::harness::shoalctl(base, &["get", "/ctl/a"])?;
    ensure!(!ok && err.contains("110"), "{err}");

    eprintln!("--- etcdctl (v2) with HTTP Basic");
    let etcdctl = require_tool("etcdctl", "etcd-client");
    let ctl = |user: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(&etcdctl);
        cmd.env("ETCDCTL_API", "2").args(["--endpoints", base]);
        if let Some(u) = user {
            cmd.args(["--username", u]);
        }
        cmd.args(args);
        run_with_timeout(&mut cmd, Duration::from_secs(20))
    };
    let user = format!("ci:{}", s.operator);
    let (ok, out, err) = ctl(Some(&user), &["set", "/ctl/b", "hello"])?;
    ensure!(ok && out.trim() == "hello", "{out}{err}");
    let (ok, out, err) = ctl(Some(&user), &["get", "/ctl/b"])?;
    ensure!(ok && out.trim() == "hello", "{out}{err}");
    let viewer_user = format!("ci:{}", s.viewer);
    let (ok, out, err) = ctl(Some(&viewer_user), &["set", "/ctl/b", "no"])?;
    ensure!(!ok, "a viewer wrote: {out}{err}");
    let (ok, out, err) = ctl(None, &["get", "/ctl/b"])?;
    ensure!(!ok, "etcdctl without credentials read: {out}{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_one_admin_token() -> Result<()> {
    let mut cluster = Cluster::start_with(Flavor::Shoal, 1, &["--auth"]).await?;
    let base = cluster.members[0].client_url();
    let mut printed = None;
    for _ in 0..100 {
        let log = cluster.members[0].log_tail(200);
        printed = log
            .lines()
            .find_map(|l| l.strip_prefix("admin token: "))
            .map(str::to_owned);
        if printed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = printed.context("no admin token printed")?;
    let client = api::Client::new(&base)?.with_token(&token)?;
    let tokens = client.tokens().await?.tokens;
    ensure!(
        tokens.len() == 1 && tokens[0].role == Role::Admin,
        "{tokens:?}"
    );

    eprintln!("--- a restart neither prints nor makes another");
    cluster.member(0).restart().await?;
    ensure!(client.tokens().await?.tokens.len() == 1);
    let log = cluster.members[0].log_tail(400);
    ensure!(log.matches("admin token: ").count() == 1, "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_with_a_node_token() -> Result<()> {
    if !docker_ready()? {
        eprintln!(
            "Docker is not available and SHOAL_REQUIRE_DOCKER is not 1: nothing to test here"
        );
        return Ok(());
    }
    let _serial = heavy_test_lock().await;
    ensure_image()?;
    let run = format!("auth{}", std::process::id());
    remove_containers(&run);
    let s = Secured::start().await?;
    let base = s.base.as_str();
    let client = admin(base)?;
    let machine = format!("{run}-m1");
    let token = create(&client, Role::Node, Some(&machine)).await?;
    let dir = tempfile::tempdir()?;
    let _agent = Agent::start_with(
        dir.path(),
        base,
        &machine,
        "",
        &["--token".into(), token.clone()],
    )?;

    let unit = json!({"name": "authed", "image": IMAGE, "desired": "launched",
                      "command": ["sh", "-c", "echo authed-says-hello; exec sleep 3600"]});
    client.submit_unit(&serde_json::from_value(unit)?).await?;
    let mut agent_url = None;
    for _ in 0..150 {
        let status = serde_json::to_value(client.unit("authed").await?)?;
        if !running(&status).is_empty() {
            agent_url = client
                .machines()
                .await?
                .into_iter()
                .find(|m| m.id == machine)
                .map(|m| m.agent_url);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agent_url = agent_url.context("the agent's container never ran")?;

    eprintln!("--- containers reach app keys through the local endpoint, never /_shoal");
    expect(
        &agent_url,
        &req("PUT", "/v2/keys/services/authed").form(&[("value", "up")]),
        Cred::None,
        201,
    )
    .await?;
    let forged = state("authed", "other");
    expect(
        &agent_url,
        &req("PUT", "/v2/keys/_shoal/states/authed").form(&[("value", &forged)]),
        Cred::None,
        403,
    )
    .await?;
    expect(
        &agent_url,
        &req("GET", "/v2/keys/_auth/tokens"),
        Cred::None,
        403,
    )
    .await?;

    eprintln!("--- the journal comes from the agent, answering with its node token");
    let mut logs = String::new();
    for _ in 0..50 {
        let resp = client.journal("authed", None, false, None).await?;
        logs = resp.text().await?;
        if logs.contains("authed-says-hello") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(logs.contains("authed-says-hello"), "journal: {logs:?}");
    expect(
        base,
        &req("POST", "/api/v1/journals/another-machine/r1"),
        Cred::Bearer(&token),
        403,
    )
    .await?;
    expect(
        base,
        &req(
            "POST",
            &format!("/api/v1/journals/{machine}/no-such-request"),
        ),
        Cred::Bearer(&token),
        404,
    )
    .await?;
    client.destroy_unit("authed").await?;
    remove_containers(&run);
    Ok(())
}

/// Waits (bounded) until the admin's `GET /api/v1/audit` holds an entry
/// whose detail is each of `details`; the whole answer.
async fn wait_audited(base: &str, details: &[String]) -> Result<Value> {
    let mut last = Value::Null;
    for _ in 0..100 {
        let body = expect(
            base,
            &req("GET", "/api/v1/audit?limit=1000"),
            Cred::Bearer(ADMIN),
            200,
        )
        .await?;
        last = serde_json::from_str(&body)?;
        let seen: Vec<&str> = last["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "audit")
            .filter_map(|e| e["detail"].as_str())
            .collect();
        if details.iter().all(|d| seen.contains(&d.as_str())) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the audit log never held {details:?}: {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_audited_and_only_admins_read_the_log() -> Result<()> {
    let s = Secured::start().await?;
    let base = s.base.as_str();
    let forged = json!({"id": "m2"}).to_string();
    expect(
        base,
        &req("PUT", "/v2/keys/_shoal/machines/m2").form(&[("value", &forged)]),
        Cred::Bearer(&s.node),
        403,
    )
    .await?;
    expect(
        base,
        &req("PUT", "/v2/keys/app/audited").form(&[("value", "secret-value")]),
        Cred::Bearer(&s.operator),
        201,
    )
    .await?;
    expect(
        base,
        &req("DELETE", "/v2/keys/app/audited"),
        Cred::None,
        401,
    )
    .await?;
    let node_id = api::auth::token_id(&s.node);
    let operator_id = api::auth::token_id(&s.operator);
    let log = wait_audited(
        base,
        &[
            format!("token {node_id} (node, machine m1): PUT /v2/keys/_shoal/machines/m2 → 403"),
            format!("token {operator_id} (operator): PUT /v2/keys/app/audited → 201"),
            "unauthenticated: DELETE /v2/keys/app/audited → 401".to_owned(),
        ],
    )
    .await?;
    let text = log.to_string();
    for secret in [ADMIN, s.operator.as_str(), s.node.as_str(), "secret-value"] {
        ensure!(
            !text.contains(secret),
            "the audit log holds a secret or a body: {text}"
        );
    }
    ensure!(!text.contains("GET "), "reads are not audited: {text}");
    for cred in [
        Cred::Bearer(&s.viewer),
        Cred::Bearer(&s.operator),
        Cred::Bearer(&s.node),
    ] {
        expect(base, &req("GET", "/api/v1/audit"), cred, 403).await?;
        expect(base, &req("GET", "/v2/keys/_auth/audit"), cred, 403).await?;
    }
    expect(base, &req("GET", "/api/v1/audit"), Cred::None, 401).await?;
    Ok(())
}

#[test]
fn no_public_listening_without_auth() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut cmd = Command::new(shoal_binary("shoal-server"));
    cmd.args([
        "--data-dir",
        &dir.path().join("d").display().to_string(),
        "--listen-client-urls",
        &format!("http://0.0.0.0:{port}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    let (ok, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(20))?;
    ensure!(!ok, "it started: {out}{err}");
    ensure!(err.contains("--auth") && err.contains("loopback"), "{err}");
    Ok(())
}

/// Opens an event stream of `/lim` as `token`: its status, and the response
/// (kept open while held).
async fn open_stream(base: &str, token: &str) -> Result<(u16, reqwest::Response)> {
    let resp = reqwest::Client::new()
        .get(format!("{base}/api/v1/events?prefix=/lim"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_the_reason() -> Result<()> {
    let s = Secured::start_with(&["--rate-limit", "5", "--max-watches-per-token", "2"]).await?;
    let base = s.base.as_str();

    eprintln!(
        "--- 200 reads at once from one token: a burst of 10 passes, the rest are told to wait"
    );
    let read = req("GET", "/v2/keys/");
    let answers =
        futures::future::join_all((0..200).map(|_| send(base, &read, Cred::Bearer(&s.viewer))))
            .await;
    let mut refused = Vec::new();
    for answer in answers {
        let (status, body) = answer?;
        if status == 429 {
            refused.push(body);
        } else {
            ensure!(status == 200, "a read answered {status}: {body}");
        }
    }
    ensure!(
        (100..=190).contains(&refused.len()),
        "expected most of 200 reads refused at 5/s, {} were",
        refused.len()
    );
    let body: Value = serde_json::from_str(&refused[0])?;
    ensure!(
        body["errorCode"] == 429
            && body["cause"]
                .as_str()
                .is_some_and(|c| c.contains("5 requests per second")),
        "the refusal says why in etcd's shape: {body}"
    );
    // The budget refills one request per 200 ms: of 20 at once, most are refused.
    let http = reqwest::Client::new();
    let answers = futures::future::join_all((0..20).map(|_| {
        http.get(format!("{base}/api/v1/machines"))
            .bearer_auth(&s.viewer)
            .send()
    }))
    .await;
    let mut api_refusals = 0;
    for resp in answers {
        let resp = resp?;
        if resp.status().as_u16() == 429 {
            ensure!(
                resp.headers().contains_key("retry-after"),
                "a 429 without Retry-After"
            );
            let body: Value = resp.json().await?;
            ensure!(
                body["error"]["code"] == "too_many_requests",
                "the API's error shape: {body}"
            );
            api_refusals += 1;
        }
    }
    ensure!(
        api_refusals >= 10,
        "only {api_refusals} of 20 API requests at once were refused at 5/s"
    );
    expect(
        base,
        &req("GET", "/v2/keys/"),
        Cred::Bearer(&s.operator),
        200,
    )
    .await?;

    eprintln!("--- two watches open per token; a third is refused until one closes");
    let (first_status, first) = open_stream(base, &s.operator).await?;
    let (second_status, _second) = open_stream(base, &s.operator).await?;
    ensure!(
        first_status == 200 && second_status == 200,
        "two streams open"
    );
    let (third, body) = send(
        base,
        &req("GET", "/v2/keys/lim?wait=true"),
        Cred::Bearer(&s.operator),
    )
    .await?;
    ensure!(
        third == 429 && body.contains("2 watches open"),
        "a third watch (a long poll) is refused: {third} {body}"
    );
    drop(first);
    let mut reopened = false;
    for i in 0..40 {
        // A write on the closed stream's prefix makes the server notice it is gone.
        let write = req("PUT", &format!("/v2/keys/lim/k{i}")).form(&[("value", "x")]);
        expect(base, &write, Cred::Bearer(ADMIN), 201).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, resp) = open_stream(base, &s.operator).await?;
        if status == 200 {
            reopened = true;
            drop(resp);
            break;
        }
        ensure!(status == 429, "a watch answered {status}");
    }
    ensure!(reopened, "a closed stream never gave its slot back");

    eprintln!("--- keys over 4096 bytes and values over 1 MiB are refused with their size");
    let long_key = format!("/v2/keys/{}", "k".repeat(5000));
    let body = expect(
        base,
        &req("PUT", &long_key).form(&[("value", "x")]),
        Cred::Bearer(ADMIN),
        400,
    )
    .await?;
    ensure!(
        body.contains("5001 bytes"),
        "the key's size is named: {body}"
    );
    let big = "v".repeat((1 << 20) + 1);
    let body = expect(
        base,
        &req("PUT", "/v2/keys/big").form(&[("value", &big)]),
        Cred::Bearer(ADMIN),
        400,
    )
    .await?;
    ensure!(
        body.contains("1048577 bytes"),
        "the value's size is named: {body}"
    );
    Ok(())
}
