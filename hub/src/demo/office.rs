//! A simulated care office: a webhook receiver on loopback that verifies each request
//! as a receiver should (Standard Webhooks: the signature over `id.timestamp.body`
//! with its secret, and a timestamp within five minutes), answers 204 or 401, and
//! reports what it got.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use tokio::sync::mpsc;

use crate::delivery::signing::WebhookSecret;

/// How far a request's timestamp may be from the receiver's clock.
const TOLERANCE_SECONDS: i64 = 300;

/// One webhook as the office saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The signature and timestamp checked out.
    pub verified: bool,
    /// The canonical event's type.
    pub event_type: String,
    /// The `renkei-sequence` header.
    pub sequence: String,
    /// When it arrived.
    pub at: Instant,
}

/// A running office.
pub struct Office {
    /// Its participant id.
    pub id: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Its placeholder in the region document.
    pub placeholder: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its webhook secret, as the registry holds it.
    pub secret_text: String,
    received: mpsc::UnboundedReceiver<Received>,
}

#[derive(Clone)]
struct Inbox {
    secret: WebhookSecret,
    sender: mpsc::UnboundedSender<Received>,
}

impl Office {
    /// Starts the receiver on a free loopback port with a fresh secret.
    pub async fn start(
        id: &'static str,
        name: &'static str,
        placeholder: &'static str,
    ) -> anyhow::Result<Self> {
        let key: [u8; 32] = rand::random();
        let secret_text = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        let secret = WebhookSecret::parse(&secret_text)?;
        let (sender, received) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("a simulated care office cannot listen on loopback")?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/webhook", axum::routing::post(receive))
            .with_state(Inbox { secret, sender });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            id,
            name,
            placeholder,
            addr,
            secret_text,
            received,
        })
    }

    /// The next webhook, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> anyhow::Result<Received> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .map_err(|_| anyhow::anyhow!("{} got no webhook within {within:?}", self.name))?
            .with_context(|| format!("{}'s receiver stopped", self.name))
    }
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let verified = verify(
        &inbox.secret,
        &header("webhook-id"),
        &header("webhook-timestamp"),
        &header("webhook-signature"),
        &body,
    );
    let event_type = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = inbox.sender.send(Received {
        verified,
        event_type,
        sequence: header("renkei-sequence"),
        at: Instant::now(),
    });
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Whether any `v1,` signature of the header is this secret's, and the timestamp is
/// recent.
fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
) -> bool {
    let Ok(at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - at).abs() > TOLERANCE_SECONDS {
        return false;
    }
    let expected = secret.sign(id, at, body);
    signatures
        .split(' ')
        .any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_accepts_its_own_signature_only_when_recent() -> anyhow::Result<()> {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        let other = WebhookSecret::parse("whsec_dGhpcy1pcy1hLXNlY29uZC1zZWNyZXQta2V5IQ==")?;
        let now = chrono::Utc::now().timestamp();
        let header = format!(
            "{} {}",
            other.sign("msg_1", now, b"{}"),
            secret.sign("msg_1", now, b"{}")
        );
        assert!(verify(&secret, "msg_1", &now.to_string(), &header, b"{}"));
        assert!(
            !verify(&secret, "msg_1", &now.to_string(), &header, b"{ }"),
            "body changed"
        );
        assert!(
            !verify(&secret, "msg_2", &now.to_string(), &header, b"{}"),
            "id changed"
        );
        let old = now - 3600;
        let stale = secret.sign("msg_1", old, b"{}");
        assert!(
            !verify(&secret, "msg_1", &old.to_string(), &stale, b"{}"),
            "replayed an hour later"
        );
        Ok(())
    }
}
