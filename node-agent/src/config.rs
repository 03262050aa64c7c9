//! The agent's settings: clap flags (each with a `SHOAL_*` environment
//! variable) over an optional TOML file given with `--config`.
//!
//! Precedence is file < environment < flags: clap already lets a flag win over
//! its variable, and every run flag is optional so that a value missing from
//! both falls back to the file, then to the built-in default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// The cluster endpoint used when none is configured.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:2379";
/// Where the local key-space endpoint listens unless told otherwise.
pub const DEFAULT_LOCAL_ENDPOINT: &str = "127.0.0.1:4001";
/// The key prefix containers see through the local endpoint unless told otherwise.
pub const DEFAULT_LOCAL_PREFIX: &str = "/";
/// Lease TTL in seconds unless told otherwise.
pub const DEFAULT_LEASE_TTL: u64 = 10;
/// Where the agent keeps local state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/shoal-agent";
/// Where the machine id is read from unless `--machine-id` is given.
pub const MACHINE_ID_FILE: &str = "/etc/machine-id";
/// The Docker socket used when neither `--docker` nor `DOCKER_HOST` is set.
pub const DEFAULT_DOCKER: &str = "unix:///var/run/docker.sock";
/// The update channel followed unless told otherwise.
pub const DEFAULT_CHANNEL: &str = "stable";
/// The command that reboots the host unless told otherwise.
pub const DEFAULT_REBOOT_COMMAND: &str = "systemctl reboot";
/// Seconds between update check-ins unless told otherwise.
pub const DEFAULT_UPDATE_INTERVAL: u64 = 60;
/// Seconds a new slot has to become healthy unless told otherwise.
pub const DEFAULT_HEALTH_DEADLINE: u64 = 120;
/// Seconds to wait for units to move away before rebooting unless told otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: u64 = 300;

/// Why the settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (config, token, machine id) could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value that does not parse.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// Command line of `shoal-agent`.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-agent", version, about = "Shoal node agent")]
pub struct Cli {
    /// Run flags (used when no subcommand is given).
    #[command(flatten)]
    pub run: RunArgs,
    /// A subcommand; none means run the agent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `shoal-agent`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Write the agent's config file and systemd unit.
    Install(Box<crate::install::InstallArgs>),
    /// Make a disk image for the update engine (test hosts).
    Disk(crate::update::DiskArgs),
}

/// Flags of the running agent; all optional so the file can fill gaps.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML config file (lowest precedence).
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Cluster endpoints, comma separated.
    #[arg(long, env = "SHOAL_SERVER")]
    pub server: Option<String>,
    /// Bearer token sent to the cluster.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "SHOAL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates `https` cluster endpoints are verified against
    /// (only these are trusted; default: the built-in web roots).
    #[arg(long, env = "SHOAL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Machine id (default: the contents of /etc/machine-id).
    #[arg(long, env = "SHOAL_MACHINE_ID")]
    pub machine_id: Option<String>,
    /// Machine metadata, `key=value,key=value`.
    #[arg(long, env = "SHOAL_METADATA")]
    pub metadata: Option<String>,
    /// Docker endpoint: `unix:///path`, `tcp://host:port` or a socket path
    /// (default: DOCKER_HOST, else the local socket).
    #[arg(long, env = "SHOAL_DOCKER")]
    pub docker: Option<String>,
    /// Directory for the agent's local state.
    #[arg(long, env = "SHOAL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address of the local key-space endpoint for containers.
    #[arg(long, env = "SHOAL_LOCAL_ENDPOINT")]
    pub local_endpoint: Option<String>,
    /// The key prefix containers may use through the local endpoint (default
    /// `/`: every key but the reserved `_` directories such as `/_shoal`).
    #[arg(long, env = "SHOAL_LOCAL_PREFIX")]
    pub local_prefix: Option<String>,
    /// Lease TTL in seconds; renewed every third of it.
    #[arg(long, env = "SHOAL_LEASE_TTL")]
    pub lease_ttl: Option<u64>,
    /// Host name to register (default: the kernel's).
    #[arg(long, env = "SHOAL_HOSTNAME")]
    pub hostname: Option<String>,
    /// The disk holding the A/B OS slots (block device or image); none disables updates.
    #[arg(long, env = "SHOAL_DISK")]
    pub disk: Option<PathBuf>,
    /// The update channel to follow (default `stable`).
    #[arg(long, env = "SHOAL_CHANNEL")]
    pub channel: Option<String>,
    /// PEM file of the ed25519 public key payloads must be signed with.
    #[arg(long, env = "SHOAL_UPDATE_PUBLIC_KEY")]
    pub update_public_key: Option<PathBuf>,
    /// Shell command that reboots the host (default `systemctl reboot`).
    #[arg(long, env = "SHOAL_REBOOT_COMMAND")]
    pub reboot_command: Option<String>,
    /// Shell command that must exit 0 after booting a new slot (repeatable).
    #[arg(long = "health-command", env = "SHOAL_HEALTH_COMMAND")]
    pub health_commands: Vec<String>,
    /// Seconds between update check-ins (default 60).
    #[arg(long, env = "SHOAL_UPDATE_INTERVAL")]
    pub update_interval: Option<u64>,
    /// Seconds a new slot has to become healthy before it is rolled back (default 120).
    #[arg(long, env = "SHOAL_HEALTH_DEADLINE")]
    pub health_deadline: Option<u64>,
    /// Seconds to wait for units to move away before rebooting anyway (default 300).
    #[arg(long, env = "SHOAL_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
}

