//! Fleet commands, as fleetctl names them: `submit`, `start`, `stop`,
//! `destroy`, `list-units`, `list-machines`, `status`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use api::fleet::{Machine, Unit, UnitFormat, UnitStatus};
use api::Client;
use clap::Args;

use crate::output::Out;

/// `submit FILE...`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Unit files, TOML (`.toml`) or JSON (`.json`); a unit's name defaults to the file's stem.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also start the units (desired state `launched`).
    #[arg(long)]
    pub start: bool,
}

/// `start|stop|destroy|status NAME...`.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Unit names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `journal NAME`.
#[derive(Debug, Args)]
pub struct JournalArgs {
    /// Unit name, or an instance (`name@N`).
    pub name: String,
    /// Which instance (default: the one `name` names, else the unit's first placed instance).
    #[arg(long)]
    pub instance: Option<String>,
    /// Keep printing new output until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long)]
    pub lines: Option<u64>,
}

/// Runs `journal`: streams the container's logs through the agent running it.
pub async fn journal(client: &Client, args: JournalArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let unit = args
        .name
        .split_once('@')
        .map_or(args.name.as_str(), |(u, _)| u);
    let named = args.name.contains('@').then_some(args.name.as_str());
    let instance = args.instance.as_deref().or(named);
    let mut resp = client
        .journal(unit, instance, args.follow, args.lines)
        .await
        .with_context(|| format!("journal of {}", args.name))?;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = resp.chunk().await.context("read the journal")? {
        stdout
            .write_all(&chunk)
            .and_then(|()| stdout.flush())
            .context("write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a unit file: TOML or JSON by extension, with the file stem as default name.
pub fn parse_unit_file(path: &std::path::Path, text: &str) -> anyhow::Result<Unit> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => UnitFormat::Json,
        Some("toml") | None => UnitFormat::Toml,
        Some(other) => bail!(
            "{}: unit files are .toml or .json, not .{other}",
            path.display()
        ),
    };
    let stem = path.file_stem().and_then(|s| s.to_str());
    api::fleet::parse_unit(text, format, stem).with_context(|| format!("read {}", path.display()))
}

/// Runs `submit`.
pub async fn submit(client: &Client, out: &Out, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    for path in &args.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut unit = parse_unit_file(path, &text)?;
        if args.start {
            unit.desired = api::fleet::Desired::Launched;
        }
        let status = client
            .submit_unit(&unit)
            .await
            .with_context(|| format!("submit {}", unit.name))?;
        out.emit(&status, || {
            format!(
                "Unit {} submitted (revision {})",
                status.unit.name, status.revision
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `start` (`launched = true`) or `stop`.
pub async fn set_desired(
    client: &Client,
    out: &Out,
    args: NamesArgs,
    launched: bool,
) -> anyhow::Result<ExitCode> {
    for name in &args.names {
        let status = client
            .set_unit_desired(name, launched)
            .await
            .with_context(|| format!("change {name}"))?;
        let verb = if launched { "launched" } else { "inactive" };
        out.emit(&status, || format!("Unit {name} {verb}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `destroy`.
pub async fn destroy(client: &Client, out: &Out, args: NamesArgs) -> anyhow::Result<ExitCode> {
    for name in &args.names {
        client
            .destroy_unit(name)
            .await
            .with_context(|| format!("destroy {name}"))?;
        out.emit(&serde_json::json!({ "destroyed": name }), || {
            format!("Destroyed {name}")
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `list-units`.
pub async fn list_units(client: &Client, out: &Out) -> anyhow::Result<ExitCode> {
    let units = client.units().await.context("list units")?;
    out.emit(&units, || units_table(&units))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `status NAME...`.
pub async fn status(client: &Client, out: &Out, args: NamesArgs) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    for name in &args.names {
        all.push(
            client
                .unit(name)
                .await
                .with_context(|| format!("status of {name}"))?,
        );
    }
    out.emit(&all, || units_table(&all))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `list-machines`.
pub async fn list_machines(client: &Client, out: &Out) -> anyhow::Result<ExitCode> {
    let machines = client.machines().await.context("list machines")?;
    out.emit(&machines, || machines_table(&machines))?;
    Ok(ExitCode::SUCCESS)
}

/// One line per instance: desired and actual side by side, as fleetctl prints.
pub fn units_table(units: &[UnitStatus]) -> String {
    let mut lines = vec![format!(
        "{:<24} {:<10} {:<18} {:<10} {}",
        "INSTANCE", "DESIRED", "MACHINE", "STATE", "DETAIL"
    )];
    for u in units {
        let desired = serde_json::to_value(u.unit.desired)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if u.instances.is_empty() {
            lines.push(format!(
                "{:<24} {:<10} {:<18} {:<10} {}",
                u.unit.name, desired, "-", "-", ""
            ));
        }
        for i in &u.instances {
            let machine = i.machine_id.as_deref().map(short).unwrap_or("-");
            let (state, detail) = match (&i.actual, &i.unplaced_reason) {
                (Some(a), _) if !a.error.is_empty() => (a.state.as_str(), a.error.clone()),
                (Some(a), _) => (a.state.as_str(), a.ports.join(",")),
                (None, Some(why)) => ("unplaced", why.clone()),
                (None, None) => ("-", String::new()),
            };
            lines.push(format!(
                "{:<24} {:<10} {:<18} {:<10} {}",
                i.instance, desired, machine, state, detail
            ));
        }
    }
    lines.join("\n")
}

/// One line per machine, as fleetctl's `list-machines`.
pub fn machines_table(machines: &[Machine]) -> String {
    let mut lines = vec![format!(
        "{:<18} {:<20} {:<10} {}",
        "MACHINE", "HOSTNAME", "STATE", "METADATA"
    )];
    for m in machines {
        let meta: Vec<String> = m.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let state = if m.draining { "draining" } else { "up" };
        lines.push(format!(
            "{:<18} {:<20} {:<10} {}",
            short(&m.id),
            m.hostname,
            state,
            meta.join(",")
        ));
    }
    lines.join("\n")
}

/// A machine id shortened as fleetctl does (first 16 characters).
fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_unit_files_parse_with_placement_rules() -> anyhow::Result<()> {
        let text = r#"
            image = "shoal-test/busybox"
            command = ["httpd", "-f", "-p", "8080"]
            restart = "on-failure"
            memory_mb = 64
            [env]
            MODE = "api"
            [[ports]]
            container = 8080
            [placement]
            replicas = 3
            conflicts = ["api*"]
            machine-metadata = { region = ["eu", "us"] }
        "#;
        let unit = parse_unit_file(std::path::Path::new("units/api.toml"), text)?;
        assert_eq!(unit.name, "api");
        assert_eq!(unit.placement.replicas, 3);
        assert_eq!(unit.placement.conflicts, vec!["api*".to_owned()]);
        assert_eq!(
            unit.placement.machine_metadata["region"],
            vec!["eu".to_owned(), "us".to_owned()]
        );
        assert_eq!(unit.ports[0].protocol, "tcp");
        assert_eq!(unit.restart, api::fleet::RestartPolicy::OnFailure);
        Ok(())
    }

    #[test]
    fn bad_unit_files_are_refused() {
        assert!(parse_unit_file(std::path::Path::new("x.toml"), "image = 3").is_err());
        assert!(parse_unit_file(std::path::Path::new("x.yaml"), "").is_err());
        assert!(
            parse_unit_file(std::path::Path::new("x.json"), "{}").is_err(),
            "image is required"
        );
    }
}
