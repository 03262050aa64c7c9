//! Clients nobody here wrote: Debian's `etcdctl` in v2 mode and the `python-etcd`
//! package, each run against one member of the implementation under test.
//! Missing tools make these tests fail, not skip.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};

use crate::harness::{require_tool, run_with_timeout, Cluster, V2};

const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// `etcdctl` against one endpoint, in v2 mode.
struct Etcdctl {
    bin: std::path::PathBuf,
    endpoint: String,
}

impl Etcdctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("ETCDCTL_API", "2")
            .arg("--endpoints")
            .arg(&self.endpoint)
            .args(args);
        cmd
    }

    /// Run; expect success; return stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let (success, out, err) = run_with_timeout(&mut self.command(args), CMD_TIMEOUT)?;
        eprintln!("$ etcdctl {}\n{out}{err}", args.join(" "));
        ensure!(success, "etcdctl {args:?} failed: {out}{err}");
        Ok(out)
    }

    /// Run; expect failure; return stdout+stderr.
    fn fails(&self, args: &[&str]) -> Result<String> {
        let (success, out, err) = run_with_timeout(&mut self.command(args), CMD_TIMEOUT)?;
        eprintln!(
            "$ etcdctl {}   (expected to fail)\n{out}{err}",
            args.join(" ")
        );
        ensure!(!success, "etcdctl {args:?} should have failed: {out}{err}");
        Ok(format!("{out}{err}"))
    }
}

async fn etcdctl_v2(endpoint: &str) -> Result<()> {
    let ctl = Etcdctl {
        bin: require_tool("etcdctl", "etcd-client"),
        endpoint: endpoint.to_string(),
    };

    eprintln!("--- set / get / update");
    assert_eq!(ctl.ok(&["set", "/ctl/a", "hello"])?.trim(), "hello");
    assert_eq!(ctl.ok(&["get", "/ctl/a"])?.trim(), "hello");
    assert_eq!(ctl.ok(&["update", "/ctl/a", "world"])?.trim(), "world");
    assert_eq!(ctl.ok(&["get", "/ctl/a"])?.trim(), "world");
    let err = ctl.fails(&["update", "/ctl/missing", "x"])?;
    assert!(err.contains("100"), "update of a missing key: {err}");
    let err = ctl.fails(&["get", "/ctl/missing"])?;
    assert!(err.contains("Key not found"), "get of a missing key: {err}");

    eprintln!("--- mk / mkdir / ls");
    assert_eq!(ctl.ok(&["mk", "/ctl/b", "first"])?.trim(), "first");
    let err = ctl.fails(&["mk", "/ctl/b", "second"])?;
    assert!(err.contains("105"), "mk of an existing key: {err}");
    ctl.ok(&["mkdir", "/ctl/dir"])?;
    ctl.ok(&["set", "/ctl/dir/inner", "i"])?;
    let ls = ctl.ok(&["ls", "/ctl"])?;
    let mut lines: Vec<&str> = ls.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["/ctl/a", "/ctl/b", "/ctl/dir"]);
    let ls = ctl.ok(&["ls", "--recursive", "/ctl"])?;
    let mut lines: Vec<&str> = ls.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["/ctl/a", "/ctl/b", "/ctl/dir", "/ctl/dir/inner"]
    );
    let json = ctl.ok(&["-o", "json", "get", "/ctl/a"])?;
    let v: serde_json::Value = serde_json::from_str(json.trim())
        .with_context(|| format!("etcdctl -o json output: {json}"))?;
    assert_eq!(v["node"]["value"], "world", "{v}");

    eprintln!("--- TTL through etcdctl");
    ctl.ok(&["set", "--ttl", "100", "/ctl/t", "tt"])?;
    let ext = ctl.ok(&["-o", "extended", "get", "/ctl/t"])?;
    assert!(
        ext.contains("TTL: "),
        "extended output shows the TTL: {ext}"
    );

    eprintln!("--- rm");
    ctl.ok(&["rm", "/ctl/b"])?;
    ctl.fails(&["get", "/ctl/b"])?;
    let err = ctl.fails(&["rm", "/ctl/dir"])?;
    assert!(
        err.contains("102") || err.contains("not a file"),
        "rm of a dir: {err}"
    );
    ctl.ok(&["rm", "--recursive", "/ctl/dir"])?;
    ctl.fails(&["get", "/ctl/dir/inner"])?;

    eprintln!("--- watch in the background, then set");
    let idx = V2::new(endpoint)
        .get("/ctl/a")
        .await?
        .etcd_index
        .context("X-Etcd-Index on a GET")?;
    let after = idx.to_string();
    let watch = {
        let mut cmd = ctl.command(&["watch", "--after-index", &after, "/ctl/w"]);
        tokio::task::spawn_blocking(move || run_with_timeout(&mut cmd, CMD_TIMEOUT))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.ok(&["set", "/ctl/w", "woken"])?;
    let (success, out, err) = watch.await??;
    eprintln!("watch printed: {out}{err}");
    ensure!(success, "etcdctl watch failed: {out}{err}");
    assert_eq!(out.trim(), "woken");

    eprintln!("--- watch from history: an event already past");
    let out = ctl.ok(&["watch", "--after-index", &after, "/ctl/w"])?;
    assert_eq!(out.trim(), "woken");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_v2_against_one_member() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    etcdctl_v2(&cluster.members[0].client_url()).await
}

