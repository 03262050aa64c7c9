//! Key commands mirroring etcdctl v2: `get`, `set`, `mk`, `mkdir`, `update`, `rm`, `ls`.

use std::process::ExitCode;

use anyhow::Context;
use api::client::{DeleteOptions, GetOptions, KeysAnswer, SetOptions};
use api::Client;
use clap::Args;

use crate::output::{self, Out};

/// `get KEY`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key to read.
    key: String,
    /// Read through the leader (linearizable) instead of any member.
    #[arg(long)]
    quorum: bool,
}

/// `set KEY VALUE`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The key to write.
    key: String,
    /// The new value.
    #[arg(allow_hyphen_values = true)]
    pub value: String,
    /// Seconds until the key expires.
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Set only if the current value is this.
    #[arg(long, value_name = "VALUE")]
    swap_with_value: Option<String>,
    /// Set only if the current modified index is this.
    #[arg(long, value_name = "INDEX")]
    swap_with_index: Option<u64>,
}

/// `mk KEY VALUE`.
#[derive(Debug, Args)]
pub struct MkArgs {
    /// The key to create (the directory, with `--in-order`).
    key: String,
    /// The value.
    #[arg(allow_hyphen_values = true)]
    value: String,
    /// Seconds until the key expires.
    #[arg(long)]
    ttl: Option<u64>,
    /// Create a new key with an increasing name inside directory KEY (POST).
    #[arg(long)]
    in_order: bool,
}

/// `mkdir KEY`.
#[derive(Debug, Args)]
pub struct MkdirArgs {
    /// The directory to create.
    key: String,
    /// Seconds until the directory expires.
    #[arg(long)]
    ttl: Option<u64>,
}

/// `update KEY VALUE`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The existing key to write.
    key: String,
    /// The new value.
    #[arg(allow_hyphen_values = true)]
    value: String,
    /// Seconds until the key expires.
    #[arg(long)]
    ttl: Option<u64>,
}

/// `rm KEY`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The key or directory to remove.
    key: String,
    /// Remove an empty directory.
    #[arg(long)]
    dir: bool,
    /// Remove a directory and everything under it.
    #[arg(long)]
    recursive: bool,
    /// Remove only if the current value is this.
    #[arg(long, value_name = "VALUE")]
    with_value: Option<String>,
    /// Remove only if the current modified index is this.
    #[arg(long, value_name = "INDEX")]
    with_index: Option<u64>,
}

/// `ls [KEY]`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The directory to list.
    #[arg(default_value = "/")]
    key: String,
    /// List the whole subtree.
    #[arg(long)]
    recursive: bool,
    /// Sort the listing by key.
    #[arg(long)]
    sort: bool,
    /// Append `/` to directories (etcdctl's `-p`).
    #[arg(short = 'p')]
    mark_dirs: bool,
    /// Read through the leader (linearizable) instead of any member.
    #[arg(long)]
    quorum: bool,
}

/// Prints a keys answer: the JSON body, or etcdctl's simple text.
fn print_key(out: &Out, answer: &KeysAnswer) -> anyhow::Result<()> {
    out.emit(&answer.body, || output::key_text(&answer.body))
}

/// `get`: prints the value; a directory is an error, as in etcdctl.
pub async fn get(client: &Client, out: &Out, a: GetArgs) -> anyhow::Result<ExitCode> {
    let opts = GetOptions {
        quorum: a.quorum,
        ..GetOptions::default()
    };
    let answer = client
        .get(&a.key, opts)
        .await
        .with_context(|| format!("get {}", a.key))?;
    if answer.body.node.dir && !out.is_json() {
        let key = answer.body.node.key.as_deref().unwrap_or("/");
        eprintln!("{key}: is a directory");
        return Ok(ExitCode::from(output::EXIT_BAD_ARGS));
    }
    print_key(out, &answer)?;
    Ok(ExitCode::SUCCESS)
}

/// `set`: plain set, or compare-and-swap with `--swap-with-*`.
pub async fn set(client: &Client, out: &Out, a: SetArgs) -> anyhow::Result<ExitCode> {
    let opts = SetOptions {
        ttl: a.ttl,
        prev_value: a.swap_with_value,
        prev_index: a.swap_with_index,
        ..SetOptions::default()
    };
    let answer = client
        .set(&a.key, &a.value, opts)
        .await
        .with_context(|| format!("set {}", a.key))?;
    print_key(out, &answer)?;
    Ok(ExitCode::SUCCESS)
}

/// `mk`: create only (`prevExist=false`), or an in-order key with `--in-order`.
pub async fn mk(client: &Client, out: &Out, a: MkArgs) -> anyhow::Result<ExitCode> {
    let answer = if a.in_order {
        client.create_in_order(&a.key, &a.value, a.ttl).await
    } else {
        let opts = SetOptions {
            ttl: a.ttl,
            prev_exist: Some(false),
            ..SetOptions::default()
        };
        client.set(&a.key, &a.value, opts).await
    }
    .with_context(|| format!("create {}", a.key))?;
    print_key(out, &answer)?;
    Ok(ExitCode::SUCCESS)
}

/// `mkdir`: create a directory that must not exist; prints nothing in text mode.
pub async fn mkdir(client: &Client, out: &Out, a: MkdirArgs) -> anyhow::Result<ExitCode> {
    let opts = SetOptions {
        ttl: a.ttl,
        prev_exist: Some(false),
        dir: true,
        ..SetOptions::default()
    };
    let answer = client
        .set(&a.key, "", opts)
        .await
        .with_context(|| format!("create directory {}", a.key))?;
    out.emit(&answer.body, String::new)?;
    Ok(ExitCode::SUCCESS)
}

/// `update`: set a key that must exist (`prevExist=true`).
pub async fn update(client: &Client, out: &Out, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let opts = SetOptions {
        ttl: a.ttl,
        prev_exist: Some(true),
        ..SetOptions::default()
    };
    let answer = client
        .set(&a.key, &a.value, opts)
        .await
        .with_context(|| format!("update {}", a.key))?;
    print_key(out, &answer)?;
    Ok(ExitCode::SUCCESS)
}

/// `rm`: delete, rmdir or compare-and-delete; prints the old value of a key.
pub async fn rm(client: &Client, out: &Out, a: RmArgs) -> anyhow::Result<ExitCode> {
    let opts = DeleteOptions {
        dir: a.dir || a.recursive,
        recursive: a.recursive,
        prev_value: a.with_value,
        prev_index: a.with_index,
    };
    let answer = client
        .delete(&a.key, opts)
        .await
        .with_context(|| format!("remove {}", a.key))?;
    if answer.body.node.dir {
        out.emit(&answer.body, String::new)?;
    } else {
        print_key(out, &answer)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ls`: one key per line, depth-first with `--recursive`.
pub async fn ls(client: &Client, out: &Out, a: LsArgs) -> anyhow::Result<ExitCode> {
    let opts = GetOptions {
        recursive: a.recursive,
        sorted: a.sort,
        quorum: a.quorum,
    };
    let answer = client
        .get(&a.key, opts)
        .await
        .with_context(|| format!("list {}", a.key))?;
    out.emit(&answer.body, || {
        output::ls_lines(&answer.body.node, a.mark_dirs).join("\n")
    })?;
    Ok(ExitCode::SUCCESS)
}
