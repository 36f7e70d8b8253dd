//! A care office's webhook receiver: an HTTP server on a free loopback port that
//! checks each request's Standard Webhooks signature the way a receiver would (written
//! here from the specification, independently of the hub's signing code), records
//! every request, and answers a status the test chooses (e.g. 503 for a while).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use renkei_e2e::webhook_verify::verify_signature;
use sha2::{Digest, Sha256};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub answered: u16,
    /// Whether the signature verified, or why not.
    pub signature: Result<(), String>,
}

impl Received {
    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The canonical event's `type`.
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or("").to_owned()
    }

    /// The canonical event's `id`.
    pub fn event_id(&self) -> String {
        self.json()["id"].as_str().unwrap_or("").to_owned()
    }

    /// Whether the receiver acknowledged it (2xx).
    pub fn acknowledged(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

struct ReceiverState {
    key: Vec<u8>,
    answer: AtomicU16,
    requests: Mutex<Vec<Received>>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    secret: String,
    state: Arc<ReceiverState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    /// Starts a receiver with a fresh `whsec_` secret, answering 200.
    pub async fn start() -> anyhow::Result<Self> {
        // 32 key bytes, unique per receiver.
        let key = Sha256::digest(uuid::Uuid::now_v7().as_bytes()).to_vec();
        let secret = format!("whsec_{}", STANDARD.encode(&key));
        let state = Arc::new(ReceiverState {
            key,
            answer: AtomicU16::new(200),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            secret,
            state,
            server,
        })
    }

    /// The endpoint URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The signing secret to register.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Answer validly signed requests with `status` from now on.
    pub fn answer_with(&self, status: u16) {
        self.state.answer.store(status, Ordering::SeqCst);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests it acknowledged (2xx), in arrival order.
    pub fn acknowledged(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(Received::acknowledged)
            .collect()
    }
}

async fn hook(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signature = verify_signature(
        &state.key,
        |name| headers.get(name).map(String::as_str),
        &body,
        chrono::Utc::now().timestamp(),
    );
    // A real receiver refuses what it cannot authenticate.
    let answered = if signature.is_ok() {
        state.answer.load(Ordering::SeqCst)
    } else {
        401
    };
    state
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            headers,
            body: body.to_vec(),
            answered,
            signature,
        });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
