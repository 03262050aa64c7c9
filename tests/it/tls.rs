//! TLS end to end, with certificates made here by rcgen: a member serving its
//! client API and dashboard over `https`; `shoalctl --ca-file` writing and
//! reading a key, refused with a clear message under a wrong CA or none;
//! plain HTTP refused on the TLS ports, a silent connection not holding up
//! the others; bad certificate and key files named
//! at startup; an agent registering its machine over TLS (and one with the
//! wrong CA saying why it cannot); a 3-member cluster whose peers talk TLS
//! electing a leader and replicating a write, also with mutual TLS
//! (`--peer-client-cert-auth`: a caller without a certificate of the peer CA
//! gets no session on the peer port); certificates rotated by SIGHUP
//! (a broken file keeping the ones in use).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::agents::{wait_machines_with, Agent};
use crate::harness::{
    free_port, heavy_test_lock, member_http, run_with_timeout, shoal_binary, shoalctl, Cluster,
    TlsFiles, V2,
};

/// A CA and a member certificate for 127.0.0.1 it signed, written as PEM
/// files `<name>-ca.pem`, `<name>-cert.pem` and `<name>-key.pem` in `dir`.
fn make_tls(dir: &Path, name: &str) -> Result<TlsFiles> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Shoal test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &ca)?;
    let files = TlsFiles {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.ca, ca.pem())?;
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    Ok(files)
}

/// `shoalctl --endpoints base [--ca-file ca] args...`: (success, stdout, stderr).
fn ctl(base: &str, ca: Option<&Path>, args: &[&str]) -> Result<(bool, String, String)> {
    let mut all: Vec<&str> = Vec::new();
    if let Some(ca) = ca {
        all.extend(["--ca-file", ca.to_str().context("CA path is not UTF-8")?]);
    }
    all.extend_from_slice(args);
    shoalctl(base, &all)
}

/// True when a plain-HTTP request to `port` gets any HTTP answer.
async fn answers_plain_http(port: u16, path: &str) -> bool {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build();
    match http {
        Ok(http) => http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn client_api_and_shoalctl_over_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = make_tls(dir.path(), "good")?;
    let wrong = make_tls(dir.path(), "wrong")?;
    let cluster = Cluster::start_tls(1, &tls).await?;
    let member = &cluster.members[0];
    let base = member.client_url();
    ensure!(base.starts_with("https://"), "{base}");

    let (ok, out, err) = ctl(&base, Some(&tls.ca), &["set", "/tls/greeting", "hello"])?;
    ensure!(ok, "set over TLS failed: {err}{out}");
    let (ok, out, err) = ctl(&base, Some(&tls.ca), &["get", "/tls/greeting"])?;
    ensure!(ok && out.trim() == "hello", "get over TLS: {err}{out}");

    for ca in [Some(wrong.ca.as_path()), None] {
        let (ok, out, err) = ctl(&base, ca, &["get", "/tls/greeting"])?;
        ensure!(!ok, "shoalctl with CA {ca:?} was not refused: {out}");
        ensure!(
            err.contains("the server certificate of") && err.contains("was not trusted"),
            "CA {ca:?}: unclear refusal: {err}"
        );
    }

    // The dashboard is on the same TLS port.
    let http = member_http(Some(&tls), Duration::from_secs(10))?;
    let page = http.get(format!("{base}/")).send().await?;
    ensure!(
        page.status().is_success(),
        "dashboard over TLS: {}",
        page.status()
    );

    // A client that connects and never says a word holds only its own
    // handshake: the requests below are accepted while it stays open.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", member.client_port)).await?;
    // Plain HTTP gets no answer on either TLS port, and the failed handshakes
    // leave the member serving.
    ensure!(
        !answers_plain_http(member.client_port, "/health").await,
        "the client port answered plain HTTP"
    );
    ensure!(
        !answers_plain_http(member.peer_port, "/").await,
        "the peer port answered plain HTTP"
    );
    let health = http.get(format!("{base}/health")).send().await?;
    ensure!(
        health.status().is_success(),
        "/health after plain-HTTP attempts: {}",
        health.status()
    );
    Ok(())
}

/// How long a member may take to act on a SIGHUP.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn certificates_rotate_on_sighup() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let old = make_tls(dir.path(), "old")?;
    let new = make_tls(dir.path(), "new")?;
    let cluster = Cluster::start_tls(1, &old).await?;
    let member = &cluster.members[0];
    let base = member.client_url();
    let (ok, out, err) = ctl(&base, Some(&old.ca), &["set", "/tls/rotated", "kept"])?;
    ensure!(ok, "set over TLS failed: {err}{out}");

    // The new pair replaces the files the member was started with.
    std::fs::copy(&new.cert, &old.cert)?;
    std::fs::copy(&new.key, &old.key)?;
    member.hangup()?;
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        let (ok, out, err) = ctl(&base, Some(&new.ca), &["get", "/tls/rotated"])?;
        if ok {
            ensure!(out.trim() == "kept", "get after the rotation: {out}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the new certificate is not served {RELOAD_WAIT:?} after SIGHUP: {err}\n{}",
            member.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, _) = ctl(&base, Some(&old.ca), &["get", "/tls/rotated"])?;
    ensure!(!ok, "the old certificate is still served: {out}");

    // A broken file: the reload fails, the member says why and goes on
    // serving the pair it has.
    std::fs::write(&old.cert, "-----BEGIN CERTIFICATE-----\ntruncated")?;
    member.hangup()?;
    let deadline = Instant::now() + RELOAD_WAIT;
    while !member
        .log_tail(50)
        .contains("cannot reload the certificate, still serving the one loaded before")
    {
        ensure!(
            Instant::now() < deadline,
            "no failed reload logged {RELOAD_WAIT:?} after SIGHUP:\n{}",
            member.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, err) = ctl(&base, Some(&new.ca), &["get", "/tls/rotated"])?;
    ensure!(
        ok && out.trim() == "kept",
        "serving after a failed reload: {err}{out}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_certificate_files_are_named_at_startup() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = make_tls(dir.path(), "good")?;
    let other = make_tls(dir.path(), "other")?;
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            &missing,
            &good.key,
            format!("cannot read --cert-file {}", missing.display()),
        ),
        (
            &good.cert,
            &missing,
            format!("cannot read --key-file {}", missing.display()),
        ),
        (
            &garbage,
            &good.key,
            format!("invalid --cert-file {}", garbage.display()),
        ),
        (
            &good.cert,
            &garbage,
            format!("invalid --key-file {}", garbage.display()),
        ),
        (
            &good.cert,
            &other.key,
            format!("cannot use certificate {}", good.cert.display()),
        ),
    ];
    for (cert, key, expected) in cases {
        let mut cmd = Command::new(shoal_binary("shoal-server"));
        cmd.args(["--data-dir", &dir.path().join("data").display().to_string()])
            .args([
                "--listen-client-urls",
                &format!("https://127.0.0.1:{}", free_port()),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", free_port()),
            ])
            .args(["--cert-file", &cert.display().to_string()])
            .args(["--key-file", &key.display().to_string()]);
        let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
        ensure!(!ok, "the server started with {cert:?} / {key:?}");
        ensure!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }
    Ok(())
}

#[tokio::test]
async fn agent_registers_over_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = make_tls(dir.path(), "good")?;
    let wrong = make_tls(dir.path(), "wrong")?;
    let cluster = Cluster::start_tls(1, &tls).await?;
    let base = cluster.members[0].client_url();
    let ca_arg = |files: &TlsFiles| vec!["--ca-file".to_owned(), files.ca.display().to_string()];
    let id = format!("tls-agent-{}", std::process::id());
    let agent = Agent::start_with(dir.path(), &base, &id, "role=tls", &ca_arg(&tls))?;
    let http = member_http(Some(&tls), Duration::from_secs(10))?;
    wait_machines_with(&http, &base, &[&agent])
        .await
        .with_context(|| agent.log_tail(20))?;

    let refused = Agent::start_with(
        dir.path(),
        &base,
        &format!("{id}-wrong-ca"),
        "role=tls",
        &ca_arg(&wrong),
    )?;
    for _ in 0..100 {
        if refused.log_tail(50).contains("was not trusted") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the agent with the wrong CA did not say the certificate was not trusted:\n{}",
        refused.log_tail(20)
    )
}

