//! Rendering: etcdctl's "simple" text output or the answer's JSON body, and the
//! `Error: ...` line with its exit code. Formatting is pure; only `Out` writes.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use api::elections::Leader;
use api::keys::{KeysResponse, Node};
use api::locks::LockState;
use api::members::Member;
use api::ClientError;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// etcdctl's exit code for bad arguments (e.g. `get` on a directory).
pub const EXIT_BAD_ARGS: u8 = 1;
/// etcdctl's exit code when no endpoint could be reached.
pub const EXIT_BAD_CONNECTION: u8 = 2;
/// etcdctl's exit code for an error answered by the server.
pub const EXIT_SERVER_ERROR: u8 = 4;

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Like etcdctl's simple output: values on their own line.
    Text,
    /// The answer's JSON body, one object per line.
    Json,
}

/// Writes answers to stdout in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    format: Format,
}

impl Out {
    /// A printer for `format`.
    pub fn new(format: Format) -> Self {
        Out { format }
    }

    /// True when JSON bodies are wanted.
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints `value` as JSON, or the text `text` builds (nothing if it is empty).
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let rendered = match self.format {
            Format::Json => serde_json::to_string(value).context("encode answer as JSON")?,
            Format::Text => text(),
        };
        if rendered.is_empty() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{rendered}")
            .and_then(|()| stdout.flush())
            .context("write to stdout")
    }
}

/// etcdctl's simple rendering of a keys answer: the value, or the previous value
/// for a delete.
pub fn key_text(resp: &KeysResponse) -> String {
    if resp.action == "delete" || resp.action == "compareAndDelete" || resp.action == "expire" {
        let prev = resp
            .prev_node
            .as_ref()
            .and_then(|n| n.value.as_deref())
            .unwrap_or("");
        format!("PrevNode.Value: {prev}")
    } else {
        resp.node.value.clone().unwrap_or_default()
    }
}

/// etcdctl `ls` lines: the key itself if it is a file, then every listed node
/// depth-first; with `mark_dirs` (etcdctl `-p`) directories end in `/`.
pub fn ls_lines(node: &Node, mark_dirs: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if !node.dir {
        lines.push(node.key.clone().unwrap_or_default());
    }
    for child in node.nodes.iter().flatten() {
        push_tree(child, mark_dirs, &mut lines);
    }
    lines
}

fn push_tree(node: &Node, mark_dirs: bool, lines: &mut Vec<String>) {
    let key = node.key.as_deref().unwrap_or("");
    if node.dir && mark_dirs {
        lines.push(format!("{key}/"));
    } else {
        lines.push(key.to_owned());
    }
    for child in node.nodes.iter().flatten() {
        push_tree(child, mark_dirs, lines);
    }
}

/// etcdctl `member list` line: `id: name=.. peerURLs=.. clientURLs=.. isLeader=..`.
pub fn member_line(m: &Member, leader_id: Option<&str>) -> String {
    let mut line = format!(
        "{}: name={} peerURLs={} clientURLs={}",
        m.id,
        m.name,
        m.peer_urls.join(","),
        m.client_urls.join(",")
    );
    if let Some(leader) = leader_id {
        line.push_str(&format!(" isLeader={}", m.id == leader));
    }
    line
}

/// A lock and its holders, as of `now`: a header line, then one indented line
/// per holder with its fencing token and the seconds its TTL has left.
pub fn lock_text(state: &LockState, now: DateTime<Utc>) -> String {
    let mut text = format!(
        "{}: limit={} holders={}",
        state.name,
        state.limit,
        state.holders.len()
    );
    if let Some(configured) = state.configured_limit {
        text.push_str(&format!(" configured_limit={configured}"));
    }
    for h in &state.holders {
        text.push_str(&format!("\n  {} token={}", h.holder, h.token));
        if let Some(exp) = h.expiration {
            let left = (exp - now).num_seconds().max(0);
            text.push_str(&format!(" ttl={left}s expires={}", exp.to_rfc3339()));
        }
        if !h.value.is_empty() {
            text.push_str(&format!(" value={}", h.value));
        }
    }
    text
}

/// An election's leader: `name: leader=.. value=.. token=..`.
pub fn leader_text(l: &Leader) -> String {
    format!(
        "{}: leader={} value={} token={}",
        l.name, l.leader, l.value, l.token
    )
}

