//! The bus contract, run against both backends: RabbitMQ (confirms, TTL retry queues,
//! dead-lettering) and the embedded SQLite queue (commits, exact delays, dead table).
//! Then what only the embedded bus has to show: leases survive a crash, and one file
//! serves one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use renkei_hub::bus::amqp::{AmqpBus, Topology};
use renkei_hub::bus::embedded::EmbeddedBus;
use renkei_hub::bus::{Bus, BusError, HandleOutcome, MessageHandler, QueueRole};
use renkei_hub::config::BusSettings;
use sqlx::{Connection, Executor, SqliteConnection};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{TempDatabase, bus_settings, delete_topology, eventually, queue_depth};

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

/// Reports what it is given, then never finishes: the process "dies" mid-message.
struct Stuck(mpsc::UnboundedSender<Vec<u8>>);

#[async_trait]
impl MessageHandler for Stuck {
    async fn handle(&self, body: &[u8], _: bool) -> HandleOutcome {
        let _ = self.0.send(body.to_vec());
        std::future::pending().await
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .map_err(|_| anyhow::anyhow!("never received: {what}"))?
        .ok_or_else(|| anyhow::anyhow!("consumer stopped before: {what}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Amqp,
    Embedded,
}

/// Where a test's bus keeps its messages: a prefix on the test broker, or a file.
enum Site {
    Amqp {
        settings: BusSettings,
        schedule: Vec<Duration>,
    },
    Embedded {
        database: TempDatabase,
        schedule: Vec<Duration>,
    },
}

/// One opened bus of a [`Site`].
enum Opened {
    Amqp(Arc<AmqpBus>),
    Embedded(Arc<EmbeddedBus>),
}

impl Site {
    fn new(backend: Backend, schedule: &[Duration]) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Amqp => Site::Amqp {
                settings: bus_settings(),
                schedule: schedule.to_vec(),
            },
            Backend::Embedded => Site::Embedded {
                database: TempDatabase::new()?,
                schedule: schedule.to_vec(),
            },
        })
    }

    async fn open(&self) -> anyhow::Result<Opened> {
        Ok(match self {
            Site::Amqp { settings, schedule } => {
                Opened::Amqp(Arc::new(AmqpBus::connect(settings, schedule).await?))
            }
            Site::Embedded { database, schedule } => Opened::Embedded(Arc::new(
                EmbeddedBus::open(&database.path(), schedule).await?,
            )),
        })
    }

    /// Removes the broker topology; the embedded file goes with its directory.
    async fn remove(self) -> anyhow::Result<()> {
        match self {
            Site::Amqp { settings, schedule } => {
                delete_topology(&Topology::new(&settings.prefix, &schedule, 1)).await
            }
            Site::Embedded { .. } => Ok(()),
        }
    }
}

impl Opened {
    fn bus(&self) -> Arc<dyn Bus> {
        match self {
            Opened::Amqp(bus) => bus.clone(),
            Opened::Embedded(bus) => bus.clone(),
        }
    }

    /// Messages waiting in a consumed queue (RabbitMQ: ready ones; embedded: unsettled).
    async fn depth(&self, queue: QueueRole) -> anyhow::Result<u64> {
        Ok(match self {
            Opened::Amqp(bus) => queue_depth(&bus.topology().queue(queue)).await?.into(),
            Opened::Embedded(bus) => bus.depth(queue).await?,
        })
    }

    /// Dead-lettered messages kept.
    async fn dead(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Opened::Amqp(bus) => queue_depth(&bus.topology().dead_queue()).await?.into(),
            Opened::Embedded(bus) => bus.dead_letters().await?.len() as u64,
        })
    }

    fn consume(
        &self,
        queue: QueueRole,
        concurrency: usize,
        handler: Arc<dyn MessageHandler>,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        let (bus, shutdown) = (self.bus(), shutdown.clone());
        tokio::spawn(async move { bus.consume(queue, concurrency, handler, shutdown).await })
    }
}

/// One test per backend for each contract case.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn amqp() -> anyhow::Result<()> {
                super::$case(super::Backend::Amqp).await
            }
            #[tokio::test]
            async fn embedded() -> anyhow::Result<()> {
                super::$case(super::Backend::Embedded).await
            }
        }
    )*};
}

