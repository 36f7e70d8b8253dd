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

use super::consumer::{self, Delivered};
use super::{Bus, BusError, HandleOutcome, MessageHandler, QueueRole, retry_bucket};
use crate::config::BusSettings;

/// The longest wait for a connection to the broker, with its topology declared.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publish may wait for the broker's confirm before it counts as failed
/// (the MLLP sender then gets `AR` and resends).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const PERSISTENT: u8 = 2;

pub use super::topology::Topology;
use super::topology::{ArgValue, ExchangeType};

impl Topology {
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
        for exchange in self.exchanges() {
            let kind = match exchange.kind {
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Direct => ExchangeKind::Direct,
            };
            channel
                .exchange_declare(exchange.name.into(), kind, durable, FieldTable::default())
                .await?;
        }
        for queue in self.queues() {
            let mut args = FieldTable::default();
            for (key, value) in queue.args {
                let value = match value {
                    ArgValue::Str(s) => long_string(&s),
                    ArgValue::I32(n) => AMQPValue::LongInt(n),
                    ArgValue::I64(n) => AMQPValue::LongLongInt(n),
                };
                args.insert(key.into(), value);
            }
            channel
                .queue_declare(queue.name.as_str().into(), queue_opts, args)
                .await?;
            if let Some((exchange, key)) = queue.binding {
                channel
                    .queue_bind(
                        queue.name.into(),
                        exchange.into(),
                        key.into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A message from a consuming channel; settled on that channel.
struct AmqpDelivery<'a> {
    delivery: lapin::message::Delivery,
    channel: &'a Channel,
}

impl Delivered for AmqpDelivery<'_> {
    fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    fn redelivered(&self) -> bool {
        self.delivery.redelivered
    }

    fn channel_alive(&self) -> bool {
        self.channel.status().connected()
    }

    async fn settle(self, outcome: HandleOutcome) -> Result<(), String> {
        let result = match outcome {
            HandleOutcome::Ack => self.delivery.ack(BasicAckOptions::default()).await,
            HandleOutcome::Requeue => {
                self.delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
            HandleOutcome::DeadLetter => {
                self.delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            }
        };
        result.map(drop).map_err(|e| e.to_string())
    }
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

    /// The live link, reconnecting (and re-declaring) if the last one broke. A broker
    /// host that drops packets instead of refusing them must not hold publishers (and
    /// so MLLP senders) waiting: each caller waits at most `OPEN_TIMEOUT` in all,
    /// queueing behind another caller's reconnect included, and then gets an error (a
    /// sender gets AR).
    async fn link(&self) -> Result<Arc<Link>, BusError> {
        tokio::time::timeout(OPEN_TIMEOUT, self.link_now())
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Unreachable(format!(
                    "no connection to the broker within {OPEN_TIMEOUT:?}"
                )))
            })
    }

    async fn link_now(&self) -> Result<Arc<Link>, BusError> {
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
        let channel_ref = &channel;
        let deliveries = consumer.filter_map(|delivery| async move {
            match delivery {
                Ok(delivery) => Some(AmqpDelivery {
                    delivery,
                    channel: channel_ref,
                }),
                Err(e) => {
                    tracing::warn!(queue, error = %e, "consumer error");
                    None
                }
            }
        });
        consumer::run(queue, deliveries, concurrency, handler, shutdown).await;
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

    async fn publish_deliveries(&self, delivery_ids: &[Uuid]) -> Result<(), BusError> {
        let Some(first) = delivery_ids.first() else {
            return Ok(());
        };
        let body = delivery_ids
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let properties = BasicProperties::default().with_message_id(first.to_string().into());
        self.publish(
            &self.topology.deliveries_exchange(),
            super::topology::DELIVER_KEY,
            body.as_bytes(),
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
            &self.topology.retry_exchange(),
            &Topology::retry_key(bucket),
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
            let started = std::time::Instant::now();
            match self
                .consume_once(&name, concurrency, &handler, &shutdown)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    // A session that ran a while was a success: the next outage starts
                    // the pauses from the shortest again.
                    if started.elapsed() > HEALTHY_SESSION {
                        backoff = reconnect_backoff();
                    }
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
/// A consumer session lasting this long counts as healthy (see `consume`).
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