/// The `Error: ...` line and exit code for a failed command. Server errors print
/// exactly as etcdctl prints them; other errors print their whole chain.
pub fn error_line(err: &anyhow::Error) -> (String, u8) {
    let client_error = err.chain().find_map(|e| e.downcast_ref::<ClientError>());
    match client_error {
        Some(ce) if ce.is_server_answer() => (format!("Error: {ce}"), EXIT_SERVER_ERROR),
        Some(ClientError::Unreachable { .. } | ClientError::Untrusted { .. }) => {
            (format!("Error: {err:#}"), EXIT_BAD_CONNECTION)
        }
        _ => (format!("Error: {err:#}"), EXIT_BAD_ARGS),
    }
}

pub use api::error::error_chain;

/// Prints the error line to stderr and returns the matching exit code.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    let (line, code) = error_line(err);
    eprintln!("{line}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::error::EtcdError;

    fn node(key: &str, dir: bool, children: Vec<Node>) -> Node {
        Node {
            key: Some(key.to_owned()),
            value: (!dir).then(|| format!("v{key}")),
            dir,
            nodes: (!children.is_empty()).then_some(children),
            ..Node::default()
        }
    }

    #[test]
    fn key_text_prints_value_or_previous_value() {
        let mut resp = KeysResponse {
            action: "set".into(),
            node: node("/a", false, vec![]),
            prev_node: None,
        };
        assert_eq!(key_text(&resp), "v/a");
        resp.action = "delete".into();
        resp.node.value = None;
        resp.prev_node = Some(node("/a", false, vec![]));
        assert_eq!(key_text(&resp), "PrevNode.Value: v/a");
    }

    #[test]
    fn ls_walks_depth_first_and_marks_dirs_on_request() {
        let tree = Node {
            key: None,
            dir: true,
            nodes: Some(vec![
                node("/a", false, vec![]),
                node(
                    "/d",
                    true,
                    vec![node("/d/x", false, vec![]), node("/d/e", true, vec![])],
                ),
            ]),
            ..Node::default()
        };
        assert_eq!(ls_lines(&tree, false), ["/a", "/d", "/d/x", "/d/e"]);
        assert_eq!(ls_lines(&tree, true), ["/a", "/d/", "/d/x", "/d/e/"]);
        assert_eq!(ls_lines(&node("/f", false, vec![]), true), ["/f"]);
    }

    #[test]
    fn lock_text_shows_limits_tokens_and_ttl_left() {
        let now = Utc::now();
        let state = LockState {
            name: "reboot".into(),
            limit: 2,
            configured_limit: Some(3),
            holders: vec![api::locks::Holder {
                holder: "m1".into(),
                value: "fleetlock".into(),
                token: 42,
                expiration: Some(now + chrono::Duration::seconds(90)),
            }],
        };
        let text = lock_text(&state, now);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("reboot: limit=2 holders=1 configured_limit=3")
        );
        let holder = lines.next().unwrap_or_default();
        assert!(
            holder.starts_with("  m1 token=42 ttl=90s expires=")
                && holder.ends_with(" value=fleetlock"),
            "{holder}"
        );
    }

    #[test]
    fn member_line_matches_etcdctl() {
        let m = Member {
            id: "8e9e05c52164694d".into(),
            name: "default".into(),
            peer_urls: vec!["http://localhost:2380".into()],
            client_urls: vec!["http://a:2379".into(), "http://b:2379".into()],
        };
        assert_eq!(
            member_line(&m, Some("8e9e05c52164694d")),
            "8e9e05c52164694d: name=default peerURLs=http://localhost:2380 clientURLs=http://a:2379,http://b:2379 isLeader=true"
        );
        assert!(member_line(&m, Some("other")).ends_with("isLeader=false"));
        assert!(!member_line(&m, None).contains("isLeader"));
    }

    #[test]
    fn errors_print_like_etcdctl_with_exit_codes() {
        let etcd = anyhow::Error::new(ClientError::Etcd(EtcdError {
            error_code: 100,
            message: "Key not found".into(),
            cause: "/foo".into(),
            index: 12,
        }))
        .context("get /foo");
        assert_eq!(
            error_line(&etcd),
            ("Error: 100: Key not found (/foo) [12]".into(), 4)
        );

        let api = anyhow::Error::new(ClientError::Api {
            status: 409,
            code: "lock_busy".into(),
            message: "all 1 slots are held".into(),
        });
        assert_eq!(
            error_line(&api),
            ("Error: lock_busy: all 1 slots are held".into(), 4)
        );

        let other = anyhow::anyhow!("/dir: is a directory");
        assert_eq!(
            error_line(&other),
            ("Error: /dir: is a directory".into(), 1)
        );
    }
}
