//! A TCP proxy on loopback that a test can partition: while cut, it holds
//! every connection open and forwards nothing (a blackhole, not a refusal),
//! and when healed it drops what it held, so clients reconnect.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy to one target; stops when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (open, rx) = watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(forward(inbound, target, rx.clone()));
            }
        });
        Ok(Proxy { addr, open, task })
    }

    /// Partitions: from now on nothing passes in either direction.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Heals the partition: held connections are dropped, new ones pass.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side closes or the proxy is cut; a cut
/// connection is held silently until the partition heals.
async fn forward(mut inbound: TcpStream, target: SocketAddr, mut open: watch::Receiver<bool>) {
    if *open.borrow() {
        let Ok(mut outbound) = TcpStream::connect(target).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = open.wait_for(|o| !*o) => {}
        }
    }
    let _ = open.wait_for(|o| *o).await;
}
