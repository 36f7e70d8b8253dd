//! The MLLP listener: accepts EHR connections, reads framed HL7 v2 messages, hands each
//! to an [`IngestSink`] and answers with an original-mode ACK decided only by the
//! sink's outcome — `AA` once the event is durable on the bus, `AE` (with an `ERR`
//! segment) for input that will never be accepted, `AR` when the hub cannot take it
//! now. Messages on one connection are handled in order; connections run concurrently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{FixedOffset, Utc};
use renkei_sdk::{
    IngestOutcome, IngestSink, InputSource, NormalizeError, Normalizer, ReceivedInput,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use crate::mllp::{AckCode, AckError, ErrorCode, MllpCodec, MllpError, build_ack};
use crate::{Hl7Normalizer, MshHeader};

/// Adapter name used in audit rows and rejected-input records.
pub const ADAPTER: &str = "mllp";

/// How much room a connection's read buffer is given for each read.
const READ_CHUNK: usize = 8 * 1024;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Largest message accepted, in bytes; a larger one is answered `AE` and discarded.
    pub max_message_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; one more is closed as soon as it is accepted (its
    /// sender retries later), so a flood of connections cannot exhaust the hub.
    pub max_connections: usize,
    /// Times the normaliser accepts; a message with one outside is answered `AE`.
    pub time_window: renkei_sdk::TimeWindow,
}

/// Accepts connections until `shutdown`, serving each on its own task.
pub async fn serve<S: IngestSink>(
    listener: TcpListener,
    sink: Arc<S>,
    options: ListenerOptions,
    shutdown: CancellationToken,
) {
    let normalizer = Arc::new(Hl7Normalizer::with_time_window(options.time_window));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = options.max_connections, "too many MLLP connections; this one is closed");
                    drop(stream);
                    continue;
                };
                let connection = Connection {
                    sink: sink.clone(),
                    normalizer: normalizer.clone(),
                    options: options.clone(),
                    peer,
                };
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    connection.run(stream, shutdown).await;
                    drop(slot);
                });
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
    /// Serves one connection until the peer closes it, it stays idle, a transport
    /// error, or `shutdown`.
    ///
    /// The codec is driven by hand rather than through `Framed`: a `Framed` stream ends
    /// after the decoder's first error, but [`MllpError::FrameTooLarge`] is not the end
    /// of the connection — the codec has skipped the rest of the oversized frame and
    /// the next frame decodes normally, so the listener answers `AE` and carries on.
    async fn run(self, mut stream: TcpStream, shutdown: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let peer = self.peer;
        tracing::debug!(%peer, "MLLP connection opened");
        let idle = self.options.idle_timeout;
        let mut codec = MllpCodec::with_max_frame_len(self.options.max_message_bytes);
        // One read buffer per connection; decoded frames are split off its front and
        // the space is reclaimed once they are dropped.
        let mut read_buf = BytesMut::with_capacity(READ_CHUNK);
        let mut write_buf = BytesMut::new();
        // As with `Framed` + a timeout per frame: the next message (or the end of the
        // connection) must arrive within `idle` of the previous answer.
        let mut deadline = deadline_after(idle);
        let mut eof = false;
        'connection: loop {
            // Answer every frame already buffered, in order.
            loop {
                let decoded = if eof {
                    codec.decode_eof(&mut read_buf)
                } else {
                    codec.decode(&mut read_buf)
                };
                let ack = match decoded {
                    Ok(None) => break,
                    Ok(Some(frame)) => self.handle(frame.to_vec()).await,
                    Err(MllpError::FrameTooLarge {
                        limit,
                        size,
                        header,
                    }) => {
                        tracing::info!(%peer, size, limit, "MLLP message too large; answered AE");
                        let error = NormalizeError::whole(format!(
                            "the message is larger than the hub accepts ({size} bytes, limit {limit}); split it or ask the operator to raise mllp.max_message_bytes"
                        ));
                        // Only the header is kept: the rest was never buffered.
                        self.answer(header.to_vec(), Err(error)).await
                    }
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "MLLP connection ended");
                        break 'connection;
                    }
                };
                if let Err(e) = send_ack(&mut stream, &mut codec, &mut write_buf, ack).await {
                    tracing::info!(%peer, error = %e, "cannot send ACK; closing");
                    break 'connection;
                }
                deadline = deadline_after(idle);
            }
            if eof {
                break;
            }
            if read_buf.capacity() - read_buf.len() < READ_CHUNK / 2 {
                // Reuses the space of frames already handled when it can.
                read_buf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut read_buf)) => read,
                () = shutdown.cancelled() => break,
            };
            match read {
                Err(_) => {
                    tracing::info!(%peer, idle = ?idle, "closing idle MLLP connection");
                    break;
                }
                Ok(Ok(0)) => eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "MLLP connection ended");
                    break;
                }
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

