//! `lock NAME -- CMD`: run a command while holding a slot of a counting semaphore,
//! renewing it every ttl/3 and releasing it afterwards; `lock status`, `lock unlock`
//! and `lock limit` show holders, force-release one (like `locksmithctl`) and set
//! the limit of clients that name none (FleetLock groups).
//!
//! A TTL is not mutual exclusion: if the slot cannot be renewed (someone else took
//! it, or no renewal succeeded for a whole TTL) the command is killed rather than
//! left running unprotected. The command gets the slot's fencing token in
//! `SHOAL_LOCK_TOKEN` to check against what it guards.

use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::Context;
use api::locks::{AcquireRequest, LockConfig, LockState, ReleaseRequest};
use api::Client;
use chrono::Utc;
use clap::{Args, Subcommand};
use tokio::time::Instant;

use crate::output::{self, Out};

/// The `/api/v1` error code when every slot of a lock is held.
const LOCK_BUSY: &str = "lock_busy";

/// `lock ...`: either a subcommand, or NAME with a command to run.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LockArgs {
    /// `status`, `unlock` or `limit`; absent to run a command under the lock.
    #[command(subcommand)]
    pub sub: Option<LockSub>,
    /// The run form's arguments.
    #[command(flatten)]
    pub run: LockRunArgs,
}

