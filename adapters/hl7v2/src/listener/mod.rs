//! The MLLP listener: accepts EHR connections, reads framed HL7 v2 messages, hands each
//! to an [`IngestSink`] and answers with an original-mode ACK decided only by the
//! sink's outcome — `AA` once the event is durable on the bus, `AE` (with an `ERR`
//! segment) for input that will never be accepted, `AR` when the hub cannot take it
//! now. Messages on one connection are handled in order; connections run concurrently.
//!
//! What one sender can hold is bounded: connections in all and per sender
//! ([`admission`]), the time a new connection has to complete its first message
//! (`handshake_timeout`), and the bytes of unanswered messages across all connections
//! ([`budget`]).

mod admission;
mod budget;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{FixedOffset, Utc};
use renkei_sdk::{
    IngestOutcome, IngestSink, InputSource, NormalizeError, Normalizer, ReceivedInput,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use self::admission::{Admission, Refusal, RefusalLog};
use self::budget::{Budget, FREE_PER_CONNECTION, Share};
use crate::mllp::{AckCode, AckError, ErrorCode, MllpCodec, MllpError, build_ack};
use crate::{Hl7Normalizer, MshHeader};

/// The source kind (`type = "mllp"`), and the default source name.
pub const ADAPTER: &str = "mllp";

/// How much room a connection's read buffer is given for each read.
const READ_CHUNK: usize = 8 * 1024;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// The source's name, reported as the `adapter` of every input.
    pub name: String,
    /// Largest message accepted, in bytes; a larger one is answered `AE` and discarded.
    pub max_message_bytes: usize,
    /// A connection that sends nothing for this long after an answer is closed.
    pub idle_timeout: Duration,
    /// A new connection that has not completed its first message this long after it
    /// was accepted is closed (a connection that never speaks holds a slot for
    /// nothing).
    pub handshake_timeout: Duration,
    /// Connections served at once; one more is closed as soon as it is accepted (its
    /// sender retries later), so a flood of connections cannot exhaust the hub.
    pub max_connections: usize,
    /// Connections one sender (an IPv4 address, an IPv6 /64) may hold at once, so one
    /// client cannot take the slots every other sender needs.
    pub max_connections_per_peer: usize,
    /// Bytes of unanswered messages all connections may hold together beyond a small
    /// free part each (see [`FREE_PER_CONNECTION_BYTES`]).
    pub max_bytes_in_flight: usize,
    /// How long a connection waits for room in `max_bytes_in_flight` before its
    /// message is answered `AR`.
    pub bytes_in_flight_wait: Duration,
    /// Times the normaliser accepts; a message with one outside is answered `AE`.
    pub time_window: renkei_sdk::TimeWindow,
}

/// What one connection may buffer without drawing on `max_bytes_in_flight`.
pub const FREE_PER_CONNECTION_BYTES: usize = FREE_PER_CONNECTION;

/// Accepts connections until `shutdown`, serving each on its own task.
pub async fn serve<S: IngestSink + ?Sized>(
    listener: TcpListener,
    sink: Arc<S>,
    options: ListenerOptions,
    shutdown: CancellationToken,
) {
    let budget = Budget::new(options.max_bytes_in_flight);
    serve_with_budget(listener, sink, options, budget, shutdown).await;
}

