//! RabbitMQ via lapin: quorum queues, persistent messages, publisher confirms,
//! at-least-once dead-lettering, per-delay TTL retry queues; reconnects and
//! re-declares the topology after a broker restart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Bus, BusError, HandleOutcome, MessageHandler, QueueRole, retry_bucket};
use crate::config::BusSettings;

/// How long a publish may wait for the broker's confirm before it counts as failed
/// (the MLLP sender then gets `AR` and resends).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Redeliveries of one message before a quorum queue dead-letters it as poison.
const DELIVERY_LIMIT: i64 = 50;
const PERSISTENT: u8 = 2;

/// Names of everything the hub declares.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    retry_delays: Vec<Duration>,
    group_size: u16,
}

impl Topology {
    /// The topology for a prefix and retry schedule.
    pub fn new(prefix: &str, retry_delays: &[Duration], group_size: u16) -> Self {
        let mut retry_delays = retry_delays.to_vec();
        retry_delays.sort();
        retry_delays.dedup();
        Self {
            prefix: prefix.to_owned(),
            retry_delays,
            group_size,
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Topic exchange of canonical events.
    pub fn events_exchange(&self) -> String {
        self.name("events")
    }
    /// Direct exchange of delivery jobs.
    pub fn deliveries_exchange(&self) -> String {
        self.name("deliveries")
    }
    /// Dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        self.name("dlx")
    }
    /// A consumed queue.
    pub fn queue(&self, role: QueueRole) -> String {
        match role {
            QueueRole::Route => self.name("route"),
            QueueRole::Deliver => self.name("deliver"),
        }
    }
    /// The retry queue for one delay.
    pub fn retry_queue(&self, delay: Duration) -> String {
        self.name(&format!("retry.{}ms", delay.as_millis()))
    }
    /// Poison messages.
    pub fn dead_queue(&self) -> String {
        self.name("dead")
    }
    /// Every queue name (for tests that clean up).
    pub fn all_queues(&self) -> Vec<String> {
        let mut names = vec![
            self.queue(QueueRole::Route),
            self.queue(QueueRole::Deliver),
            self.dead_queue(),
        ];
        names.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        names
    }
    /// Every exchange name.
    pub fn all_exchanges(&self) -> Vec<String> {
        vec![
            self.events_exchange(),
            self.deliveries_exchange(),
            self.dead_letter_exchange(),
        ]
    }

    fn quorum_args(&self, dead_letter_exchange: &str) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongInt(i32::from(self.group_size)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(dead_letter_exchange),
        );
        // Dead-letter without loss: the broker keeps the message until the target
        // queue confirmed it (needs reject-publish overflow).
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        args
    }

    /// Declares everything; idempotent (same names, same arguments).
    async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let queue_opts = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        for (name, kind) in [
            (self.events_exchange(), ExchangeKind::Topic),
            (self.deliveries_exchange(), ExchangeKind::Direct),
            (self.dead_letter_exchange(), ExchangeKind::Topic),
        ] {
            channel
                .exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await?;
        }
        let mut dead_args = FieldTable::default();
        dead_args.insert("x-queue-type".into(), long_string("quorum"));
        dead_args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongInt(i32::from(self.group_size)),
        );
        channel
            .queue_declare(self.dead_queue().into(), queue_opts, dead_args)
            .await?;
        self.bind(
            channel,
            &self.dead_queue(),
            &self.dead_letter_exchange(),
            "#",
        )
        .await?;

        for (role, exchange, key) in [
            (QueueRole::Route, self.events_exchange(), "#"),
            (QueueRole::Deliver, self.deliveries_exchange(), "deliver"),
        ] {
            let mut args = self.quorum_args(&self.dead_letter_exchange());
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            channel
                .queue_declare(self.queue(role).into(), queue_opts, args)
                .await?;
            self.bind(channel, &self.queue(role), &exchange, key)
                .await?;
        }
        for delay in &self.retry_delays {
            let mut args = self.quorum_args(&self.deliveries_exchange());
            args.insert("x-dead-letter-routing-key".into(), long_string("deliver"));
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            );
            channel
                .queue_declare(self.retry_queue(*delay).into(), queue_opts, args)
                .await?;
        }
        Ok(())
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), lapin::Error> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A connection with its confirm-mode publishing channel.
struct Link {
    connection: Connection,
    publisher: Channel,
}

/// The RabbitMQ bus.
pub struct AmqpBus {
    url: String,
    prefetch: u16,
    topology: Topology,
    link: Mutex<Option<Arc<Link>>>,
}

impl AmqpBus {
    /// Connects and declares the topology; fails if the broker is unreachable now.
    pub async fn connect(
        settings: &BusSettings,
        retry_delays: &[Duration],
    ) -> Result<Self, BusError> {
        let bus = Self {
            url: settings.url.clone(),
            prefetch: settings.prefetch,
            topology: Topology::new(
                &settings.prefix,
                retry_delays,
                settings.quorum_initial_group_size,
            ),
            link: Mutex::new(None),
        };
        bus.link().await?;
        Ok(bus)
    }

