//! The RabbitMQ bus: confirms, consumption with explicit settlement, TTL retry queues,
//! dead-lettering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use renkei_hub::bus::amqp::AmqpBus;
use renkei_hub::bus::{Bus, HandleOutcome, MessageHandler, QueueRole};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{bus_settings, delete_topology, eventually, queue_depth};

/// Records what it is given; answers from a script, then `Ack`.
struct Recorder {
    seen: mpsc::UnboundedSender<(Vec<u8>, bool)>,
    script: std::sync::Mutex<Vec<HandleOutcome>>,
    calls: AtomicUsize,
}

impl Recorder {
    fn new(script: Vec<HandleOutcome>) -> (Arc<Self>, mpsc::UnboundedReceiver<(Vec<u8>, bool)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = Self {
            seen: tx,
            script: std::sync::Mutex::new(script.into_iter().rev().collect()),
            calls: AtomicUsize::new(0),
        };
        (Arc::new(recorder), rx)
    }
}

#[async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, body: &[u8], redelivered: bool) -> HandleOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.seen.send((body.to_vec(), redelivered));
        self.script
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or(HandleOutcome::Ack)
    }
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(Vec<u8>, bool)>,
    what: &str,
) -> anyhow::Result<(Vec<u8>, bool)> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .map_err(|_| anyhow::anyhow!("never received: {what}"))?
        .ok_or_else(|| anyhow::anyhow!("consumer stopped before: {what}"))
}

#[tokio::test]
async fn confirmed_event_reaches_the_router_queue_and_requeue_redelivers_it() -> anyhow::Result<()>
{
    let settings = bus_settings();
    let bus = Arc::new(AmqpBus::connect(&settings, &[Duration::from_secs(1)]).await?);
    let (recorder, mut rx) = Recorder::new(vec![HandleOutcome::Requeue]);
    let shutdown = CancellationToken::new();
    let consumer = {
        let (bus, recorder, shutdown) = (bus.clone(), recorder.clone(), shutdown.clone());
        tokio::spawn(async move { bus.consume(QueueRole::Route, 4, recorder, shutdown).await })
    };
    let id = Uuid::now_v7();
    bus.publish_event("inpatient.admitted", id, b"{\"event\":1}")
        .await?;
    let (first, redelivered) = next(&mut rx, "the published event").await?;
    assert_eq!(first, b"{\"event\":1}");
    assert!(!redelivered);
    let (second, redelivered) = next(&mut rx, "the requeued event").await?;
    assert_eq!(second, first);
    assert!(
        redelivered,
        "a requeued message comes back flagged as redelivered"
    );
    let topology = bus.topology().clone();
    eventually(
        "the acked event leaves the queue",
        Duration::from_secs(10),
        || async { Ok((queue_depth(&topology.queue(QueueRole::Route)).await? == 0).then_some(())) },
    )
    .await?;
    shutdown.cancel();
    consumer.await?;
    delete_topology(&topology).await
}

#[tokio::test]
async fn scheduled_retry_returns_to_the_delivery_queue_after_its_delay() -> anyhow::Result<()> {
    let settings = bus_settings();
    let schedule = [Duration::from_millis(500), Duration::from_secs(60)];
    let bus = Arc::new(AmqpBus::connect(&settings, &schedule).await?);
    let (recorder, mut rx) = Recorder::new(vec![]);
    let shutdown = CancellationToken::new();
    let consumer = {
        let (bus, recorder, shutdown) = (bus.clone(), recorder.clone(), shutdown.clone());
        tokio::spawn(async move { bus.consume(QueueRole::Deliver, 4, recorder, shutdown).await })
    };
    let direct = Uuid::now_v7();
    bus.publish_delivery(direct).await?;
    let (body, _) = next(&mut rx, "the delivery job").await?;
    assert_eq!(body, direct.to_string().as_bytes());

    // A jittered wait shorter than the queue's TTL uses the message's own expiration;
    // one longer than the shortest queue waits in the next one (never undercut).
    let retried = Uuid::now_v7();
    bus.schedule_retry(retried, Duration::from_millis(400))
        .await?;
    let (body, _) = next(&mut rx, "the retried delivery job").await?;
    assert_eq!(body, retried.to_string().as_bytes());
    let waiting = Uuid::now_v7();
    bus.schedule_retry(waiting, Duration::from_secs(2)).await?;
    let topology = bus.topology().clone();
    assert_eq!(
        queue_depth(&topology.retry_queue(Duration::from_secs(60))).await?,
        1
    );
    shutdown.cancel();
    consumer.await?;
    delete_topology(&topology).await
}

#[tokio::test]
async fn dead_lettered_message_is_kept_in_the_dead_queue() -> anyhow::Result<()> {
    let settings = bus_settings();
    let bus = Arc::new(AmqpBus::connect(&settings, &[Duration::from_secs(1)]).await?);
    let (recorder, mut rx) = Recorder::new(vec![HandleOutcome::DeadLetter]);
    let shutdown = CancellationToken::new();
    let consumer = {
        let (bus, recorder, shutdown) = (bus.clone(), recorder.clone(), shutdown.clone());
        tokio::spawn(async move { bus.consume(QueueRole::Deliver, 1, recorder, shutdown).await })
    };
    bus.publish_delivery(Uuid::now_v7()).await?;
    next(&mut rx, "the poison message").await?;
    let topology = bus.topology().clone();
    eventually(
        "the message lands in the dead queue",
        Duration::from_secs(10),
        || async { Ok((queue_depth(&topology.dead_queue()).await? == 1).then_some(())) },
    )
    .await?;
    assert_eq!(
        recorder.calls.load(Ordering::SeqCst),
        1,
        "a dead-lettered message is not redelivered"
    );
    shutdown.cancel();
    consumer.await?;
    delete_topology(&topology).await
}

#[tokio::test]
async fn declaring_the_topology_twice_is_harmless() -> anyhow::Result<()> {
    let settings = bus_settings();
    let schedule = [Duration::from_secs(1), Duration::from_secs(5)];
    let first = AmqpBus::connect(&settings, &schedule).await?;
    let second = AmqpBus::connect(&settings, &schedule).await?;
    second.publish_delivery(Uuid::now_v7()).await?;
    assert_eq!(
        queue_depth(&first.topology().queue(QueueRole::Deliver)).await?,
        1
    );
    delete_topology(first.topology()).await
}