/// `lock NAME [--limit N] [--ttl S] [--holder ID] [--wait S] -- CMD ARGS...`.
#[derive(Debug, Args)]
pub struct LockRunArgs {
    /// The lock to take (`status`, `unlock`, `release` and `limit` are the subcommands).
    #[arg(required = true)]
    pub name: Option<String>,
    /// How many holders the lock admits; 1 makes it a mutex.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Seconds the slot lasts unless renewed (renewed every ttl/3).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: u64,
    /// Holder identity [default: HOSTNAME-PID].
    #[arg(long)]
    pub holder: Option<String>,
    /// Seconds the server waits for a free slot; 0 fails at once when full.
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    /// A note stored with the slot.
    #[arg(long, default_value = "")]
    pub value: String,
    /// The command to run while holding the slot.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `lock status|unlock|limit`.
#[derive(Debug, Subcommand)]
pub enum LockSub {
    /// Show one lock, or every lock with a holder: limit, holders, fencing tokens, TTL left.
    Status {
        /// The lock to show; all when absent.
        name: Option<String>,
    },
    /// Force a holder's slot free (like `locksmithctl unlock`).
    #[command(alias = "release")]
    Unlock {
        /// The lock.
        name: String,
        /// The holder whose slot is freed.
        holder: String,
    },
    /// Set how many holders clients that name no limit (FleetLock) are admitted with.
    Limit {
        /// The lock (`reboot` for FleetLock group `default`, `reboot-G` for group G).
        name: String,
        /// The number of holders.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
}

/// Runs the `lock` command in whichever form it was given.
pub async fn run(client: &Client, out: &Out, a: LockArgs) -> anyhow::Result<ExitCode> {
    match a.sub {
        Some(LockSub::Status { name: Some(name) }) => {
            let state = client
                .lock(&name)
                .await
                .with_context(|| format!("read lock {name}"))?;
            out.emit(&state, || output::lock_text(&state, Utc::now()))?;
        }
        Some(LockSub::Status { name: None }) => {
            let list = client.locks().await.context("list locks")?;
            out.emit(&list, || {
                list.locks
                    .iter()
                    .map(|l| output::lock_text(l, Utc::now()))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        Some(LockSub::Unlock { name, holder }) => {
            let state = client
                .release(
                    &name,
                    &ReleaseRequest {
                        holder: holder.clone(),
                    },
                )
                .await
                .with_context(|| format!("unlock {name} held by {holder}"))?;
            out.emit(&state, || output::lock_text(&state, Utc::now()))?;
        }
        Some(LockSub::Limit { name, limit }) => {
            let state = client
                .configure_lock(&name, &LockConfig { limit })
                .await
                .with_context(|| format!("set the limit of lock {name}"))?;
            out.emit(&state, || output::lock_text(&state, Utc::now()))?;
        }
        None => return run_locked(client, a.run).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// How often a slot (or a leadership) with `ttl_secs` is renewed: a third of the TTL.
pub fn renew_period(ttl_secs: u64) -> Duration {
    (Duration::from_secs(ttl_secs) / 3).max(Duration::from_millis(200))
}

/// A default identity that differs between processes: `HOSTNAME-PID`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "shoalctl".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The exit code a shell would report for `status` (128 + signal when killed).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn token_of(state: &LockState, holder: &str) -> Option<u64> {
    state
        .holders
        .iter()
        .find(|h| h.holder == holder)
        .map(|h| h.token)
}

/// Why the command stopped running under the lock.
enum Outcome {
    /// The command ended by itself.
    Exited(ExitStatus),
    /// The slot could not be kept; the command was killed.
    Lost(String),
}

async fn run_locked(client: &Client, a: LockRunArgs) -> anyhow::Result<ExitCode> {
    let name = a.name.context("lock needs a NAME")?;
    let (program, args) = a
        .command
        .split_first()
        .context("lock needs a command after --")?;
    let holder = a.holder.unwrap_or_else(default_identity);
    let request = AcquireRequest {
        holder: holder.clone(),
        limit: a.limit,
        ttl: a.ttl,
        value: a.value,
        wait: a.wait,
    };
    let state = client
        .acquire(&name, &request)
        .await
        .with_context(|| format!("acquire lock {name} as {holder}"))?;
    let token = token_of(&state, &holder).unwrap_or_default();
    eprintln!("shoalctl: acquired lock {name} as {holder} (token {token})");

    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env("SHOAL_LOCK_NAME", &name)
        .env("SHOAL_LOCK_HOLDER", &holder)
        .env("SHOAL_LOCK_TOKEN", token.to_string())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            release(client, &name, &holder).await;
            return Err(e).with_context(|| format!("start {program}"));
        }
    };

    let ttl = Duration::from_secs(a.ttl);
    let period = renew_period(a.ttl);
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let renewal = AcquireRequest { wait: 0, ..request };
    let mut last_renewed = Instant::now();
    let mut interrupted = false;
    let outcome = loop {
        tokio::select! {
            status = child.wait() => break Outcome::Exited(status.with_context(|| format!("wait for {program}"))?),
            _ = ticker.tick() => match client.acquire(&name, &renewal).await {
                Ok(_) => last_renewed = Instant::now(),
                Err(e) if e.api_code() == Some(LOCK_BUSY) => break Outcome::Lost(e.to_string()),
                Err(e) => {
                    eprintln!("shoalctl: renew lock {name}: {}", output::error_chain(&e));
                    if last_renewed.elapsed() >= ttl {
                        break Outcome::Lost(format!("not renewed for {}s", a.ttl));
                    }
                }
            },
            // The command received the same SIGINT; wait for it, then release.
            _ = tokio::signal::ctrl_c(), if !interrupted => interrupted = true,
        }
    };
    match outcome {
        Outcome::Exited(status) => {
            release(client, &name, &holder).await;
            Ok(exit_code(status))
        }
        Outcome::Lost(why) => {
            // Kill the command: it no longer runs under the lock.
            let _ = child.kill().await;
            release(client, &name, &holder).await;
            anyhow::bail!("lost lock {name} ({why}); killed {program}")
        }
    }
}

/// Best-effort release after the command ended; a lapsed slot is only reported.
async fn release(client: &Client, name: &str, holder: &str) {
    let req = ReleaseRequest {
        holder: holder.to_owned(),
    };
    if let Err(e) = client.release(name, &req).await {
        eprintln!(
            "shoalctl: release lock {name} as {holder}: {}",
            output::error_chain(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_runs_three_times_per_ttl_with_a_floor() {
        assert_eq!(renew_period(30), Duration::from_secs(10));
        assert_eq!(renew_period(1), Duration::from_secs(1) / 3);
        assert_eq!(renew_period(0), Duration::from_millis(200));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        assert_eq!(exit_code(ExitStatus::from_raw(9)), ExitCode::from(137));
    }

    #[test]
    fn default_identity_names_host_and_process() {
        let id = default_identity();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    }
}
