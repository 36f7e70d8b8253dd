//! Delivery workers: push each delivery to the recipient's webhook (Standard Webhooks),
//! re-checking consent at every attempt; retry on a schedule through the broker's TTL
//! queues (so waiting retries survive a hub restart); dead-letter what will never
//! succeed or has run out of retries, with the reason.

pub mod destination;
pub mod signing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use uuid::Uuid;

use crate::audit::AuditEntry;
use crate::bus::{Bus, DeliveryHandoff, HandleOutcome, MessageHandler};
use crate::config::DeliverySettings;
use crate::registry::{ConsentDecision, consent_decision};
use crate::store::batch::GroupCommit;
use crate::store::{AttemptRecord, DeliveryFinish, DeliveryJob, DeliveryStore, NextState};
use destination::{DestinationPolicy, DestinationRefused};
use signing::{WebhookSecret, signature_header};

const ACTOR: &str = "delivery";
/// A retry arriving at most this much before it is due is attempted.
const EARLY_TOLERANCE: Duration = Duration::from_millis(100);

/// How one HTTP attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// 2xx.
    Delivered {
        /// Status code.
        status: u16,
    },
    /// Worth trying again (timeouts, connection errors, 408, 425, 429, 5xx).
    Retryable {
        /// Status code, if a response came.
        status: Option<u16>,
        /// What happened.
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Will never succeed as sent (other 4xx, redirects, a bad endpoint).
    Permanent {
        /// Status code, if a response came.
        status: Option<u16>,
        /// What happened.
        error: String,
    },
}

