//! Instance journals: `GET /api/v1/units/{name}/journal` writes a
//! [`JournalRequest`] under `JOURNALS_DIR/<machine>/<id>` and streams what the
//! machine's agent posts to `POST /api/v1/journals/{machine}/{id}` (its node
//! token; the auth policy lets a node answer only for its own machine). See
//! [`crate::journals`].

use std::sync::Arc;
use std::time::Duration;

use api::fleet::{JournalRequest, JOURNALS_DIR};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use tokio::sync::oneshot;

use super::api_error;
use crate::journals::{Answer, DeliverError};
use crate::keyspace::{Op, Precondition};
use crate::member::Member;

/// How long the agent may take to answer a journal request.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// TTL of a request key, which is never deleted otherwise: an agent that sees
/// it later than this never answers.
const REQUEST_TTL_SECS: u64 = 30;

/// Query of `GET /api/v1/units/{name}/journal`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JournalQuery {
    /// The instance (default: the unit's first placed instance).
    pub instance: Option<String>,
    /// Keep streaming new output.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u64>,
}

/// Query of `POST /api/v1/journals/{machine}/{id}`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnswerQuery {
    /// Instead of logs: why the agent cannot give them.
    pub refused: Option<String>,
}

fn unreachable(message: String) -> Response {
    api_error(StatusCode::BAD_GATEWAY, "agent_unreachable", message)
}

/// `GET /api/v1/units/{name}/journal`: the instance's container logs, asked
/// of the agent of the machine it is placed on and streamed through.
#[utoipa::path(
    get,
    path = "/api/v1/units/{name}/journal",
    tag = "fleet",
    params(("name" = String, Path, description = "The unit's name"), JournalQuery),
    responses(
        (status = 200, description = "The container log, streamed", content_type = "text/plain", body = String),
        (status = 404, description = "No placed instance, or its container is not on its machine; code `not_found`", body = api::error::ApiErrorBody),
        (status = 502, description = "The machine is gone; code `agent_unreachable`", body = api::error::ApiErrorBody),
        (status = 503, description = "The request could not be written; code `unavailable`", body = api::error::ApiErrorBody),
        (status = 504, description = "The agent did not answer in time; code `agent_unreachable`", body = api::error::ApiErrorBody),
    )
)]
pub async fn journal(
    State(member): State<Arc<Member>>,
    Path(name): Path<String>,
    Query(q): Query<JournalQuery>,
) -> Response {
    let view = member.fleet_view(crate::clock::now());
    let placed = view.placements.iter().find(|(instance, pv)| {
        pv.assignment.unit == name && q.instance.as_ref().is_none_or(|want| want == *instance)
    });
    let Some((instance, pv)) = placed else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no placed instance of unit {name:?}"),
        );
    };
    let machine = pv.assignment.machine_id.clone();
    if !view.machines.contains_key(&machine) {
        return unreachable(format!("machine {machine} is gone"));
    }
    let Some(reply_to) = member.client_urls.first().cloned() else {
        return unreachable("this member has no client URL for the agent to answer on".into());
    };
    let id = crate::auth::new_secret();
    let mut pending = member.journals.wait(&id, &machine);
    let request = JournalRequest {
        instance: instance.clone(),
        follow: q.follow,
        tail: q.tail,
        reply_to,
    };
    let key = format!("{JOURNALS_DIR}/{machine}/{id}");
    let op = Op::Put {
        key,
        value: serde_json::to_string(&request).ok(),
        ttl: Some(REQUEST_TTL_SECS),
        refresh: false,
        cond: Precondition::default(),
    };
    if let Err(e) = member.write(op).await {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        );
    }
    // The request key expires by its TTL: no second write to remove it.
    match tokio::time::timeout(ANSWER_WAIT, pending.answer()).await {
        Ok(Some(Answer::Logs { body, done })) => {
            // `done` lives as long as the client reads: its drop ends the agent's post.
            let logs = body.into_data_stream().map(move |chunk| {
                let _reading = &done;
                chunk
            });
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                Body::from_stream(logs),
            )
                .into_response()
        }
        Ok(Some(Answer::Refused(why))) => api_error(StatusCode::NOT_FOUND, "not_found", why),
        Ok(None) | Err(_) => api_error(
            StatusCode::GATEWAY_TIMEOUT,
            "agent_unreachable",
            format!("the agent of machine {machine} did not answer within {ANSWER_WAIT:?}"),
        ),
    }
}

/// `POST /api/v1/journals/{machine}/{id}`: an agent answers journal request
/// `id` with the logs as its body (streamed for as long as the client reads),
/// or with `?refused=<why>`.
#[utoipa::path(
    post,
    path = "/api/v1/journals/{machine}/{id}",
    tag = "fleet",
    params(
        ("machine" = String, Path, description = "The answering machine (the node token's)"),
        ("id" = String, Path, description = "The journal request"),
        AnswerQuery,
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The container's logs"),
    responses(
        (status = 204, description = "The client read the logs to their end, or stopped reading"),
        (status = 404, description = "No such request waits on this member; code `not_found`", body = api::error::ApiErrorBody),
        (status = 409, description = "The request is for another machine; code `conflict`", body = api::error::ApiErrorBody),
    )
)]
pub async fn answer(
    State(member): State<Arc<Member>>,
    Path((machine, id)): Path<(String, String)>,
    Query(q): Query<AnswerQuery>,
    body: Body,
) -> Response {
    let (done, reading) = oneshot::channel::<()>();
    let answer = match q.refused {
        Some(why) => {
            drop(done);
            Answer::Refused(why)
        }
        None => Answer::Logs { body, done },
    };
    match member.journals.deliver(&id, &machine, answer) {
        Ok(()) => {
            // Err once the reader drops `done` (or the answer was a refusal).
            let _ = reading.await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e @ DeliverError::NotWaiting(_)) => {
            api_error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e @ DeliverError::OtherMachine { .. }) => {
            api_error(StatusCode::CONFLICT, "conflict", e.to_string())
        }
    }
}
