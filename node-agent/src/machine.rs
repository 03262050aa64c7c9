//! Facts about this host for its [`api::fleet::Machine`] record: host name,
//! addresses, CPU and memory capacity. The Docker version comes from
//! [`crate::docker`]; OS version and slot are left to the update engine.

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};

use api::fleet::Machine;

/// The kernel's host name (`/proc/sys/kernel/hostname`, then `/etc/hostname`).
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// CPU capacity in millicores (available parallelism × 1000).
pub fn cpu_millis() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
}

/// `MemTotal` from the text of `/proc/meminfo`, in MiB.
pub fn parse_meminfo_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Memory capacity in MiB (0 when `/proc/meminfo` cannot be read).
pub fn memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_mb(&s))
        .unwrap_or(0)
}

/// The local address this host uses to reach `server` (a UDP "connect" sends
/// nothing; it only asks the kernel for the route's source address).
pub fn address_towards(server: &url::Url) -> Option<IpAddr> {
    let host = server.host_str()?;
    let port = server.port_or_known_default().unwrap_or(2379);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let socket = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect((host, port)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The record this agent registers for its machine.
pub fn describe(
    id: &str,
    hostname_override: Option<&str>,
    metadata: &BTreeMap<String, String>,
    servers: &[url::Url],
    docker_version: &str,
    agent_url: &str,
) -> Machine {
    let mut addresses: Vec<String> = servers
        .iter()
        .filter_map(address_towards)
        .map(|ip| ip.to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    Machine {
        id: id.to_owned(),
        hostname: hostname_override.map_or_else(hostname, str::to_owned),
        addresses,
        metadata: metadata.clone(),
        cpu_millis: cpu_millis(),
        memory_mb: memory_mb(),
        docker_version: docker_version.to_owned(),
        agent_url: agent_url.to_owned(),
        ..Machine::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_in_mib() {
        let text = "MemTotal:       16303424 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo_mb(text), Some(15921));
        assert_eq!(parse_meminfo_mb("MemFree: 1 kB"), None);
        assert_eq!(parse_meminfo_mb("MemTotal: lots kB"), None);
    }

    #[test]
    fn facts_of_this_host() {
        assert!(cpu_millis() >= 1000);
        assert!(!hostname().is_empty());
        let server = url::Url::parse("http://127.0.0.1:2379").expect("url");
        assert_eq!(
            address_towards(&server).map(|ip| ip.to_string()),
            Some("127.0.0.1".to_owned())
        );
        let m = describe(
            "m1",
            Some("h"),
            &BTreeMap::new(),
            &[server],
            "28",
            "http://127.0.0.1:4001",
        );
        assert_eq!(m.id, "m1");
        assert_eq!(m.hostname, "h");
        assert_eq!(m.addresses, vec!["127.0.0.1".to_owned()]);
        assert_eq!(m.docker_version, "28");
    }
}
