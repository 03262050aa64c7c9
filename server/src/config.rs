//! Command-line and environment configuration, in etcd's spelling, validated
//! into [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use url::Url;

use crate::raft::{member_id, MemberNode, NodeId};
use crate::tls::CertFiles;

/// shoal-server: a member of Shoal's replicated key space.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Human-readable name of this member.
    #[arg(long, env = "SHOAL_NAME", default_value = "default")]
    pub name: String,
    /// Directory for raft.db and state.db.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "shoal-data")]
    pub data_dir: PathBuf,
    /// Comma-separated URLs to serve clients on.
    #[arg(
        long,
        env = "SHOAL_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: String,
    /// Comma-separated client URLs to advertise (default: the listen URLs).
    #[arg(long, env = "SHOAL_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// URL to serve peers on.
    #[arg(
        long,
        env = "SHOAL_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub listen_peer_urls: String,
    /// Peer URL to advertise (default: the listen peer URL); it also fixes this member's id.
    #[arg(long, env = "SHOAL_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// The initial cluster, `name=peerURL,...` (default: this member alone).
    #[arg(long, env = "SHOAL_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` bootstraps the initial cluster; `existing` joins one that already runs.
    #[arg(long, env = "SHOAL_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,
    /// Cluster token; members with different tokens refuse each other's messages.
    #[arg(
        long,
        env = "SHOAL_INITIAL_CLUSTER_TOKEN",
        default_value = DEFAULT_CLUSTER_TOKEN
    )]
    pub initial_cluster_token: String,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "SHOAL_HEARTBEAT_INTERVAL", default_value_t = 50)]
    pub heartbeat_interval: u64,
    /// Election timeout in milliseconds, randomised up to 1.5 times it. A
    /// follower that heard from its leader also waits out the leader's lease
    /// (the longest timeout) first, so failover takes about 2 to 2.5 times this.
    #[arg(long, env = "SHOAL_ELECTION_TIMEOUT", default_value_t = 250)]
    pub election_timeout: u64,
    /// Take a snapshot (and compact the log) after this many applied entries.
    #[arg(long, env = "SHOAL_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Log entries kept after a snapshot, so a slightly lagging member catches up without one.
    #[arg(long, env = "SHOAL_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 1000)]
    pub snapshot_catchup_entries: u64,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "SHOAL_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// With --auth: requests per second one token may send (bursts of twice
    /// that); 0 for no limit.
    #[arg(long, env = "SHOAL_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// With --auth: long-poll watches and event streams one token may hold open.
    #[arg(long, env = "SHOAL_MAX_WATCHES_PER_TOKEN", default_value_t = 1000)]
    pub max_watches_per_token: usize,
    /// Seconds a write may wait for a quorum before it is answered as unknown.
    #[arg(long, env = "SHOAL_WRITE_TIMEOUT", default_value_t = 5)]
    pub write_timeout: u64,
    /// Fault injection: offset this member's clock (TTLs, leases) by this many ms.
    #[arg(
        long,
        env = "SHOAL_CLOCK_SKEW_MS",
        default_value_t = 0,
        allow_hyphen_values = true,
        hide = true
    )]
    pub clock_skew_ms: i64,
    /// PEM file of the ed25519 public key update payloads must be signed with;
    /// without it, uploads are stored with whatever signature they carry.
    #[arg(long, env = "SHOAL_UPDATE_PUBLIC_KEY")]
    pub update_public_key: Option<PathBuf>,
    /// Directory of the dashboard's wasm package (scripts/build-frontend's
    /// output), served at `/pkg`; default: `target/site/pkg` found from the binary.
    #[arg(long, env = "SHOAL_DASHBOARD_PKG_DIR")]
    pub dashboard_pkg_dir: Option<PathBuf>,
    /// Require a token on the client port (roles admin, operator, viewer,
    /// node). Without it the server listens on loopback addresses only.
    #[arg(long, env = "SHOAL_AUTH")]
    pub auth: bool,
    /// A known admin token to create on first start instead of a random one
    /// (for automation; the variable keeps it off the command line).
    #[arg(long, env = "SHOAL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the known admin token (see --admin-token).
    #[arg(long, env = "SHOAL_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM certificate chain served on the `https` client URLs (and the dashboard).
    #[arg(long, env = "SHOAL_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, env = "SHOAL_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that other members' `https` client URLs are
    /// verified against (payload replication, the dashboard's fan-out);
    /// default: the built-in web roots.
    #[arg(long, env = "SHOAL_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// PEM certificate chain served on an `https` peer URL.
    #[arg(long, env = "SHOAL_PEER_CERT_FILE", requires = "peer_key_file")]
    pub peer_cert_file: Option<PathBuf>,
    /// PEM private key of --peer-cert-file.
    #[arg(long, env = "SHOAL_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,
    /// PEM CA certificates that `https` peer URLs are verified against;
    /// default: the built-in web roots.
    #[arg(long, env = "SHOAL_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Mutual TLS between members: the peer port accepts only connections
    /// presenting a certificate signed by --peer-trusted-ca-file, and this
    /// member presents --peer-cert-file to its peers (as etcd's flag of the
    /// name); the cluster token is checked as well.
    #[arg(
        long,
        env = "SHOAL_PEER_CLIENT_CERT_AUTH",
        requires = "peer_trusted_ca_file"
    )]
    pub peer_client_cert_auth: bool,
}

/// Validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Member name.
    pub name: String,
    /// Member id, derived from the advertised peer URL.
    pub id: NodeId,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Addresses to serve clients on.
    pub client_listen: Vec<Url>,
    /// Client URLs advertised to others.
    pub client_advertise: Vec<String>,
    /// Address to serve peers on.
    pub peer_listen: Url,
    /// The initial voters when bootstrapping, by id.
    pub initial_cluster: Vec<(NodeId, MemberNode)>,
    /// True to bootstrap the initial cluster, false to wait to be added.
    pub bootstrap: bool,
    /// Cluster token.
    pub cluster_token: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Minimum election timeout.
    pub election_timeout: Duration,
    /// Entries between snapshots.
    pub snapshot_count: u64,
    /// Entries kept after a snapshot.
    pub snapshot_catchup_entries: u64,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// Per-token request rate and open watches (with auth).
    pub limits: crate::auth::limits::LimitSettings,
    /// How long a write waits for a quorum.
    pub write_timeout: Duration,
    /// Offset of the member's clock, for fault injection (`crate::clock`).
    pub clock_skew_ms: i64,
    /// The public key update payloads must be signed with, if any.
    pub update_public_key: Option<PathBuf>,
    /// The dashboard's wasm package directory, if set.
    pub dashboard_pkg_dir: Option<PathBuf>,
    /// True when the client port requires tokens.
    pub auth: bool,
    /// The known admin token to create on first start, if given.
    pub admin_token: Option<String>,
    /// Certificate and key of the `https` client URLs.
    pub client_tls: Option<CertFiles>,
    /// CA file for other members' `https` client URLs.
    pub client_ca: Option<PathBuf>,
    /// Certificate and key of an `https` peer URL.
    pub peer_tls: Option<CertFiles>,
    /// CA file for `https` peer URLs.
    pub peer_ca: Option<PathBuf>,
}

/// The cluster token members use unless told otherwise.
pub const DEFAULT_CLUSTER_TOKEN: &str = "shoal-cluster";

