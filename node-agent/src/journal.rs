//! Journal requests: a member asked for an instance's logs writes a
//! [`JournalRequest`] under `JOURNALS_DIR/<machine id>/<request id>`; the agent
//! of that machine sees it in its key-space watch and posts the container's
//! logs to the member named in it (`POST /api/v1/journals/...`, with the node
//! token, over the agent's own connection to the cluster), or says why it cannot.

use api::error::error_chain;
use api::fleet::{JournalRequest, JOURNALS_DIR};
use api::Client;
use futures::StreamExt as _;
use url::Url;

use crate::docker::Docker;

/// The request id of `key` when it is a journal request for `machine`.
pub fn request_id<'k>(key: &'k str, machine: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(JOURNALS_DIR)?.strip_prefix('/')?;
    let (to, id) = rest.split_once('/')?;
    (to == machine && !id.is_empty() && !id.contains('/')).then_some(id)
}

/// Answers request `id` (`value` is the request's JSON): streams the logs of
/// the instance's newest container on this machine to the member asking,
/// until they end or the member stops reading.
pub async fn answer(client: Client, docker: Docker, id: String, value: String) {
    let machine = docker.machine_id().to_owned();
    let request: JournalRequest = match serde_json::from_str(&value) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%id, %e, "malformed journal request");
            return;
        }
    };
    let member = match Url::parse(&request.reply_to) {
        Ok(url) => client.at(url),
        Err(e) => {
            tracing::warn!(%id, reply_to = %request.reply_to, %e, "journal request with a bad reply URL");
            return;
        }
    };
    let answered = match newest_container(&docker, &request.instance).await {
        Ok(container) => {
            let logs = docker
                .logs(&container, request.follow, request.tail)
                .map(|chunk| chunk.map_err(|e| std::io::Error::other(error_chain(&e))));
            member.answer_journal(&machine, &id, logs).await
        }
        Err(why) => member.refuse_journal(&machine, &id, &why).await,
    };
    if let Err(e) = answered {
        tracing::debug!(%id, error = %error_chain(&e), "journal answer ended with an error");
    }
}

/// The id of the instance's newest container on this machine (a running one
/// first), or why there is none.
async fn newest_container(docker: &Docker, instance: &str) -> Result<String, String> {
    let containers = docker.list().await.map_err(|e| error_chain(&e))?;
    containers
        .into_iter()
        .filter(|c| c.instance == instance)
        .max_by_key(|c| (c.is_running(), c.started_at))
        .map(|c| c.id)
        .ok_or_else(|| {
            format!(
                "instance {instance} has no container on machine {}",
                docker.machine_id()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machines_requests_are_taken() {
        assert_eq!(request_id("/_shoal/journals/m1/abc", "m1"), Some("abc"));
        assert_eq!(request_id("/_shoal/journals/m2/abc", "m1"), None);
        assert_eq!(request_id("/_shoal/journals/m1", "m1"), None);
        assert_eq!(request_id("/_shoal/journals/m1/", "m1"), None);
        assert_eq!(request_id("/_shoal/journals/m1/a/b", "m1"), None);
        assert_eq!(request_id("/_shoal/journalsx/m1/abc", "m1"), None);
        assert_eq!(request_id("/_shoal/placements/web", "m1"), None);
    }
}