/// Classifies a response status.
pub fn classify(status: StatusCode, headers: &HeaderMap) -> AttemptResult {
    let code = status.as_u16();
    if status.is_success() {
        return AttemptResult::Delivered { status: code };
    }
    let retryable = matches!(code, 408 | 425 | 429) || status.is_server_error();
    if retryable {
        AttemptResult::Retryable {
            status: Some(code),
            error: format!("receiver answered {status}"),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
        }
    } else {
        AttemptResult::Permanent {
            status: Some(code),
            error: if status.is_redirection() {
                format!(
                    "receiver answered {status}; redirects are not followed, fix the endpoint URL"
                )
            } else {
                format!("receiver refused the request with {status}")
            },
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// The wait before retry number `retry` (1-based), shortened by up to `jitter`, never
/// shorter than the receiver's `Retry-After`; `None` when the schedule is exhausted.
pub fn next_delay(
    schedule: &[Duration],
    retry: usize,
    jitter: f64,
    retry_after: Option<Duration>,
    random_unit: f64,
) -> Option<Duration> {
    let base = *schedule.get(retry.checked_sub(1)?)?;
    let jittered = base.mul_f64(1.0 - jitter * random_unit.clamp(0.0, 1.0));
    // A receiver may ask for a longer wait than the schedule's, up to a day.
    Some(retry_after.map_or(jittered, |ra| ra.min(MAX_RETRY_AFTER).max(jittered)))
}

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The HTTP side of delivery: one signed POST per attempt, to destinations the
/// policy allows only.
pub struct WebhookSender {
    client: reqwest::Client,
    destinations: DestinationPolicy,
    timeout: Duration,
}

impl WebhookSender {
    /// Builds the HTTP client: rustls with ring, no redirects (a redirect could lead
    /// anywhere), no proxy (the destination check must see the address connected to),
    /// and names resolved through the destination guard.
    pub fn new(settings: &DeliverySettings) -> Result<Self, reqwest::Error> {
        // The process-wide TLS provider (ring), unless one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let destinations = DestinationPolicy::new(settings.allowed_destinations.clone());
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(destinations.clone().resolver())
            .user_agent(settings.user_agent.clone())
            .pool_max_idle_per_host(settings.concurrency)
            .build()?;
        Ok(Self {
            client,
            destinations,
            timeout: settings.timeout,
        })
    }

    /// POSTs `body` with `headers` to `url`. A destination the policy refuses — a
    /// literal address here, a name when it resolves — fails the attempt permanently
    /// without connecting: the delivery goes dead with the reason, to replay once the
    /// endpoint or `delivery.allowed_destinations` is fixed.
    pub async fn post(&self, url: &str, headers: HeaderMap, body: Vec<u8>) -> AttemptResult {
        let url = match reqwest::Url::parse(url) {
            Ok(url) => url,
            Err(e) => {
                return AttemptResult::Permanent {
                    status: None,
                    error: format!("the endpoint URL is not a valid URL: {e}"),
                };
            }
        };
        // Names are checked by the resolver; the client never resolves an address.
        if let Err(refused) = self.destinations.check_literal(&url) {
            return refused_attempt(&refused);
        }
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) => classify(response.status(), response.headers()),
            Err(e) => match destination::refusal_in(&e) {
                Some(refused) => refused_attempt(refused),
                None => AttemptResult::Retryable {
                    status: None,
                    error: if e.is_timeout() {
                        format!("no answer within {:?}", self.timeout)
                    } else if e.is_connect() {
                        "cannot connect to the endpoint".to_owned()
                    } else {
                        format!("request failed: {e}")
                    },
                    retry_after: None,
                },
            },
        }
    }
}

fn refused_attempt(refused: &DestinationRefused) -> AttemptResult {
    AttemptResult::Permanent {
        status: None,
        error: format!("destination refused, nothing was sent: {refused}"),
    }
}

/// Sends webhooks for deliveries taken from the bus.
pub struct DeliveryWorker {
    bus: Arc<dyn Bus>,
    sender: WebhookSender,
    settings: DeliverySettings,
    finishes: GroupCommit<DeliveryFinish, bool>,
    loads: GroupCommit<Uuid, Option<DeliveryJob>>,
}

/// Delivery outcomes recorded per transaction, at most.
const FINISH_BATCH: usize = 128;

impl DeliveryWorker {
    /// A worker; builds its HTTP client (see [`WebhookSender::new`]).
    pub fn new(
        store: Arc<dyn DeliveryStore>,
        bus: Arc<dyn Bus>,
        settings: DeliverySettings,
    ) -> Result<Self, reqwest::Error> {
        let sender = WebhookSender::new(&settings)?;
        let committer = store.clone();
        let finishes = GroupCommit::spawn(FINISH_BATCH, move |batch| {
            let store = committer.clone();
            Box::pin(async move { store.finish_deliveries(batch).await })
        });
        // Concurrent workers' reads are batched the same way.
        let reader = store.clone();
        let loads = GroupCommit::spawn(FINISH_BATCH, move |ids| {
            let store = reader.clone();
            Box::pin(async move { store.load_deliveries(ids).await })
        });
        Ok(Self {
            bus,
            sender,
            settings,
            finishes,
            loads,
        })
    }

    async fn send(&self, job: &DeliveryJob) -> AttemptResult {
        let secrets: Result<Vec<WebhookSecret>, _> = job
            .secrets
            .iter()
            .map(|s| WebhookSecret::parse(s))
            .collect();
        let secrets = match secrets {
            Ok(s) => s,
            Err(e) => {
                return AttemptResult::Permanent {
                    status: None,
                    error: format!("the endpoint's signing secret is unusable: {e}"),
                };
            }
        };
        let msg_id = job.event_id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = signature_header(&secrets, &msg_id, timestamp, &job.body);
        let mut headers = HeaderMap::new();
        let values = [
            ("content-type", "application/json".to_owned()),
            ("webhook-id", msg_id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
            ("renkei-sequence", job.sequence.to_string()),
            ("renkei-delivery-id", job.id.to_string()),
        ];
        for (name, value) in values {
            match HeaderValue::try_from(value) {
                Ok(value) => {
                    headers.insert(name, value);
                }
                Err(_) => {
                    return AttemptResult::Permanent {
                        status: None,
                        error: format!("cannot build the {name} header"),
                    };
                }
            }
        }
        self.sender.post(&job.url, headers, job.body.clone()).await
    }

    /// Runs one delivery; returns what to do with its bus message.
    pub async fn deliver(&self, id: Uuid) -> HandleOutcome {
        let job = match self.loads.submit(id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::warn!(delivery = %id, "no such delivery; message dropped");
                return HandleOutcome::Ack;
            }
            Err(e) => {
                tracing::warn!(delivery = %id, error = %e, "cannot load delivery; requeued");
                return HandleOutcome::Requeue;
            }
        };
        if !matches!(job.status.as_str(), "pending" | "retrying") {
            return HandleOutcome::Ack;
        }
        // A retry that arrives before it is due — redelivered after a failure, or a wait
        // longer than the longest retry queue — is put back to wait out the rest, so an
        // early arrival never spends an attempt.
        if job.status == "retrying"
            && let Some(due) = job.next_attempt_at
            && let Ok(early) = (due - Utc::now()).to_std()
            && early > EARLY_TOLERANCE
        {
            return match self.bus.schedule_retry(id, early).await {
                Ok(()) => HandleOutcome::Ack,
                Err(e) => {
                    tracing::warn!(delivery = %id, error = %e, "cannot put an early retry back; requeued");
                    HandleOutcome::Requeue
                }
            };
        }
        let audit = |outcome: &str, detail: serde_json::Value| {
            AuditEntry::new(ACTOR, "deliver", outcome)
                .event(job.event_id)
                .participant(&job.participant_id)
                .patient(job.patient_id.as_deref())
                .detail(detail)
        };
        // Consent may have been withdrawn while the delivery waited.
        if job.patient_id.is_some() {
            let decision = consent_decision(&job.consents, &job.facility, Utc::now());
            if decision != ConsentDecision::Covered {
                let reason = "consent no longer covers this recipient";
                let entry = audit(
                    "cancelled_by_consent",
                    serde_json::json!({ "delivery": id, "reason": reason, "decision": decision }),
                );
                return self
                    .finish(
                        id,
                        None,
                        NextState::Cancelled {
                            reason: reason.into(),
                        },
                        entry,
                        None,
                    )
                    .await;
            }
        }
        if !job.endpoint_enabled {
            let reason = "the endpoint is disabled; replay after enabling it";
            let entry = audit(
                "dead",
                serde_json::json!({ "delivery": id, "reason": reason }),
            );
            return self
                .finish(
                    id,
                    None,
                    NextState::Dead {
                        reason: reason.into(),
                    },
                    entry,
                    None,
                )
                .await;
        }
        let attempt = job.attempts + 1;
        let started_at = Utc::now();
        let clock = Instant::now();
        let result = self.send(&job).await;
        let duration_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
        let mut record = AttemptRecord {
            attempt,
            started_at,
            duration_ms,
            status_code: None,
            error: None,
            outcome: String::new(),
        };
        let (next, retry_in) = match result {
            AttemptResult::Delivered { status } => {
                record.status_code = Some(i32::from(status));
                (NextState::Delivered, None)
            }
            AttemptResult::Permanent { status, error } => {
                record.status_code = status.map(i32::from);
                record.error = Some(error.clone());
                (NextState::Dead { reason: error }, None)
            }
            AttemptResult::Retryable {
                status,
                error,
                retry_after,
            } => {
                record.status_code = status.map(i32::from);
                record.error = Some(error.clone());
                let retry = usize::try_from(attempt).unwrap_or(usize::MAX);
                let unit: f64 = rand::rng().random();
                match next_delay(
                    &self.settings.retry_schedule,
                    retry,
                    self.settings.jitter,
                    retry_after,
                    unit,
                ) {
                    Some(delay) => (
                        NextState::Retry {
                            at: started_at + delay,
                            error,
                        },
                        Some(delay),
                    ),
                    None => (
                        NextState::Dead {
                            reason: format!(
                                "retries exhausted after {attempt} attempts; last: {error}"
                            ),
                        },
                        None,
                    ),
                }
            }
        };
        let outcome = match &next {
            NextState::Delivered => "delivered",
            NextState::Retry { .. } => "retry",
            _ => "dead",
        };
        record.outcome = outcome.to_owned();
        let entry = audit(
            outcome,
            serde_json::json!({
                "delivery": id,
                "attempt": attempt,
                "status": record.status_code,
                "error": record.error,
                "duration_ms": duration_ms,
            }),
        );
        tracing::info!(delivery = %id, event_id = %job.event_id, participant = %job.participant_id, attempt, status = ?record.status_code, outcome, "delivery attempt");
        self.finish(id, Some(record), next, entry, retry_in).await
    }

    async fn finish(
        &self,
        id: Uuid,
        attempt: Option<AttemptRecord>,
        next: NextState,
        entry: AuditEntry,
        retry_in: Option<Duration>,
    ) -> HandleOutcome {
        let finish = DeliveryFinish {
            id,
            attempt,
            next,
            audit: entry,
        };
        match self.finishes.submit(finish).await {
            Ok(true) => {}
            Ok(false) => {
                // Another copy of this job got there first and schedules what follows.
                tracing::debug!(delivery = %id, "a duplicate copy of the job finished second; dropped");
                return HandleOutcome::Ack;
            }
            Err(e) => {
                tracing::warn!(delivery = %id, error = %e, "cannot record the attempt; requeued");
                return HandleOutcome::Requeue;
            }
        }
        if let Some(delay) = retry_in
            && let Err(e) = self.bus.schedule_retry(id, delay).await
        {
            // The attempt is recorded with its due time: when the message comes back
            // early, `deliver` puts it back to wait rather than attempting again.
            tracing::warn!(delivery = %id, error = %e, "cannot schedule the retry; requeued");
            return HandleOutcome::Requeue;
        }
        HandleOutcome::Ack
    }
}

/// Moves dead deliveries back to the queue (CLI and API). Each is marked pending, then
/// its job is published; jobs that cannot be published are put back to `dead`, so a
/// later replay finds them again. Returns the ids queued.
pub async fn replay(
    store: &dyn DeliveryStore,
    bus: &dyn Bus,
    ids: &[Uuid],
    actor: &str,
) -> Result<Vec<Uuid>, ReplayError> {
    let marked = store.replay_dead(ids, actor).await?;
    for (n, id) in marked.iter().enumerate() {
        if let Err(e) = bus.publish_delivery(*id).await {
            let (queued, unqueued) = marked.split_at(n);
            let reason = format!("replay could not be queued: {e}");
            store.unreplay(unqueued, &reason).await?;
            return Err(ReplayError::Broker {
                queued: queued.to_vec(),
                error: e.to_string(),
            });
        }
    }
    Ok(marked)
}

/// Why a replay did not queue every delivery.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The database failed; nothing was queued.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The broker failed part-way; the rest are dead again and can be replayed later.
    #[error(
        "the bus cannot take them now ({error}); {} deliveries were queued, the others are still dead: replay them again later",
        queued.len()
    )]
    Broker {
        /// Queued before the failure.
        queued: Vec<Uuid>,
        /// The broker's error.
        error: String,
    },
}