/// True when `url`'s host is a loopback address (or `localhost`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn parse_urls(list: &str, what: &str) -> anyhow::Result<Vec<Url>> {
    let urls = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let url =
                Url::parse(s.trim()).with_context(|| format!("{what}: {s:?} is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host_str().is_none()
                || url.port_or_known_default().is_none()
            {
                bail!("{what}: {s:?} must be http://host:port or https://host:port");
            }
            Ok(url)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if urls.is_empty() {
        bail!("{what}: at least one URL is required");
    }
    Ok(urls)
}

/// The certificate pair of `listen` URLs: required when one is `https`,
/// refused when none is (a certificate nobody is served with is a mistake).
fn tls_pair(
    listen: &[Url],
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    flags: (&'static str, &'static str),
    urls_flag: &str,
) -> anyhow::Result<Option<CertFiles>> {
    let https = listen.iter().find(|u| u.scheme() == "https");
    match (cert.zip(key), https) {
        (Some((cert, key)), Some(_)) => Ok(Some(CertFiles {
            cert,
            key,
            flags,
            client_ca: None,
        })),
        (None, None) => Ok(None),
        (None, Some(url)) => bail!(
            "{urls_flag} {url} is https: give its certificate and key with {} and {}",
            flags.0,
            flags.1
        ),
        (Some(_), None) => bail!(
            "{} is given but no {urls_flag} is https: use https://host:port to serve TLS",
            flags.0
        ),
    }
}

fn plain(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

impl Config {
    /// Checks the flags and derives the settings.
    pub fn validate(self) -> anyhow::Result<Settings> {
        let client_listen = parse_urls(&self.listen_client_urls, "--listen-client-urls")?;
        let client_advertise = match &self.advertise_client_urls {
            Some(list) => parse_urls(list, "--advertise-client-urls")?,
            None => client_listen.clone(),
        };
        let peer_listen = parse_urls(&self.listen_peer_urls, "--listen-peer-urls")?.remove(0);
        let advertise_peer = match &self.initial_advertise_peer_urls {
            Some(list) => parse_urls(list, "--initial-advertise-peer-urls")?.remove(0),
            None => peer_listen.clone(),
        };
        let advertise_peer = plain(&advertise_peer);
        let id = member_id(&advertise_peer);
        let cluster_spec = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={advertise_peer}", self.name));
        let mut initial_cluster = Vec::new();
        for part in cluster_spec.split(',').filter(|s| !s.trim().is_empty()) {
            let (name, url) = part
                .split_once('=')
                .with_context(|| format!("--initial-cluster: {part:?} is not name=peerURL"))?;
            let url = plain(&parse_urls(url, "--initial-cluster")?.remove(0));
            initial_cluster.push((
                member_id(&url),
                MemberNode {
                    name: name.trim().to_owned(),
                    peer_url: url,
                },
            ));
        }
        match initial_cluster.iter().find(|(mid, _)| *mid == id) {
            Some((_, node)) if node.name != self.name => bail!(
                "--initial-cluster names this member's peer URL {advertise_peer} {:?}, but --name is {:?}",
                node.name,
                self.name
            ),
            Some(_) => {}
            None => bail!("--initial-cluster must contain this member ({}={advertise_peer})", self.name),
        }
        if self.election_timeout < 2 * self.heartbeat_interval {
            bail!("--election-timeout must be at least twice --heartbeat-interval");
        }
        if !self.auth {
            if let Some(url) = client_listen.iter().find(|u| !is_loopback(u)) {
                bail!(
                    "--listen-client-urls {url} is not a loopback address: anyone who reaches it \
                     could run anything on every host; start with --auth (tokens required) or \
                     listen on 127.0.0.1"
                );
            }
        } else if self.initial_cluster_token == DEFAULT_CLUSTER_TOKEN && !is_loopback(&peer_listen)
        {
            bail!(
                "--listen-peer-urls {peer_listen} is not a loopback address and the cluster token \
                 is the default: with --auth, give every member a secret --initial-cluster-token \
                 (whoever knows it can write to the raft log)"
            );
        }
        let client_tls = tls_pair(
            &client_listen,
            self.cert_file,
            self.key_file,
            ("--cert-file", "--key-file"),
            "--listen-client-urls",
        )?;
        let mut peer_tls = tls_pair(
            std::slice::from_ref(&peer_listen),
            self.peer_cert_file,
            self.peer_key_file,
            ("--peer-cert-file", "--peer-key-file"),
            "--listen-peer-urls",
        )?;
        if self.peer_client_cert_auth {
            let Some(pair) = peer_tls.as_mut() else {
                bail!("--peer-client-cert-auth needs an https --listen-peer-urls with --peer-cert-file and --peer-key-file");
            };
            pair.client_ca.clone_from(&self.peer_trusted_ca_file);
        }
        let admin_token = match (self.admin_token, &self.admin_token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --admin-token-file {}", path.display()))?,
            ),
            (None, None) => None,
        }
        .map(|t| t.trim().to_owned());
        if let Some(t) = &admin_token {
            if t.len() < 16 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
                bail!("the admin token must be at least 16 characters, without spaces");
            }
        }
        Ok(Settings {
            name: self.name,
            id,
            data_dir: self.data_dir,
            client_listen,
            client_advertise: client_advertise.iter().map(plain).collect(),
            peer_listen,
            initial_cluster,
            bootstrap: self.initial_cluster_state == "new",
            cluster_token: self.initial_cluster_token,
            heartbeat: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            max_request_bytes: self.max_request_bytes,
            limits: crate::auth::limits::LimitSettings {
                rate: self.rate_limit,
                watches: self.max_watches_per_token,
            },
            write_timeout: Duration::from_secs(self.write_timeout),
            clock_skew_ms: self.clock_skew_ms,
            update_public_key: self.update_public_key,
            dashboard_pkg_dir: self.dashboard_pkg_dir,
            auth: self.auth,
            admin_token,
            client_tls,
            client_ca: self.trusted_ca_file,
            peer_tls,
            peer_ca: self.peer_trusted_ca_file,
        })
    }
}