/// The TOML config file; every field optional, same names as the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// Cluster endpoints, comma separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM CA file for `https` cluster endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Machine id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Docker endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<String>,
    /// State directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Local endpoint address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<String>,
    /// The key prefix containers may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_prefix: Option<String>,
    /// Lease TTL in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Machine metadata as a table (`[metadata]` with `key = "value"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The disk holding the A/B OS slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
    /// The update channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// PEM file of the update public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_public_key: Option<PathBuf>,
    /// Shell command that reboots the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_command: Option<String>,
    /// Shell commands that must exit 0 after booting a new slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_commands: Vec<String>,
    /// Seconds between update check-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_interval: Option<u64>,
    /// Seconds a new slot has to become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_deadline: Option<u64>,
    /// Seconds to wait for units to move away before rebooting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<u64>,
}

impl FileConfig {
    /// Parses the TOML text of a config file.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        Self::parse(&text, path)
    }
}

/// The agent's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Cluster endpoints, comma separated as given.
    pub server: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// CA file for `https` cluster endpoints, if any.
    pub ca_file: Option<PathBuf>,
    /// This machine's id.
    pub machine_id: String,
    /// Machine metadata.
    pub metadata: BTreeMap<String, String>,
    /// Docker endpoint.
    pub docker: String,
    /// State directory.
    pub state_dir: PathBuf,
    /// Local endpoint address.
    pub local_endpoint: SocketAddr,
    /// The keys containers may use through the local endpoint.
    pub local_scope: crate::local::Scope,
    /// Lease TTL.
    pub lease_ttl: Duration,
    /// Host name override.
    pub hostname: Option<String>,
    /// The update engine's settings; `None` (no `--disk`) disables updates.
    pub update: Option<UpdateSettings>,
}

/// The update engine's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSettings {
    /// The disk holding the A/B slots.
    pub disk: PathBuf,
    /// The channel followed.
    pub channel: String,
    /// The trusted public key, PEM.
    pub public_key: String,
    /// Shell command that reboots the host.
    pub reboot_command: String,
    /// Shell commands that must exit 0 after booting a new slot.
    pub health_commands: Vec<String>,
    /// Period of check-ins.
    pub interval: Duration,
    /// Time a new slot has to become healthy.
    pub health_deadline: Duration,
    /// Longest wait for units to move away.
    pub drain_timeout: Duration,
}

/// Where default values come from; injected so merging stays testable.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `DOCKER_HOST`, if set.
    pub docker_host: Option<String>,
    /// The contents of `/etc/machine-id`, if readable.
    pub machine_id_file: Option<String>,
}