    /// The names this bus uses.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    async fn open(&self) -> Result<Link, BusError> {
        // Named so an operator (or a test) can find this process's connections in
        // `rabbitmqctl list_connections name`.
        let name = format!("renkei {} pid {}", self.topology.prefix, std::process::id());
        let properties = ConnectionProperties::default().with_connection_name(name.as_str().into());
        let connection = Connection::connect(&self.url, properties)
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        self.topology
            .declare(&publisher)
            .await
            .map_err(|e| BusError::Topology(e.to_string()))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        tracing::info!(prefix = %self.topology.prefix, "connected to the broker; topology declared");
        Ok(Link {
            connection,
            publisher,
        })
    }

    /// The live link, reconnecting (and re-declaring) if the last one broke.
    async fn link(&self) -> Result<Arc<Link>, BusError> {
        let mut guard = self.link.lock().await;
        if let Some(link) = guard.as_ref()
            && link.connection.status().connected()
            && link.publisher.status().connected()
        {
            return Ok(link.clone());
        }
        *guard = None;
        let link = Arc::new(self.open().await?);
        *guard = Some(link.clone());
        Ok(link)
    }

    async fn forget(&self, broken: &Arc<Link>) {
        let mut guard = self.link.lock().await;
        if guard.as_ref().is_some_and(|l| Arc::ptr_eq(l, broken)) {
            *guard = None;
        }
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BusError> {
        let link = self.link().await?;
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, async {
            link.publisher
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties.with_delivery_mode(PERSISTENT),
                )
                .await?
                .await
        })
        .await;
        match outcome {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(BusError::NotConfirmed(format!(
                "no queue is bound for `{routing_key}` on `{exchange}`"
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(BusError::NotConfirmed(
                "the broker refused the message".into(),
            )),
            Ok(Ok(Confirmation::NotRequested)) => {
                Err(BusError::NotConfirmed("confirms are not enabled".into()))
            }
            Ok(Err(e)) => {
                self.forget(&link).await;
                Err(BusError::Unreachable(e.to_string()))
            }
            Err(_) => {
                self.forget(&link).await;
                Err(BusError::NotConfirmed(format!(
                    "no confirm within {CONFIRM_TIMEOUT:?}"
                )))
            }
        }
    }

    /// One consuming session: returns when the channel breaks or on shutdown.
    async fn consume_once(
        &self,
        queue: &str,
        concurrency: usize,
        handler: &Arc<dyn MessageHandler>,
        shutdown: &CancellationToken,
    ) -> Result<(), BusError> {
        let link = self.link().await?;
        let unreachable = |e: lapin::Error| BusError::Unreachable(e.to_string());
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(unreachable)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(unreachable)?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                ShortString::from(format!("renkei-{}", Uuid::now_v7().simple())),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unreachable)?;
        tracing::info!(queue, "consuming");
        consumer
            .take_until(shutdown.cancelled())
            .for_each_concurrent(concurrency, |delivery| async move {
                let delivery = match delivery {
                    Ok(delivery) => delivery,
                    Err(e) => {
                        tracing::warn!(queue, error = %e, "consumer error");
                        return;
                    }
                };
                let outcome = handler.handle(&delivery.data, delivery.redelivered).await;
                let result = match outcome {
                    HandleOutcome::Ack => delivery.ack(BasicAckOptions::default()).await,
                    HandleOutcome::Requeue => {
                        delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..BasicNackOptions::default()
                            })
                            .await
                    }
                    HandleOutcome::DeadLetter => {
                        delivery.reject(BasicRejectOptions { requeue: false }).await
                    }
                };
                if let Err(e) = result {
                    // The broker will redeliver it; handlers are idempotent.
                    tracing::warn!(queue, error = %e, "could not settle a message; it will be redelivered");
                }
            })
            .await;
        if shutdown.is_cancelled() {
            let _ = channel.close(200, "shutdown".into()).await;
            return Ok(());
        }
        self.forget(&link).await;
        Err(BusError::Unreachable("the consumer stopped".into()))
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish_event(
        &self,
        event_type: &str,
        event_id: Uuid,
        body: &[u8],
    ) -> Result<(), BusError> {
        let properties = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_message_id(event_id.to_string().into());
        self.publish(
            &self.topology.events_exchange(),
            event_type,
            body,
            properties,
        )
        .await
    }

    async fn publish_delivery(&self, delivery_id: Uuid) -> Result<(), BusError> {
        let id = delivery_id.to_string();
        let properties = BasicProperties::default().with_message_id(id.clone().into());
        self.publish(
            &self.topology.deliveries_exchange(),
            "deliver",
            id.as_bytes(),
            properties,
        )
        .await
    }

    async fn schedule_retry(&self, delivery_id: Uuid, delay: Duration) -> Result<(), BusError> {
        let bucket = retry_bucket(&self.topology.retry_delays, delay)
            .ok_or_else(|| BusError::Topology("no retry queues are configured".into()))?;
        let id = delivery_id.to_string();
        // The message's own TTL lets jitter shorten a wait below the queue's TTL.
        let expiration = delay.min(bucket).as_millis().to_string();
        let properties = BasicProperties::default()
            .with_message_id(id.clone().into())
            .with_expiration(expiration.into());
        self.publish(
            "",
            &self.topology.retry_queue(bucket),
            id.as_bytes(),
            properties,
        )
        .await
    }

    async fn consume(
        &self,
        queue: QueueRole,
        concurrency: usize,
        handler: Arc<dyn MessageHandler>,
        shutdown: CancellationToken,
    ) {
        let name = self.topology.queue(queue);
        let mut backoff = reconnect_backoff();
        while !shutdown.is_cancelled() {
            match self
                .consume_once(&name, concurrency, &handler, &shutdown)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(queue = %name, error = %e, retry_in = ?wait, "broker connection lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Reconnect delays: 100 ms doubling to 10 s, jittered, forever.
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