on_both_backends!(
    confirmed_event_reaches_the_router_queue_and_requeue_redelivers_it,
    scheduled_retry_returns_to_the_delivery_queue_after_its_delay,
    dead_lettered_message_is_kept_in_the_dead_queue,
    opening_the_bus_again_is_harmless_and_keeps_pending_messages,
    message_still_requeued_at_shutdown_comes_back_redelivered,
);

async fn confirmed_event_reaches_the_router_queue_and_requeue_redelivers_it(
    backend: Backend,
) -> anyhow::Result<()> {
    let site = Site::new(backend, &[Duration::from_secs(1)])?;
    let bus = site.open().await?;
    let (recorder, mut rx) = Recorder::new(vec![HandleOutcome::Requeue]);
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Route, 4, recorder, &shutdown);
    let id = Uuid::now_v7();
    bus.bus()
        .publish_event("inpatient.admitted", id, b"{\"event\":1}")
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
    eventually(
        "the acked event leaves the queue",
        Duration::from_secs(10),
        || async { Ok((bus.depth(QueueRole::Route).await? == 0).then_some(())) },
    )
    .await?;
    shutdown.cancel();
    consumer.await?;
    site.remove().await
}

async fn scheduled_retry_returns_to_the_delivery_queue_after_its_delay(
    backend: Backend,
) -> anyhow::Result<()> {
    let schedule = [Duration::from_millis(500), Duration::from_secs(60)];
    let site = Site::new(backend, &schedule)?;
    let bus = site.open().await?;
    let (recorder, mut rx) = Recorder::new(vec![]);
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Deliver, 4, recorder, &shutdown);
    let direct = Uuid::now_v7();
    bus.bus().publish_delivery(direct).await?;
    let (body, _) = next(&mut rx, "the delivery job").await?;
    assert_eq!(body, direct.to_string().as_bytes());

    // RabbitMQ: a jittered wait shorter than the queue's TTL uses the message's own
    // expiration. Embedded: the wait is exact.
    let retried = Uuid::now_v7();
    bus.bus()
        .schedule_retry(retried, Duration::from_millis(400))
        .await?;
    let (body, _) = next(&mut rx, "the retried delivery job").await?;
    assert_eq!(body, retried.to_string().as_bytes());

    // A long wait stays queued, out of the consumer's sight.
    let waiting = Uuid::now_v7();
    bus.bus()
        .schedule_retry(waiting, Duration::from_secs(60))
        .await?;
    match &bus {
        Opened::Amqp(amqp) => assert_eq!(
            queue_depth(&amqp.topology().retry_queue(Duration::from_secs(60))).await?,
            1
        ),
        Opened::Embedded(_) => {
            eventually(
                "only the waiting retry is left",
                Duration::from_secs(10),
                || async { Ok((bus.depth(QueueRole::Deliver).await? == 1).then_some(())) },
            )
            .await?;
        }
    }
    assert!(rx.try_recv().is_err(), "a waiting retry is not delivered");
    shutdown.cancel();
    consumer.await?;
    site.remove().await
}

async fn dead_lettered_message_is_kept_in_the_dead_queue(backend: Backend) -> anyhow::Result<()> {
    let site = Site::new(backend, &[Duration::from_secs(1)])?;
    let bus = site.open().await?;
    let (recorder, mut rx) = Recorder::new(vec![HandleOutcome::DeadLetter]);
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Deliver, 1, recorder.clone(), &shutdown);
    let poison = Uuid::now_v7();
    bus.bus().publish_delivery(poison).await?;
    next(&mut rx, "the poison message").await?;
    eventually(
        "the message lands in the dead queue",
        Duration::from_secs(10),
        || async { Ok((bus.dead().await? == 1).then_some(())) },
    )
    .await?;
    assert_eq!(bus.depth(QueueRole::Deliver).await?, 0);
    assert_eq!(
        recorder.calls.load(Ordering::SeqCst),
        1,
        "a dead-lettered message is not redelivered"
    );
    if let Opened::Embedded(embedded) = &bus {
        let dead = embedded.dead_letters().await?;
        assert_eq!(dead[0].body.as_deref(), Some(poison.to_string().as_bytes()));
        assert_eq!(dead[0].queue.as_deref(), Some("deliver"));
        assert!(!dead[0].reason.is_empty(), "a dead letter says why");
    }
    shutdown.cancel();
    consumer.await?;
    site.remove().await
}