async fn serve_with_budget<S: IngestSink + ?Sized>(
    listener: TcpListener,
    sink: Arc<S>,
    options: ListenerOptions,
    budget: Arc<Budget>,
    shutdown: CancellationToken,
) {
    let normalizer = Arc::new(Hl7Normalizer::with_time_window(options.time_window));
    let admission = Admission::new(options.max_connections, options.max_connections_per_peer);
    let refusals = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let slot = match admission.admit(peer.ip()) {
                    Ok(slot) => slot,
                    Err(refusal) => {
                        drop(stream);
                        if let Some(refused) = refusals.refused(Instant::now()) {
                            let limit = match refusal {
                                Refusal::Full => "mllp.max_connections",
                                Refusal::PeerFull => "mllp.max_connections_per_peer",
                            };
                            tracing::warn!(
                                %peer,
                                limit,
                                refused,
                                "MLLP connections refused (closed as accepted) since the last such line; this one by {limit}"
                            );
                        }
                        continue;
                    }
                };
                let connection = Connection {
                    sink: sink.clone(),
                    normalizer: normalizer.clone(),
                    options: options.clone(),
                    share: budget.share(),
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

struct Connection<S: ?Sized> {
    sink: Arc<S>,
    normalizer: Arc<Hl7Normalizer>,
    options: ListenerOptions,
    share: Share,
    peer: SocketAddr,
}

impl<S: IngestSink + ?Sized> Connection<S> {
    /// Serves one connection until the peer closes it, it stays idle, a transport
    /// error, or `shutdown`.
    ///
    /// The codec is driven by hand rather than through `Framed`: a `Framed` stream ends
    /// after the decoder's first error, but [`MllpError::FrameTooLarge`] is not the end
    /// of the connection — the codec has skipped the rest of the oversized frame and
    /// the next frame decodes normally, so the listener answers `AE` and carries on.
    async fn run(mut self, mut stream: TcpStream, shutdown: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let peer = self.peer;
        tracing::debug!(%peer, "MLLP connection opened");
        let idle = self.options.idle_timeout;
        let limit = self.options.max_message_bytes;
        let mut codec = MllpCodec::with_max_frame_len(limit);
        // One read buffer per connection; decoded frames are split off its front and
        // handed on without a copy.
        let mut read_buf = BytesMut::with_capacity(READ_CHUNK);
        let mut write_buf = BytesMut::new();
        // The first message must be complete within the handshake window; each next
        // one (or the end of the connection) within `idle` of the previous answer.
        let mut deadline = deadline_after(self.options.handshake_timeout.min(idle));
        let mut answered = false;
        // Whether the buffer grew past its first size (for a large message).
        let mut grown = false;
        // How long the message arriving has waited for room in the budget.
        let mut waited = Duration::ZERO;
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
                    Ok(Some(frame)) => self.handle(frame.freeze()).await,
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
                        self.answer(header, Err(error)).await
                    }
                    Err(MllpError::FrameAbandoned { size, header }) => {
                        tracing::info!(%peer, size, "no room for this message in mllp.max_bytes_in_flight; answered AR");
                        let header = MshHeader::parse(&header).unwrap_or_else(fallback_header);
                        reject_ack(
                            &header,
                            "the hub is holding as many large messages as it may; send this message again later",
                        )
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
                answered = true;
                waited = Duration::ZERO;
                deadline = deadline_after(idle);
            }
            if grown && read_buf.len() <= READ_CHUNK / 2 {
                // A large message was handed on (sharing the buffer's allocation) or
                // discarded: start a small buffer, so that allocation goes now.
                let mut fresh = BytesMut::with_capacity(READ_CHUNK);
                fresh.extend_from_slice(&read_buf);
                read_buf = fresh;
                grown = false;
            }
            // What was answered is given back; the buffer keeps what it holds.
            self.share.keep(read_buf.capacity());
            if eof {
                break;
            }
            if read_buf.capacity() - read_buf.len() < READ_CHUNK / 2 {
                // A message longer than the buffer: grow it (doubling, but never past
                // what the largest message needs), with room from the budget first.
                let len = read_buf.len();
                let grow = len
                    .min((limit + READ_CHUNK).saturating_sub(len))
                    .max(READ_CHUNK);
                let wait = self.options.bytes_in_flight_wait.saturating_sub(waited);
                let started = Instant::now();
                let room = tokio::select! {
                    room = self.share.hold(read_buf.capacity() + grow, wait) => room,
                    () = shutdown.cancelled() => break,
                };
                // The hub's own wait is not the sender's: its deadline moves on.
                waited += started.elapsed();
                deadline += started.elapsed();
                if room {
                    read_buf.reserve(grow);
                    grown |= read_buf.capacity() > 2 * READ_CHUNK;
                } else if codec.abandon_frame(&mut read_buf) {
                    // Answered `AR` when its end arrives; its bytes are let go now.
                    read_buf = BytesMut::with_capacity(READ_CHUNK);
                    grown = false;
                    self.share.keep(read_buf.capacity());
                } else {
                    // Nothing to give up (bytes outside a frame are dropped as read).
                    read_buf.clear();
                }
            }
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut read_buf)) => read,
                () = shutdown.cancelled() => break,
            };
            match read {
                Err(_) if !answered => {
                    tracing::debug!(%peer, window = ?self.options.handshake_timeout, "closing an MLLP connection that sent no complete message in mllp.handshake_timeout");
                    break;
                }
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

    async fn handle(&self, raw: Bytes) -> Vec<u8> {
        let normalized = self.normalizer.normalize(&raw);
        self.answer(raw, normalized).await
    }

    async fn answer(
        &self,
        raw: Bytes,
        normalized: Result<renkei_sdk::CanonicalEvent, NormalizeError>,
    ) -> Vec<u8> {
        let header = MshHeader::parse(&raw).unwrap_or_else(fallback_header);
        let input = ReceivedInput {
            source: InputSource {
                adapter: self.options.name.clone(),
                peer: self.peer.to_string(),
            },
            raw,
            normalized,
        };
        match self.sink.ingest(input).await {
            IngestOutcome::Accepted { .. } => ack(&header, AckCode::Accept, None),
            IngestOutcome::Rejected(e) => ack(&header, AckCode::Error, Some(&AckError::from(&e))),
            IngestOutcome::Unavailable(reason) => {
                tracing::warn!(peer = %self.peer, %reason, "cannot accept a message now; answered AR");
                reject_ack(
                    &header,
                    "the hub cannot accept messages right now; send this message again later",
                )
            }
        }
    }
}

