//! The event bus behind a small trait: publish with a confirm, consume with explicit
//! acknowledgement, at least once. Two backends keep the same contract:
//!
//! - [`amqp::AmqpBus`], RabbitMQ, for several hub processes sharing one broker (with
//!   PostgreSQL as their store);
//! - [`embedded::EmbeddedBus`], an in-process durable queue in a SQLite file, for a
//!   single hub process that needs no broker (see that module for its tables).
//!
//! Both hand consumed messages to the same loop (`consumer.rs`): bounded concurrency,
//! in-place retries while the handler asks for a requeue, then ack, requeue or
//! dead-letter.
//!
//! RabbitMQ topology (every name carries the configured prefix `P`):
//!
//! | name | kind | purpose |
//! |---|---|---|
//! | `P.events` | topic exchange | canonical events, routing key = event type |
//! | `P.route` | quorum queue ← `P.events` `#` | the router's input |
//! | `P.deliveries` | direct exchange | delivery jobs (body = delivery id) |
//! | `P.deliver` | quorum queue ← `P.deliveries` `deliver` | the delivery workers' input |
//! | `P.retry.<ms>ms` | quorum queue, message TTL, dead-letters to `P.deliveries` | one per retry delay |
//! | `P.dlx` / `P.dead` | topic exchange / quorum queue | poison messages, kept for inspection |

pub mod amqp;
mod consumer;
pub mod embedded;
pub mod topology;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A bus failure. Every one met while running means "not done, try again later";
/// [`BusError::InUse`] only happens when opening, and needs an operator.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No connection to the broker.
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    /// The broker refused or did not confirm the publish.
    #[error("publish not confirmed: {0}")]
    NotConfirmed(String),
    /// Declaring the topology failed (e.g. an existing queue with other arguments).
    #[error("cannot declare the broker topology: {0}")]
    Topology(String),
    /// The embedded bus's SQLite database failed (cannot open, disk full, corrupt…).
    #[error("the embedded bus's database failed: {0}")]
    Storage(String),
    /// Another hub process (or another bus in this one) already has this embedded
    /// bus's database open.
    #[error(
        "the embedded bus keeps its queue in {}, which {} already uses; several hub processes need `bus.url = \"amqp://…\"` and PostgreSQL",
        database.display(),
        holder_name(*holder)
    )]
    InUse {
        /// The SQLite database file.
        database: PathBuf,
        /// The process holding it, when it wrote its id into the lock file.
        holder: Option<u32>,
    },
}

fn holder_name(holder: Option<u32>) -> String {
    match holder {
        Some(pid) if pid == std::process::id() => format!("this hub process ({pid}) itself"),
        Some(pid) => format!("hub process {pid}"),
        None => "another hub process".to_owned(),
    }
}

/// The queues the hub consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// Canonical events, for the router.
    Route,
    /// Delivery jobs, for the delivery workers.
    Deliver,
}

/// What to do with a consumed message once handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleOutcome {
    /// Done (its effects are committed): remove it.
    Ack,
    /// Could not be handled now (database down…): put it back for another try.
    Requeue,
    /// Can never be handled (not a message we understand): dead-letter it.
    DeadLetter,
}

/// Handles one consumed message.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles `body`; `redelivered` when the broker delivered it before.
    async fn handle(&self, body: &[u8], redelivered: bool) -> HandleOutcome;
}

/// The bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a canonical event (persistent), returning once the broker confirmed it.
    async fn publish_event(
        &self,
        event_type: &str,
        event_id: Uuid,
        body: &[u8],
    ) -> Result<(), BusError>;
    /// Hands a delivery to the delivery workers, confirmed.
    async fn publish_delivery(&self, delivery_id: Uuid) -> Result<(), BusError> {
        self.publish_deliveries(&[delivery_id]).await
    }
    /// Hands several deliveries (an event's, for all its recipients) to the delivery
    /// workers as one message, confirmed: one broker round trip instead of one each.
    /// The body is the ids, comma-separated ([`delivery_ids`] reads it).
    async fn publish_deliveries(&self, delivery_ids: &[Uuid]) -> Result<(), BusError>;
    /// Schedules a delivery's next attempt after `delay`, confirmed. On RabbitMQ the
    /// wait is the shortest retry queue not shorter than `delay` (capped at the
    /// longest); the embedded bus waits exactly `delay`.
    async fn schedule_retry(&self, delivery_id: Uuid, delay: Duration) -> Result<(), BusError>;
    /// Consumes `queue` until `shutdown`, reconnecting after broker failures, with at
    /// most `concurrency` messages in the handler at once.
    async fn consume(
        &self,
        queue: QueueRole,
        concurrency: usize,
        handler: Arc<dyn MessageHandler>,
        shutdown: CancellationToken,
    );
}

/// Where the router hands an event's committed deliveries: to the bus, for the delivery
/// workers of any process, or straight to this process's own workers when it runs the
/// delivery role too (one broker hop fewer; the event's route message is then acked
/// only once the first attempts are recorded, so a crash in between redelivers it and
/// the router hands the unfinished deliveries on again).
#[async_trait]
pub trait DeliveryHandoff: Send + Sync {
    /// Returns once the deliveries are safe: queued on the broker, or attempted and
    /// their outcome recorded. An error means "not yet", and the caller retries.
    async fn hand_off(&self, delivery_ids: &[Uuid]) -> Result<(), String>;
}

/// Hands deliveries to the delivery queue.
pub struct ViaBus(pub Arc<dyn Bus>);

#[async_trait]
impl DeliveryHandoff for ViaBus {
    async fn hand_off(&self, delivery_ids: &[Uuid]) -> Result<(), String> {
        self.0
            .publish_deliveries(delivery_ids)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The delivery ids of a delivery message (see [`Bus::publish_deliveries`]); `None`
/// when the body is not a comma-separated list of ids.
pub fn delivery_ids(body: &[u8]) -> Option<Vec<Uuid>> {
    std::str::from_utf8(body)
        .ok()?
        .split(',')
        .map(|id| Uuid::parse_str(id.trim()).ok())
        .collect()
}

/// Picks the retry queue delay for a wanted delay: the shortest queue delay that is at
/// least `wanted`, or the longest there is.
pub fn retry_bucket(schedule: &[Duration], wanted: Duration) -> Option<Duration> {
    let mut sorted: Vec<Duration> = schedule.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
        .iter()
        .copied()
        .find(|d| *d >= wanted)
        .or_else(|| sorted.last().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_messages_carry_one_or_more_ids() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(delivery_ids(a.to_string().as_bytes()), Some(vec![a]));
        assert_eq!(
            delivery_ids(format!("{a},{b}").as_bytes()),
            Some(vec![a, b])
        );
        assert_eq!(delivery_ids(format!("{a},nonsense").as_bytes()), None);
        assert_eq!(delivery_ids(b"\xff"), None);
    }

    #[test]
    fn retry_bucket_never_undercuts_the_wanted_delay_unless_capped() {
        let s = [
            Duration::from_secs(30),
            Duration::from_secs(5),
            Duration::from_secs(120),
        ];
        assert_eq!(
            retry_bucket(&s, Duration::from_secs(4)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_bucket(&s, Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_bucket(&s, Duration::from_secs(31)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_bucket(&s, Duration::from_secs(999)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_bucket(&[], Duration::from_secs(1)), None);
    }
}