/// RabbitMQ: declaring the topology a second time, while the first connection lives.
/// Embedded: reopening the file after the first bus is gone.
async fn opening_the_bus_again_is_harmless_and_keeps_pending_messages(
    backend: Backend,
) -> anyhow::Result<()> {
    let site = Site::new(backend, &[Duration::from_secs(1), Duration::from_secs(5)])?;
    let first = site.open().await?;
    let pending = Uuid::now_v7();
    first.bus().publish_delivery(pending).await?;
    let _first = match backend {
        Backend::Amqp => Some(first),
        Backend::Embedded => {
            drop(first);
            None
        }
    };
    let second = site.open().await?;
    assert_eq!(second.depth(QueueRole::Deliver).await?, 1);
    let (recorder, mut rx) = Recorder::new(vec![]);
    let shutdown = CancellationToken::new();
    let consumer = second.consume(QueueRole::Deliver, 1, recorder, &shutdown);
    let (body, redelivered) = next(&mut rx, "the pending delivery job").await?;
    assert_eq!(body, pending.to_string().as_bytes());
    assert!(!redelivered, "a message never consumed is not redelivered");
    shutdown.cancel();
    consumer.await?;
    site.remove().await
}

/// A handler that keeps asking for a requeue holds its message in place until shutdown,
/// which puts it back for the next consumer, flagged.
async fn message_still_requeued_at_shutdown_comes_back_redelivered(
    backend: Backend,
) -> anyhow::Result<()> {
    let site = Site::new(backend, &[Duration::from_secs(1)])?;
    let bus = site.open().await?;
    let (failing, mut failing_rx) = Recorder::new(vec![HandleOutcome::Requeue; 1000]);
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Deliver, 2, failing, &shutdown);
    let job = Uuid::now_v7();
    bus.bus().publish_delivery(job).await?;
    let (_, redelivered) = next(&mut failing_rx, "the job, failing").await?;
    assert!(!redelivered);
    shutdown.cancel();
    consumer.await?;

    let (recorder, mut rx) = Recorder::new(vec![]);
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Deliver, 2, recorder, &shutdown);
    let (body, redelivered) = next(&mut rx, "the job, after the shutdown").await?;
    assert_eq!(body, job.to_string().as_bytes());
    assert!(redelivered, "a requeued message comes back flagged");
    eventually(
        "the acked job leaves the queue",
        Duration::from_secs(10),
        || async { Ok((bus.depth(QueueRole::Deliver).await? == 0).then_some(())) },
    )
    .await?;
    shutdown.cancel();
    consumer.await?;
    site.remove().await
}

// What only the embedded bus has to show.

#[tokio::test]
async fn embedded_message_unsettled_when_the_hub_dies_is_redelivered_on_reopen()
-> anyhow::Result<()> {
    let site = Site::new(Backend::Embedded, &[Duration::from_secs(1)])?;
    let bus = site.open().await?;
    let (tx, mut stuck_rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Route, 4, Arc::new(Stuck(tx)), &shutdown);
    let id = Uuid::now_v7();
    bus.bus()
        .publish_event("inpatient.discharged", id, b"{\"event\":2}")
        .await?;
    next(&mut stuck_rx, "the event, to the handler that dies").await?;
    // The crash: the consumer vanishes mid-message, nothing is settled or returned.
    consumer.abort();
    assert!(consumer.await.is_err_and(|e| e.is_cancelled()));
    drop(bus);

    let bus = site.open().await?;
    let (recorder, mut rx) = Recorder::new(vec![]);
    let consumer = bus.consume(QueueRole::Route, 4, recorder, &shutdown);
    let (body, redelivered) = next(&mut rx, "the event again, after the restart").await?;
    assert_eq!(body, b"{\"event\":2}");
    assert!(
        redelivered,
        "a message leased before the crash is redelivered"
    );
    eventually(
        "the acked event leaves the queue",
        Duration::from_secs(10),
        || async { Ok((bus.depth(QueueRole::Route).await? == 0).then_some(())) },
    )
    .await?;
    shutdown.cancel();
    consumer.await?;
    site.remove().await
}

