//! A TCP relay between the hub and a server (the broker, the database) that a test can
//! cut or freeze, so a fault test never touches the servers other tests share.
//!
//! - [`Relay::cut`]: every relayed connection closed, new ones refused — the server is
//!   down.
//! - [`Relay::freeze`]: connections stay open and new ones are accepted, but no byte
//!   moves either way — a network partition, or a server that hangs.
//! - [`Relay::restore`]: relaying again (frozen connections are closed, as a partition
//!   that heals usually ends them).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::harness::DEADLINE;

/// A relay from a loopback port to `upstream`.
pub struct Relay {
    /// Where the hub connects.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    running: Mutex<Option<JoinSet<()>>>,
    frozen: watch::Sender<bool>,
}

impl Relay {
    /// Relays to `upstream` from a fresh loopback port.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Arc<Self>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay = Arc::new(Self {
            addr: listener.local_addr()?,
            upstream,
            running: Mutex::new(None),
            frozen: watch::Sender::new(false),
        });
        relay.serve(listener);
        Ok(relay)
    }

    /// Relays to the server of `url` (`scheme://user@host:port/…`); returns the relay
    /// and `url` pointed at it.
    pub async fn for_url(url: &str) -> anyhow::Result<(Arc<Self>, String)> {
        let parsed: reqwest::Url = url.parse()?;
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = parsed
            .port_or_known_default()
            .or(match parsed.scheme() {
                "postgres" | "postgresql" => Some(5432),
                "amqp" => Some(5672),
                _ => None,
            })
            .ok_or_else(|| anyhow::anyhow!("{url} names no port"))?;
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{url} names no address"))?;
        let relay = Self::start(upstream).await?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let relayed = url.replacen(&authority, &relay.addr.to_string(), 1);
        Ok((relay, relayed))
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let frozen = self.frozen.subscribe();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Each connection's pump lives in this set: dropping it cuts them all.
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                pumps.spawn(pump(client, upstream, frozen.clone()));
            }
        });
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(tasks);
    }

    /// Closes every relayed connection and stops listening: the server is unreachable.
    pub fn cut(&self) {
        if let Some(mut tasks) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            tasks.abort_all();
        }
    }

    /// Stops every byte, keeping connections open and accepting new ones.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Relays again on the same port, with fresh connections only.
    pub async fn restore(&self) -> anyhow::Result<()> {
        self.cut();
        self.frozen.send_replace(false);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The port may take a moment to be free again after the cut.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => anyhow::bail!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

/// Copies both ways until either side closes — or, once frozen, holds both sockets
/// open and silent until the relay is cut.
async fn pump(mut client: TcpStream, upstream: SocketAddr, mut frozen: watch::Receiver<bool>) {
    if *frozen.borrow() {
        let _held = client;
        std::future::pending::<()>().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let froze = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        frozen = frozen.wait_for(|f| *f) => frozen.is_ok(),
    };
    if froze {
        let _held = (client, server);
        std::future::pending::<()>().await;
    }
}