#[async_trait]
impl MessageHandler for DeliveryWorker {
    async fn handle(&self, body: &[u8], _redelivered: bool) -> HandleOutcome {
        let Some(ids) = crate::bus::delivery_ids(body) else {
            tracing::error!(
                "a message on the delivery queue is not a list of delivery ids; dead-lettered"
            );
            return HandleOutcome::DeadLetter;
        };
        self.deliver_all(&ids).await
    }
}

impl DeliveryWorker {
    /// Runs an event's deliveries side by side. When one cannot be finished, the whole
    /// set is to be handled again: those already finished are skipped then.
    pub async fn deliver_all(&self, ids: &[Uuid]) -> HandleOutcome {
        let outcomes = futures_util::future::join_all(ids.iter().map(|id| self.deliver(*id))).await;
        if outcomes.contains(&HandleOutcome::Requeue) {
            HandleOutcome::Requeue
        } else {
            HandleOutcome::Ack
        }
    }
}

/// The router of a process that also runs the delivery role hands deliveries straight
/// to its workers (see [`DeliveryHandoff`]).
#[async_trait]
impl DeliveryHandoff for DeliveryWorker {
    async fn hand_off(&self, delivery_ids: &[Uuid]) -> Result<(), String> {
        match self.deliver_all(delivery_ids).await {
            HandleOutcome::Ack => Ok(()),
            _ => Err("a delivery's first attempt could not be recorded".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use crate::bus::{BusError, QueueRole};
    use crate::store::StoreError;
    use tokio_util::sync::CancellationToken;

    /// Deliveries marked for replay, and those put back.
    #[derive(Default)]
    struct ReplayStore {
        unreplayed: Mutex<Vec<Uuid>>,
    }

    #[async_trait]
    impl DeliveryStore for ReplayStore {
        async fn load_deliveries(
            &self,
            ids: &[Uuid],
        ) -> Result<Vec<Option<DeliveryJob>>, StoreError> {
            Ok(vec![None; ids.len()])
        }
        async fn finish_deliveries(
            &self,
            batch: &[DeliveryFinish],
        ) -> Result<Vec<bool>, StoreError> {
            Ok(vec![true; batch.len()])
        }
        async fn replay_dead(&self, ids: &[Uuid], _: &str) -> Result<Vec<Uuid>, StoreError> {
            Ok(ids.to_vec())
        }
        async fn unreplay(&self, ids: &[Uuid], reason: &str) -> Result<(), StoreError> {
            assert!(reason.contains("replay could not be queued"), "{reason}");
            self.unreplayed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(ids);
            Ok(())
        }
    }

    /// A broker that confirms `accept` publishes, then is unreachable.
    struct FlakyBus {
        accept: Mutex<usize>,
    }

    #[async_trait]
    impl Bus for FlakyBus {
        async fn publish_event(&self, _: &str, _: Uuid, _: &[u8]) -> Result<(), BusError> {
            unreachable!("replay publishes deliveries only")
        }
        async fn publish_deliveries(&self, _: &[Uuid]) -> Result<(), BusError> {
            let mut left = self.accept.lock().unwrap_or_else(|e| e.into_inner());
            if *left == 0 {
                return Err(BusError::Unreachable("connection refused".into()));
            }
            *left -= 1;
            Ok(())
        }
        async fn schedule_retry(&self, _: Uuid, _: Duration) -> Result<(), BusError> {
            unreachable!("replay schedules no retries")
        }
        async fn consume(
            &self,
            _: QueueRole,
            _: usize,
            _: Arc<dyn MessageHandler>,
            _: CancellationToken,
        ) {
        }
    }

    #[tokio::test]
    async fn replay_puts_back_what_it_could_not_queue() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let store = ReplayStore::default();
        let bus = FlakyBus {
            accept: Mutex::new(1),
        };
        match replay(&store, &bus, &ids, "test").await {
            Err(ReplayError::Broker { queued, .. }) => assert_eq!(queued, ids[..1]),
            other => panic!("expected a broker failure, got {other:?}"),
        }
        let unreplayed = store
            .unreplayed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert_eq!(
            unreplayed,
            ids[1..],
            "the unqueued are dead again, to replay later"
        );

        let store = ReplayStore::default();
        let bus = FlakyBus {
            accept: Mutex::new(3),
        };
        let queued = replay(&store, &bus, &ids, "test")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(queued, ids);
        assert!(
            store
                .unreplayed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        );
    }

    #[test]
    fn statuses_are_classified_like_receivers_expect() {
        let none = HeaderMap::new();
        assert_eq!(
            classify(StatusCode::NO_CONTENT, &none),
            AttemptResult::Delivered { status: 204 }
        );
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &none),
            AttemptResult::Permanent {
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(
            classify(StatusCode::GONE, &none),
            AttemptResult::Permanent { .. }
        ));
        assert!(matches!(
            classify(StatusCode::FOUND, &none),
            AttemptResult::Permanent { .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &none),
            AttemptResult::Retryable { .. }
        ));
        assert!(matches!(
            classify(StatusCode::REQUEST_TIMEOUT, &none),
            AttemptResult::Retryable { .. }
        ));
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &headers),
            AttemptResult::Retryable {
                status: Some(429),
                error: "receiver answered 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(120)),
            }
        );
    }

    fn sender(allowed: &[&str]) -> Result<WebhookSender, reqwest::Error> {
        WebhookSender::new(&DeliverySettings {
            concurrency: 1,
            timeout: Duration::from_secs(10),
            retry_schedule: vec![Duration::from_secs(1)],
            jitter: 0.0,
            user_agent: "test".into(),
            allowed_destinations: allowed.iter().filter_map(|n| n.parse().ok()).collect(),
        })
    }

    /// A receiver on 127.0.0.1 answering every request with 204.
    async fn receiver() -> std::io::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body announced by Content-Length.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        Ok(port)
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_fails_the_attempt_without_sending()
    -> anyhow::Result<()> {
        let port = receiver().await?;
        let url = format!("http://localhost:{port}/hook");
        let refused = sender(&[])?
            .post(&url, HeaderMap::new(), b"{}".to_vec())
            .await;
        let AttemptResult::Permanent {
            status: None,
            error,
        } = &refused
        else {
            anyhow::bail!("refused permanently: {refused:?}");
        };
        assert!(
            error.starts_with("destination refused, nothing was sent: `localhost` resolves to ")
                && error.contains("a loopback address"),
            "{error}"
        );
        // Allowed, the same name reaches the receiver.
        let allowed = sender(&["127.0.0.0/8", "::1/128"])?
            .post(&url, HeaderMap::new(), b"{}".to_vec())
            .await;
        assert_eq!(allowed, AttemptResult::Delivered { status: 204 });
        Ok(())
    }

    #[tokio::test]
    async fn a_literal_refused_address_fails_the_attempt_without_sending() -> anyhow::Result<()> {
        let port = receiver().await?;
        let refused = sender(&[])?
            .post(
                &format!("http://127.0.0.1:{port}/hook"),
                HeaderMap::new(),
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(
            refused,
            AttemptResult::Permanent {
                status: None,
                error: "destination refused, nothing was sent: 127.0.0.1 is a loopback address \
                        (127.0.0.0/8); webhooks are not sent there unless \
                        delivery.allowed_destinations lists a network containing it"
                    .into(),
            }
        );
        let metadata = sender(&["127.0.0.0/8"])?
            .post(
                "http://169.254.169.254/latest/meta-data/",
                HeaderMap::new(),
                Vec::new(),
            )
            .await;
        assert!(
            matches!(&metadata, AttemptResult::Permanent { error, .. } if error.contains("link-local")),
            "{metadata:?}"
        );
        let allowed = sender(&["127.0.0.1/32"])?
            .post(
                &format!("http://127.0.0.1:{port}/hook"),
                HeaderMap::new(),
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(allowed, AttemptResult::Delivered { status: 204 });
        Ok(())
    }

    #[test]
    fn schedule_jitter_and_retry_after() {
        let s = [Duration::from_secs(10), Duration::from_secs(60)];
        assert_eq!(
            next_delay(&s, 1, 0.2, None, 0.0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            next_delay(&s, 1, 0.2, None, 1.0),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            next_delay(&s, 2, 0.0, None, 0.5),
            Some(Duration::from_secs(60))
        );
        assert_eq!(next_delay(&s, 3, 0.0, None, 0.5), None);
        assert_eq!(
            next_delay(&s, 1, 0.2, Some(Duration::from_secs(30)), 0.5),
            Some(Duration::from_secs(30))
        );
        assert_eq!(next_delay(&s, 0, 0.2, None, 0.5), None);
        // An absurd Retry-After is capped, so the due time can always be computed.
        assert_eq!(
            next_delay(&s, 1, 0.2, Some(Duration::from_secs(u64::MAX / 2)), 0.5),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon"), None);
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        assert!(parse_retry_after(&later).is_some_and(|d| d > Duration::from_secs(80)));
    }
}
