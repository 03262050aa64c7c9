//! The OS update service end to end: `shoalctl update keygen`, a signed
//! upload accepted and a badly signed one refused by a server that trusts the
//! public key, a ranged download that resumes mid-file, channel policy
//! validation, and three fake machines checking in: the canary goes first,
//! failures reaching the threshold halt the rollout, resume and pause work,
//! an operator halts by hand (REST with a reason, `shoalctl update halt`),
//! and the history records it all. And payload replication: on a 3-member
//! cluster every member ends up holding an upload, also one that was stopped
//! while it happened and must fetch it from a member other than the dead
//! uploader.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::agents::get;
use crate::harness::{seeded_bytes, shoalctl, shoalctl_ok, Cluster, Flavor};
use crate::update_host::path_str;

async fn checkin(
    base: &str,
    machine: &str,
    version: &str,
    state: &str,
    target: Option<&str>,
) -> Result<Value> {
    let body = json!({
        "machine_id": machine, "channel": "stable", "version": version,
        "state": state, "target": target, "error": "",
    });
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/updates/checkin"))
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let reply: Value = resp.json().await?;
    ensure!(status == 200, "check-in of {machine}: {status} {reply}");
    Ok(reply)
}

async fn channel(base: &str) -> Result<Value> {
    get(&format!("{base}/api/v1/updates/channels/stable")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_upload_ranged_download_and_rollout_decisions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    eprintln!("--- keygen writes a secret key only its owner can read");
    shoalctl_ok(
        "http://127.0.0.1:1",
        &["update", "keygen", "--out", path_str(&keys)?],
    )?;
    let secret = keys.join("signing.pem");
    let public = keys.join("public.pem");
    let mode = std::fs::metadata(&secret)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "signing.pem has mode {mode:o}");
    let (ok, _, err) = shoalctl(
        "http://127.0.0.1:1",
        &["update", "keygen", "--out", path_str(&keys)?],
    )?;
    ensure!(
        !ok && err.contains("--force"),
        "keygen must not overwrite: {err}"
    );

    let cluster = Cluster::start_with(
        Flavor::Shoal,
        1,
        &["--update-public-key", path_str(&public)?],
    )
    .await?;
    let base = cluster.client_urls()[0].clone();
    let http = reqwest::Client::new();

    eprintln!("--- a 3 MiB payload signed with the key is accepted and points the channel at it");
    let data = seeded_bytes(3 * 1024 * 1024 + 17, 7);
    let file = dir.path().join("os-2.0.img");
    std::fs::write(&file, &data)?;
    let out = shoalctl_ok(
        &base,
        &[
            "-o",
            "json",
            "update",
            "upload",
            path_str(&file)?,
            "--version",
            "2.0",
            "--channel",
            "stable",
            "--key",
            path_str(&secret)?,
        ],
    )?;
    let meta: Value = serde_json::from_str(out.trim())?;
    let sha = meta["sha256"].as_str().context("sha256")?.to_owned();
    ensure!(meta["size"] == data.len(), "{meta}");
    ensure!(channel(&base).await?["version"] == "2.0");

    eprintln!("--- a signature made for another version is refused, and nothing is stored");
    let sig = shoalctl_ok(
        &base,
        &[
            "update",
            "sign",
            path_str(&file)?,
            "--key",
            path_str(&secret)?,
            "--version",
            "9.9",
        ],
    )?;
    let (ok, out, err) = shoalctl(
        &base,
        &[
            "update",
            "upload",
            path_str(&file)?,
            "--version",
            "3.0",
            "--signature",
            sig.trim(),
        ],
    )?;
    ensure!(
        !ok && err.contains("bad_signature"),
        "must be refused: {out}{err}"
    );
    let listed = get(&format!("{base}/api/v1/updates/payloads")).await?;
    ensure!(
        listed.as_array().map(Vec::len) == Some(1) && listed[0]["version"] == "2.0",
        "{listed}"
    );

    eprintln!("--- other bytes under an existing version are a conflict");
    let other = dir.path().join("other.img");
    std::fs::write(&other, seeded_bytes(1000, 8))?;
    let (ok, _, err) = shoalctl(
        &base,
        &[
            "update",
            "upload",
            path_str(&other)?,
            "--version",
            "2.0",
            "--key",
            path_str(&secret)?,
        ],
    )?;
    ensure!(!ok && err.contains("conflict"), "{err}");

    eprintln!("--- a download resumes from an offset with a Range request");
    check_download(&http, &base, &sha, &data).await?;
    let missing = http
        .get(format!("{base}/api/v1/updates/payloads/{}", "0".repeat(64)))
        .send()
        .await?;
    ensure!(missing.status().as_u16() == 404);

    eprintln!("--- channel policies are validated");
    for bad in [
        vec!["--window", "whenever"],
        vec!["--timezone", "Mars/Olympus_Mons"],
        vec!["--version", "7.7"],
    ] {
        let mut args = vec!["update", "channel", "stable"];
        args.extend(bad.iter().copied());
        let (ok, _, err) = shoalctl(&base, &args)?;
        ensure!(!ok && err.contains("bad_request"), "{bad:?}: {err}");
    }
    shoalctl_ok(
        &base,
        &[
            "update",
            "channel",
            "stable",
            "--canaries",
            "1",
            "--max-reboots",
            "2",
            "--failure-threshold",
            "2",
            "--window",
            "* 00:00 168h",
            "--timezone",
            "Europe/Berlin",
        ],
    )?;

    eprintln!("--- the canary (first machine id) goes first; the others wait for it");
    for m in ["m1", "m2", "m3"] {
        let r = checkin(&base, m, "1.0", "idle", None).await?;
        ensure!(
            r["offer"]["version"] == "2.0" && r["offer"]["sha256"] == sha.as_str(),
            "{r}"
        );
        ensure!(r["lock"] == json!({"name": "reboot", "limit": 2}), "{r}");
        ensure!(r["proceed"] == (m == "m1"), "{m}: {r}");
    }
    let offer_url = checkin(&base, "m1", "1.0", "downloading", Some("2.0")).await?["offer"]["url"]
        .as_str()
        .context("offer url")?
        .to_owned();
    ensure!(offer_url == format!("/api/v1/updates/payloads/{sha}"));
    let r = checkin(&base, "m2", "1.0", "idle", None).await?;
    ensure!(
        r["proceed"] == false && r["reason"].as_str().unwrap_or("").contains("m1"),
        "{r}"
    );
    let r = checkin(&base, "m1", "2.0", "updated", Some("2.0")).await?;
    ensure!(r["offer"].is_null() && r["proceed"] == false, "{r}");
    let r = checkin(&base, "m2", "1.0", "idle", None).await?;
    ensure!(r["proceed"] == true, "after the canary: {r}");

    eprintln!("--- failures reaching the threshold (2) halt the rollout for everyone");
    let r = checkin(&base, "m2", "1.0", "failed", Some("2.0")).await?;
    ensure!(r["proceed"] == false, "{r}");
    ensure!(
        channel(&base).await?["policy"]["halted"] == false,
        "one failure < 2"
    );
    let r = checkin(&base, "m3", "1.0", "rolled_back", Some("2.0")).await?;
    ensure!(
        r["proceed"] == false && r["reason"].as_str().unwrap_or("").contains("halted"),
        "{r}"
    );
    let c = channel(&base).await?;
    ensure!(c["policy"]["halted"] == true, "{c}");
    let why = c["policy"]["halt_reason"].as_str().unwrap_or("");
    ensure!(why.contains("m2") && why.contains("m3"), "{c}");

    eprintln!("--- resume clears the halt and forgives the failures; pause holds everyone");
    shoalctl_ok(&base, &["update", "resume", "stable"])?;
    let r = checkin(&base, "m3", "1.0", "rolled_back", Some("2.0")).await?;
    ensure!(r["proceed"] == true, "after resume: {r}");
    ensure!(channel(&base).await?["policy"]["halted"] == false);
    shoalctl_ok(&base, &["update", "pause", "stable"])?;
    let r = checkin(&base, "m3", "1.0", "idle", None).await?;
    ensure!(
        r["proceed"] == false && r["reason"].as_str().unwrap_or("").contains("paused"),
        "{r}"
    );

    eprintln!("--- status shows every machine; the history recorded every change");
    let status = shoalctl_ok(&base, &["update", "status", "stable"])?;
    for needle in [
        "channel stable: version=2.0 (paused)",
        "m1",
        "m2",
        "m3",
        "updated",
        "failed",
    ] {
        ensure!(
            status.contains(needle),
            "{needle:?} not in status:\n{status}"
        );
    }
    let history: Value = serde_json::from_str(
        shoalctl_ok(
            &base,
            &["-o", "json", "update", "history", "--limit", "1000"],
        )?
        .trim(),
    )?;
    let kinds: Vec<&str> = history
        .as_array()
        .context("history is a list")?
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in [
        "payload_uploaded",
        "channel_changed",
        "machine_state",
        "channel_halted",
        "channel_resumed",
        "channel_paused",
    ] {
        ensure!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let last_two = get(&format!("{base}/api/v1/updates/history?limit=2")).await?;
    ensure!(
        last_two.as_array().map(Vec::len) == Some(2)
            && last_two[0]["kind"] == "channel_paused"
            && last_two[1]["kind"] == "machine_state",
        "the newest two, oldest first: {last_two}"
    );

    eprintln!("--- a halt by hand holds everyone with its reason; resume clears it");
    let halt_url = format!("{base}/api/v1/updates/channels/stable/halt");
    let resp = http
        .post(&halt_url)
        .json(&json!({ "reason": "bad batch" }))
        .send()
        .await?;
    ensure!(resp.status() == 200, "halt: {}", resp.status());
    let c: Value = resp.json().await?;
    ensure!(
        c["policy"]["halted"] == true && c["policy"]["halt_reason"] == "bad batch",
        "{c}"
    );
    let r = checkin(&base, "m3", "1.0", "idle", None).await?;
    ensure!(
        r["proceed"] == false && r["reason"] == "rollout halted: bad batch",
        "{r}"
    );
    let resp = http
        .post(&halt_url)
        .json(&json!({ "reason": "another" }))
        .send()
        .await?;
    ensure!(resp.status() == 200, "a second halt: {}", resp.status());
    ensure!(
        channel(&base).await?["policy"]["halt_reason"] == "bad batch",
        "a second halt keeps the first reason"
    );
    let newest = get(&format!("{base}/api/v1/updates/history?limit=1")).await?;
    ensure!(
        newest[0]["kind"] == "channel_halted" && newest[0]["detail"] == "bad batch",
        "the halt is recorded once: {newest}"
    );
    for (url, body, want) in [
        (halt_url.clone(), "{\"reason\": 5}", 400),
        (halt_url.clone(), "{\"reason\": \"two\\nlines\"}", 400),
        (format!("{base}/api/v1/updates/channels/nope/halt"), "", 404),
    ] {
        let resp = http.post(&url).body(body).send().await?;
        ensure!(resp.status() == want, "{url} {body:?}: {}", resp.status());
    }
    shoalctl_ok(&base, &["update", "resume", "stable"])?;
    ensure!(channel(&base).await?["policy"]["halted"] == false);
    let out = shoalctl_ok(&base, &["update", "halt", "stable"])?;
    ensure!(out.contains("halted: halted by an operator"), "{out}");
    let out = shoalctl_ok(&base, &["update", "resume", "stable"])?;
    ensure!(!out.contains("halted"), "{out}");
    Ok(())
}

/// Status of a `HEAD` of the payload on `base`, redirects not followed:
/// 200 when that member holds it, 307 while it points elsewhere.
async fn head_status(http: &reqwest::Client, base: &str, sha: &str) -> Result<u16> {
    let resp = http
        .head(format!("{base}/api/v1/updates/payloads/{sha}"))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// Waits until the member at `base` answers the payload itself (200, no redirect).
async fn wait_held(http: &reqwest::Client, base: &str, sha: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match head_status(http, base, sha).await {
            Ok(200) => return Ok(()),
            Ok(status) => format!("status {status}"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            Instant::now() < deadline,
            "{base} does not hold payload {sha} after {timeout:?} (last answer: {last})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole payload, its tail from an offset and a closed Range of it from `base`, served there (no redirect).
async fn check_download(http: &reqwest::Client, base: &str, sha: &str, data: &[u8]) -> Result<()> {
    let url = format!("{base}/api/v1/updates/payloads/{sha}");
    let whole = http.get(&url).send().await?;
    ensure!(
        whole.status().as_u16() == 200,
        "{base}: whole download answered {}",
        whole.status()
    );
    let bytes = whole.bytes().await?;
    ensure!(
        bytes[..] == data[..],
        "{base}: the whole payload differs ({} bytes, want {})",
        bytes.len(),
        data.len()
    );
    let offset = 1_000_003usize;
    let tail = http
        .get(&url)
        .header("Range", format!("bytes={offset}-"))
        .send()
        .await?;
    ensure!(
        tail.status().as_u16() == 206,
        "{base}: open range download answered {}",
        tail.status()
    );
    ensure!(
        tail.bytes().await?[..] == data[offset..],
        "{base}: the bytes from {offset} on differ"
    );
    let (from, to) = (777_777usize, 1_234_566usize);
    let part = http
        .get(&url)
        .header("Range", format!("bytes={from}-{to}"))
        .send()
        .await?;
    ensure!(
        part.status().as_u16() == 206,
        "{base}: range download answered {}",
        part.status()
    );
    let bytes = part.bytes().await?;
    ensure!(
        bytes[..] == data[from..=to],
        "{base}: the ranged bytes differ ({} bytes)",
        bytes.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_replicated_to_every_member() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    shoalctl_ok(
        "http://127.0.0.1:1",
        &["update", "keygen", "--out", path_str(&keys)?],
    )?;
    let mut cluster = Cluster::start_with(
        Flavor::Shoal,
        3,
        &["--update-public-key", path_str(&keys.join("public.pem"))?],
    )
    .await?;
    let urls = cluster.client_urls();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()?;

    // Member 1 (index 0) takes the upload. Of the other two, a follower is
    // stopped during the upload (so the cluster keeps its leader): it can only
    // get the bytes later, from the other replica once member 1 is dead.
    let leader = cluster.wait_leader(&[], Duration::from_secs(20)).await?;
    let late = if leader == 2 { 1 } else { 2 };
    let early = 3 - late;
    eprintln!(
        "--- member {} is stopped while member 1 takes a signed upload",
        late + 1
    );
    cluster.member(late).pause()?;
    let data = seeded_bytes(2 * 1024 * 1024 + 5, 11);
    let file = dir.path().join("os-5.0.img");
    std::fs::write(&file, &data)?;
    let out = shoalctl_ok(
        &urls[0],
        &[
            "-o",
            "json",
            "update",
            "upload",
            path_str(&file)?,
            "--version",
            "5.0",
            "--key",
            path_str(&keys.join("signing.pem"))?,
        ],
    )?;
    let meta: Value = serde_json::from_str(out.trim())?;
    let sha = meta["sha256"].as_str().context("sha256")?.to_owned();

    eprintln!("--- until it holds the payload, a member redirects to one that does");
    let resp = http
        .get(format!("{}/api/v1/updates/payloads/{sha}", urls[early]))
        .send()
        .await?;
    match resp.status().as_u16() {
        200 => eprintln!("(member {} already holds it)", early + 1),
        307 => {
            let location = resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or_default();
            ensure!(
                location == format!("{}/api/v1/updates/payloads/{sha}", urls[0]),
                "redirect to {location:?}, not to the uploader"
            );
        }
        status => anyhow::bail!("download from member {}: {status}", early + 1),
    }
    wait_held(&http, &urls[early], &sha, Duration::from_secs(30)).await?;

    eprintln!(
        "--- member 1 dies; member {} resumes and fetches from member {}",
        late + 1,
        early + 1
    );
    cluster.member(0).kill();
    cluster.member(late).resume()?;
    wait_held(&http, &urls[late], &sha, Duration::from_secs(60))
        .await
        .with_context(|| cluster.members[late].log_tail(30))?;

    eprintln!("--- both survivors serve the whole payload and a Range of it");
    for i in [early, late] {
        check_download(&http, &urls[i], &sha, &data).await?;
    }
    Ok(())
}