impl Environment {
    /// Reads the real process environment and `/etc/machine-id`.
    pub fn from_system() -> Self {
        Environment {
            docker_host: std::env::var("DOCKER_HOST")
                .ok()
                .filter(|s| !s.trim().is_empty()),
            machine_id_file: std::fs::read_to_string(MACHINE_ID_FILE).ok(),
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses `key=value,key=value` (spaces around items trimmed, empty items skipped).
pub fn parse_metadata(list: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
            what: "metadata",
            message: format!("{item:?} is not key=value"),
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(ConfigError::Invalid {
                what: "metadata",
                message: format!("{item:?} has an empty key"),
            });
        }
        out.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// Merges flags/environment (`args`) over the file over defaults.
pub fn resolve(
    args: &RunArgs,
    file: &FileConfig,
    env: &Environment,
) -> Result<Settings, ConfigError> {
    let server = args
        .server
        .clone()
        .or_else(|| file.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    api::client::parse_endpoints(&server).map_err(|e| ConfigError::Invalid {
        what: "server",
        message: e.to_string(),
    })?;

    // A token given at a level beats a token file at a lower one.
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(read(f)?),
        (None, None) => match (&file.token, &file.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(read(f)?),
            (None, None) => None,
        },
    }
    .map(|t| t.trim().to_owned())
    .filter(|t| !t.is_empty());

    let machine_id = args
        .machine_id
        .clone()
        .or_else(|| file.machine_id.clone())
        .or_else(|| env.machine_id_file.clone())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or(ConfigError::Invalid {
            what: "machine id",
            message: format!("none given and {MACHINE_ID_FILE} is missing or empty"),
        })?;
    if !machine_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::Invalid {
            what: "machine id",
            message: format!("{machine_id:?} may hold only [A-Za-z0-9._-]"),
        });
    }

    let metadata = match &args.metadata {
        Some(list) => parse_metadata(list)?,
        None => file.metadata.clone(),
    };

    let docker = args
        .docker
        .clone()
        .or_else(|| file.docker.clone())
        .or_else(|| env.docker_host.clone())
        .unwrap_or_else(|| DEFAULT_DOCKER.to_owned());

    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| file.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));

    let local = args
        .local_endpoint
        .clone()
        .or_else(|| file.local_endpoint.clone())
        .unwrap_or_else(|| DEFAULT_LOCAL_ENDPOINT.to_owned());
    let local_endpoint = local.parse().map_err(|e| ConfigError::Invalid {
        what: "local endpoint",
        message: format!("{local:?}: {e}"),
    })?;

    let prefix = args
        .local_prefix
        .clone()
        .or_else(|| file.local_prefix.clone())
        .unwrap_or_else(|| DEFAULT_LOCAL_PREFIX.to_owned());
    let local_scope =
        crate::local::Scope::new(&prefix).map_err(|message| ConfigError::Invalid {
            what: "local prefix",
            message,
        })?;

    let ttl = args
        .lease_ttl
        .or(file.lease_ttl)
        .unwrap_or(DEFAULT_LEASE_TTL);
    if ttl < 3 {
        return Err(ConfigError::Invalid {
            what: "lease ttl",
            message: format!("{ttl} s is too short (at least 3)"),
        });
    }

    Ok(Settings {
        server,
        token,
        ca_file: args.ca_file.clone().or_else(|| file.ca_file.clone()),
        machine_id,
        metadata,
        docker,
        state_dir,
        local_endpoint,
        local_scope,
        lease_ttl: Duration::from_secs(ttl),
        hostname: args.hostname.clone().or_else(|| file.hostname.clone()),
        update: resolve_update(args, file)?,
    })
}

/// The update settings, when a disk is configured.
fn resolve_update(
    args: &RunArgs,
    file: &FileConfig,
) -> Result<Option<UpdateSettings>, ConfigError> {
    let Some(disk) = args.disk.clone().or_else(|| file.disk.clone()) else {
        return Ok(None);
    };
    let channel = args
        .channel
        .clone()
        .or_else(|| file.channel.clone())
        .unwrap_or_else(|| DEFAULT_CHANNEL.to_owned());
    if !api::updates::valid_name(&channel) {
        return Err(ConfigError::Invalid {
            what: "channel",
            message: format!("{channel:?} may hold only [A-Za-z0-9._:@-]"),
        });
    }
    let key_file = args
        .update_public_key
        .clone()
        .or_else(|| file.update_public_key.clone())
        .ok_or(ConfigError::Invalid {
            what: "update public key",
            message: "--disk needs --update-public-key to check payload signatures".into(),
        })?;
    let public_key = read(&key_file)?;
    api::updates::public_key(&public_key).map_err(|e| ConfigError::Invalid {
        what: "update public key",
        message: format!("{}: {e}", key_file.display()),
    })?;
    let secs = |what: &'static str, flag: Option<u64>, file: Option<u64>, default: u64| match flag
        .or(file)
        .unwrap_or(default)
    {
        0 => Err(ConfigError::Invalid {
            what,
            message: "must be at least 1 second".into(),
        }),
        n => Ok(Duration::from_secs(n)),
    };
    let health_commands = if args.health_commands.is_empty() {
        file.health_commands.clone()
    } else {
        args.health_commands.clone()
    };
    Ok(Some(UpdateSettings {
        disk,
        channel,
        public_key,
        reboot_command: args
            .reboot_command
            .clone()
            .or_else(|| file.reboot_command.clone())
            .unwrap_or_else(|| DEFAULT_REBOOT_COMMAND.to_owned()),
        health_commands,
        interval: secs(
            "update interval",
            args.update_interval,
            file.update_interval,
            DEFAULT_UPDATE_INTERVAL,
        )?,
        health_deadline: secs(
            "health deadline",
            args.health_deadline,
            file.health_deadline,
            DEFAULT_HEALTH_DEADLINE,
        )?,
        drain_timeout: secs(
            "drain timeout",
            args.drain_timeout,
            file.drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
        )?,
    }))
}

