//! Bad input against a real member: oversized bodies, invalid UTF-8, absurd
//! numbers and malformed parameters get etcd's error codes and a 4xx, never a
//! 500, and the member keeps serving afterwards.

use anyhow::{ensure, Result};

use crate::harness::{Cluster, Flavor, V2};

/// Sends raw bytes and returns (status, body).
async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Vec<u8>,
) -> Result<(u16, String)> {
    let resp = http
        .request(method, url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

fn error_code(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?["errorCode"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_etcd_errors_not_crashes() -> Result<()> {
    let cluster = Cluster::start_with(Flavor::Shoal, 1, &["--max-request-bytes", "4096"]).await?;
    let base = cluster.members[0].client_url();
    let http = reqwest::Client::new();
    let put = reqwest::Method::PUT;

    eprintln!("--- a body over --max-request-bytes is refused with 413 and an etcd error body");
    let big = format!("value={}", "a".repeat(10_000)).into_bytes();
    let (status, body) = raw(&http, put.clone(), &format!("{base}/v2/keys/big"), big).await?;
    ensure!(
        status == 413 && error_code(&body) == Some(210),
        "{status} {body}"
    );

    eprintln!("--- invalid UTF-8 in the key, the body, the query");
    for (url, body) in [
        (format!("{base}/v2/keys/%ff%fe"), b"value=1".to_vec()),
        (format!("{base}/v2/keys/ok"), b"value=\xff\xfe".to_vec()),
        (format!("{base}/v2/keys/ok"), b"value=%ff".to_vec()),
        (format!("{base}/v2/keys/ok?value=%c3%28"), Vec::new()),
    ] {
        let (status, body) = raw(&http, put.clone(), &url, body).await?;
        ensure!(
            status == 400 && error_code(&body) == Some(210),
            "{url}: {status} {body}"
        );
    }

    eprintln!("--- absurd and malformed numbers and flags");
    for (query, code) in [
        ("ttl=18446744073709551615", 202),
        ("ttl=1e3", 202),
        ("ttl=-5", 202),
        ("prevIndex=99999999999999999999999", 203),
        ("prevExist=perhaps", 209),
        ("dir=2", 209),
        ("refresh=true", 211),
        ("prevValue=", 201),
    ] {
        let (status, body) = raw(
            &http,
            put.clone(),
            &format!("{base}/v2/keys/n?{query}"),
            b"value=1".to_vec(),
        )
        .await?;
        ensure!(
            status == 400 && error_code(&body) == Some(code),
            "{query}: {status} {body}"
        );
    }
    let (status, body) = raw(
        &http,
        reqwest::Method::GET,
        &format!("{base}/v2/keys/n?wait=true&waitIndex=x"),
        Vec::new(),
    )
    .await?;
    ensure!(
        status == 400 && error_code(&body) == Some(203),
        "waitIndex=x: {status} {body}"
    );

    eprintln!("--- a long key and many path components are just keys");
    let deep = (0..200)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    let v2 = V2::new(base.clone());
    let r = v2.put(&format!("/{deep}"), &[("value", "deep")]).await?;
    ensure!(r.status == 201, "deep key: {} {}", r.status, r.text);
    let r = v2.get(&format!("/{deep}")).await?;
    ensure!(
        r.json()["node"]["value"] == "deep",
        "deep key read: {}",
        r.text
    );

    eprintln!("--- lock API: bad JSON and bad names are 400 with a code");
    for (path, body) in [
        ("/api/v1/locks/x/acquire", "{not json"),
        ("/api/v1/locks/x/acquire", r#"{"holder":"a/b","ttl":5}"#),
        ("/api/v1/locks/x/acquire", r#"{"holder":"a","ttl":0}"#),
        ("/api/v1/locks/_x/acquire", r#"{"holder":"a","ttl":5}"#),
    ] {
        let resp = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        ensure!(
            status == 400 && text.contains("bad_request"),
            "{path} {body}: {status} {text}"
        );
    }

    eprintln!("--- the member still serves");
    let r = v2.put("/still/alive", &[("value", "yes")]).await?;
    ensure!(r.status == 201, "{} {}", r.status, r.text);
    Ok(())
}
