//! The consuming half both backends share: run the handler on each delivered message
//! with bounded concurrency, retry in place while it asks for a requeue, then settle.
//! A backend supplies the stream of deliveries and the [`Delivered`] type that knows
//! how to settle one; everything about handler outcomes is decided here, once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{HandleOutcome, MessageHandler};

/// One message handed to this consumer by a backend, not yet settled.
pub(crate) trait Delivered: Send {
    /// The message body.
    fn body(&self) -> &[u8];
    /// Whether the backend delivered it before (to this or an earlier consumer).
    fn redelivered(&self) -> bool;
    /// Whether settling it can still work: once the channel (or lease) behind it is
    /// gone, the backend redelivers it anyway, so retrying in place is pointless.
    fn channel_alive(&self) -> bool;
    /// Settles the message with the handler's final outcome. An error means it stays
    /// unsettled, and the backend redelivers it later.
    fn settle(self, outcome: HandleOutcome) -> impl Future<Output = Result<(), String>> + Send;
}

/// Handles `deliveries` until the stream ends or `shutdown`, with at most
/// `concurrency` messages in the handler at once. Returns once every
/// message taken from the stream is settled (or left for redelivery).
pub(crate) async fn run<S, D>(
    queue: &str,
    deliveries: S,
    concurrency: usize,
    handler: &Arc<dyn MessageHandler>,
    shutdown: &CancellationToken,
) where
    S: Stream<Item = D>,
    D: Delivered,
{
    deliveries
        .take_until(shutdown.cancelled())
        .for_each_concurrent(concurrency, |delivery| {
            handle_one(queue, delivery, handler.as_ref(), shutdown)
        })
        .await;
}

async fn handle_one<D: Delivered>(
    queue: &str,
    delivery: D,
    handler: &dyn MessageHandler,
    shutdown: &CancellationToken,
) {
    let mut outcome = handler
        .handle(delivery.body(), delivery.redelivered())
        .await;
    // A handler asks for a requeue when the store or the broker cannot take its result
    // now. Retrying in place, with growing pauses, keeps the message here instead of
    // bouncing it through the queue: every bounce counts towards the queue's delivery
    // limit, and an outage of a minute would otherwise dead-letter messages that were
    // already acknowledged to their senders.
    let mut pauses = transient_backoff();
    // A message whose channel is gone will be redelivered anyway.
    while outcome == HandleOutcome::Requeue && delivery.channel_alive() {
        let pause = pauses.next().unwrap_or(Duration::from_secs(30));
        tracing::warn!(queue, retry_in = ?pause, "could not finish a message; retrying it in place");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => break,
        }
        outcome = handler.handle(delivery.body(), true).await;
    }
    if let Err(e) = delivery.settle(outcome).await {
        // The backend will redeliver it; handlers are idempotent.
        tracing::warn!(queue, error = %e, "could not settle a message; it will be redelivered");
    }
}

/// Pauses between in-place retries of a message whose handler could not finish:
/// 200 ms doubling to 30 s, jittered, forever.
fn transient_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}