/// Loads the file named by `args.config` (if any) and resolves the settings.
pub fn load(args: &RunArgs, env: &Environment) -> Result<Settings, ConfigError> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    resolve(args, &file, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment {
            docker_host: None,
            machine_id_file: Some("abc123\n".into()),
        }
    }

    fn parse(args: &[&str]) -> Cli {
        match Cli::try_parse_from(std::iter::once("shoal-agent").chain(args.iter().copied())) {
            Ok(c) => c,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s = resolve(&RunArgs::default(), &FileConfig::default(), &env()).expect("settings");
        assert_eq!(s.server, DEFAULT_SERVER);
        assert_eq!(s.machine_id, "abc123");
        assert_eq!(s.docker, DEFAULT_DOCKER);
        assert_eq!(s.local_endpoint.to_string(), "127.0.0.1:4001");
        assert_eq!(s.local_scope.prefix(), "/");
        assert_eq!(s.lease_ttl, Duration::from_secs(10));
        assert_eq!(s.token, None);
        assert!(s.metadata.is_empty());
    }

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file = FileConfig::parse(
            r#"
server = "http://10.0.0.1:2379"
machine-id = "from-file"
lease-ttl = 30
docker = "tcp://10.0.0.9:2375"
token = "file-token"
[metadata]
region = "eu"
"#,
            Path::new("agent.toml"),
        )
        .expect("file");
        let cli = parse(&["--machine-id", "from-flag", "--metadata", "disk=ssd, az=1"]);
        let s = resolve(&cli.run, &file, &env()).expect("settings");
        assert_eq!(s.server, "http://10.0.0.1:2379");
        assert_eq!(s.machine_id, "from-flag");
        assert_eq!(s.lease_ttl, Duration::from_secs(30));
        assert_eq!(s.docker, "tcp://10.0.0.9:2375");
        assert_eq!(s.token.as_deref(), Some("file-token"));
        assert_eq!(
            s.metadata,
            BTreeMap::from([("az".into(), "1".into()), ("disk".into(), "ssd".into())])
        );
        // Without a metadata flag the file's table is used.
        let s = resolve(&parse(&[]).run, &file, &env()).expect("settings");
        assert_eq!(s.metadata.get("region").map(String::as_str), Some("eu"));
    }

    #[test]
    fn docker_host_is_the_default_docker() {
        let e = Environment {
            docker_host: Some("tcp://127.0.0.1:2375".into()),
            ..env()
        };
        let s = resolve(&RunArgs::default(), &FileConfig::default(), &e).expect("settings");
        assert_eq!(s.docker, "tcp://127.0.0.1:2375");
        let cli = parse(&["--docker", "unix:///tmp/d.sock"]);
        let s = resolve(&cli.run, &FileConfig::default(), &e).expect("settings");
        assert_eq!(s.docker, "unix:///tmp/d.sock");
    }

    #[test]
    fn local_prefix_from_flag_or_file_never_reserved() {
        let file =
            FileConfig::parse("local-prefix = \"/apps\"\n", Path::new("a.toml")).expect("file");
        let s = resolve(&RunArgs::default(), &file, &env()).expect("settings");
        assert_eq!(s.local_scope.prefix(), "/apps");
        let s = resolve(&parse(&["--local-prefix", "/svc/"]).run, &file, &env()).expect("settings");
        assert_eq!(s.local_scope.prefix(), "/svc");
        assert!(matches!(
            resolve(&parse(&["--local-prefix", "/_shoal"]).run, &file, &env()),
            Err(ConfigError::Invalid {
                what: "local prefix",
                ..
            })
        ));
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let cli = parse(&["--token-file", path.to_str().expect("utf-8")]);
        let s = resolve(&cli.run, &FileConfig::default(), &env()).expect("settings");
        assert_eq!(s.token.as_deref(), Some("s3cret"));
        let missing = parse(&["--token-file", "/nonexistent/token"]);
        assert!(matches!(
            resolve(&missing.run, &FileConfig::default(), &env()),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn bad_values_are_refused() {
        let cases: &[&[&str]] = &[
            &["--metadata", "novalue"],
            &["--metadata", "=x"],
            &["--lease-ttl", "1"],
            &["--local-endpoint", "nowhere"],
            &["--server", "ftp://x:1"],
            &["--machine-id", "a/b"],
        ];
        for args in cases {
            let cli = parse(args);
            assert!(
                matches!(
                    resolve(&cli.run, &FileConfig::default(), &env()),
                    Err(ConfigError::Invalid { .. })
                ),
                "{args:?} accepted"
            );
        }
        let no_id = Environment::default();
        assert!(resolve(&RunArgs::default(), &FileConfig::default(), &no_id).is_err());
        assert!(matches!(
            FileConfig::parse("bogus = 1", Path::new("x.toml")),
            Err(ConfigError::File { .. })
        ));
    }

    #[test]
    fn updates_need_a_disk_and_a_trusted_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("public.pem");
        let (_, public) = api::updates::generate_keypair().expect("keys");
        std::fs::write(&key, public.as_bytes()).expect("write");
        let key = key.to_str().expect("utf-8");
        let s = resolve(&parse(&[]).run, &FileConfig::default(), &env()).expect("settings");
        assert_eq!(s.update, None, "no disk, no updates");
        let cli = parse(&["--disk", "/tmp/d.img", "--update-public-key", key]);
        let u = resolve(&cli.run, &FileConfig::default(), &env())
            .expect("settings")
            .update
            .expect("update settings");
        assert_eq!(u.channel, DEFAULT_CHANNEL);
        assert_eq!(u.reboot_command, DEFAULT_REBOOT_COMMAND);
        assert_eq!(u.interval, Duration::from_secs(DEFAULT_UPDATE_INTERVAL));
        assert_eq!(u.health_deadline, Duration::from_secs(120));
        assert_eq!(u.drain_timeout, Duration::from_secs(300));
        assert!(u.health_commands.is_empty());
        let file = FileConfig::parse(
            &format!(
                "disk = \"/dev/sda\"\nupdate-public-key = \"{key}\"\nchannel = \"beta\"\n\
                 health-commands = [\"true\"]\nupdate-interval = 5\n"
            ),
            Path::new("agent.toml"),
        )
        .expect("file");
        let cli = parse(&[
            "--health-command",
            "curl -f localhost",
            "--health-command",
            "false",
            "--reboot-command",
            "kill -TERM $PPID",
            "--drain-timeout",
            "7",
        ]);
        let u = resolve(&cli.run, &file, &env())
            .expect("settings")
            .update
            .expect("update settings");
        assert_eq!(u.disk, PathBuf::from("/dev/sda"));
        assert_eq!(u.channel, "beta");
        assert_eq!(u.health_commands, vec!["curl -f localhost", "false"]);
        assert_eq!(u.reboot_command, "kill -TERM $PPID");
        assert_eq!(u.interval, Duration::from_secs(5));
        assert_eq!(u.drain_timeout, Duration::from_secs(7));
        for bad in [
            vec!["--disk", "/d"],
            vec!["--disk", "/d", "--update-public-key", "/nonexistent.pem"],
            vec![
                "--disk",
                "/d",
                "--update-public-key",
                key,
                "--channel",
                "a/b",
            ],
            vec![
                "--disk",
                "/d",
                "--update-public-key",
                key,
                "--update-interval",
                "0",
            ],
        ] {
            assert!(
                resolve(&parse(&bad).run, &FileConfig::default(), &env()).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn disk_init_is_a_subcommand() {
        let cli = parse(&["disk", "init", "/tmp/x.img", "--usr-size", "8"]);
        assert!(matches!(cli.command, Some(Command::Disk(_))));
    }

    #[test]
    fn install_is_a_subcommand() {
        let cli = parse(&["install", "--server", "http://a:2379", "--dry-run"]);
        assert!(matches!(cli.command, Some(Command::Install(_))));
    }
}
