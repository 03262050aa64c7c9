//! `token create|list|revoke`: the cluster's tokens (admin tokens only).

use std::process::ExitCode;

use anyhow::Context;
use api::auth::{CreateToken, Role, TokenInfo};
use api::Client;
use clap::Subcommand;

use crate::output::Out;

/// `token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only this once).
    Create {
        /// admin, operator, viewer or node.
        #[arg(long)]
        role: Role,
        /// The machine a node token is bound to (required for --role node).
        #[arg(long = "machine")]
        machine_id: Option<String>,
        /// A name for people.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the tokens (ids, roles, names; never secrets).
    List,
    /// Revoke the token with this id: it is refused from then on.
    Revoke {
        /// The token id, as `token list` shows it.
        id: String,
    },
}

fn line(t: &TokenInfo) -> String {
    let machine = t
        .machine_id
        .as_deref()
        .map(|m| format!(" machine={m}"))
        .unwrap_or_default();
    let name = if t.name.is_empty() {
        String::new()
    } else {
        format!(" name={:?}", t.name)
    };
    format!(
        "{} {}{machine}{name} created={}",
        t.id,
        t.role,
        t.created.to_rfc3339()
    )
}

/// Runs one `token` subcommand.
pub async fn run(client: &Client, out: &Out, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            role,
            machine_id,
            name,
        } => {
            let req = CreateToken {
                role,
                name,
                machine_id,
            };
            let created = client.create_token(&req).await.context("create token")?;
            // The secret alone on stdout, so `T=$(shoalctl token create ...)` works.
            if !out.is_json() {
                eprintln!("created {}", line(&created.info));
            }
            out.emit(&created, || created.token.clone())?;
        }
        TokenCommand::List => {
            let list = client.tokens().await.context("list tokens")?;
            out.emit(&list, || {
                list.tokens.iter().map(line).collect::<Vec<_>>().join("\n")
            })?;
        }
        TokenCommand::Revoke { id } => {
            let info = client
                .revoke_token(&id)
                .await
                .with_context(|| format!("revoke token {id}"))?;
            out.emit(&info, || format!("revoked {}", line(&info)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