impl Settings {
    /// openraft's `(election_timeout_min, election_timeout_max)` in ms for
    /// `--election-timeout` E. A follower that has a leader waits
    /// `max` (its leader lease) plus a random pick of `[min, max]` before it
    /// campaigns, so `min = E/3`, `max = 2E/3` make it campaign between E
    /// and 4E/3 of silence, as an etcd member does after E to 2E; `min`
    /// stays above the heartbeat interval.
    pub fn raft_election_window(&self) -> (u64, u64) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (election, heartbeat) = (ms(self.election_timeout), ms(self.heartbeat));
        let max = (election / 3).saturating_mul(2).max(heartbeat + 2);
        let min = (election / 3).max(heartbeat + 1);
        (min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_campaigns_between_one_and_four_thirds_of_the_election_timeout(
    ) -> anyhow::Result<()> {
        let s = parse(&["--heartbeat-interval", "100", "--election-timeout", "1000"])?;
        let (min, max) = s.raft_election_window();
        assert_eq!((min, max), (333, 666));
        assert_eq!((max + min, 2 * max), (999, 1332));
        let tight = parse(&["--heartbeat-interval", "100", "--election-timeout", "200"])?;
        let (min, max) = tight.raft_election_window();
        assert!(min > 100 && max > min, "{min} {max}");
        Ok(())
    }

    fn parse(args: &[&str]) -> anyhow::Result<Settings> {
        let mut argv = vec!["shoal-server"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)?.validate()
    }

    #[test]
    fn defaults_make_a_one_member_cluster() -> anyhow::Result<()> {
        let s = parse(&[])?;
        assert_eq!(s.initial_cluster.len(), 1);
        assert_eq!(s.initial_cluster[0].1.peer_url, "http://127.0.0.1:2380");
        assert_eq!(s.client_advertise, vec!["http://127.0.0.1:2379".to_owned()]);
        assert!(s.bootstrap);
        Ok(())
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(parse(&["--listen-client-urls", "not a url"]).is_err());
        assert!(
            parse(&["--initial-cluster", "a=http://127.0.0.1:1"]).is_err(),
            "must contain this member"
        );
        assert!(parse(&["--initial-cluster-state", "maybe"]).is_err());
        assert!(parse(&["--initial-cluster", "default"]).is_err());
    }

    #[test]
    fn non_loopback_clients_need_auth() -> anyhow::Result<()> {
        let open = ["--listen-client-urls", "http://0.0.0.0:2379"];
        let err = parse(&open)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--auth"), "{err}");
        assert!(parse(&["--listen-client-urls", "http://localhost:2379"]).is_ok());
        assert!(parse(&["--listen-client-urls", "http://[::1]:2379"]).is_ok());
        let s = parse(&["--auth", open[0], open[1]])?;
        assert!(s.auth);
        Ok(())
    }

    #[test]
    fn auth_on_a_public_peer_port_needs_a_secret_cluster_token() -> anyhow::Result<()> {
        let public_peer = ["--auth", "--listen-peer-urls", "http://10.0.0.1:2380"];
        assert!(parse(&public_peer).is_err());
        let mut with_secret = public_peer.to_vec();
        with_secret.extend(["--initial-cluster-token", "a-long-secret"]);
        assert!(parse(&with_secret).is_ok());
        Ok(())
    }

    #[test]
    fn admin_token_from_flag_or_file() -> anyhow::Result<()> {
        let s = parse(&["--auth", "--admin-token", " 0123456789abcdef\n"])?;
        assert_eq!(s.admin_token.as_deref(), Some("0123456789abcdef"));
        assert!(parse(&["--auth", "--admin-token", "short"]).is_err());
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("admin");
        std::fs::write(&file, "fedcba9876543210fedcba\n")?;
        let path = file.to_str().unwrap_or_default();
        let s = parse(&["--auth", "--admin-token-file", path])?;
        assert_eq!(s.admin_token.as_deref(), Some("fedcba9876543210fedcba"));
        Ok(())
    }

    #[test]
    fn https_urls_and_certificates_go_together() -> anyhow::Result<()> {
        let https = ["--listen-client-urls", "https://127.0.0.1:2379"];
        let err = parse(&https)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--cert-file"), "{err}");
        let pair = ["--cert-file", "c.pem", "--key-file", "k.pem"];
        let err = parse(&pair)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no --listen-client-urls is https"), "{err}");
        assert!(
            parse(&["--cert-file", "c.pem"]).is_err(),
            "a key is required"
        );
        let s = parse(&[https[0], https[1], pair[0], pair[1], pair[2], pair[3]])?;
        assert_eq!(
            s.client_tls.map(|t| (t.cert, t.key)),
            Some(("c.pem".into(), "k.pem".into()))
        );
        assert!(s.peer_tls.is_none());
        let peer = [
            "--listen-peer-urls",
            "https://127.0.0.1:2380",
            "--peer-cert-file",
            "p.pem",
            "--peer-key-file",
            "pk.pem",
        ];
        let s = parse(&peer)?;
        assert_eq!(s.initial_cluster[0].1.peer_url, "https://127.0.0.1:2380");
        assert!(s.peer_tls.is_some() && s.client_tls.is_none());
        assert_eq!(s.peer_tls.and_then(|t| t.client_ca), None);
        let mutual = [
            &peer[..],
            &[
                "--peer-trusted-ca-file",
                "ca.pem",
                "--peer-client-cert-auth",
            ],
        ]
        .concat();
        let s = parse(&mutual)?;
        assert_eq!(
            s.peer_tls.and_then(|t| t.client_ca),
            Some("ca.pem".into()),
            "peers must present a certificate of the peer CA"
        );
        assert!(
            parse(&[&peer[..], &["--peer-client-cert-auth"]].concat()).is_err(),
            "mutual TLS needs the CA to verify peers against"
        );
        let err = parse(&[
            "--peer-trusted-ca-file",
            "ca.pem",
            "--peer-client-cert-auth",
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("needs an https --listen-peer-urls"), "{err}");
        Ok(())
    }

    #[test]
    fn three_member_cluster() -> anyhow::Result<()> {
        let s = parse(&[
            "--name",
            "n2",
            "--listen-peer-urls",
            "http://127.0.0.1:3380",
            "--initial-cluster",
            "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:3380,n3=http://127.0.0.1:4380",
        ])?;
        assert_eq!(s.initial_cluster.len(), 3);
        assert_eq!(s.id, member_id("http://127.0.0.1:3380"));
        Ok(())
    }
}
