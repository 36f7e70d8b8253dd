//! The broker goes away while the hub runs: the EHR is told `AR` (try again) — never
//! `AA` for a message that is not durable — and once the broker is back, the same
//! message is accepted and delivered.
//!
//! The hub reaches RabbitMQ through a TCP relay owned by the test, so the test can cut
//! the broker off (close every connection, refuse new ones) without touching the broker
//! the other tests share.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::checks::signed_canonical_event;
use crate::harness::{DEADLINE, Env};
use crate::mllp::conformance;
use crate::spine::acknowledged;

/// A TCP relay from a loopback port to the broker that can be switched off and on.
struct BrokerRelay {
    addr: SocketAddr,
    upstream: SocketAddr,
    running: Mutex<Option<JoinSet<()>>>,
}

impl BrokerRelay {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Arc<Self>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay = Arc::new(Self {
            addr: listener.local_addr()?,
            upstream,
            running: Mutex::new(None),
        });
        relay.serve(listener);
        Ok(relay)
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Each connection's pump lives in this set: dropping it cuts them all.
            let mut pumps = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                pumps.spawn(async move {
                    if let Ok(mut broker) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        });
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(tasks);
    }

    /// Closes every relayed connection and stops listening: the broker is unreachable.
    fn cut(&self) {
        if let Some(mut tasks) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            tasks.abort_all();
        }
    }

    /// Listens again on the same port.
    async fn restore(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The port may take a moment to be free again after the cut.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => anyhow::bail!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

/// Where the test broker listens, from its URL, and the URL's `host:port`.
async fn broker_addr(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let parsed: reqwest::Url = url.parse()?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(5672);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url} names no address"))?;
    Ok((addr, format!("{host}:{port}")))
}

#[tokio::test]
async fn broker_outage_is_answered_ar_and_the_resend_is_delivered() -> anyhow::Result<()> {
    let url = crate::harness::amqp_url();
    let (upstream, authority) = broker_addr(&url).await?;
    let relay = BrokerRelay::start(upstream).await?;
    let relayed_url = url.replacen(&authority, &relay.addr.to_string(), 1);
    let env = Env::with_settings(&[("RENKEI__BUS__URL", &relayed_url)]).await?;
    let (receiver, mut mllp) = crate::spine::one_office_after_an_admission(&env).await?;

    relay.cut();
    let transfer = conformance("hl7/a02_transfer_utf8.hl7")?;
    let refused = mllp.send(&transfer).await?;
    assert_eq!(
        refused.code, "AR",
        "with the broker unreachable the hub must say AR, not accept:\n{refused}"
    );
    let published: Option<bool> =
        sqlx::query_scalar("SELECT published_at IS NOT NULL FROM ingests WHERE message_id = $1")
            .bind(crate::mllp::control_id(&transfer)?)
            .fetch_optional(&env.db)
            .await?;
    assert_ne!(published, Some(true), "nothing was confirmed by the broker");

    relay.restore().await?;
    // The EHR resends until accepted, as told by AR.
    crate::mllp::send_until_accepted(env.mllp, &transfer).await?;
    let got = acknowledged(&env, &receiver, 2).await?;
    signed_canonical_event(&got[1], "inpatient.transferred")?;
    let transfers = receiver
        .requests()
        .iter()
        .filter(|r| r.event_type() == "inpatient.transferred")
        .count();
    assert_eq!(transfers, 1, "the refused-then-resent message arrives once");
    relay.cut();
    Ok(())
}