#[tokio::test]
async fn peers_over_tls_elect_and_replicate() -> Result<()> {
    let _serial = heavy_test_lock().await;
    let dir = tempfile::tempdir()?;
    let tls = make_tls(dir.path(), "good")?;
    let cluster = Cluster::start_tls(3, &tls).await?;
    elect_and_replicate(&cluster, &tls).await
}

#[tokio::test]
async fn peers_with_mutual_tls_refuse_a_caller_without_a_certificate() -> Result<()> {
    let _serial = heavy_test_lock().await;
    let dir = tempfile::tempdir()?;
    let tls = make_tls(dir.path(), "good")?;
    let cluster = Cluster::start_tls_with(3, &tls, &["--peer-client-cert-auth"]).await?;
    elect_and_replicate(&cluster, &tls).await?;

    // Trusting the members' CA is not enough: without a certificate of its
    // own a caller gets no TLS session on the peer port, let alone raft.
    let http = member_http(Some(&tls), Duration::from_secs(5))?;
    for m in &cluster.members {
        let url = format!("{}/raft/info", m.peer_url());
        let got = http.get(&url).send().await;
        ensure!(
            got.is_err(),
            "{url} answered a caller without a client certificate: {:?}",
            got.map(|r| r.status())
        );
    }
    // One with a certificate of another CA is refused as well.
    let other = make_tls(dir.path(), "other")?;
    let mut pem = std::fs::read(&other.cert)?;
    pem.extend(std::fs::read(&other.key)?);
    let stranger = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&tls.ca)?)?)
        .identity(reqwest::Identity::from_pem(&pem)?)
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("{}/raft/info", cluster.members[0].peer_url());
    let got = stranger.get(&url).send().await;
    ensure!(
        got.is_err(),
        "{url} answered a caller with another CA's certificate: {:?}",
        got.map(|r| r.status())
    );
    Ok(())
}

/// The cluster elects a leader over its TLS peers, and a write on the leader
/// reaches every member.
async fn elect_and_replicate(cluster: &Cluster, tls: &TlsFiles) -> Result<()> {
    ensure!(cluster
        .members
        .iter()
        .all(|m| m.peer_url().starts_with("https://")));
    let leader = cluster.wait_leader(&[], Duration::from_secs(20)).await?;
    let http = member_http(Some(tls), Duration::from_secs(15))?;
    let v2 = |i: usize| V2 {
        base: cluster.members[i].client_url(),
        http: http.clone(),
    };
    let put = v2(leader)
        .put("/tls/replicated", &[("value", "over-tls")])
        .await?;
    ensure!(
        put.status == 201,
        "write on the leader: {} {}",
        put.status,
        put.text
    );
    for i in 0..cluster.members.len() {
        let mut last = String::new();
        let mut seen = false;
        for _ in 0..100 {
            let got = v2(i).get("/tls/replicated").await?;
            if got.status == 200 && got.json()["node"]["value"] == "over-tls" {
                seen = true;
                break;
            }
            last = got.text;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(seen, "member {i} never had the write; last answer: {last}");
    }
    Ok(())
}
