//! `elect NAME --candidate ID`: campaign, print the leader, keep leadership by
//! campaigning again every ttl/3 until Ctrl-C, then resign. Losing leadership
//! (another leader, or no renewal for a whole TTL) ends the command with an error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::elections::{CampaignRequest, ResignRequest};
use api::Client;
use clap::Args;
use tokio::time::Instant;

use crate::locks::renew_period;
use crate::output::{self, Out};

/// The `/api/v1` error code when another candidate leads.
const ELECTION_LOST: &str = "election_lost";

/// `elect NAME --candidate ID [--value V] [--ttl S] [--wait S] [--once]`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election.
    name: String,
    /// This candidate's identity.
    #[arg(long)]
    candidate: String,
    /// What the leader proclaims (an address, say).
    #[arg(long, default_value = "")]
    value: String,
    /// Seconds leadership lasts unless renewed (renewed every ttl/3).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    ttl: u64,
    /// Seconds the server waits for leadership; 0 answers at once.
    #[arg(long, default_value_t = 0)]
    wait: u64,
    /// Campaign once, print the leader and exit (leadership then lapses after the TTL).
    #[arg(long)]
    once: bool,
}

/// Runs `elect`.
pub async fn run(client: &Client, out: &Out, a: ElectArgs) -> anyhow::Result<ExitCode> {
    let request = CampaignRequest {
        candidate: a.candidate.clone(),
        value: a.value,
        ttl: a.ttl,
        wait: a.wait,
    };
    let leader = client
        .campaign(&a.name, &request)
        .await
        .with_context(|| format!("campaign in {} as {}", a.name, a.candidate))?;
    out.emit(&leader, || output::leader_text(&leader))?;
    if a.once {
        return Ok(ExitCode::SUCCESS);
    }

    let ttl = Duration::from_secs(a.ttl);
    let period = renew_period(a.ttl);
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let renewal = CampaignRequest { wait: 0, ..request };
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => match client.campaign(&a.name, &renewal).await {
                Ok(_) => last_renewed = Instant::now(),
                Err(e) if e.api_code() == Some(ELECTION_LOST) => {
                    return Err(e).with_context(|| format!("lost leadership of {}", a.name));
                }
                Err(e) => {
                    eprintln!("shoalctl: renew leadership of {}: {}", a.name, output::error_chain(&e));
                    if last_renewed.elapsed() >= ttl {
                        anyhow::bail!("lost leadership of {}: not renewed for {}s", a.name, a.ttl);
                    }
                }
            },
            signal = tokio::signal::ctrl_c() => {
                signal.context("listen for Ctrl-C")?;
                break;
            }
        }
    }
    client
        .resign(
            &a.name,
            &ResignRequest {
                candidate: a.candidate.clone(),
            },
        )
        .await
        .with_context(|| format!("resign from {} as {}", a.name, a.candidate))?;
    eprintln!("shoalctl: {} resigned from {}", a.candidate, a.name);
    Ok(ExitCode::SUCCESS)
}
