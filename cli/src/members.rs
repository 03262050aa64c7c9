//! `member list|add|remove`, as etcdctl v2 prints them.

use std::process::ExitCode;

use anyhow::Context;
use api::Client;
use clap::Subcommand;

use crate::output::{self, Out};

/// `member ...`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members (and which one leads, when the server says).
    List,
    /// Add a member that will join at PEER_URL (comma separated for several URLs).
    Add {
        /// The new member's peer URL(s).
        peer_url: String,
    },
    /// Remove the member with this hex id.
    Remove {
        /// Member id in hex, as `member list` shows it.
        id: String,
    },
}

/// Runs one `member` subcommand.
pub async fn run(client: &Client, out: &Out, cmd: MemberCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MemberCommand::List => {
            let list = client.member_list().await.context("list members")?;
            // Leadership is extra information: an older server may not answer it.
            let leader = if out.is_json() {
                None
            } else {
                client.member_leader().await.ok().map(|m| m.id)
            };
            out.emit(&list, || {
                list.members
                    .iter()
                    .map(|m| output::member_line(m, leader.as_deref()))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        MemberCommand::Add { peer_url } => {
            let urls = peer_url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>();
            anyhow::ensure!(!urls.is_empty(), "member add needs a peer URL");
            let member = client
                .member_add(urls)
                .await
                .with_context(|| format!("add member at {peer_url}"))?;
            out.emit(&member, || {
                format!(
                    "Added member with ID {} to cluster (peerURLs={})",
                    member.id,
                    member.peer_urls.join(",")
                )
            })?;
        }
        MemberCommand::Remove { id } => {
            client
                .member_remove(&id)
                .await
                .with_context(|| format!("remove member {id}"))?;
            out.emit(&serde_json::json!({ "removed": id }), || {
                format!("Removed member {id} from cluster")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
