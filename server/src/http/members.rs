//! `/v2/members`: list, add and remove control-plane members.

use std::sync::Arc;

use api::members::{AddMember, Member as WireMember, MemberList};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::join_all;
use serde_json::json;

use crate::member::Member;
use crate::raft::{id_hex, member_id};

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

/// `GET /v2/members`: every member, with names and client URLs as they report them.
pub async fn list(State(member): State<Arc<Member>>) -> Json<MemberList> {
    let all = member.members();
    let infos = join_all(all.iter().map(|(id, node)| member.info_of(*id, node))).await;
    let members = all
        .into_iter()
        .zip(infos)
        .map(|((id, node), info)| {
            let (name, client_urls) = info
                .map(|i| (i.name, i.client_urls))
                .unwrap_or((node.name, Vec::new()));
            WireMember {
                id: id_hex(id),
                name,
                peer_urls: vec![node.peer_url],
                client_urls,
            }
        })
        .collect();
    Json(MemberList { members })
}

/// `GET /v2/machines`: every member's client URLs, comma separated (etcd's legacy list).
pub async fn machines(State(member): State<Arc<Member>>) -> String {
    let all = member.members();
    let infos = join_all(all.iter().map(|(id, node)| member.info_of(*id, node))).await;
    let urls: Vec<String> = infos
        .into_iter()
        .flatten()
        .flat_map(|i| i.client_urls)
        .collect();
    urls.join(", ")
}

/// `GET /v2/members/leader`: the current leader, as etcd 3.4 answers it.
pub async fn leader(State(member): State<Arc<Member>>) -> Response {
    let Some((id, node)) = member.leader() else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "during leader election");
    };
    let info = member.info_of(id, &node).await;
    let (name, client_urls) = info
        .map(|i| (i.name, i.client_urls))
        .unwrap_or((node.name, Vec::new()));
    Json(WireMember {
        id: id_hex(id),
        name,
        peer_urls: vec![node.peer_url],
        client_urls,
    })
    .into_response()
}

/// `POST /v2/members` with `{"peerURLs":[...]}`: answers 201 with the new member.
pub async fn add(
    State(member): State<Arc<Member>>,
    body: Result<Json<AddMember>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return message(
            StatusCode::BAD_REQUEST,
            "body must be {\"peerURLs\":[\"http://host:port\"]}",
        );
    };
    let Some(peer_url) = req
        .peer_urls
        .first()
        .map(|u| u.trim_end_matches('/').to_owned())
    else {
        return message(StatusCode::BAD_REQUEST, "peerURLs must name one URL");
    };
    if url::Url::parse(&peer_url)
        .map(|u| !matches!(u.scheme(), "http" | "https") || u.port_or_known_default().is_none())
        .unwrap_or(true)
    {
        return message(
            StatusCode::BAD_REQUEST,
            "peerURLs must be http://host:port or https://host:port",
        );
    }
    if member
        .members()
        .iter()
        .any(|(id, _)| *id == member_id(&peer_url))
    {
        return message(StatusCode::CONFLICT, "membership: peerURL exists");
    }
    match member.add_member(peer_url.clone()).await {
        Ok(id) => {
            let wire = WireMember {
                id: id_hex(id),
                name: String::new(),
                peer_urls: vec![peer_url],
                client_urls: vec![],
            };
            (StatusCode::CREATED, Json(wire)).into_response()
        }
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `DELETE /v2/members/{id}`: answers 204.
pub async fn remove(State(member): State<Arc<Member>>, Path(id): Path<String>) -> Response {
    let Ok(id) = u64::from_str_radix(&id, 16) else {
        return message(StatusCode::BAD_REQUEST, "member id must be hexadecimal");
    };
    if !member.members().iter().any(|(m, _)| *m == id) {
        return message(StatusCode::NOT_FOUND, "membership: member not found");
    }
    match member.remove_member(id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