const PYTHON_SCRIPT: &str = r#"
import sys, threading
import etcd

host, port = sys.argv[1], int(sys.argv[2])
c = etcd.Client(host=host, port=port, protocol="http", allow_reconnect=False, read_timeout=10)

print("write/read")
r = c.write("/py/a", "1")
assert r.value == "1", r
assert c.read("/py/a").value == "1"
assert c.get("/py/a").value == "1"

print("prevExist=False on an existing key raises EtcdAlreadyExist")
try:
    c.write("/py/a", "2", prevExist=False)
    raise AssertionError("expected EtcdAlreadyExist")
except etcd.EtcdAlreadyExist:
    pass

print("test_and_set")
r = c.test_and_set("/py/a", "2", "1")
assert r.value == "2", r
try:
    c.test_and_set("/py/a", "3", "1")
    raise AssertionError("expected EtcdCompareFailed")
except etcd.EtcdCompareFailed:
    pass
assert c.read("/py/a").value == "2"

print("prevIndex")
cur = c.read("/py/a")
r = c.write("/py/a", "4", prevIndex=cur.modifiedIndex)
assert r.value == "4"

print("ttl")
r = c.write("/py/ttl", "t", ttl=100)
assert r.ttl is not None and 95 <= r.ttl <= 100, r.ttl

print("directories and recursive reads")
c.write("/py/dir", None, dir=True)
c.write("/py/dir/x", "X")
c.write("/py/dir/y", "Y")
r = c.read("/py/dir", recursive=True, sorted=True)
assert r.dir
children = sorted((ch.key, ch.value) for ch in r.children)
assert children == [("/py/dir/x", "X"), ("/py/dir/y", "Y")], children

print("in-order keys")
a = c.write("/py/queue", "j1", append=True)
b = c.write("/py/queue", "j2", append=True)
assert a.key < b.key, (a.key, b.key)
r = c.read("/py/queue", sorted=True)
assert [ch.value for ch in r.children] == ["j1", "j2"]

print("delete")
c.delete("/py/dir/x")
try:
    c.read("/py/dir/x")
    raise AssertionError("expected EtcdKeyNotFound")
except etcd.EtcdKeyNotFound:
    pass
try:
    c.delete("/py/dir")
    raise AssertionError("deleting a dir without dir=True must fail")
except etcd.EtcdNotFile:
    pass
c.delete("/py/dir", recursive=True)

print("watch from an index in history")
w = c.write("/py/w", "first")
r = c.watch("/py/w", index=w.modifiedIndex, timeout=10)
assert r.value == "first", r

print("watch woken by a later write")
result = {}
def watcher():
    result["r"] = c2.watch("/py/w2", timeout=10)
c2 = etcd.Client(host=host, port=port, protocol="http", allow_reconnect=False, read_timeout=10)
t = threading.Thread(target=watcher)
t.start()
import time; time.sleep(0.5)
c.write("/py/w2", "later")
t.join(15)
assert not t.is_alive(), "watch did not return"
assert result["r"].value == "later", result

print("machines / leader")
assert len(c.machines) >= 1, c.machines
print("python-etcd: all good")
"#;

async fn python_etcd(host: &str, port: u16) -> Result<()> {
    // Debian's python3 has the python3-etcd module (a pyenv python on PATH may not).
    let python = require_tool("python3", "python3");
    let probe = run_with_timeout(
        Command::new(&python).args(["-c", "import etcd"]),
        CMD_TIMEOUT,
    )?;
    if !probe.0 {
        bail!(
            "{} cannot import etcd: `apt-get install -y python3-etcd`\n{}",
            python.display(),
            probe.2
        );
    }
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("client.py");
    std::fs::write(&script, PYTHON_SCRIPT)?;
    run_python(&python, &script, host, port)
}

fn run_python(python: &Path, script: &Path, host: &str, port: u16) -> Result<()> {
    let (success, out, err) = run_with_timeout(
        Command::new(python)
            .arg(script)
            .arg(host)
            .arg(port.to_string()),
        Duration::from_secs(60),
    )?;
    eprintln!("{out}{err}");
    ensure!(success, "python-etcd script failed:\n{out}{err}");
    ensure!(
        out.contains("python-etcd: all good"),
        "script did not finish: {out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd_against_one_member() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    python_etcd("127.0.0.1", cluster.members[0].client_port).await
}
