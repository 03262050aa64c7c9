//! shoal-server: the replicated key space with etcd v2 semantics, on openraft,
//! durable in SQLite, served over HTTP.
//!
//! `run` wires the parts: storage (`db`, `raft`), the member handle
//! (`member`), the leader's TTL expiry (`expiry`), payload replication
//! (`updates::replicate`), tokens and roles (`auth`) and the HTTP routers
//! (`http`), served over TLS for `https` URLs (`tls`).

pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod engine;
pub mod expiry;
pub mod http;
pub mod journals;
pub mod keyspace;
pub mod member;
pub mod proposer;
pub mod raft;
pub mod read_index;
pub mod tls;
pub mod updates;

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::sync::Arc;

use anyhow::Context;
use api::tls::{trusting, TrustedCa};
use axum::serve::ListenerExt;
use futures::future::Either;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use url::Url;

use crate::config::Settings;
use crate::db::{LogDb, StateDb};
use crate::member::{Member, StoreStats, Timeouts};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;

/// How long one snapshot chunk may take to reach a member, the last one
/// including its install: writing a million keys into SQLite takes seconds,
/// far over openraft's 200 ms default, which made a large catch-up restart
/// forever.
const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 120_000;

/// Binds `url` and returns the server of `app` on it: TLS with `tls` for an
/// `https` URL, plain HTTP otherwise; connections send small answers at once
/// (no Nagle delay).
async fn listen(
    url: &Url,
    tls: Option<&tls::Certs>,
    app: axum::Router,
) -> anyhow::Result<impl Future<Output = std::io::Result<()>> + Send> {
    let host = url.host_str().context("URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().context("URL has no port")?;
    let listener = TcpListener::bind((host, port))
        .await
        .with_context(|| format!("binding {url}"))?;
    Ok(match tls.filter(|_| url.scheme() == "https") {
        Some(certs) => {
            let listener = tls::TlsListener::new(listener, certs.clone())
                .with_context(|| format!("serving TLS on {url}"))?;
            Either::Left(axum::serve(listener, app).into_future())
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(%e, "cannot set TCP_NODELAY");
                }
            });
            Either::Right(axum::serve(listener, app).into_future())
        }
    })
}

/// The certificates of a pair, if given, reloaded on `SIGHUP`.
fn server_tls(files: Option<&tls::CertFiles>) -> anyhow::Result<Option<tls::Certs>> {
    let Some(files) = files else {
        return Ok(None);
    };
    let certs = tls::Certs::load(files.clone())?;
    certs
        .reload_on_hangup()
        .context("listening for SIGHUP to reload certificates")?;
    Ok(Some(certs))
}

/// The CA a `flag` names, if given.
fn trusted_ca(path: Option<&std::path::Path>, flag: &str) -> anyhow::Result<Option<TrustedCa>> {
    path.map(TrustedCa::load)
        .transpose()
        .with_context(|| format!("loading {flag}"))
}

