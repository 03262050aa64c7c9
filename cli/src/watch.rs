//! `watch` and `exec-watch`: long-poll watches that resume from
//! `modifiedIndex + 1`, re-read after error 401, and retry lost connections
//! from the same index, so no event inside the server's history is skipped.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::client::{KeysAnswer, WatchCursor, WatchEvent, Watcher};
use api::keys::KeysResponse;
use api::{Client, ClientError};
use clap::Args;

use crate::output::{self, Out};

/// Pause before polling again after a transport error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// `watch KEY`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key or directory to watch.
    key: String,
    /// Watch the whole subtree.
    #[arg(long)]
    recursive: bool,
    /// Keep watching after the first change.
    #[arg(long)]
    forever: bool,
    /// Deliver changes after this index (older history included).
    #[arg(long, value_name = "INDEX")]
    after_index: Option<u64>,
}

/// `exec-watch KEY -- CMD ARGS...`.
#[derive(Debug, Args)]
pub struct ExecWatchArgs {
    /// The key or directory to watch.
    key: String,
    /// Watch the whole subtree.
    #[arg(long)]
    recursive: bool,
    /// Deliver changes after this index (older history included).
    #[arg(long, value_name = "INDEX")]
    after_index: Option<u64>,
    /// The command run for each change, with `ETCD_WATCH_*` in its environment.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn cursor(after_index: Option<u64>) -> WatchCursor {
    after_index.map_or_else(WatchCursor::from_now, WatchCursor::after)
}

/// The next change; with `persistent`, transport errors are retried from the
/// same index and a 401 re-read is reported on stderr before watching on.
async fn next_change(watcher: &mut Watcher, persistent: bool) -> anyhow::Result<KeysAnswer> {
    loop {
        match watcher.next().await {
            Ok(WatchEvent::Change(answer)) => return Ok(answer),
            Ok(WatchEvent::Resync { etcd_index, .. }) => {
                eprintln!(
                    "shoalctl: watch fell behind the event history; re-read at index {etcd_index}, watching on from {}",
                    etcd_index.saturating_add(1)
                );
            }
            Err(e) if persistent && is_transient(&e) => {
                eprintln!(
                    "shoalctl: watch interrupted ({}); retrying",
                    output::error_chain(&e)
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e).context("watch"),
        }
    }
}

/// Errors after which polling again from the same index is safe and useful.
fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } | ClientError::Request { .. } => true,
        ClientError::Http { status, .. } => *status >= 500,
        _ => false,
    }
}

/// `watch`: prints the first change, or every change with `--forever`.
pub async fn watch(client: &Client, out: &Out, a: WatchArgs) -> anyhow::Result<ExitCode> {
    let mut watcher = client.watcher(&a.key, a.recursive, cursor(a.after_index));
    loop {
        let answer = next_change(&mut watcher, a.forever).await?;
        let body = &answer.body;
        out.emit(body, || {
            let text = output::key_text(body);
            if a.forever {
                format!(
                    "[{}] {}\n{text}",
                    body.action,
                    body.node.key.as_deref().unwrap_or("/")
                )
            } else {
                text
            }
        })?;
        if !a.forever {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// The environment etcdctl's exec-watch gives the command.
pub fn watch_env(resp: &KeysResponse) -> [(&'static str, String); 4] {
    [
        ("ETCD_WATCH_ACTION", resp.action.clone()),
        (
            "ETCD_WATCH_MODIFIED_INDEX",
            resp.node.modified_index.to_string(),
        ),
        ("ETCD_WATCH_KEY", resp.node.key.clone().unwrap_or_default()),
        (
            "ETCD_WATCH_VALUE",
            resp.node.value.clone().unwrap_or_default(),
        ),
    ]
}

/// `exec-watch`: runs the command once per change, in order, one at a time, until
/// Ctrl-C. A command that fails is reported and the watch goes on.
pub async fn exec_watch(client: &Client, a: ExecWatchArgs) -> anyhow::Result<ExitCode> {
    let (program, args) = a
        .command
        .split_first()
        .context("exec-watch needs a command after --")?;
    let mut watcher = client.watcher(&a.key, a.recursive, cursor(a.after_index));
    loop {
        let answer = tokio::select! {
            answer = next_change(&mut watcher, true) => answer?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let status = tokio::process::Command::new(program)
            .args(args)
            .envs(watch_env(&answer.body))
            .status()
            .await
            .with_context(|| format!("run {program}"))?;
        if !status.success() {
            eprintln!("shoalctl: {program} exited with {status}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::keys::Node;

    #[test]
    fn exec_watch_env_matches_etcdctl() {
        let resp = KeysResponse {
            action: "set".into(),
            node: Node {
                key: Some("/cfg/a".into()),
                value: Some("1".into()),
                modified_index: 42,
                created_index: 40,
                ..Node::default()
            },
            prev_node: None,
        };
        let env = watch_env(&resp);
        assert_eq!(
            env.map(|(k, v)| format!("{k}={v}")),
            [
                "ETCD_WATCH_ACTION=set",
                "ETCD_WATCH_MODIFIED_INDEX=42",
                "ETCD_WATCH_KEY=/cfg/a",
                "ETCD_WATCH_VALUE=1",
            ]
        );
    }

    #[test]
    fn after_index_starts_right_after_it() {
        assert_eq!(cursor(None).wait_index(), None);
        assert_eq!(cursor(Some(41)).wait_index(), Some(42));
    }
}
