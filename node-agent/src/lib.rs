//! shoal-agent: registers this machine under a TTL lease, runs the unit
//! instances placed on it as Docker containers, reports their state, fences
//! itself when its lease lapses, and serves the key API to local containers.
//!
//! | module | holds |
//! | --- | --- |
//! | `config` | flags / `SHOAL_*` env / TOML file merged into `Settings` |
//! | `machine` | facts for the machine record |
//! | `lease` | the machine lease and the last-renewal time used for fencing |
//! | `docker` | the only bollard user: list/create/start/stop/remove/inspect/logs/events |
//! | `reconcile` | the pure desired-vs-actual `plan`, passes, state reports, self-fencing |
//! | `local` | the local `/v2/keys` (and `/v1/keys`) forwarder |
//! | `journal` | answers the journal requests for this machine with its containers' logs |
//! | `install` | `shoal-agent install`: config file and systemd unit |
//! | `slots` | the A/B GPT slots: attributes, gptprio, payload writes, disk images |
//! | `update` | the update engine: check-ins, download, verify, reboot lock, drain, reboot, confirm |

pub mod config;
pub mod docker;
pub mod install;
pub mod journal;
pub mod lease;
pub mod local;
pub mod machine;
pub mod reconcile;
pub mod slots;
pub mod update;

use std::time::Duration;

use api::client::parse_endpoints;
use api::tls::TrustedCa;
use api::Client;

/// A cluster client for `servers`, with `Authorization: Bearer` when a token
/// is given, verifying `https` servers against `ca` when given.
pub fn cluster_client(
    servers: &str,
    token: Option<&str>,
    ca: Option<&TrustedCa>,
) -> anyhow::Result<Client> {
    let mut client = Client::with_endpoints(parse_endpoints(servers)?)?;
    if let Some(ca) = ca {
        client = client.with_ca(ca)?;
    }
    Ok(match token {
        None => client,
        Some(t) => client.with_token(t)?,
    })
}

/// Retries `f` until it succeeds or `attempts` are used, sleeping `pause` between.
pub async fn retry<T, E, F, Fut>(attempts: u32, pause: Duration, mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if n >= attempts => return Err(e),
            Err(_) => tokio::time::sleep(pause).await,
        }
    }
}
