//! What the benchmark drivers' command lines share (`placement-bench`,
//! `rollout-bench`, `dashboard-bench`, `cluster-bench`): the workspace's paths
//! their defaults point at and a parser for durations given as whole numbers.
//! Included with `#[path = "common/cli.rs"] mod cli;` (`"../common/cli.rs"` from
//! `cluster-bench/main.rs`).

use std::num::ParseIntError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The workspace root (the `tests` package's parent), canonical if it resolves.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// The release `shoal-server` of this workspace: the default `--server` (`--shoal`).
pub fn release_server() -> PathBuf {
    workspace_root().join("target/release/shoal-server")
}

/// A clap `value_parser` for a whole number of `unit`s: `Duration::from_secs`
/// for `SECS` flags, `Duration::from_millis` for `MS` flags.
pub fn duration(
    unit: fn(u64) -> Duration,
) -> impl Fn(&str) -> Result<Duration, ParseIntError> + Clone + Send + Sync + 'static {
    move |s| s.parse().map(unit)
}
