//! `shoalctl`: the command line for a Shoal cluster (and for etcd v2 servers).
//!
//! This file only parses arguments, builds the client and maps the outcome to an
//! exit code; each command group lives in its own module.

mod elections;
mod fleet;
mod keys;
mod locks;
mod members;
mod output;
mod token;
mod update;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::output::{Format, Out};

/// Command line for a Shoal cluster: etcd v2 keys, members, locks and elections.
#[derive(Debug, Parser)]
#[command(name = "shoalctl", version)]
struct Cli {
    /// Comma-separated client URLs, tried in order (like etcdctl's --endpoints).
    #[arg(
        long,
        env = "SHOAL_ENDPOINTS",
        default_value = api::client::DEFAULT_ENDPOINT,
        global = true
    )]
    endpoints: String,
    /// Token sent as `Authorization: Bearer` (see `token create`).
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// File holding the token (--token wins when both are given).
    #[arg(long, env = "SHOAL_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// PEM CA certificates `https` endpoints are verified against (only
    /// these are trusted; default: the built-in web roots).
    #[arg(long, env = "SHOAL_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Output format: `text` (etcdctl's simple output) or `json` (the answer's body).
    #[arg(short, long, value_enum, default_value_t = Format::Text, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a key's value.
    Get(keys::GetArgs),
    /// Set a key's value, optionally as a compare-and-swap.
    Set(keys::SetArgs),
    /// Create a key that must not exist yet.
    Mk(keys::MkArgs),
    /// Create a directory that must not exist yet.
    Mkdir(keys::MkdirArgs),
    /// Update a key that must exist; or, with a subcommand, the OS update
    /// service (keygen, sign, upload, channel, pause, resume, status, history).
    Update(update::UpdateCommand),
    /// Remove a key or directory, optionally as a compare-and-delete.
    Rm(keys::RmArgs),
    /// List a directory.
    Ls(keys::LsArgs),
    /// Watch a key for changes.
    Watch(watch::WatchArgs),
    /// Run a command on every change of a key.
    ExecWatch(watch::ExecWatchArgs),
    /// Manage the control plane's members.
    #[command(subcommand)]
    Member(members::MemberCommand),
    /// Run a command holding a lock slot; or show, force-release or limit locks.
    Lock(locks::LockArgs),
    /// Campaign to lead an election and hold leadership until Ctrl-C.
    Elect(elections::ElectArgs),
    /// Submit units from TOML or JSON files (a new revision if they exist).
    Submit(fleet::SubmitArgs),
    /// Start units: place them and run their containers.
    Start(fleet::NamesArgs),
    /// Stop units: their containers go away, the units stay submitted.
    Stop(fleet::NamesArgs),
    /// Destroy units.
    Destroy(fleet::NamesArgs),
    /// List units with their instances, desired and actual state.
    ListUnits,
    /// List the machines of the fleet.
    ListMachines,
    /// Show units' instances in detail.
    Status(fleet::NamesArgs),
    /// Print (or follow) the logs of a unit's container, through its agent.
    Journal(fleet::JournalArgs),
    /// Manage tokens: create, list, revoke (admin).
    #[command(subcommand)]
    Token(token::TokenCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => output::report_error(&err),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut client = api::Client::new(&cli.endpoints)
        .with_context(|| format!("use endpoints {:?}", cli.endpoints))?;
    if let Some(path) = &cli.ca_file {
        let ca = api::tls::TrustedCa::load(path).context("use --ca-file")?;
        client = client.with_ca(&ca).context("use --ca-file")?;
    }
    let token = match (cli.token, &cli.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("read --token-file {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let client = match token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => client.with_token(t).context("use the token")?,
        None => client,
    };
    let out = Out::new(cli.output);
    match cli.command {
        Command::Get(a) => keys::get(&client, &out, a).await,
        Command::Set(a) => keys::set(&client, &out, a).await,
        Command::Mk(a) => keys::mk(&client, &out, a).await,
        Command::Mkdir(a) => keys::mkdir(&client, &out, a).await,
        Command::Update(a) => update::run(&client, &out, a).await,
        Command::Rm(a) => keys::rm(&client, &out, a).await,
        Command::Ls(a) => keys::ls(&client, &out, a).await,
        Command::Watch(a) => watch::watch(&client, &out, a).await,
        Command::ExecWatch(a) => watch::exec_watch(&client, a).await,
        Command::Member(c) => members::run(&client, &out, c).await,
        Command::Lock(a) => locks::run(&client, &out, a).await,
        Command::Elect(a) => elections::run(&client, &out, a).await,
        Command::Submit(a) => fleet::submit(&client, &out, a).await,
        Command::Start(a) => fleet::set_desired(&client, &out, a, true).await,
        Command::Stop(a) => fleet::set_desired(&client, &out, a, false).await,
        Command::Destroy(a) => fleet::destroy(&client, &out, a).await,
        Command::ListUnits => fleet::list_units(&client, &out).await,
        Command::ListMachines => fleet::list_machines(&client, &out).await,
        Command::Status(a) => fleet::status(&client, &out, a).await,
        Command::Journal(a) => fleet::journal(&client, a).await,
        Command::Token(c) => token::run(&client, &out, c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        match Cli::try_parse_from(std::iter::once("shoalctl").chain(args.iter().copied())) {
            Ok(c) => c,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn lock_subcommands_and_run_form_both_parse() {
        let c = parse(&["lock", "status"]);
        assert!(
            matches!(&c.command, Command::Lock(a) if matches!(a.sub, Some(locks::LockSub::Status { name: None })))
        );
        for verb in ["unlock", "release"] {
            let c = parse(&["lock", verb, "reboot", "m1"]);
            assert!(
                matches!(&c.command, Command::Lock(a) if matches!(&a.sub, Some(locks::LockSub::Unlock { name, holder }) if name == "reboot" && holder == "m1"))
            );
        }
        let c = parse(&["lock", "limit", "reboot-workers", "2"]);
        assert!(
            matches!(&c.command, Command::Lock(a) if matches!(a.sub, Some(locks::LockSub::Limit { limit: 2, .. })))
        );
        assert!(Cli::try_parse_from(["shoalctl", "lock", "limit", "reboot", "0"]).is_err());
        let c = parse(&[
            "-o", "json", "lock", "reboot", "--limit", "2", "--", "sh", "-c", "exit 3",
        ]);
        assert!(matches!(c.output, Format::Json));
        match &c.command {
            Command::Lock(a) => {
                assert!(a.sub.is_none());
                assert_eq!(a.run.name.as_deref(), Some("reboot"));
                assert_eq!(a.run.limit, 2);
                assert_eq!(a.run.command, ["sh", "-c", "exit 3"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["shoalctl", "lock", "reboot"]).is_err());
    }

    #[test]
    fn update_is_a_key_update_or_an_update_service_command() {
        let c = parse(&["update", "/k", "v"]);
        assert!(matches!(&c.command, Command::Update(a) if a.sub.is_none() && a.key.is_some()));
        let c = parse(&["update", "status"]);
        assert!(matches!(
            &c.command,
            Command::Update(a) if matches!(a.sub, Some(update::UpdateSub::Status { name: None }))
        ));
        let c = parse(&[
            "update",
            "channel",
            "stable",
            "--window",
            "Mon..Fri 04:00 2h",
            "--window",
            "Sat 01:00 1h",
            "--max-reboots",
            "2",
        ]);
        match &c.command {
            Command::Update(a) => match &a.sub {
                Some(update::UpdateSub::Channel(ch)) => {
                    assert_eq!(ch.windows.len(), 2);
                    assert_eq!(ch.max_reboots, Some(2));
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["shoalctl", "update", "upload", "f", "--version", "1"]).is_err()
        );
        assert!(Cli::try_parse_from(["shoalctl", "update", "/k"]).is_err());
    }

    #[test]
    fn token_flags_and_commands_parse() {
        let c = parse(&[
            "--token",
            "t0k",
            "token",
            "create",
            "--role",
            "node",
            "--machine",
            "m1",
        ]);
        assert_eq!(c.token.as_deref(), Some("t0k"));
        assert!(matches!(
            &c.command,
            Command::Token(token::TokenCommand::Create { role: api::auth::Role::Node, machine_id: Some(m), .. }) if m == "m1"
        ));
        let c = parse(&["token", "revoke", "0123456789abcdef", "--token-file", "/t"]);
        assert!(c.token_file.is_some());
        assert!(Cli::try_parse_from(["shoalctl", "token", "create", "--role", "root"]).is_err());
    }

    #[test]
    fn values_may_start_with_a_dash() {
        let c = parse(&["set", "/k", "-v", "--ttl", "5"]);
        match c.command {
            Command::Set(a) => {
                assert_eq!(a.value, "-v");
                assert_eq!(a.ttl, Some(5));
            }
            other => panic!("{other:?}"),
        }
    }
}
