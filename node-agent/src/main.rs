//! The `shoal-agent` binary: parse settings, then run the lease, the
//! reconciler, the local endpoint and (with `--disk`) the update engine until
//! SIGTERM or Ctrl-C; or `install`, or `disk init`.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use node_agent::config::{self, Cli, Command, Environment};
use node_agent::docker::{Docker, Host};
use node_agent::lease::{error_chain, Lease, LeaseState};
use node_agent::reconcile::Reconciler;
use node_agent::update::health::Health;
use node_agent::{install, local, machine, update};
use tokio::sync::watch;

/// How long shutdown waits for running work (a pass, open requests).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    // Test builds (feature `failpoints`): the fail points FAILPOINTS configures.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    if let Some(Command::Install(args)) = &cli.command {
        return install::run(args, &mut std::io::stdout()).map_err(Into::into);
    }
    if let Some(Command::Disk(args)) = &cli.command {
        return update::disk_command(args, &mut std::io::stdout()).map_err(Into::into);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = config::load(&cli.run, &Environment::from_system())?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let result = runtime.block_on(run(settings));
    // Do not wait for detached tasks (watches, long polls) to finish.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

async fn run(settings: config::Settings) -> anyhow::Result<()> {
    let ca = match &settings.ca_file {
        Some(path) => Some(api::tls::TrustedCa::load(path).context("--ca-file")?),
        None => None,
    };
    let client =
        node_agent::cluster_client(&settings.server, settings.token.as_deref(), ca.as_ref())?;
    let host = Host {
        machine_id: settings.machine_id.clone(),
        local_endpoint: Some(settings.local_endpoint),
    };
    let docker = Docker::connect(&settings.docker, host)?;
    let docker_version = match docker.version().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "docker is not reachable (yet)");
            String::new()
        }
    };
    if let Err(e) = std::fs::create_dir_all(&settings.state_dir) {
        tracing::warn!(dir = %settings.state_dir.display(), error = %e, "cannot create the state dir");
    }
    // The update engine first: on a test host it is the bootloader, and the
    // record carries the booted slot, its version and whether it drains.
    let booted = match settings.update.clone() {
        Some(u) => Some(update::Booted::start(u, &settings.state_dir)?),
        None => None,
    };
    let mut record = machine::describe(
        &settings.machine_id,
        settings.hostname.as_deref(),
        &settings.metadata,
        client.endpoints(),
        &docker_version,
        &format!("http://{}", settings.local_endpoint),
    );
    if let Some(b) = &booted {
        record.os_version = b.os_version().to_owned();
        record.active_slot = b.active_slot().label().to_owned();
        record.draining = b.draining();
    }
    tracing::info!(machine = %record.id, hostname = %record.hostname, os_version = %record.os_version, slot = %record.active_slot, "starting shoal-agent");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let lease_state = LeaseState::new(settings.lease_ttl);
    let lease = Lease::new(client.clone(), record, Arc::clone(&lease_state));
    // Register once before reconciling, so a quick restart does not fence itself.
    if let Err(e) = lease.register().await {
        tracing::warn!(error = %error_chain(&e), "first lease registration failed");
    }
    let lease_task = tokio::spawn(lease.clone().run(stopped()));

    let endpoints = client.endpoints().to_vec();
    let fwd = local::Forwarder::new(
        endpoints,
        settings.token.clone(),
        settings.local_scope.clone(),
        ca.as_ref(),
    )?;
    let listener = local::bind(settings.local_endpoint).await?;
    tracing::info!(addr = %settings.local_endpoint, "local endpoint listening");
    let local_task = tokio::spawn(local::serve(listener, fwd, stopped()));

    let update_task = booted.map(|b| {
        let health = Health {
            client: client.clone(),
            lease: Arc::clone(&lease_state),
            docker: docker.clone(),
            commands: settings
                .update
                .as_ref()
                .map(|u| u.health_commands.clone())
                .unwrap_or_default(),
        };
        let engine = b.engine(settings.machine_id.clone(), client.clone(), lease, health);
        tokio::spawn(engine.run(stopped()))
    });

    let reconciler = Reconciler::new(client, docker, lease_state);
    let reconcile_task = tokio::spawn(reconciler.run(stopped()));

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Long polls through the local endpoint would hold a graceful shutdown
    // open indefinitely: give everything a bounded time, then leave.
    let finish = async {
        let _ = lease_task.await;
        let _ = reconcile_task.await;
        if let Some(task) = update_task {
            let _ = task.await;
        }
        if let Ok(Err(e)) = local_task.await {
            tracing::warn!(error = %error_chain(&e), "local endpoint");
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
        tracing::warn!("shutdown grace period over; exiting");
    }
    Ok(())
}
