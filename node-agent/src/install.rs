//! `shoal-agent install`: writes `/etc/shoal/agent.toml`,
//! `/etc/systemd/system/shoal-agent.service` and, for OS updates, the
//! trusted update key `/etc/shoal/update-key.pem` (under `--prefix` when
//! given), and prints what it did; `--dry-run` prints the files without
//! writing. The file contents are pure functions ([`config_file`],
//! [`systemd_unit`], [`update_key`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::{parse_metadata, ConfigError, FileConfig};

/// Where the config file lives on the installed host.
pub const CONFIG_PATH: &str = "/etc/shoal/agent.toml";
/// Where the systemd unit lives on the installed host.
pub const UNIT_PATH: &str = "/etc/systemd/system/shoal-agent.service";
/// Where the trusted update public key lives on the installed host.
pub const UPDATE_KEY_PATH: &str = "/etc/shoal/update-key.pem";
/// The agent binary the unit runs unless `--binary` is given.
pub const DEFAULT_BINARY: &str = "/usr/local/bin/shoal-agent";

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A flag value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The update public key cannot be read or is not an ed25519 PEM key.
    #[error("update public key {path}: {message}")]
    Key {
        /// The key file given.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The config could not be rendered as TOML.
    #[error("cannot render the config file")]
    Render(#[from] toml::ser::Error),
    /// A file or directory could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// Flags of `shoal-agent install`.
#[derive(Debug, Clone, Default, Args)]
pub struct InstallArgs {
    /// Cluster endpoints, comma separated.
    #[arg(long)]
    pub server: String,
    /// Bearer token for the cluster.
    #[arg(long)]
    pub token: Option<String>,
    /// PEM CA file `https` servers are verified against (its path goes in the config).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Machine metadata, `key=value,key=value`.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Machine id to pin (default: /etc/machine-id at run time).
    #[arg(long)]
    pub machine_id: Option<String>,
    /// Lease TTL in seconds.
    #[arg(long)]
    pub lease_ttl: Option<u64>,
    /// The disk holding the A/B OS slots: enables OS updates (needs `--update-public-key`).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// The update channel to follow.
    #[arg(long)]
    pub channel: Option<String>,
    /// PEM public key update payloads must be signed with; installed as the agent's trusted key.
    #[arg(long)]
    pub update_public_key: Option<PathBuf>,
    /// The agent binary the unit starts.
    #[arg(long, default_value = DEFAULT_BINARY)]
    pub binary: PathBuf,
    /// Print what would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write under this root instead of `/` (for tests and images).
    #[arg(long)]
    pub prefix: Option<PathBuf>,
}

/// The agent config file for these flags.
pub fn config_file(args: &InstallArgs) -> Result<String, InstallError> {
    api::client::parse_endpoints(&args.server).map_err(|e| ConfigError::Invalid {
        what: "server",
        message: e.to_string(),
    })?;
    if args.disk.is_some() && args.update_public_key.is_none() {
        return Err(ConfigError::Invalid {
            what: "disk",
            message: "--disk needs --update-public-key to check payload signatures".into(),
        }
        .into());
    }
    let file = FileConfig {
        server: Some(args.server.clone()),
        token: args.token.clone(),
        ca_file: args.ca_file.clone(),
        machine_id: args.machine_id.clone(),
        lease_ttl: args.lease_ttl,
        disk: args.disk.clone(),
        channel: args.channel.clone(),
        update_public_key: args
            .update_public_key
            .as_ref()
            .map(|_| PathBuf::from(UPDATE_KEY_PATH)),
        metadata: match &args.metadata {
            Some(m) => parse_metadata(m)?,
            None => Default::default(),
        },
        ..FileConfig::default()
    };
    let body = toml::to_string(&file)?;
    Ok(format!(
        "# shoal-agent configuration, written by `shoal-agent install`.\n\
         # Flags and SHOAL_* environment variables override these values.\n{body}"
    ))
}

/// The PEM text of the update key `--update-public-key` names, checked to be
/// an ed25519 public key; `None` without the flag.
pub fn update_key(args: &InstallArgs) -> Result<Option<String>, InstallError> {
    let Some(path) = &args.update_public_key else {
        return Ok(None);
    };
    let err = |message: String| InstallError::Key {
        path: path.clone(),
        message,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    api::updates::public_key(&pem).map_err(|e| err(e.to_string()))?;
    Ok(Some(pem))
}

/// The systemd unit that runs `binary` with the installed config.
pub fn systemd_unit(binary: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=Shoal node agent\n\
         After=network-online.target docker.service\n\
         Wants=network-online.target docker.service\n\
         \n\
         [Service]\n\
         ExecStart={} --config {CONFIG_PATH}\n\
         Restart=always\n\
         RestartSec=5\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=30\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        binary.display()
    )
}

fn under(prefix: Option<&Path>, path: &str) -> PathBuf {
    match prefix {
        Some(p) => p.join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), InstallError> {
    let err = |source| InstallError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    // `mode` applies only to new files; make an existing one match too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

/// Installs (or, with `--dry-run`, describes) the agent; reports to `out`.
pub fn run(args: &InstallArgs, out: &mut dyn Write) -> Result<(), InstallError> {
    let config = config_file(args)?;
    let key = update_key(args)?;
    let unit = systemd_unit(&args.binary);
    let config_path = under(args.prefix.as_deref(), CONFIG_PATH);
    let unit_path = under(args.prefix.as_deref(), UNIT_PATH);
    let key_path = under(args.prefix.as_deref(), UPDATE_KEY_PATH);
    let say = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    if args.dry_run {
        say(
            out,
            format!("would write {} (mode 0600):", config_path.display()),
        );
        say(out, config);
        say(out, format!("would write {}:", unit_path.display()));
        say(out, unit);
        if let Some(key) = key {
            say(out, format!("would write {}:", key_path.display()));
            say(out, key);
        }
        say(
            out,
            "then: systemctl daemon-reload && systemctl enable --now shoal-agent".into(),
        );
        return Ok(());
    }
    write_file(&config_path, &config, 0o600)?;
    say(out, format!("wrote {}", config_path.display()));
    write_file(&unit_path, &unit, 0o644)?;
    say(out, format!("wrote {}", unit_path.display()));
    if let Some(key) = key {
        write_file(&key_path, &key, 0o644)?;
        say(out, format!("wrote {}", key_path.display()));
    }
    say(
        out,
        "next: systemctl daemon-reload && systemctl enable --now shoal-agent".into(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn args(prefix: Option<PathBuf>, dry_run: bool) -> InstallArgs {
        InstallArgs {
            server: "http://10.0.0.1:2379,http://10.0.0.2:2379".into(),
            token: Some("s3cret".into()),
            ca_file: Some(PathBuf::from("/etc/shoal/ca.pem")),
            metadata: Some("region=eu,disk=ssd".into()),
            machine_id: None,
            lease_ttl: Some(15),
            disk: None,
            channel: None,
            update_public_key: None,
            binary: PathBuf::from(DEFAULT_BINARY),
            dry_run,
            prefix,
        }
    }

    #[test]
    fn config_file_round_trips_into_the_agent_config() {
        let text = config_file(&args(None, false)).expect("config");
        let parsed = FileConfig::parse(&text, Path::new("agent.toml")).expect("parse");
        assert_eq!(
            parsed.server.as_deref(),
            Some("http://10.0.0.1:2379,http://10.0.0.2:2379")
        );
        assert_eq!(parsed.token.as_deref(), Some("s3cret"));
        assert_eq!(parsed.ca_file, Some(PathBuf::from("/etc/shoal/ca.pem")));
        assert_eq!(parsed.lease_ttl, Some(15));
        assert_eq!(
            parsed.metadata.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(parsed.metadata.get("disk").map(String::as_str), Some("ssd"));
        assert_eq!(parsed.machine_id, None);
    }

    #[test]
    fn unit_runs_the_agent_with_the_config() {
        let unit = systemd_unit(Path::new("/opt/shoal/shoal-agent"));
        assert!(unit.contains("ExecStart=/opt/shoal/shoal-agent --config /etc/shoal/agent.toml\n"));
        assert!(unit.contains("Restart=always\n"));
        assert!(unit.contains("After=network-online.target docker.service\n"));
        assert!(unit.contains("[Install]\nWantedBy=multi-user.target\n"));
    }

    #[test]
    fn install_writes_both_files_under_the_prefix() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut out = Vec::new();
        run(&args(Some(root.path().to_owned()), false), &mut out).expect("install");
        let config_path = root.path().join("etc/shoal/agent.toml");
        let unit_path = root.path().join("etc/systemd/system/shoal-agent.service");
        let config = std::fs::read_to_string(&config_path).expect("config");
        assert!(config.contains("token = \"s3cret\""));
        let mode = std::fs::metadata(&config_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let unit = std::fs::read_to_string(&unit_path).expect("unit");
        assert_eq!(unit, systemd_unit(Path::new(DEFAULT_BINARY)));
        let said = String::from_utf8(out).expect("utf-8");
        assert!(said.contains(&format!("wrote {}", config_path.display())));
        assert!(said.contains(&format!("wrote {}", unit_path.display())));
    }

    #[test]
    fn dry_run_writes_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut out = Vec::new();
        run(&args(Some(root.path().to_owned()), true), &mut out).expect("install");
        assert!(!root.path().join("etc").exists());
        let said = String::from_utf8(out).expect("utf-8");
        assert!(said.contains("would write"));
        assert!(said.contains("ExecStart="));
        assert!(said.contains("server = "));
    }

    #[test]
    fn the_update_key_is_installed_and_trusted_by_the_config() {
        let root = tempfile::tempdir().expect("tempdir");
        let (_secret, public_pem) = api::updates::generate_keypair().expect("keys");
        let given = root.path().join("public.pem");
        std::fs::write(&given, &public_pem).expect("write key");
        let mut a = args(Some(root.path().join("host")), false);
        a.disk = Some(PathBuf::from("/dev/vda"));
        a.channel = Some("beta".into());
        a.update_public_key = Some(given);
        run(&a, &mut Vec::new()).expect("install");
        let host = root.path().join("host");
        let installed =
            std::fs::read_to_string(host.join("etc/shoal/update-key.pem")).expect("installed key");
        assert_eq!(installed, public_pem);
        let config = std::fs::read_to_string(host.join("etc/shoal/agent.toml")).expect("config");
        let parsed = FileConfig::parse(&config, Path::new("agent.toml")).expect("parse");
        assert_eq!(
            parsed.update_public_key,
            Some(PathBuf::from(UPDATE_KEY_PATH))
        );
        assert_eq!(parsed.disk, Some(PathBuf::from("/dev/vda")));
        assert_eq!(parsed.channel.as_deref(), Some("beta"));
    }

    #[test]
    fn updates_need_a_valid_key() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut a = args(None, true);
        a.disk = Some(PathBuf::from("/dev/vda"));
        assert!(run(&a, &mut Vec::new()).is_err(), "a disk without a key");
        let junk = root.path().join("junk.pem");
        std::fs::write(&junk, "not a key").expect("write");
        a.update_public_key = Some(junk);
        match run(&a, &mut Vec::new()) {
            Err(InstallError::Key { message, .. }) => assert!(!message.is_empty()),
            other => panic!("a junk key must be refused: {other:?}"),
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        let mut a = args(None, true);
        a.metadata = Some("nokey".into());
        assert!(run(&a, &mut Vec::new()).is_err());
        let mut a = args(None, true);
        a.server = "ftp://x".into();
        assert!(run(&a, &mut Vec::new()).is_err());
    }
}
