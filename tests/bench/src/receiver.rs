//! A webhook receiver: verifies each request's Standard Webhooks signature as a care
//! office's receiver must (the cost is part of the measurement), answers 204 (401 to a
//! request that fails verification), and records, per event, the time from the moment
//! its MLLP message was sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use renkei_e2e::webhook_verify::verify_signature;
use tokio::sync::Mutex;

use crate::load::{SendTimes, message_index, now_ns};

struct Inner {
    key: Vec<u8>,
    sent: Arc<SendTimes>,
    seen: Vec<AtomicBool>,
    received: AtomicUsize,
    duplicates: AtomicUsize,
    unreadable: AtomicUsize,
    bad_signatures: AtomicUsize,
    latencies_ns: Mutex<Vec<u64>>,
}

/// One receiver, serving until the process ends.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and serves, with a signing secret of its own.
    pub async fn start(sent: Arc<SendTimes>) -> anyhow::Result<Self> {
        // 32 key bytes, unique per receiver.
        let key = [
            uuid::Uuid::now_v7().into_bytes(),
            uuid::Uuid::now_v7().into_bytes(),
        ]
        .concat();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            key,
            seen: (0..sent.len()).map(|_| AtomicBool::new(false)).collect(),
            sent,
            received: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            unreadable: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
            latencies_ns: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: receiver failed: {e}");
            }
        });
        Ok(Self { addr, inner })
    }

    /// The webhook URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The endpoint's signing secret, `whsec_…`.
    pub fn secret(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.inner.key))
    }

    /// Distinct events received.
    pub fn received(&self) -> usize {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// Events received more than once.
    pub fn duplicates(&self) -> usize {
        self.inner.duplicates.load(Ordering::Relaxed)
    }

    /// Requests whose body named no benchmark message.
    pub fn unreadable(&self) -> usize {
        self.inner.unreadable.load(Ordering::Relaxed)
    }

    /// Requests refused because their signature did not verify.
    pub fn bad_signatures(&self) -> usize {
        self.inner.bad_signatures.load(Ordering::Relaxed)
    }

    /// Source-to-receiver latencies of first receipts, in nanoseconds.
    pub async fn latencies_ns(&self) -> Vec<u64> {
        self.inner.latencies_ns.lock().await.clone()
    }
}

async fn hook(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = now_ns();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if verify_signature(&inner.key, header, &body, unix_now).is_err() {
        inner.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let index = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|event| {
            event
                .pointer("/data/origin/message_id")
                .and_then(|id| id.as_str())
                .and_then(message_index)
        })
        .filter(|&i| i < inner.seen.len());
    let Some(index) = index else {
        inner.unreadable.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NO_CONTENT;
    };
    let first = inner
        .seen
        .get(index)
        .is_some_and(|seen| !seen.swap(true, Ordering::Relaxed));
    if first {
        inner.received.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = inner.sent.get(index) {
            inner
                .latencies_ns
                .lock()
                .await
                .push(at.saturating_sub(sent));
        }
    } else {
        inner.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}