/// An acknowledgement of the message with `header`.
fn ack(header: &MshHeader, code: AckCode, error: Option<&AckError>) -> Vec<u8> {
    build_ack(header, code, &ack_control_id(), error, japan_now())
}

/// `AR` with an `ERR` segment saying why and that the sender should resend.
fn reject_ack(header: &MshHeader, text: &str) -> Vec<u8> {
    let error = AckError::new(ErrorCode::ApplicationInternalError, text);
    ack(header, AckCode::Reject, Some(&error))
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

    #[async_trait::async_trait]
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

    /// The options of most tests: two connections, a roomy budget.
    fn options(max_message_bytes: usize, idle_timeout: Duration) -> ListenerOptions {
        ListenerOptions {
            name: ADAPTER.to_owned(),
            max_message_bytes,
            idle_timeout,
            handshake_timeout: idle_timeout,
            max_connections: 2,
            max_connections_per_peer: 2,
            max_bytes_in_flight: 64 * 1024 * 1024,
            bytes_in_flight_wait: WAIT,
            time_window: renkei_sdk::TimeWindow::default(),
        }
    }

    async fn start(
        sink: Arc<FakeSink>,
        max_message_bytes: usize,
        idle_timeout: Duration,
    ) -> Server {
        start_with(sink, options(max_message_bytes, idle_timeout)).await
    }

    async fn start_with(sink: Arc<FakeSink>, options: ListenerOptions) -> Server {
        let budget = Budget::new(options.max_bytes_in_flight);
        start_with_budget(sink, options, budget).await
    }

    async fn start_with_budget(
        sink: Arc<FakeSink>,
        options: ListenerOptions,
        budget: Arc<Budget>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with_budget(
            listener,
            sink,
            options,
            budget,
            shutdown.clone(),
        ));
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

    /// A well-formed ADT^A01 of more than `len` bytes (a long note).
    fn large_adt(control_id: &str, len: usize) -> Vec<u8> {
        let mut message = adt(control_id);
        message.extend_from_slice(format!("NTE|1||{}\r", "X".repeat(len)).as_bytes());
        message
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

        let seen: Vec<Vec<u8>> = sink
            .seen()
            .into_iter()
            .map(|input| input.raw.to_vec())
            .collect();
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
    /// Connects from `source` (another loopback address is another sender).
    async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
        let from: SocketAddr = format!("{source}:0")
            .parse()
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        socket
            .bind(from)
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect timed out"))
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    #[tokio::test]
    async fn a_flood_from_one_sender_leaves_room_for_another() {
        let sink = FakeSink::new(Mode::Accept);
        let mut options = options(64 * 1024, WAIT);
        options.max_connections = 8;
        options.max_connections_per_peer = 3;
        let server = start_with(sink.clone(), options).await;
        // Three idle connections from one address hold its share; the next are
        // closed as accepted, while they still hold theirs.
        let mut flood = Vec::new();
        for _ in 0..3 {
            flood.push(connect_from("127.0.0.1", server.addr).await);
        }
        for _ in 0..5 {
            let mut refused = connect_from("127.0.0.1", server.addr).await;
            closed_by_server(&mut refused).await;
        }
        // Another sender gets in at its first try.
        let mut other = connect_from("127.0.0.2", server.addr).await;
        other
            .write_all(&framed(&[&adt("OTHER1")]))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(codes(&read_acks(&mut other, 1).await), [("AA", "OTHER1")]);
        // The flood's connections were held all along: one still answers.
        flood[0]
            .write_all(&framed(&[&adt("FLOOD1")]))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(
            codes(&read_acks(&mut flood[0], 1).await),
            [("AA", "FLOOD1")]
        );
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_message_within_the_handshake_window_is_closed() {
        let sink = FakeSink::new(Mode::Accept);
        let mut options = options(64 * 1024, WAIT);
        options.handshake_timeout = Duration::from_millis(200);
        let server = start_with(sink.clone(), options).await;
        // Silent, and half a message that never ends: both closed by the window,
        // well before the (long) idle timeout.
        let mut silent = connect(server.addr).await;
        let mut partial = connect(server.addr).await;
        partial
            .write_all(b"\x0bMSH|^~\\&|HIS01")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        closed_by_server(&mut silent).await;
        closed_by_server(&mut partial).await;
        // A sender that speaks at once is served, and after its first answer the
        // idle timeout applies, not the window.
        let mut client = MllpClient::connect(server.addr, WAIT)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let first = send(&mut client, &adt("HS1")).await;
        assert_eq!(first.code, "AA");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let second = send(&mut client, &adt("HS2")).await;
        assert_eq!(
            (second.code.as_str(), second.control_id.as_str()),
            ("AA", "HS2")
        );
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn a_message_with_no_room_in_the_bytes_in_flight_budget_is_answered_ar() {
        let sink = FakeSink::new(Mode::Accept);
        let mut options = options(512 * 1024, WAIT);
        options.max_connections = 4;
        options.max_connections_per_peer = 4;
        options.max_bytes_in_flight = 600 * 1024;
        options.bytes_in_flight_wait = Duration::from_millis(300);
        let budget = Budget::new(options.max_bytes_in_flight);
        let server = start_with_budget(sink.clone(), options, budget.clone()).await;

        // One sender's large message, all but its end: it holds most of the budget.
        let first = large_adt("BIGA", 400 * 1024);
        let mut holder = connect(server.addr).await;
        let mut wire = framed(&[&first]);
        let tail = wire.split_off(wire.len() - 2);
        holder
            .write_all(&wire)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let deadline = Instant::now() + WAIT;
        while budget.available() > 200 * 1024 {
            assert!(
                Instant::now() < deadline,
                "the first message never took its room"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Another large message finds no room: `AR`, and nothing is handed on.
        let second = large_adt("BIGB", 400 * 1024);
        let mut client = MllpClient::connect(server.addr, WAIT)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let ack = send(&mut client, &second).await;
        assert_eq!((ack.code.as_str(), ack.control_id.as_str()), ("AR", "BIGB"));
        let text = ack.text.unwrap_or_default();
        assert!(text.contains("send this message again later"), "{text}");

        // Ordinary messages never wait on the budget.
        let ack = send(&mut client, &adt("SMALL1")).await;
        assert_eq!(
            (ack.code.as_str(), ack.control_id.as_str()),
            ("AA", "SMALL1")
        );

        // The first message completes; once answered, its room is free again and
        // the second, sent again, is accepted.
        holder
            .write_all(&tail)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(codes(&read_acks(&mut holder, 1).await), [("AA", "BIGA")]);
        let ack = send(&mut client, &second).await;
        assert_eq!((ack.code.as_str(), ack.control_id.as_str()), ("AA", "BIGB"));

        let seen: Vec<Vec<u8>> = sink
            .seen()
            .into_iter()
            .map(|input| input.raw.to_vec())
            .collect();
        assert_eq!(seen, [adt("SMALL1"), first, second]);
        server.shutdown.cancel();
    }
}
