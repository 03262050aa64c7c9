//! `GET /api/v1/openapi.json` from a real server: valid JSON, OpenAPI 3.x,
//! the fleet's unit routes with their methods and the shared error body, and
//! every documented path is one the server actually routes (a documented
//! `GET` without path parameters answers something other than 404).

use anyhow::{ensure, Context as _, Result};

use crate::harness::{Cluster, V2};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_its_openapi_document() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let client = V2::new(cluster.members[0].client_url());
    let resp = client.request("GET", "/api/v1/openapi.json", &[]).await?;
    ensure!(resp.status == 200, "status {}: {}", resp.status, resp.text);
    ensure!(
        resp.content_type.as_deref() == Some("application/json"),
        "content type {:?}",
        resp.content_type
    );
    let doc: serde_json::Value =
        serde_json::from_str(&resp.text).context("the document is not JSON")?;
    let version = doc["openapi"].as_str().unwrap_or_default();
    ensure!(version.starts_with("3."), "openapi version {version:?}");

    let units = &doc["paths"]["/api/v1/units"];
    ensure!(
        units["get"].is_object() && units["post"].is_object(),
        "{units}"
    );
    let unit = &doc["paths"]["/api/v1/units/{name}"];
    ensure!(
        unit["get"].is_object() && unit["delete"].is_object(),
        "{unit}"
    );
    ensure!(
        doc["paths"]["/api/v1/locks/{name}"]["put"].is_object(),
        "PUT /api/v1/locks/{{name}} is missing"
    );
    let not_found = &unit["get"]["responses"]["404"]["content"]["application/json"]["schema"];
    ensure!(
        not_found["$ref"] == "#/components/schemas/ApiErrorBody",
        "404 body {not_found}"
    );
    ensure!(
        doc["components"]["schemas"]["ApiErrorBody"].is_object(),
        "no ApiErrorBody schema"
    );

    let paths = doc["paths"].as_object().context("paths is not an object")?;
    ensure!(paths.len() >= 20, "only {} paths", paths.len());
    for (path, item) in paths {
        ensure!(path.starts_with("/api/v1/"), "{path} is not under /api/v1");
        // The event stream never ends; every other plain GET answers at once.
        if path.contains('{') || item["get"].is_null() || path == "/api/v1/events" {
            continue;
        }
        let got = client.request("GET", path, &[]).await?;
        ensure!(
            got.status != 404,
            "documented {path} is not routed: {}",
            got.text
        );
    }
    Ok(())
}
