//! `update ...`: the OS update service. `keygen` and `sign` make and use the
//! payload signing key locally; `upload`, `channel`, `pause`, `resume`, `halt`,
//! `status` and `history` talk to `/api/v1/updates`.
//!
//! `update KEY VALUE` (no subcommand) stays etcdctl's update of a key; a key
//! named like a subcommand needs its leading slash (`update /status x`).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use api::updates::{Channel, ChannelUpdate, HistoryEvent, MachineUpdate, UploadQuery};
use api::Client;
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt as _;

use crate::keys;
use crate::output::Out;

/// File name of the secret key `keygen` writes.
pub const SECRET_FILE: &str = "signing.pem";
/// File name of the public key `keygen` writes.
pub const PUBLIC_FILE: &str = "public.pem";
/// Bytes read from a payload file at a time.
const CHUNK: usize = 256 * 1024;

/// `update ...`: an update-service subcommand, or KEY VALUE to update a key.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UpdateCommand {
    /// An update-service subcommand; absent to update a key.
    #[command(subcommand)]
    pub sub: Option<UpdateSub>,
    /// The key form's arguments.
    #[command(flatten)]
    pub key: Option<keys::UpdateArgs>,
}

/// The update-service subcommands.
#[derive(Debug, Subcommand)]
pub enum UpdateSub {
    /// Make an ed25519 signing key pair (signing.pem, public.pem).
    Keygen {
        /// Directory to write the keys to.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Print the signature of a payload file.
    Sign {
        /// The payload file.
        file: PathBuf,
        /// The secret key (signing.pem).
        #[arg(long)]
        key: PathBuf,
        /// The version the payload installs.
        #[arg(long)]
        version: String,
    },
    /// Upload a payload, signed with --key or carrying --signature.
    Upload {
        /// The payload file.
        file: PathBuf,
        /// The version the payload installs.
        #[arg(long)]
        version: String,
        /// Also point this channel at the version.
        #[arg(long)]
        channel: Option<String>,
        /// Sign with this secret key (signing.pem).
        #[arg(
            long,
            conflicts_with = "signature",
            required_unless_present = "signature"
        )]
        key: Option<PathBuf>,
        /// A signature made with `update sign`.
        #[arg(long)]
        signature: Option<String>,
    },
    /// Show a channel, or create or change it with the options given.
    Channel(ChannelArgs),
    /// Pause a channel's rollout: no machine may start rebooting.
    Pause {
        /// Channel name.
        name: String,
    },
    /// Resume a channel's rollout; also clears a halt.
    Resume {
        /// Channel name.
        name: String,
    },
    /// Halt a channel's rollout by hand, as a failure threshold would; `resume` clears it.
    Halt {
        /// Channel name.
        name: String,
        /// Why (shown by `update status` and recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show channels with their policy and every machine's update state.
    Status {
        /// Only this channel.
        name: Option<String>,
    },
    /// Print the update history, oldest first.
    History {
        /// How many of the newest events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// `update channel NAME [options]`.
#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// Channel name.
    pub name: String,
    /// Point the channel at this uploaded version.
    #[arg(long)]
    pub version: Option<String>,
    /// Most machines rebooting at once (the reboot semaphore's limit).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_reboots: Option<u32>,
    /// Machines that must update healthy before the rest start.
    #[arg(long)]
    pub canaries: Option<u32>,
    /// A reboot window, e.g. "Mon..Fri 04:00 2h" (repeat for more; replaces the old ones).
    #[arg(long = "window")]
    pub windows: Vec<String>,
    /// Remove every reboot window (reboot any time).
    #[arg(long, conflicts_with = "windows")]
    pub no_windows: bool,
    /// IANA time zone of the windows, e.g. Europe/Berlin.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Failed or rolled-back machines that halt the rollout.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub failure_threshold: Option<u32>,
}

impl ChannelArgs {
    /// The change these options ask for (empty when only showing).
    fn update(&self) -> ChannelUpdate {
        ChannelUpdate {
            version: self.version.clone(),
            max_reboots: self.max_reboots,
            canaries: self.canaries,
            windows: if self.no_windows {
                Some(Vec::new())
            } else {
                (!self.windows.is_empty()).then(|| self.windows.clone())
            },
            timezone: self.timezone.clone(),
            failure_threshold: self.failure_threshold,
        }
    }
}

/// Runs `update`: the key form or a subcommand.
pub async fn run(client: &Client, out: &Out, args: UpdateCommand) -> anyhow::Result<ExitCode> {
    let sub = match (args.sub, args.key) {
        (Some(sub), _) => sub,
        (None, Some(key)) => return keys::update(client, out, key).await,
        (None, None) => bail!("update needs KEY VALUE or a subcommand (see --help)"),
    };
    match sub {
        UpdateSub::Keygen { out: dir, force } => keygen(out, &dir, force)?,
        UpdateSub::Sign { file, key, version } => {
            let (sha256, size) = hash_file(&file)?;
            let signature = sign_with(&key, &version, size, &sha256)?;
            out.emit(
                &serde_json::json!({
                    "version": version, "size": size, "sha256": sha256, "signature": signature
                }),
                || signature.clone(),
            )?;
        }
        UpdateSub::Upload {
            file,
            version,
            channel,
            key,
            signature,
        } => upload(client, out, &file, version, channel, key, signature).await?,
        UpdateSub::Channel(a) => {
            let update = a.update();
            let channel = if update == ChannelUpdate::default() {
                client.channel(&a.name).await
            } else {
                client.update_channel(&a.name, &update).await
            }
            .with_context(|| format!("channel {}", a.name))?;
            out.emit(&channel, || channel_text(&channel))?;
        }
        UpdateSub::Pause { name } => pause(client, out, &name, true).await?,
        UpdateSub::Resume { name } => pause(client, out, &name, false).await?,
        UpdateSub::Halt { name, reason } => {
            let channel = client
                .halt_channel(&name, reason.as_deref())
                .await
                .with_context(|| format!("halt channel {name}"))?;
            out.emit(&channel, || channel_text(&channel))?;
        }
        UpdateSub::Status { name } => status(client, out, name.as_deref()).await?,
        UpdateSub::History { limit } => {
            let events = client
                .update_history(limit)
                .await
                .context("update history")?;
            out.emit(&events, || history_text(&events))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a new key pair to `dir`; the secret key is readable by its owner only.
fn keygen(out: &Out, dir: &Path, force: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let secret_path = dir.join(SECRET_FILE);
    let public_path = dir.join(PUBLIC_FILE);
    if !force && (secret_path.exists() || public_path.exists()) {
        bail!(
            "{} already holds keys; pass --force to replace them",
            dir.display()
        );
    }
    let (secret, public) = api::updates::generate_keypair().context("generate a key pair")?;
    // Remove first, so an existing file with looser permissions is not reused.
    let _ = std::fs::remove_file(&secret_path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .with_context(|| format!("create {}", secret_path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", secret_path.display()))?;
    std::fs::write(&public_path, public.as_bytes())
        .with_context(|| format!("write {}", public_path.display()))?;
    out.emit(
        &serde_json::json!({
            "secret": secret_path.display().to_string(),
            "public": public_path.display().to_string(),
        }),
        || {
            format!(
                "Wrote {} (keep it secret) and {} (give it to servers and agents)",
                secret_path.display(),
                public_path.display()
            )
        },
    )
}

/// SHA-256 (hex) and length of a file.
pub fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Signs a payload's manifest with the secret key file at `key`.
fn sign_with(key: &Path, version: &str, size: u64, sha256: &str) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(key).with_context(|| format!("read key {}", key.display()))?;
    api::updates::sign(&pem, version, size, sha256)
        .with_context(|| format!("sign with {}", key.display()))
}

/// The file's bytes as a stream of chunks, opened when first polled.
fn file_stream(path: PathBuf) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold(None, move |file: Option<tokio::fs::File>| {
        let path = path.clone();
        async move {
            let mut file = match file {
                Some(f) => f,
                None => tokio::fs::File::open(&path).await?,
            };
            let mut buf = vec![0u8; CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), Some(file))))
        }
    })
}

/// Runs `upload`: signs (if given a key), then streams the file with a progress bar.
async fn upload(
    client: &Client,
    out: &Out,
    file: &Path,
    version: String,
    channel: Option<String>,
    key: Option<PathBuf>,
    signature: Option<String>,
) -> anyhow::Result<()> {
    let (sha256, size) = hash_file(file)?;
    let signature = match (key, signature) {
        (Some(key), _) => sign_with(&key, &version, size, &sha256)?,
        (None, Some(s)) => s,
        (None, None) => bail!("give --key to sign the payload, or --signature"),
    };
    let bar = if out.is_json() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(size)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    bar.set_message(format!("uploading {version}"));
    let query = UploadQuery {
        version: version.clone(),
        signature,
        channel,
    };
    let path = file.to_path_buf();
    let progress = bar.clone();
    let result = client
        .upload_payload(
            &query,
            || file_stream(path.clone()),
            move |sent| progress.set_position(sent),
        )
        .await;
    bar.finish_and_clear();
    let meta = result.with_context(|| format!("upload {} as {version}", file.display()))?;
    if meta.sha256 != sha256 {
        bail!(
            "the server stored sha256 {} but the file hashes to {sha256}: the file changed during the upload",
            meta.sha256
        );
    }
    out.emit(&meta, || {
        let mut line = format!(
            "Uploaded {} ({} bytes, sha256 {})",
            meta.version, meta.size, meta.sha256
        );
        if let Some(c) = &query.channel {
            line.push_str(&format!("; channel {c} now points at it"));
        }
        line
    })
}

/// Runs `pause` (`paused = true`) or `resume`.
async fn pause(client: &Client, out: &Out, name: &str, paused: bool) -> anyhow::Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let channel = client
        .pause_channel(name, paused)
        .await
        .with_context(|| format!("{verb} channel {name}"))?;
    out.emit(&channel, || channel_text(&channel))
}

/// Runs `status`: channels with their machines.
async fn status(client: &Client, out: &Out, name: Option<&str>) -> anyhow::Result<()> {
    let channels = match name {
        Some(n) => vec![client
            .channel(n)
            .await
            .with_context(|| format!("channel {n}"))?],
        None => client.channels().await.context("list channels")?,
    };
    let machines = client
        .update_machines(name)
        .await
        .context("list machines' update states")?;
    let body = serde_json::json!({ "channels": channels, "machines": machines });
    out.emit(&body, || status_text(&channels, &machines))
}

/// A channel and its policy on a few lines.
pub fn channel_text(c: &Channel) -> String {
    let p = &c.policy;
    let windows = if p.windows.is_empty() {
        "any time".to_owned()
    } else {
        p.windows.join(", ")
    };
    let mut state = Vec::new();
    if p.paused {
        state.push("paused".to_owned());
    }
    if p.halted {
        state.push(format!("halted: {}", p.halt_reason));
    }
    if state.is_empty() {
        state.push("rolling".to_owned());
    }
    format!(
        "channel {}: version={} ({})\n  max_reboots={} canaries={} failure_threshold={} windows={} timezone={}",
        c.name,
        c.version.as_deref().unwrap_or("-"),
        state.join(", "),
        p.max_reboots,
        p.canaries,
        p.failure_threshold,
        windows,
        p.timezone
    )
}

/// Channels, then one line per machine.
pub fn status_text(channels: &[Channel], machines: &[MachineUpdate]) -> String {
    let mut lines: Vec<String> = channels.iter().map(channel_text).collect();
    lines.push(format!(
        "{:<20} {:<10} {:<12} {:<17} {:<12} {:<8} {:<20} {}",
        "MACHINE", "CHANNEL", "VERSION", "STATE", "TARGET", "PROCEED", "SINCE", "ERROR"
    ));
    for m in machines {
        lines.push(format!(
            "{:<20} {:<10} {:<12} {:<17} {:<12} {:<8} {:<20} {}",
            m.machine_id,
            m.channel,
            m.version,
            m.state.as_str(),
            m.target.as_deref().unwrap_or("-"),
            if m.proceed { "yes" } else { "no" },
            m.since.format("%Y-%m-%d %H:%M:%S"),
            m.error
        ));
    }
    lines.join("\n")
}

/// One line per history event.
pub fn history_text(events: &[HistoryEvent]) -> String {
    events
        .iter()
        .map(|e| {
            let mut line = format!("{} {}", e.at.format("%Y-%m-%dT%H:%M:%SZ"), e.kind);
            for (k, v) in [
                ("channel", &e.channel),
                ("machine", &e.machine),
                ("version", &e.version),
            ] {
                if let Some(v) = v {
                    line.push_str(&format!(" {k}={v}"));
                }
            }
            if !e.detail.is_empty() {
                line.push_str(&format!(" {}", e.detail));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_options_become_a_partial_update() {
        let a = ChannelArgs {
            name: "stable".into(),
            version: None,
            max_reboots: Some(2),
            canaries: None,
            windows: vec![],
            no_windows: false,
            timezone: None,
            failure_threshold: None,
        };
        assert_eq!(
            a.update(),
            ChannelUpdate {
                max_reboots: Some(2),
                ..ChannelUpdate::default()
            }
        );
        let clear = ChannelArgs {
            no_windows: true,
            max_reboots: None,
            ..a
        };
        assert_eq!(clear.update().windows, Some(vec![]));
    }

    #[test]
    fn files_hash_like_sha256sum() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("shoalctl-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("payload");
        std::fs::write(&path, b"test")?;
        let (sha, size) = hash_file(&path)?;
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(
            sha,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(size, 4);
        Ok(())
    }
}