/// `idle` from now; a duration too large for the clock means "never" (as with
/// `tokio::time::timeout`).
fn deadline_after(idle: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(idle)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// Frames `ack` into `write_buf` (emptied, its allocation kept) and writes it out.
async fn send_ack(
    stream: &mut TcpStream,
    codec: &mut MllpCodec,
    write_buf: &mut BytesMut,
    ack: Vec<u8>,
) -> Result<(), MllpError> {
    write_buf.clear();
    codec.encode(ack.as_slice(), write_buf)?;
    stream.write_all(write_buf).await?;
    Ok(())
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
    use std::sync::Mutex;

    use tokio::io::AsyncReadExt;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::client::{Ack, MllpClient};

    /// Generous bound on every wait: the tests await results, they never sleep.
    const WAIT: Duration = Duration::from_secs(10);

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

    #[test]
    fn an_endless_idle_timeout_does_not_overflow() {
        assert!(deadline_after(Duration::MAX) > Instant::now());
    }

    /// What the fake hub answers for a message that normalised.
    #[derive(Clone, Copy)]
    enum Mode {
        Accept,
        Unavailable,
    }

    /// A hub stand-in: records every input and answers like the hub would.
    struct FakeSink {
        mode: Mode,
        seen: Mutex<Vec<ReceivedInput>>,
    }

    impl FakeSink {
        fn new(mode: Mode) -> Arc<Self> {
            Arc::new(Self {
                mode,
                seen: Mutex::new(Vec::new()),
            })
        }

        fn seen(&self) -> Vec<ReceivedInput> {
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    impl IngestSink for FakeSink {
        async fn ingest(&self, input: ReceivedInput) -> IngestOutcome {
            let outcome = match (&input.normalized, self.mode) {
                (Err(e), _) => IngestOutcome::Rejected(e.clone()),
                (Ok(event), Mode::Accept) => IngestOutcome::Accepted {
                    event_id: event.id,
                    duplicate: false,
                },
                (Ok(_), Mode::Unavailable) => IngestOutcome::Unavailable("bus unreachable".into()),
            };
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(input);
            outcome
        }
    }

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    async fn start(
        sink: Arc<FakeSink>,
        max_message_bytes: usize,
        idle_timeout: Duration,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let shutdown = CancellationToken::new();
        let options = ListenerOptions {
            max_message_bytes,
            idle_timeout,
            max_connections: 2,
            time_window: renkei_sdk::TimeWindow::default(),
        };
        let task = tokio::spawn(serve(listener, sink, options, shutdown.clone()));
        Server {
            addr,
            shutdown,
            task,
        }
    }

    /// A well-formed ADT^A01 with `control_id` in `MSH-10`.
    fn adt(control_id: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|HIS01|1319999999|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|{control_id}|P|2.5||||||UNICODE UTF-8\r\
             EVN||20250410093000\r\
             PID|1||0000482915^^^^PI||架空^花子^^^^^L^I~カクウ^ハナコ^^^^^L^P||19380315|F\r"
        )
        .into_bytes()
    }

    /// The `MSH` segment of an oversized message (what the sink should be given).
    fn big_header(control_id: &str) -> String {
        format!(
            "MSH|^~\\&|HIS01|1319999999|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|{control_id}|P|2.5"
        )
    }

    /// A message of more than `len` bytes with `control_id` in `MSH-10`.
    fn oversized(control_id: &str, len: usize) -> Vec<u8> {
        format!("{}\rNTE|1||{}\r", big_header(control_id), "X".repeat(len)).into_bytes()
    }

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut codec = MllpCodec::new();
        let mut wire = BytesMut::new();
        for message in messages {
            codec
                .encode(*message, &mut wire)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        wire.to_vec()
    }

    /// Reads `n` acknowledgements from `stream`.
    async fn read_acks(stream: &mut TcpStream, n: usize) -> Vec<Ack> {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::new();
        let mut acks = Vec::new();
        while acks.len() < n {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    acks.push(Ack::parse(&frame).unwrap_or_else(|e| panic!("{e}")));
                    continue;
                }
                Ok(None) => {}
                Err(e) => panic!("{e}"),
            }
            let read = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no ACK within {WAIT:?} ({} of {n})", acks.len()))
                .unwrap_or_else(|e| panic!("read: {e}"));
            assert_ne!(
                read,
                0,
                "connection closed after {} of {n} ACKs",
                acks.len()
            );
        }
        acks
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect timed out"))
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    async fn send(client: &mut MllpClient, message: &[u8]) -> Ack {
        client
            .send(message)
            .await
            .unwrap_or_else(|e| panic!("send: {e}"))
    }

    /// Waits for the server to close `stream` (end of stream or reset).
    async fn closed_by_server(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {WAIT:?}"),
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(n)) => panic!("unexpected {n} bytes"),
        }
    }

    fn codes(acks: &[Ack]) -> Vec<(&str, &str)> {
        acks.iter()
            .map(|a| (a.code.as_str(), a.control_id.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn several_messages_on_one_connection_are_acked_in_order() {
        let sink = FakeSink::new(Mode::Accept);
        let server = start(sink.clone(), 64 * 1024, WAIT).await;

        // One at a time, as an EHR does.
        let mut client = MllpClient::connect(server.addr, WAIT)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        for i in 0..3 {
            let id = format!("SEQ{i}");
            let ack = send(&mut client, &adt(&id)).await;
            assert_eq!(
                (ack.code.as_str(), ack.control_id.as_str()),
                ("AA", id.as_str())
            );
        }

        // Pipelined: all frames in one write, answered in the order sent.
        let ids: Vec<String> = (0..5).map(|i| format!("PIPE{i}")).collect();
        let messages: Vec<Vec<u8>> = ids.iter().map(|id| adt(id)).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let mut stream = connect(server.addr).await;
        stream
            .write_all(&framed(&refs))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let acks = read_acks(&mut stream, ids.len()).await;
        let expected: Vec<(&str, &str)> = ids.iter().map(|id| ("AA", id.as_str())).collect();
        assert_eq!(codes(&acks), expected);

        let seen: Vec<Vec<u8>> = sink.seen().into_iter().map(|input| input.raw).collect();
        assert_eq!(seen.len(), 8);
        assert_eq!(&seen[3..], &messages[..]);
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn oversized_message_is_answered_ae_and_the_connection_stays_open() {
        let sink = FakeSink::new(Mode::Accept);
        let server = start(sink.clone(), 1024, WAIT).await;
        let mut client = MllpClient::connect(server.addr, WAIT)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));

        // Large enough to arrive over many reads while the codec discards it.
        let big = oversized("BIG1", 256 * 1024);
        let ack = send(&mut client, &big).await;
        assert_eq!((ack.code.as_str(), ack.control_id.as_str()), ("AE", "BIG1"));
        let text = ack.text.unwrap_or_default();
        assert!(
            text.contains(&format!("{} bytes, limit 1024", big.len())),
            "{text}"
        );
        assert!(text.contains("mllp.max_message_bytes"), "{text}");

        // The same connection goes on.
        let ack = send(&mut client, &adt("AFTER1")).await;
        assert_eq!(
            (ack.code.as_str(), ack.control_id.as_str()),
            ("AA", "AFTER1")
        );

        let seen = sink.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].raw,
            big_header("BIG1").into_bytes(),
            "only the header is kept"
        );
        assert_eq!(seen[0].source.adapter, ADAPTER);
        match &seen[0].normalized {
            Err(e) => assert!(e.reason.contains("limit 1024"), "{e}"),
            Ok(_) => panic!("an oversized message was normalised"),
        }
        assert_eq!(seen[1].raw, adt("AFTER1"));
        assert!(seen[1].normalized.is_ok());
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn oversized_message_between_pipelined_ones_is_answered_in_order() {
        let sink = FakeSink::new(Mode::Accept);
        let server = start(sink.clone(), 1024, WAIT).await;
        let (first, big, last) = (adt("P1"), oversized("P2", 4000), adt("P3"));
        let mut stream = connect(server.addr).await;
        stream
            .write_all(&framed(&[&first, &big, &last]))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let acks = read_acks(&mut stream, 3).await;
        assert_eq!(codes(&acks), [("AA", "P1"), ("AE", "P2"), ("AA", "P3")]);
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn unavailable_sink_is_answered_ar_with_an_err_segment() {
        let sink = FakeSink::new(Mode::Unavailable);
        let server = start(sink.clone(), 64 * 1024, WAIT).await;
        let mut client = MllpClient::connect(server.addr, WAIT)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        for id in ["DOWN1", "DOWN2"] {
            let ack = send(&mut client, &adt(id)).await;
            assert_eq!((ack.code.as_str(), ack.control_id.as_str()), ("AR", id));
            assert!(
                ack.raw
                    .split(|&b| b == b'\r')
                    .any(|s| s.starts_with(b"ERR|")),
                "no ERR segment: {}",
                String::from_utf8_lossy(&ack.raw)
            );
            let text = ack.text.unwrap_or_default();
            assert!(text.contains("send this message again later"), "{text}");
        }
        assert_eq!(sink.seen().len(), 2);
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_ends_serve_and_its_connections() {
        let sink = FakeSink::new(Mode::Accept);
        let server = start(sink, 64 * 1024, WAIT).await;
        let mut stream = connect(server.addr).await;
        stream
            .write_all(&framed(&[&adt("BEFORE")]))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let acks = read_acks(&mut stream, 1).await;
        assert_eq!(codes(&acks), [("AA", "BEFORE")]);

        server.shutdown.cancel();
        tokio::time::timeout(WAIT, server.task)
            .await
            .unwrap_or_else(|_| panic!("serve did not end within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("serve panicked: {e}"));
        closed_by_server(&mut stream).await;
    }

    #[tokio::test]
    async fn idle_connection_is_closed() {
        let sink = FakeSink::new(Mode::Accept);
        let server = start(sink, 64 * 1024, Duration::from_millis(200)).await;
        let mut stream = connect(server.addr).await;
        stream
            .write_all(&framed(&[&adt("IDLE1")]))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(codes(&read_acks(&mut stream, 1).await), [("AA", "IDLE1")]);
        closed_by_server(&mut stream).await;
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn message_cut_short_by_end_of_stream_is_not_answered() {
        let sink = FakeSink::new(Mode::Accept);
        let server = start(sink.clone(), 64 * 1024, WAIT).await;
        let mut stream = connect(server.addr).await;
        let mut wire = framed(&[&adt("WHOLE")]);
        wire.extend_from_slice(b"\x0bMSH|^~\\&|cut");
        stream
            .write_all(&wire)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        stream
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
        assert_eq!(codes(&read_acks(&mut stream, 1).await), [("AA", "WHOLE")]);
        closed_by_server(&mut stream).await;
        assert_eq!(sink.seen().len(), 1);
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_a_freed_slot_is_reused() {
        // `start` serves two connections at once.
        let sink = FakeSink::new(Mode::Accept);
        let server = start(sink.clone(), 64 * 1024, WAIT).await;
        let mut first = connect(server.addr).await;
        let mut second = connect(server.addr).await;
        for (stream, id) in [(&mut first, "C1"), (&mut second, "C2")] {
            stream
                .write_all(&framed(&[&adt(id)]))
                .await
                .unwrap_or_else(|e| panic!("write: {e}"));
            assert_eq!(codes(&read_acks(stream, 1).await), [("AA", id)]);
        }
        let mut third = connect(server.addr).await;
        closed_by_server(&mut third).await;
        // When one of the two goes, the next sender is served.
        drop(first);
        let deadline = tokio::time::Instant::now() + WAIT;
        let acks = loop {
            let mut retry = connect(server.addr).await;
            if retry.write_all(&framed(&[&adt("C3")])).await.is_ok() {
                let mut buf = [0u8; 1];
                // A closed connection reads 0 bytes (or fails); a served one answers.
                if retry.peek(&mut buf).await.is_ok_and(|n| n > 0) {
                    break read_acks(&mut retry, 1).await;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slot was never freed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(codes(&acks), [("AA", "C3")]);
        assert_eq!(sink.seen().len(), 3);
        server.shutdown.cancel();
    }
}
