//! The load: MLLP senders that each send a message, wait for its ACK, and send the
//! next (as an EHR interface engine does), as fast as possible or on a fixed schedule.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use renkei_hl7v2::client::MllpClient;
use renkei_sdk::Normalizer;

use crate::Args;
use crate::receiver::Receiver;

/// The facility the benchmark's messages come from.
pub const HOSPITAL: &str = "1319999999";
const CONTROL_PREFIX: &str = "B";

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the benchmark's epoch (never 0).
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
}

/// When each message was sent (0: not yet).
pub struct SendTimes(Vec<AtomicU64>);

impl SendTimes {
    /// Room for `n` messages.
    pub fn new(n: usize) -> Self {
        epoch();
        Self((0..n).map(|_| AtomicU64::new(0)).collect())
    }
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// The send time of message `i`, if it was sent.
    pub fn get(&self, i: usize) -> Option<u64> {
        self.0
            .get(i)
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
    }
    fn set(&self, i: usize, t: u64) {
        if let Some(slot) = self.0.get(i) {
            slot.store(t, Ordering::Relaxed);
        }
    }
}

/// The local patient id of patient `p` at the hospital.
pub fn patient_local_id(p: usize) -> String {
    format!("BP{p:08}")
}

/// The index of a benchmark message from its control id (MSH-10).
pub fn message_index(control_id: &str) -> Option<usize> {
    control_id.strip_prefix(CONTROL_PREFIX)?.parse().ok()
}

/// ADT^A01 number `i`, for one of `patients` patients, UTF-8.
pub fn message(i: usize, patients: usize) -> Vec<u8> {
    let patient = patient_local_id(i % patients.max(1));
    format!(
        "MSH|^~\\&|HIS01|{HOSPITAL}|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|{CONTROL_PREFIX}{i:09}|P|2.5||||||UNICODE UTF-8\r\
         EVN||20250410093000|||||{HOSPITAL}\r\
         PID|0001||{patient}^^^^PI||架空^花子^^^^^L^I~カクウ^ハナコ^^^^^L^P||19380315|F|||架空町1-2-3^^架空市^東京都^1000001^JPN^H||^PRN^PH^^^^^^^^^03-0000-0000\r\
         PV1|0001|I|05^512^2^^^N||||D001^医師^次郎^^^^^^^L^^^^^I|||01|||||||D001^医師^次郎^^^^^^^L^^^^^I|||||||||||||||||||||||||||202504100900\r\
         IN1|1|39^後期高齢者医療^JHSD0001|39139999|架空県後期高齢者医療広域連合|||||||||||||SEL^本人^HL70063\r"
    )
    .into_bytes()
}

/// The canonical event of a benchmark message, serialised: the raw-broker baseline
/// sends messages of this size.
pub fn sample_event_bytes(patients: usize) -> anyhow::Result<Vec<u8>> {
    let event = renkei_hl7v2::Hl7Normalizer::new()
        .normalize(&message(0, patients))
        .map_err(|e| anyhow::anyhow!("the benchmark message does not normalise: {e}"))?;
    Ok(serde_json::to_vec(&event)?)
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Messages answered `AA`.
    pub accepted: usize,
    /// Messages answered `AE`.
    pub refused: usize,
    /// Messages answered `AR` (not resent).
    pub rejected: usize,
    /// Sends that got no acknowledgement.
    pub errors: usize,
    /// From the first send to the last ACK.
    pub send_elapsed: Duration,
    /// From the first send to the last delivery received.
    pub delivery_elapsed: Duration,
    /// ACK latencies, ns.
    pub ack_ns: Vec<u64>,
    /// Source-to-receiver latencies, ns, both receivers.
    pub end_to_end_ns: Vec<u64>,
    /// Distinct deliveries received (both receivers).
    pub deliveries: usize,
    /// Deliveries received twice.
    pub duplicates: usize,
    /// Webhook requests whose signature did not verify (answered 401).
    pub bad_signatures: usize,
    /// Deliveries expected but not received when the wait ended.
    pub missing: usize,
}

/// Sends the load and waits for its deliveries.
pub async fn run(
    args: &Args,
    addr: SocketAddr,
    sent: &Arc<SendTimes>,
    receivers: &[Receiver],
) -> anyhow::Result<LoadResult> {
    let total = args.total();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.senders {
        let mut client = MllpClient::connect(addr, Duration::from_secs(60)).await?;
        let (next, sent, patients) = (next.clone(), sent.clone(), args.patients);
        tasks.spawn(async move {
            let mut seen = LoadResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Some(interval) = interval {
                    tokio::time::sleep_until(
                        (start + interval * u32::try_from(i).unwrap_or(u32::MAX)).into(),
                    )
                    .await;
                }
                let body = message(i, patients);
                let t0 = now_ns();
                sent.set(i, t0);
                match client.send(&body).await {
                    Ok(ack) => {
                        seen.ack_ns.push(now_ns() - t0);
                        match ack.code.as_str() {
                            "AA" => seen.accepted += 1,
                            "AE" => seen.refused += 1,
                            _ => seen.rejected += 1,
                        }
                    }
                    Err(e) => {
                        seen.errors += 1;
                        eprintln!("bench: send failed: {e}");
                        client = MllpClient::connect(addr, Duration::from_secs(60)).await?;
                    }
                }
            }
            anyhow::Ok(seen)
        });
    }
    let mut result = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        let seen = joined??;
        result.accepted += seen.accepted;
        result.refused += seen.refused;
        result.rejected += seen.rejected;
        result.errors += seen.errors;
        result.ack_ns.extend(seen.ack_ns);
    }
    result.send_elapsed = start.elapsed();

    // Every accepted event goes to every receiver.
    let expected = result.accepted * receivers.len();
    let received = || receivers.iter().map(Receiver::received).sum::<usize>();
    let (mut last, mut last_progress) = (received(), Instant::now());
    while last < expected && last_progress.elapsed() < args.drain_timeout() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received();
        if now != last {
            (last, last_progress) = (now, Instant::now());
        }
    }
    result.delivery_elapsed = last_progress.duration_since(start);
    result.deliveries = received();
    result.missing = expected.saturating_sub(result.deliveries);
    for r in receivers {
        result.duplicates += r.duplicates();
        result.end_to_end_ns.extend(r.latencies_ns().await);
        result.bad_signatures += r.bad_signatures();
        if r.unreadable() > 0 {
            eprintln!(
                "bench: {} webhook bodies named no benchmark message",
                r.unreadable()
            );
        }
    }
    Ok(result)
}