/// Runs a member until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    clock::set_skew_ms(settings.clock_skew_ms);
    let log_db = LogDb::open(&settings.data_dir)
        .await
        .context("opening raft.db")?;
    let state_db = StateDb::open(&settings.data_dir)
        .await
        .context("opening state.db")?;
    let state_machine = StateMachine::load(state_db)
        .await
        .context("loading the key space")?;
    let keys = state_machine.shared();

    let (election_min, election_max) = settings.raft_election_window();
    // Certificates first: a bad file is reported before anything starts.
    let client_tls = server_tls(settings.client_tls.as_ref())?;
    let peer_tls = server_tls(settings.peer_tls.as_ref())?;
    let client_ca = trusted_ca(settings.client_ca.as_deref(), "--trusted-ca-file")?;
    let peer_ca = trusted_ca(settings.peer_ca.as_deref(), "--peer-trusted-ca-file")?;

    let raft_config = openraft::Config {
        cluster_name: settings.cluster_token.clone(),
        heartbeat_interval: u64::try_from(settings.heartbeat.as_millis()).unwrap_or(u64::MAX),
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_count),
        max_in_snapshot_log_to_keep: settings.snapshot_catchup_entries,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
        ..Default::default()
    }
    .validate()
    .context("raft configuration")?;

    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        http::peer::TOKEN_HEADER,
        reqwest::header::HeaderValue::from_str(&settings.cluster_token)
            .context("cluster token is not a valid header")?,
    );
    let mut peer_builder = trusting(reqwest::Client::builder(), peer_ca.as_ref());
    // Mutual TLS: present this member's peer certificate to the others.
    if let Some(pair) = settings.peer_tls.as_ref().filter(|p| p.client_ca.is_some()) {
        peer_builder = peer_builder.identity(pair.identity()?);
    }
    let http_client = peer_builder
        .default_headers(headers)
        .pool_max_idle_per_host(16)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;

    let raft = Raft::new(
        settings.id,
        Arc::new(raft_config),
        Network::new(http_client.clone()),
        LogStore::new(log_db),
        state_machine,
    )
    .await
    .context("starting raft")?;

    let fresh = !raft.is_initialized().await.context("reading raft state")?;
    if settings.bootstrap && fresh {
        let members: BTreeMap<_, _> = settings.initial_cluster.iter().cloned().collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::info!(%e, "cluster already initialized");
        }
    }

    let mut member_headers = reqwest::header::HeaderMap::new();
    if settings.auth {
        let credential = format!(
            "Bearer {}",
            auth::member_credential(&settings.cluster_token)
        );
        let mut value = reqwest::header::HeaderValue::from_str(&credential)
            .context("member credential is not a valid header")?;
        value.set_sensitive(true);
        member_headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client_http = updates::replicate::client(member_headers, client_ca.as_ref())
        .context("building the client-port HTTP client")?;

    let member = Arc::new(Member {
        id: settings.id,
        name: settings.name.clone(),
        client_urls: settings.client_advertise.clone(),
        raft: raft.clone(),
        keys,
        http: http_client,
        client_http,
        started: chrono::Utc::now(),
        stats: StoreStats::default(),
        timeouts: Timeouts {
            write: settings.write_timeout,
        },
        proposer: member::Proposer::start(raft.clone()),
        read_index: read_index::ReadIndex::default(),
        journals: journals::Journals::default(),
    });

    let updates = Arc::new(updates::Updates::open(
        member.clone(),
        &settings.data_dir,
        settings.update_public_key.as_deref(),
    )?);
    let auth = Arc::new(auth::Auth::new(
        member.clone(),
        settings.auth,
        &settings.cluster_token,
        settings.limits,
    ));
    let mut servers = tokio::task::JoinSet::new();
    if settings.auth && settings.bootstrap && fresh {
        // The first member of --initial-cluster makes the random admin token,
        // so a new cluster has exactly one; a known token is the same everywhere.
        let first = settings.initial_cluster.first().map(|(id, _)| *id) == Some(settings.id);
        // Detached: it ends after one write, which must not end the member.
        tokio::spawn(auth.clone().bootstrap(settings.admin_token.clone(), first));
    }
    let peer_app = http::peer_router(member.clone(), settings.cluster_token.clone());
    let peer_server = listen(&settings.peer_listen, peer_tls.as_ref(), peer_app).await?;
    servers.spawn(async move { peer_server.await.context("peer server") });
    let pkg_dir = http::dashboard::pkg_dir(settings.dashboard_pkg_dir.as_deref());
    for url in &settings.client_listen {
        let app = http::client_router(
            member.clone(),
            settings.max_request_bytes,
            updates.clone(),
            &pkg_dir,
            auth.clone(),
        );
        let server = listen(url, client_tls.as_ref(), app).await?;
        servers.spawn(async move { server.await.context("client server") });
    }
    let replicas = updates.clone();
    servers.spawn(async move {
        updates::replicate::run(replicas).await;
        Ok(())
    });
    let engine_member = member.clone();
    servers.spawn(async move {
        engine::run(engine_member).await;
        Ok(())
    });
    servers.spawn(async move {
        expiry::run(member).await;
        Ok(())
    });
    tracing::info!(name = %settings.name, id = %raft::id_hex(settings.id), clients = ?settings.client_advertise, "member started");

    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        Some(done) = servers.join_next() => {
            done.context("server task panicked")??;
        }
    }
    servers.abort_all();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(%e, "raft did not shut down cleanly");
    }
    Ok(())
}
