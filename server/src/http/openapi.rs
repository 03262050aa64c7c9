//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of `/api/v1`,
//! generated at compile time by utoipa from the handlers' `#[utoipa::path]`
//! annotations and the `api` crate's wire types (its `openapi` feature).
//!
//! Every operation also answers 401 (no or an unknown token), 403 (too few
//! rights) and 429 (the token's request rate or watch count is over its
//! limit) from the auth layer, and one with a request body other than a
//! payload upload's (octet-stream, unlimited) 413 (larger than `--max-body`); [`GuardResponses`] adds those, and the bearer scheme, to
//! every operation instead of repeating them per handler.
//! The unit test below checks that the document lists exactly the
//! `/api/v1` routes the router modules register.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{auth, events, fleet, journals, locks, updates};

/// The `/api/v1` document: every annotated handler and the schemas they name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shoal API",
        description = "Shoal's REST API (`/api/v1`). Errors are `{\"error\":{\"code\",\"message\"}}`. \
            With `--auth`, send `Authorization: Bearer <token>`; roles decide what each token may do."
    ),
    paths(
        document,
        fleet::machines,
        fleet::machine,
        fleet::units,
        fleet::submit,
        fleet::unit,
        fleet::destroy,
        fleet::start,
        fleet::stop,
        journals::journal,
        journals::answer,
        events::stream,
        locks::list,
        locks::show,
        locks::configure,
        locks::acquire,
        locks::release,
        locks::leader,
        locks::campaign,
        locks::resign,
        updates::upload,
        updates::payloads,
        updates::download,
        updates::channels,
        updates::channel,
        updates::update_channel,
        updates::pause,
        updates::resume,
        updates::halt,
        updates::checkin,
        updates::machines,
        updates::history,
        auth::list,
        auth::create,
        auth::revoke,
        auth::audit_log,
    ),
    components(schemas(api::error::ApiErrorBody)),
    modifiers(&GuardResponses)
)]
pub struct ApiDoc;

/// Adds the guard layers' 401, 403, 429 and 413 answers and the bearer scheme to every operation.
struct GuardResponses;

impl Modify for GuardResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let refused = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                let limited = limited_body(op);
                let responses = &mut op.responses.responses;
                responses.entry("401".to_owned()).or_insert_with(|| {
                    refused("No or an unknown token; code `unauthenticated`").into()
                });
                responses.entry("403".to_owned()).or_insert_with(|| {
                    refused("The token's role may not do this; code `forbidden`").into()
                });
                responses.entry("429".to_owned()).or_insert_with(|| {
                    refused(
                        "The token's request rate (`--rate-limit`, with a `Retry-After` header) \
                         or open watches (`--max-watches-per-token`) are over their limit; \
                         code `too_many_requests`",
                    )
                    .into()
                });
                if limited {
                    responses.entry("413".to_owned()).or_insert_with(|| {
                        refused("The request body is larger than the limit; code `too_large`")
                            .into()
                    });
                }
            }
        }
    }
}

/// Whether the operation takes a body the body limit applies to: any but a
/// payload upload's octet stream.
fn limited_body(op: &Operation) -> bool {
    op.request_body
        .as_ref()
        .is_some_and(|b| !b.content.contains_key("application/octet-stream"))
}

/// The operations of one path.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// `GET /api/v1/openapi.json`: this document (any viewer may read it).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document of /api/v1", body = Object))
)]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Methods axum's `MethodRouter` is built with, as the router modules spell them.
    const METHODS: [&str; 6] = ["get", "put", "post", "delete", "patch", "any"];

    /// `(method, path)` of every `/api/v1` route registered in the router
    /// modules' source: each route call's path literal and its method routers.
    fn registered_routes() -> BTreeSet<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
        let mut routes = BTreeSet::new();
        let entries = std::fs::read_dir(dir).expect("read src/http");
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let src = std::fs::read_to_string(&path).expect("read router source");
                routes.extend(routes_in(&src));
            }
        }
        routes
    }

    /// The `/api/v1` routes of one source file.
    fn routes_in(src: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find(".route(") {
            let call = balanced(&rest[at + ".route".len()..]);
            rest = &rest[at + ".route(".len()..];
            let Some(path) = call.split('"').nth(1) else {
                continue;
            };
            if !path.starts_with("/api/v1") {
                continue;
            }
            for method in methods_in(call) {
                found.push((method, path.to_owned()));
            }
        }
        found
    }

    /// The text from an opening parenthesis to its match (or to the end).
    fn balanced(s: &str) -> &str {
        let mut depth = 0usize;
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return &s[..=i];
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// The method-router calls (`get(`, `.post(`, `routing::delete(`) in a `.route(...)` call.
    fn methods_in(call: &str) -> Vec<String> {
        let mut methods = Vec::new();
        for (i, _) in call.match_indices('(') {
            let before = &call[..i];
            let word_start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |p| p + 1);
            let word = &before[word_start..];
            if METHODS.contains(&word) {
                methods.push(word.to_owned());
            }
        }
        methods
    }

    /// `(method, path)` of every operation in the document.
    fn documented_routes() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("document serializes");
        let paths = doc["paths"].as_object().expect("paths object");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let ops = item.as_object().expect("path item object");
                ops.keys()
                    .filter(|m| METHODS.contains(&m.as_str()))
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn the_source_scan_finds_known_routes() {
        let routes = registered_routes();
        for (m, p) in [
            ("get", "/api/v1/units"),
            ("post", "/api/v1/units"),
            ("delete", "/api/v1/units/{name}"),
            ("put", "/api/v1/updates/channels/{name}"),
            ("delete", "/api/v1/tokens/{id}"),
            ("get", "/api/v1/openapi.json"),
        ] {
            assert!(routes.contains(&(m.to_owned(), p.to_owned())), "{m} {p}");
        }
    }

    #[test]
    fn every_api_v1_route_is_documented_and_nothing_else() {
        let registered = registered_routes();
        let documented = documented_routes();
        let missing: Vec<_> = registered.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    #[test]
    fn every_operation_documents_refusals_and_its_error_body() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("document serializes");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        assert!(doc["components"]["schemas"]["ApiErrorBody"].is_object());
        for (path, item) in doc["paths"].as_object().expect("paths object") {
            for (method, op) in item.as_object().expect("path item object") {
                for status in ["401", "403", "429"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} {status}"
                    );
                }
                let json_body = op["requestBody"]["content"]["application/json"].is_object();
                assert_eq!(
                    op["responses"]["413"].is_object(),
                    json_body,
                    "{method} {path}: 413 exactly when it takes a JSON body"
                );
            }
        }
    }
}
