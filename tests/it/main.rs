//! End-to-end tests: real `shoal-server` processes (and a real etcd 3.4 as the
//! reference) on loopback. One test binary, one module per area.
//!
//! Build the binaries first: `cargo build --workspace --bins` (scripts/test does).
//! `SHOAL_TEST_TARGET=etcd` runs the Shoal-side tests against etcd instead — only to
//! check the tests themselves; the default, and CI, is Shoal.

mod agents;
mod auth;
mod browser;
mod clock_skew;
mod cluster;
mod dashboard;
mod differential;
mod fleet;
mod fleet_faults;
mod fleetlock;
mod harness;
mod holders;
mod hostile;
mod linearizability;
mod membership;
mod nemesis;
mod openapi;
mod os_update;
mod peer_auth;
mod primitives;
mod proxy;
mod real_clients;
mod seed;
mod tls;
mod update_crash;
mod update_host;
mod updates;
