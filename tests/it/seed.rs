//! The example the project started from, end to end: two load-balancer
//! units and six API-server units on three machines, the load balancers
//! never on one machine, and their upstream lists kept current by watching
//! the key space as API servers come and go.
//!
//! Every container runs on the host network and finds the cluster through
//! its agent's local endpoint (`$SHOAL_LOCAL_ENDPOINT`, etcd v2 on loopback):
//! - an API server serves HTTP on its own port and announces
//!   `/services/api/<instance>` = `127.0.0.1:<port>` with a 5 s TTL, refreshed
//!   (`refresh=true`, which does not wake watchers) about every two seconds;
//! - a load balancer reads `/services/api`, prints `upstreams: <sorted list>`
//!   whenever the list changes, and long-polls the directory from the next index.
//!
//! The test reads what each load balancer printed through `shoalctl journal`,
//! checks every upstream answers, scales the API servers from 6 to 3 and
//! sees both load balancers drop the three that left.
//! Needs Docker: fails (does not skip) when `SHOAL_REQUIRE_DOCKER=1`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use crate::agents::{
    destroy_all, remove_containers, running, submit, wait_machines, wait_unit, Agent, FleetRun,
    IMAGE,
};
use crate::harness::{free_port, shoalctl_ok};

/// The API server: an HTTP server on the `$SHOAL_INSTANCE_INDEX`th port of
/// `$API_PORTS`, announced under a TTL and kept alive by refreshes.
const API_SERVER: &str = r#"
set -- $API_PORTS
eval port=\${$SHOAL_INSTANCE_INDEX}
mkdir -p /tmp/www
echo "$SHOAL_INSTANCE on $SHOAL_MACHINE_ID" > /tmp/www/index.html
httpd -p 127.0.0.1:$port -h /tmp/www
put() {
  body="$1"
  # stdin stays open until the answer is in: a half-closed request is dropped by the server.
  { printf 'PUT /v2/keys/services/api/%s HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s' \
    "$SHOAL_INSTANCE" ${#body} "$body"; sleep 1; } | timeout 5 nc ${SHOAL_LOCAL_ENDPOINT%:*} ${SHOAL_LOCAL_ENDPOINT#*:} | head -n 1
}
while true; do
  case "$(put 'ttl=5&refresh=true&prevExist=true')" in
    *" 200 "*) ;;
    *) put "value=127.0.0.1:$port&ttl=5" > /dev/null ;;
  esac
  sleep 1
done
"#;

/// The load balancer: prints its upstream list on every change, watching
/// `/services/api` from the index after the one it read.
const LOAD_BALANCER: &str = r#"
url="http://$SHOAL_LOCAL_ENDPOINT/v2/keys/services/api"
last=none
while true; do
  if wget -S -q -O /tmp/list "$url?recursive=true&sorted=true" 2> /tmp/headers; then
    list=$(busybox grep -o '"value":"[^"]*"' /tmp/list | busybox sed 's/"value":"//; s/"$//' | busybox sort | busybox tr '\n' ' ')
    if [ "$list" != "$last" ]; then
      echo "upstreams: $list"
      last="$list"
    fi
    index=$(busybox grep -i 'x-etcd-index' /tmp/headers | busybox tr -dc '0-9')
    wget -q -O /dev/null "$url?wait=true&recursive=true&waitIndex=$((index + 1))" || sleep 1
  else
    sleep 1
  fi
done
"#;

/// The upstream list a load balancer instance printed last, if any.
fn upstreams(base: &str, instance: &str) -> Result<Option<BTreeSet<String>>> {
    let text = shoalctl_ok(base, &["journal", instance, "-n", "50"])?;
    Ok(text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("upstreams:"))
        .map(|list| list.split_whitespace().map(str::to_owned).collect()))
}

/// Waits until both load balancers print exactly `want`.
async fn wait_upstreams(base: &str, want: &BTreeSet<String>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let seen = [upstreams(base, "lb@1")?, upstreams(base, "lb@2")?];
        if seen.iter().all(|s| s.as_ref() == Some(want)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "load balancers print {seen:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The API server unit with `replicas` instances.
fn api_unit(replicas: u32, ports: &[u16]) -> Value {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    json!({
        "name": "api", "image": IMAGE, "network": "host", "desired": "launched",
        "command": ["sh", "-c", API_SERVER],
        "env": { "API_PORTS": ports.join(" ") },
        "placement": { "replicas": replicas }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_follow_api_servers_through_the_key_space() -> Result<()> {
    let Some(fleet) = FleetRun::start("seed").await? else {
        return Ok(());
    };
    let (run, base) = (fleet.run.clone(), fleet.base.clone());
    let dir = tempfile::tempdir()?;
    let agents = [
        Agent::start(dir.path(), &base, &format!("{run}-m1"), "rack=a")?,
        Agent::start(dir.path(), &base, &format!("{run}-m2"), "rack=b")?,
        Agent::start(dir.path(), &base, &format!("{run}-m3"), "rack=c")?,
    ];
    wait_machines(&base, &agents.iter().collect::<Vec<_>>()).await?;

    eprintln!("--- 6 API servers and 2 load balancers that conflict with each other");
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    submit(&base, &api_unit(6, &ports)).await?;
    let lb = json!({
        "name": "lb", "image": IMAGE, "network": "host", "desired": "launched",
        "command": ["sh", "-c", LOAD_BALANCER],
        "placement": { "replicas": 2, "conflicts": ["lb"] }
    });
    submit(&base, &lb).await?;
    let timeout = Duration::from_secs(60);
    wait_unit(&base, "api", timeout, "6 API servers running", |s| {
        running(s).len() == 6
    })
    .await?;
    let lbs = wait_unit(&base, "lb", timeout, "2 load balancers running", |s| {
        running(s).len() == 2
    })
    .await?;
    let lb_machines: BTreeSet<String> = running(&lbs).into_iter().map(|(_, m)| m).collect();
    ensure!(
        lb_machines.len() == 2,
        "the load balancers share a machine: {lbs}"
    );

    let all: BTreeSet<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    wait_upstreams(&base, &all).await?;
    eprintln!("    both load balancers list {all:?}");
    for upstream in &all {
        let page = reqwest::get(format!("http://{upstream}/"))
            .await?
            .text()
            .await?;
        ensure!(
            page.contains("api@") && page.contains(&run),
            "upstream {upstream} answers {page:?}"
        );
    }

    eprintln!("--- scale the API servers to 3: the load balancers drop the others");
    submit(&base, &api_unit(3, &ports)).await?;
    let three: BTreeSet<String> = ports[..3]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    wait_upstreams(&base, &three).await?;
    eprintln!("    both load balancers list {three:?}");

    destroy_all(&base, &run, &["lb", "api"]).await?;
    drop(agents);
    remove_containers(&run);
    Ok(())
}
