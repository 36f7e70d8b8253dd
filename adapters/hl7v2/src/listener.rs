//! The MLLP listener: accepts EHR connections, reads framed HL7 v2 messages, hands each
//! to an [`IngestSink`] and answers with an original-mode ACK decided only by the
//! sink's outcome — `AA` once the event is durable on the bus, `AE` (with an `ERR`
//! segment) for input that will never be accepted, `AR` when the hub cannot take it
//! now. Messages on one connection are handled in order; connections run concurrently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{FixedOffset, Utc};
use futures_util::{SinkExt, StreamExt};
use renkei_sdk::{
    IngestOutcome, IngestSink, InputSource, NormalizeError, Normalizer, ReceivedInput,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::mllp::{AckCode, AckError, ErrorCode, MllpCodec, MllpError, build_ack};
use crate::{Hl7Normalizer, MshHeader};

/// Adapter name used in audit rows and rejected-input records.
pub const ADAPTER: &str = "mllp";

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Largest message accepted, in bytes; a larger one is answered `AE` and discarded.
    pub max_message_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// Accepts connections until `shutdown`, serving each on its own task.
pub async fn serve<S: IngestSink>(
    listener: TcpListener,
    sink: Arc<S>,
    options: ListenerOptions,
    shutdown: CancellationToken,
) {
    let normalizer = Arc::new(Hl7Normalizer::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let connection = Connection {
                    sink: sink.clone(),
                    normalizer: normalizer.clone(),
                    options: options.clone(),
                    peer,
                };
                let shutdown = shutdown.clone();
                tokio::spawn(async move { connection.run(stream, shutdown).await });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Connection<S> {
    sink: Arc<S>,
    normalizer: Arc<Hl7Normalizer>,
    options: ListenerOptions,
    peer: SocketAddr,
}

impl<S: IngestSink> Connection<S> {
    async fn run(self, stream: TcpStream, shutdown: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let peer = self.peer;
        tracing::debug!(%peer, "MLLP connection opened");
        let mut framed = Framed::new(
            stream,
            MllpCodec::with_max_frame_len(self.options.max_message_bytes),
        );
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.options.idle_timeout, framed.next()) => next,
                () = shutdown.cancelled() => break,
            };
            let ack = match next {
                Err(_) => {
                    tracing::info!(%peer, idle = ?self.options.idle_timeout, "closing idle MLLP connection");
                    break;
                }
                Ok(None) => break,
                Ok(Some(Ok(frame))) => self.handle(frame.to_vec()).await,
                Ok(Some(Err(MllpError::FrameTooLarge {
                    limit,
                    size,
                    header,
                }))) => {
                    let error = NormalizeError::whole(format!(
                        "the message is larger than the hub accepts ({size} bytes, limit {limit}); split it or ask the operator to raise mllp.max_message_bytes"
                    ));
                    // Only the header is kept: the rest was never buffered.
                    self.answer(header.to_vec(), Err(error)).await
                }
                Ok(Some(Err(e))) => {
                    tracing::info!(%peer, error = %e, "MLLP connection ended");
                    break;
                }
            };
            if let Err(e) = framed.send(ack).await {
                tracing::info!(%peer, error = %e, "cannot send ACK; closing");
                break;
            }
        }
        tracing::debug!(%peer, "MLLP connection closed");
    }

    async fn handle(&self, raw: Vec<u8>) -> Vec<u8> {
        let normalized = self.normalizer.normalize(&raw);
        self.answer(raw, normalized).await
    }

    async fn answer(
        &self,
        raw: Vec<u8>,
        normalized: Result<renkei_sdk::CanonicalEvent, NormalizeError>,
    ) -> Vec<u8> {
        let header = MshHeader::parse(&raw).unwrap_or_else(fallback_header);
        let input = ReceivedInput {
            source: InputSource {
                adapter: ADAPTER.to_owned(),
                peer: self.peer.to_string(),
            },
            raw,
            normalized,
        };
        let (code, error) = match self.sink.ingest(input).await {
            IngestOutcome::Accepted { .. } => (AckCode::Accept, None),
            IngestOutcome::Rejected(e) => (AckCode::Error, Some(AckError::from(&e))),
            IngestOutcome::Unavailable(reason) => {
                tracing::warn!(peer = %self.peer, %reason, "cannot accept a message now; answered AR");
                (
                    AckCode::Reject,
                    Some(AckError::new(
                        ErrorCode::ApplicationInternalError,
                        "the hub cannot accept messages right now; send this message again later",
                    )),
                )
            }
        };
        build_ack(
            &header,
            code,
            &ack_control_id(),
            error.as_ref(),
            japan_now(),
        )
    }
}

/// The header answered when a message has no usable `MSH` at all.
fn fallback_header() -> MshHeader {
    match MshHeader::parse(b"MSH|^~\\&|||||||ACK||P|2.5") {
        Some(header) => header,
        None => unreachable!("the fallback MSH is well-formed"),
    }
}

/// A fresh control id for an ACK (`MSH-10`, at most 20 characters).
fn ack_control_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!("RK{:x}{n:04x}", Utc::now().timestamp_millis())
}

fn japan_now() -> chrono::DateTime<FixedOffset> {
    let japan = FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| unreachable!("+09:00 is valid"));
    Utc::now().with_timezone(&japan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_control_ids_fit_msh10_and_differ() {
        let a = ack_control_id();
        let b = ack_control_id();
        assert!(a.len() <= 20, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn fallback_header_parses() {
        assert_eq!(fallback_header().version, "2.5");
    }
}
