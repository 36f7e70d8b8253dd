//! The raw broker baseline: what RabbitMQ alone does with the same guarantees the hub
//! asks of it — persistent messages, a publisher confirm awaited for each, a quorum
//! queue, a consumer that acks each message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The prefetch the hub's consumers use by default.
const PREFETCH: u16 = 512;

/// What the broker alone achieved.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Messages published, confirmed, consumed and acked.
    pub messages: usize,
    /// From the first publish to the last ack.
    pub elapsed: Duration,
}

impl Baseline {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs the baseline on a fresh quorum queue, deleted afterwards.
pub async fn baseline(
    url: &str,
    publishers: usize,
    messages: usize,
    body: &[u8],
) -> anyhow::Result<Baseline> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| anyhow::anyhow!("RabbitMQ is not reachable at {url}: {e}"))?;
    let queue = format!("bench-{}.raw", uuid::Uuid::now_v7().simple());
    let setup = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    setup
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;

    let result = measure(&connection, &queue, publishers, messages, body).await;
    setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "bye".into()).await;
    result
}

async fn measure(
    connection: &Connection,
    queue: &str,
    publishers: usize,
    messages: usize,
    body: &[u8],
) -> anyhow::Result<Baseline> {
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let start = Instant::now();
    let consumed = tokio::spawn(async move {
        let mut n = 0;
        while n < messages {
            match consumer.next().await {
                Some(Ok(delivery)) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    n += 1;
                }
                Some(Err(e)) => return Err(anyhow::Error::from(e)),
                None => anyhow::bail!("the consumer was cancelled after {n} messages"),
            }
        }
        Ok(start.elapsed())
    });

    let next = Arc::new(AtomicUsize::new(0));
    let body: Arc<[u8]> = body.into();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..publishers {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (next, body, queue) = (next.clone(), body.clone(), queue.to_owned());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into()),
                    )
                    .await?
                    .await?;
                anyhow::ensure!(confirm.is_ack(), "the broker refused a publish");
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let elapsed = consumed.await??;
    Ok(Baseline { messages, elapsed })
}
