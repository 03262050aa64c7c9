//! The post-boot health checks of a new slot: the agent is registered (its
//! lease was written), Docker answers, every instance placed on this machine
//! runs its unit's current revision, and every configured health command
//! exits 0. One round checks them all; the loop repeats rounds until they
//! pass or the deadline passes.

use std::sync::Arc;
use std::time::Duration;

use api::Client;

use crate::docker::{ContainerInfo, Docker};
use crate::lease::{error_chain, LeaseState};
use crate::reconcile::{read_desired, DesiredInstance};

/// How long one health command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the checks need.
#[derive(Debug, Clone)]
pub struct Health {
    /// The cluster, for the placements on this machine.
    pub client: Client,
    /// The lease bookkeeping: registered once a renewal succeeded.
    pub lease: Arc<LeaseState>,
    /// The Docker engine.
    pub docker: Docker,
    /// Shell commands that must exit 0.
    pub commands: Vec<String>,
}

impl Health {
    /// One round of checks: `Ok` when healthy, else the first failure in words.
    pub async fn check(&self) -> Result<(), String> {
        if self.lease.last_renewal().is_none() {
            return Err("the machine is not registered yet".into());
        }
        if let Err(e) = self.docker.version().await {
            return Err(format!("docker is not reachable: {e}"));
        }
        let (desired, _) = read_desired(&self.client, self.docker.machine_id(), false)
            .await
            .map_err(|e| format!("cannot read this machine's placements: {}", error_chain(&e)))?;
        let containers = self
            .docker
            .list()
            .await
            .map_err(|e| format!("cannot list containers: {}", error_chain(&e)))?;
        if let Some(want) = desired.values().find(|w| !runs(w, &containers)) {
            return Err(format!(
                "unit instance {} is not running yet",
                want.instance
            ));
        }
        for cmd in &self.commands {
            run(cmd).await?;
        }
        Ok(())
    }
}

/// True when a container runs `want`'s instance at its current revision.
fn runs(want: &DesiredInstance, containers: &[ContainerInfo]) -> bool {
    containers
        .iter()
        .any(|c| c.instance == want.instance && c.revision == want.revision && c.is_running())
}

/// Runs `cmd` with `sh -c`; `Ok` when it exits 0 within the timeout.
pub async fn run(cmd: &str) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("health command {cmd:?} failed: {status}")),
        Ok(Err(e)) => Err(format!("health command {cmd:?} could not run: {e}")),
        Err(_) => Err(format!(
            "health command {cmd:?} took longer than {COMMAND_TIMEOUT:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(instance: &str, revision: u64, state: &str) -> ContainerInfo {
        ContainerInfo {
            instance: instance.into(),
            revision,
            state: state.into(),
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn an_instance_runs_only_at_its_revision() {
        let want = DesiredInstance {
            instance: "web@1".into(),
            unit: api::fleet::Unit::new("web", "busybox"),
            revision: 7,
            placement_index: 1,
        };
        assert!(runs(&want, &[container("web@1", 7, "running")]));
        assert!(!runs(&want, &[container("web@1", 6, "running")]));
        assert!(!runs(&want, &[container("web@1", 7, "exited")]));
        assert!(!runs(&want, &[container("web@2", 7, "running")]));
    }

    #[tokio::test]
    async fn commands_pass_only_on_exit_zero() {
        assert_eq!(run("true").await, Ok(()));
        let err = run("exit 3").await.expect_err("fails");
        assert!(
            err.contains("exit 3") || err.contains("exit status: 3"),
            "{err}"
        );
    }
}