#[tokio::test]
async fn embedded_bus_refuses_a_file_another_process_holds() -> anyhow::Result<()> {
    let database = TempDatabase::new()?;
    let path = database.path();
    let lock_file = format!("{}.lock", path.display());
    // Another process takes the lock the way a hub would, names itself in the file,
    // and keeps it (exec keeps the pid and the descriptor).
    let mut holder = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(r#"exec 9>>"$0" && flock -x 9 && echo $$ >&9 && echo locked && exec sleep 60"#)
        .arg(&lock_file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = holder
        .id()
        .ok_or_else(|| anyhow::anyhow!("the lock holder exited at once"))?;
    let stdout = holder
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??;
    anyhow::ensure!(
        line.as_deref() == Some("locked"),
        "the holder said {line:?}"
    );

    let refused = EmbeddedBus::open(&path, &[Duration::from_secs(1)]).await;
    match refused {
        Err(e @ BusError::InUse { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&format!("hub process {pid}")), "{message}");
            assert!(message.contains("bus.url = \"amqp://"), "{message}");
        }
        Err(other) => anyhow::bail!("refused for the wrong reason: {other}"),
        Ok(_) => anyhow::bail!("opened a file another process holds"),
    }

    holder.kill().await?;
    let bus = EmbeddedBus::open(&path, &[Duration::from_secs(1)]).await?;
    assert_eq!(bus.depth(QueueRole::Route).await?, 0);
    Ok(())
}

#[tokio::test]
async fn embedded_bus_refuses_a_second_open_in_the_same_process() -> anyhow::Result<()> {
    let database = TempDatabase::new()?;
    let path = database.path();
    let first = EmbeddedBus::open(&path, &[Duration::from_secs(1)]).await?;
    match EmbeddedBus::open(&path, &[Duration::from_secs(1)]).await {
        Err(BusError::InUse { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
        Err(other) => anyhow::bail!("refused for the wrong reason: {other}"),
        Ok(_) => anyhow::bail!("two buses consume from one file"),
    }
    drop(first);
    EmbeddedBus::open(&path, &[Duration::from_secs(1)]).await?;
    Ok(())
}

#[tokio::test]
async fn embedded_delayed_retry_waits_behind_later_messages_and_comes_without_a_publish()
-> anyhow::Result<()> {
    let site = Site::new(Backend::Embedded, &[Duration::from_secs(1)])?;
    let bus = site.open().await?;
    let (recorder, mut rx) = Recorder::new(vec![]);
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Deliver, 4, recorder, &shutdown);
    let (delayed, direct) = (Uuid::now_v7(), Uuid::now_v7());
    bus.bus()
        .schedule_retry(delayed, Duration::from_millis(1500))
        .await?;
    bus.bus().publish_delivery(direct).await?;
    let (body, _) = next(&mut rx, "the direct job").await?;
    assert_eq!(
        body,
        direct.to_string().as_bytes(),
        "a delayed message is hidden until its time, later ones pass it"
    );
    assert!(rx.try_recv().is_err());
    // Nothing is published from here on: the consumer wakes for the due time itself.
    let (body, redelivered) = next(&mut rx, "the delayed job").await?;
    assert_eq!(body, delayed.to_string().as_bytes());
    assert!(!redelivered);
    shutdown.cancel();
    consumer.await?;
    site.remove().await
}

#[tokio::test]
async fn embedded_unreadable_message_is_dead_lettered_and_the_queue_goes_on() -> anyhow::Result<()>
{
    let database = TempDatabase::new()?;
    let path = database.path();
    let bus = Opened::Embedded(Arc::new(
        EmbeddedBus::open(&path, &[Duration::from_secs(1)]).await?,
    ));
    // A row no publish writes: a flag that is not one.
    let mut tamper = SqliteConnection::connect_with(&EmbeddedBus::connect_options(&path)).await?;
    tamper
        .execute(
            "INSERT INTO bus_messages
                 (queue, message_id, routing_key, body, published_at, not_before, redelivered)
             VALUES ('deliver', 'x', 'deliver', x'00', 0, 0, 'not a flag')",
        )
        .await?;
    tamper.close().await?;
    let (recorder, mut rx) = Recorder::new(vec![]);
    let shutdown = CancellationToken::new();
    let consumer = bus.consume(QueueRole::Deliver, 1, recorder.clone(), &shutdown);
    let good = Uuid::now_v7();
    bus.bus().publish_delivery(good).await?;
    let (body, _) = next(&mut rx, "the readable job after the broken one").await?;
    assert_eq!(body, good.to_string().as_bytes());
    let Opened::Embedded(embedded) = &bus else {
        anyhow::bail!("not the embedded bus");
    };
    let dead = embedded.dead_letters().await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("unreadable"), "{dead:?}");
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 1);
    shutdown.cancel();
    consumer.await?;
    Ok(())
}
