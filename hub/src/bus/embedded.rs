//! The embedded bus: an in-process durable queue kept in a SQLite file, for a hub that
//! runs as one process without a broker. It keeps the contract of the RabbitMQ bus: a
//! publish returns once it is committed, consumers settle every message explicitly,
//! and a message that was never settled comes back, flagged as redelivered.
//!
//! Tables (beside the store's own tables when both share one file; created on open):
//!
//! | table | holds |
//! |---|---|
//! | `bus_messages` | queued messages: `seq` (publish order), `queue` (`route` or `deliver`), `message_id`, `routing_key` (the event type, or `deliver`), `body`, `published_at`, `not_before` (hidden until then), `redelivered`, `deliveries` (times leased), `lease` / `leased_at` (the consumer holding it, when) |
//! | `bus_dead` | dead-lettered messages, with the same columns plus `dead_at` and `reason`, kept for inspection (the `P.dead` of RabbitMQ) |
//!
//! Times are Unix milliseconds.
//!
//! Guarantees:
//!
//! - **Durable publish.** The database runs in WAL mode with `synchronous = FULL`: the
//!   INSERT of a publish has reached the disk when the publish returns, and survives a
//!   SIGKILL or a power loss.
//! - **At least once.** A consumer leases visible messages of its queue in publish
//!   order (a small prefetch, at most `concurrency` ahead); `Ack` deletes the message,
//!   `DeadLetter` moves it to `bus_dead`, `Requeue` makes it visible again with
//!   `redelivered` set. Leases held when the process died are returned, as redelivered,
//!   the next time the bus is opened; a message leased [`DELIVERY_LIMIT`] times is
//!   dead-lettered instead, as a quorum queue does.
//! - **Exact delays.** [`Bus::schedule_retry`] hides the message until `not_before`;
//!   no retry buckets.
//! - **No polling.** Consumers sleep until a publish in this process wakes them, or
//!   until the earliest hidden message becomes visible; an idle bus does nothing.
//! - **One process per file.** The bus holds an exclusive advisory lock on
//!   `<database>.lock` (see [`ProcessLock`]) for its whole life. Another process, and
//!   a second bus in this process, are refused: opening returns every lease it finds,
//!   which is only right when nobody else consumes from the file.
//!
//! Wiring, on its own file: `EmbeddedBus::open(&path, &retry_schedule)`. Sharing the
//! store's file and pool:
//!
//! ```ignore
//! let lock = ProcessLock::acquire(&path)?; // first: a second hub stops here
//! let pool = SqlitePoolOptions::new()
//!     .max_connections(1)
//!     .connect_with(EmbeddedBus::connect_options(&path))
//!     .await?;
//! // … the store's migrations on `pool` …
//! let bus = EmbeddedBus::with_pool(pool.clone(), lock, &retry_schedule).await?;
//! ```
//!
//! With a one-connection pool, nobody may publish while holding a connection or a
//! transaction of that pool: the publish would wait for it forever. Commit, then
//! publish (as the contract wants anyway).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures_util::stream;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::consumer::{self, Delivered};
use super::topology::{DELIVER_KEY, DELIVERY_LIMIT};
use super::{Bus, BusError, HandleOutcome, MessageHandler, QueueRole};
use crate::store::StoreError;
use crate::store::batch::GroupCommit;

/// How long a statement waits for another connection's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most messages one consumer leases ahead of its handlers.
const MAX_PREFETCH: usize = 64;
/// The longest a consumer sleeps while a hidden message waits: a wall clock set back
/// must not hold it for longer.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(60);
/// Pauses before giving up on settling a message (the database is busy or failing).
const SETTLE_PAUSES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    routing_key  TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    published_at INTEGER NOT NULL,
    not_before   INTEGER NOT NULL,
    redelivered  INTEGER NOT NULL DEFAULT 0,
    deliveries   INTEGER NOT NULL DEFAULT 0,
    lease        TEXT,
    leased_at    INTEGER
);
CREATE INDEX IF NOT EXISTS bus_messages_ready
    ON bus_messages (queue, seq) WHERE lease IS NULL;
CREATE INDEX IF NOT EXISTS bus_messages_hidden
    ON bus_messages (queue, not_before) WHERE lease IS NULL;
CREATE INDEX IF NOT EXISTS bus_messages_leased
    ON bus_messages (lease) WHERE lease IS NOT NULL;
-- Lenient on purpose: a row too broken to read is still moved here, not lost.
CREATE TABLE IF NOT EXISTS bus_dead (
    seq          INTEGER PRIMARY KEY,
    queue        TEXT,
    message_id   TEXT,
    routing_key  TEXT,
    body         BLOB,
    published_at INTEGER,
    deliveries   INTEGER,
    dead_at      INTEGER NOT NULL,
    reason       TEXT    NOT NULL
);
";

/// Moves one message (`?1` = seq) to `bus_dead` with `?2` = time, `?3` = reason.
const COPY_TO_DEAD: &str = "
INSERT OR REPLACE INTO bus_dead
    (seq, queue, message_id, routing_key, body, published_at, deliveries, dead_at, reason)
SELECT seq, queue, message_id, routing_key, CAST(body AS BLOB), published_at, deliveries, ?2, ?3
FROM bus_messages WHERE seq = ?1";

/// The exclusive hold of one embedded bus database by this process: an advisory lock
/// on `<database>.lock`, which also names the holding process for the error the next
/// opener gets. Released when dropped.
///
/// The hub takes it before it opens anything on the file (the store included), so a
/// second hub process on the same file stops before touching it.
#[derive(Debug)]
pub struct ProcessLock {
    // Held for its lock; never read.
    _file: File,
    database: PathBuf,
}

impl ProcessLock {
    /// Takes the lock for `database` (the SQLite file; the lock file sits beside it),
    /// or says which process has it: [`BusError::InUse`]. A second lock of the same
    /// file in this process is refused too.
    pub fn acquire(database: &Path) -> Result<Self, BusError> {
        let lock_path = lock_path(database);
        let failed = |e: std::io::Error| {
            BusError::Storage(format!(
                "cannot lock {} (for {}): {e}",
                lock_path.display(),
                database.display()
            ))
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let holder = file
                    .read_to_string(&mut holder)
                    .ok()
                    .and_then(|_| holder.trim().parse().ok());
                return Err(BusError::InUse {
                    database: database.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(failed(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(failed)?;
        Ok(Self {
            _file: file,
            database: database.to_owned(),
        })
    }

    /// The database file this lock holds.
    pub fn database(&self) -> &Path {
        &self.database
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A dead-lettered message, as kept in `bus_dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The queue it was consumed from (`route` or `deliver`), when readable.
    pub queue: Option<String>,
    /// Its message id (the event id, or the first delivery id), when readable.
    pub message_id: Option<String>,
    /// Its body, when readable.
    pub body: Option<Vec<u8>>,
    /// How many times it was leased.
    pub deliveries: Option<i64>,
    /// When it was dead-lettered.
    pub dead_at: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// The embedded bus (see the module documentation).
pub struct EmbeddedBus {
    pool: SqlitePool,
    /// Publishes and acks of concurrent callers, committed together (one fsync).
    writes: GroupCommit<BusWrite, ()>,
    route_ready: Notify,
    deliver_ready: Notify,
    lock: ProcessLock,
}

impl EmbeddedBus {
    /// The connection settings the bus needs on its database: WAL, `synchronous =
    /// FULL`, a busy timeout, created if missing. A store sharing the file builds its
    /// pool from these (adding its own settings) and hands it to [`Self::with_pool`].
    pub fn connect_options(database: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(database)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
    }

    /// Locks `database` for this process, opens it (one connection: SQLite has one
    /// writer at a time anyway) and prepares the bus. `retry_schedule` is the delivery
    /// retry schedule; it must not be empty, and otherwise only matters to RabbitMQ
    /// (the embedded bus waits exactly the delay it is asked for).
    pub async fn open(database: &Path, retry_schedule: &[Duration]) -> Result<Self, BusError> {
        let lock = ProcessLock::acquire(database)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(Self::connect_options(database))
            .await
            .map_err(|e| BusError::Storage(format!("cannot open {}: {e}", database.display())))?;
        Self::with_pool(pool, lock, retry_schedule).await
    }

    /// Prepares the bus on a pool the caller opened (the store's, on the same file),
    /// built from [`Self::connect_options`], with the file's [`ProcessLock`], which the
    /// bus keeps until dropped. Creates the `bus_*` tables if missing and returns every
    /// lease a previous process left behind. Refuses a pool on another file than the
    /// lock's, or without WAL and `synchronous = FULL`.
    pub async fn with_pool(
        pool: SqlitePool,
        lock: ProcessLock,
        retry_schedule: &[Duration],
    ) -> Result<Self, BusError> {
        if retry_schedule.is_empty() {
            return Err(BusError::Topology("no retry delays are configured".into()));
        }
        check_pool(&pool, &lock).await?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(storage("cannot create the bus tables"))?;
        let writes = GroupCommit::spawn(WRITE_BATCH, {
            let pool = pool.clone();
            move |batch: &[BusWrite]| {
                let pool = pool.clone();
                Box::pin(async move { write_all(&pool, batch).await })
            }
        });
        let bus = Self {
            pool,
            writes,
            route_ready: Notify::new(),
            deliver_ready: Notify::new(),
            lock,
        };
        bus.recover().await?;
        Ok(bus)
    }

    /// The database file.
    pub fn database(&self) -> &Path {
        self.lock.database()
    }

    /// Messages in `queue` not settled yet: visible, leased, or waiting out a delay.
    pub async fn depth(&self, queue: QueueRole) -> Result<u64, BusError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bus_messages WHERE queue = ?1")
            .bind(queue_name(queue))
            .fetch_one(&self.pool)
            .await
            .map_err(storage("cannot count messages"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The dead-lettered messages, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let rows = sqlx::query(
            "SELECT queue, message_id, CAST(body AS BLOB) AS body, deliveries, dead_at, reason
             FROM bus_dead ORDER BY dead_at, seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(storage("cannot read the dead letters"))?;
        Ok(rows
            .iter()
            .map(|row| DeadLetter {
                queue: row.try_get("queue").ok(),
                message_id: row.try_get("message_id").ok(),
                body: row.try_get("body").ok(),
                deliveries: row.try_get("deliveries").ok(),
                dead_at: row
                    .try_get::<i64, _>("dead_at")
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
                    .unwrap_or_default(),
                reason: row.try_get("reason").unwrap_or_default(),
            })
            .collect())
    }

    fn ready(&self, queue: QueueRole) -> &Notify {
        match queue {
            QueueRole::Route => &self.route_ready,
            QueueRole::Deliver => &self.deliver_ready,
        }
    }

    /// Returns the leases a dead process left: as redelivered, or to `bus_dead` once
    /// a message has been leased [`DELIVERY_LIMIT`] times (it may be what kills it).
    async fn recover(&self) -> Result<(), BusError> {
        let failed = storage("cannot return the leases of the previous run");
        let mut tx = self.pool.begin().await.map_err(&failed)?;
        let dead = sqlx::query(
            "INSERT OR REPLACE INTO bus_dead
                 (seq, queue, message_id, routing_key, body, published_at, deliveries, dead_at, reason)
             SELECT seq, queue, message_id, routing_key, CAST(body AS BLOB), published_at, deliveries, ?1, ?2
             FROM bus_messages WHERE lease IS NOT NULL AND deliveries >= ?3",
        )
        .bind(now_ms())
        .bind(format!(
            "leased {DELIVERY_LIMIT} times without being settled (the hub stopped while handling it)"
        ))
        .bind(DELIVERY_LIMIT)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?
        .rows_affected();
        sqlx::query("DELETE FROM bus_messages WHERE lease IS NOT NULL AND deliveries >= ?1")
            .bind(DELIVERY_LIMIT)
            .execute(&mut *tx)
            .await
            .map_err(&failed)?;
        let returned = sqlx::query(
            "UPDATE bus_messages SET lease = NULL, leased_at = NULL, redelivered = 1
             WHERE lease IS NOT NULL",
        )
        .execute(&mut *tx)
        .await
        .map_err(&failed)?
        .rows_affected();
        tx.commit().await.map_err(&failed)?;
        if returned > 0 || dead > 0 {
            tracing::warn!(
                database = %self.database().display(),
                returned,
                dead,
                "messages left unsettled by the previous run are queued again"
            );
        }
        Ok(())
    }

    async fn enqueue(
        &self,
        queue: QueueRole,
        message_id: &str,
        routing_key: &str,
        body: &[u8],
        delay: Duration,
    ) -> Result<(), BusError> {
        let now = now_ms();
        let not_before = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        self.writes
            .submit(BusWrite::Enqueue {
                queue: queue_name(queue),
                message_id: message_id.to_owned(),
                routing_key: routing_key.to_owned(),
                body: body.to_vec(),
                published_at: now,
                not_before,
            })
            .await
            .map_err(|e| BusError::NotConfirmed(format!("cannot store the message: {e}")))?;
        self.ready(queue).notify_waiters();
        Ok(())
    }

    /// Leases up to `limit` visible messages of `queue` for `lease`, oldest first.
    async fn claim(
        &self,
        queue: QueueRole,
        lease: &str,
        limit: usize,
    ) -> Result<Vec<Claimed>, BusError> {
        let rows = sqlx::query(
            "UPDATE bus_messages SET lease = ?1, leased_at = ?2, deliveries = deliveries + 1
             WHERE seq IN (
                 SELECT seq FROM bus_messages
                 WHERE queue = ?3 AND lease IS NULL AND not_before <= ?2
                 ORDER BY seq LIMIT ?4)
             RETURNING seq, CAST(body AS BLOB) AS body, redelivered, deliveries",
        )
        .bind(lease)
        .bind(now_ms())
        .bind(queue_name(queue))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(storage("cannot lease messages"))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            match Claimed::from_row(&row) {
                Ok(message) => claimed.push(message),
                Err(e) => self.dead_letter_unreadable(queue, &row, &e).await,
            }
        }
        claimed.sort_by_key(|message| message.seq);
        Ok(claimed)
    }

    async fn dead_letter_unreadable(&self, queue: QueueRole, row: &SqliteRow, error: &sqlx::Error) {
        let queue = queue_name(queue);
        let Ok(seq) = row.try_get::<i64, _>("seq") else {
            tracing::error!(queue, %error, "a leased message has no sequence number; it comes back when the hub restarts");
            return;
        };
        tracing::error!(queue, seq, %error, "a message cannot be read; dead-lettered");
        if let Err(e) = self
            .dead_letter(seq, &format!("unreadable message: {error}"))
            .await
        {
            tracing::error!(queue, seq, error = %e, "cannot dead-letter an unreadable message; it comes back when the hub restarts");
        }
    }

    /// Time until the earliest hidden message of `queue` becomes visible, if any waits.
    async fn next_visible_in(&self, queue: QueueRole) -> Result<Option<Duration>, BusError> {
        let earliest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(not_before) FROM bus_messages WHERE queue = ?1 AND lease IS NULL",
        )
        .bind(queue_name(queue))
        .fetch_one(&self.pool)
        .await
        .map_err(storage("cannot read the next due time"))?;
        Ok(earliest.map(|at| {
            Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0))
        }))
    }

    async fn ack(&self, seq: i64, lease: &str) -> Result<(), BusError> {
        self.writes
            .submit(BusWrite::Ack {
                seq,
                lease: lease.to_owned(),
            })
            .await
            .map_err(|e| BusError::Storage(format!("cannot ack a message: {e}")))
    }

    async fn requeue(&self, queue: QueueRole, seq: i64, lease: &str) -> Result<(), BusError> {
        sqlx::query(
            "UPDATE bus_messages SET lease = NULL, leased_at = NULL, redelivered = 1
             WHERE seq = ?1 AND lease = ?2",
        )
        .bind(seq)
        .bind(lease)
        .execute(&self.pool)
        .await
        .map_err(storage("cannot requeue a message"))?;
        self.ready(queue).notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), BusError> {
        let failed = storage("cannot dead-letter a message");
        let mut tx = self.pool.begin().await.map_err(&failed)?;
        sqlx::query(COPY_TO_DEAD)
            .bind(seq)
            .bind(now_ms())
            .bind(reason)
            .execute(&mut *tx)
            .await
            .map_err(&failed)?;
        sqlx::query("DELETE FROM bus_messages WHERE seq = ?1")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(&failed)?;
        tx.commit().await.map_err(&failed)
    }

    /// Returns what a consumer session still holds when it ends: messages leased
    /// ahead and never handed to a handler, or whose settlement failed.
    async fn release(&self, queue: QueueRole, lease: &str) -> Result<u64, BusError> {
        let released = sqlx::query(
            "UPDATE bus_messages SET lease = NULL, leased_at = NULL, redelivered = 1
             WHERE lease = ?1",
        )
        .bind(lease)
        .execute(&self.pool)
        .await
        .map_err(storage("cannot return leased messages"))?
        .rows_affected();
        if released > 0 {
            self.ready(queue).notify_waiters();
        }
        Ok(released)
    }
}

/// Checks that `pool` is on the locked file and durable enough for the bus.
async fn check_pool(pool: &SqlitePool, lock: &ProcessLock) -> Result<(), BusError> {
    let failed = storage("cannot read the database settings");
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .map_err(&failed)?;
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .map_err(&failed)?;
    // 2 = FULL, 3 = EXTRA.
    if !journal.eq_ignore_ascii_case("wal") || synchronous < 2 {
        return Err(BusError::Storage(format!(
            "{} is open with journal_mode = {journal} and synchronous = {synchronous}; the bus needs WAL and FULL (EmbeddedBus::connect_options)",
            lock.database().display()
        )));
    }
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await
            .map_err(&failed)?;
    if let (Ok(open), Ok(locked)) = (
        std::fs::canonicalize(&file),
        std::fs::canonicalize(lock.database()),
    ) && open != locked
    {
        return Err(BusError::Storage(format!(
            "the pool is open on {}, but the lock is for {}",
            open.display(),
            locked.display()
        )));
    }
    Ok(())
}

/// Publishes and acks committed per transaction at most.
const WRITE_BATCH: usize = 256;

/// A write of the hot path, committed with whatever else is waiting.
enum BusWrite {
    /// A publish.
    Enqueue {
        queue: &'static str,
        message_id: String,
        routing_key: String,
        body: Vec<u8>,
        published_at: i64,
        not_before: i64,
    },
    /// An ack: the message is done.
    Ack { seq: i64, lease: String },
}

/// Commits a batch of writes in one transaction, one statement per kind: each
/// statement is a round trip to the connection's thread.
async fn write_all(pool: &SqlitePool, batch: &[BusWrite]) -> Result<Vec<()>, StoreError> {
    let mut publishes = Vec::new();
    let mut acks = Vec::new();
    for write in batch {
        match write {
            BusWrite::Enqueue { .. } => publishes.push(write),
            BusWrite::Ack { seq, lease } => acks.push((*seq, lease.as_str())),
        }
    }
    let mut tx = pool.begin().await?;
    if !publishes.is_empty() {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO bus_messages (queue, message_id, routing_key, body, published_at, not_before) ",
        );
        insert.push_values(publishes, |mut row, write| {
            if let BusWrite::Enqueue {
                queue,
                message_id,
                routing_key,
                body,
                published_at,
                not_before,
            } = write
            {
                row.push_bind(*queue)
                    .push_bind(message_id)
                    .push_bind(routing_key)
                    .push_bind(body)
                    .push_bind(published_at)
                    .push_bind(not_before);
            }
        });
        insert.build().execute(&mut *tx).await?;
    }
    if !acks.is_empty() {
        let mut delete =
            sqlx::QueryBuilder::new("DELETE FROM bus_messages WHERE (seq, lease) IN (VALUES ");
        let mut pairs = delete.separated(", ");
        for (seq, lease) in acks {
            pairs.push("(");
            pairs.push_bind_unseparated(seq);
            pairs.push_unseparated(", ");
            pairs.push_bind_unseparated(lease);
            pairs.push_unseparated(")");
        }
        delete.push(")");
        delete.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(vec![(); batch.len()])
}

fn storage(what: &'static str) -> impl Fn(sqlx::Error) -> BusError {
    move |e| BusError::Storage(format!("{what}: {e}"))
}

fn queue_name(queue: QueueRole) -> &'static str {
    match queue {
        QueueRole::Route => "route",
        QueueRole::Deliver => "deliver",
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A leased message, as read back.
struct Claimed {
    seq: i64,
    body: Vec<u8>,
    redelivered: bool,
    deliveries: i64,
}

impl Claimed {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            seq: row.try_get("seq")?,
            body: row.try_get("body")?,
            redelivered: row.try_get("redelivered")?,
            deliveries: row.try_get("deliveries")?,
        })
    }
}

/// A leased message handed to the shared consumer loop.
struct EmbeddedDelivery<'a> {
    bus: &'a EmbeddedBus,
    queue: QueueRole,
    lease: Arc<str>,
    message: Claimed,
}

impl EmbeddedDelivery<'_> {
    async fn settle_once(&self, outcome: HandleOutcome) -> Result<(), BusError> {
        let seq = self.message.seq;
        match outcome {
            HandleOutcome::Ack => self.bus.ack(seq, &self.lease).await,
            HandleOutcome::Requeue if self.message.deliveries >= DELIVERY_LIMIT => {
                self.bus
                    .dead_letter(seq, &format!("requeued after {DELIVERY_LIMIT} deliveries"))
                    .await
            }
            HandleOutcome::Requeue => self.bus.requeue(self.queue, seq, &self.lease).await,
            HandleOutcome::DeadLetter => {
                self.bus
                    .dead_letter(seq, "dead-lettered by its consumer")
                    .await
            }
        }
    }
}

impl Delivered for EmbeddedDelivery<'_> {
    fn body(&self) -> &[u8] {
        &self.message.body
    }

    fn redelivered(&self) -> bool {
        self.message.redelivered
    }

    fn channel_alive(&self) -> bool {
        !self.bus.pool.is_closed()
    }

    async fn settle(self, outcome: HandleOutcome) -> Result<(), String> {
        let mut pauses = SETTLE_PAUSES.into_iter();
        loop {
            match self.settle_once(outcome).await {
                Ok(()) => return Ok(()),
                Err(e) => match pauses.next() {
                    Some(pause) if self.channel_alive() => tokio::time::sleep(pause).await,
                    _ => {
                        return Err(format!(
                            "{e} (it stays leased until its consumer stops or the hub restarts)"
                        ));
                    }
                },
            }
        }
    }
}

/// Leases messages of one queue for one consumer session and hands them out one by
/// one, waiting (without polling) when there are none.
struct Feed<'a> {
    bus: &'a EmbeddedBus,
    queue: QueueRole,
    lease: Arc<str>,
    prefetch: usize,
    leased: VecDeque<Claimed>,
    failures: ExponentialBackoff,
}

impl<'a> Feed<'a> {
    fn new(bus: &'a EmbeddedBus, queue: QueueRole, lease: Arc<str>, prefetch: usize) -> Self {
        Self {
            bus,
            queue,
            lease,
            prefetch,
            leased: VecDeque::new(),
            failures: failure_backoff(),
        }
    }

    async fn next_delivery(&mut self) -> EmbeddedDelivery<'a> {
        loop {
            if let Some(message) = self.leased.pop_front() {
                return EmbeddedDelivery {
                    bus: self.bus,
                    queue: self.queue,
                    lease: self.lease.clone(),
                    message,
                };
            }
            // Registered before looking, so a publish in between still wakes us.
            let published = self.bus.ready(self.queue).notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let wait = match self.bus.claim(self.queue, &self.lease, self.prefetch).await {
                Ok(claimed) if !claimed.is_empty() => {
                    self.leased.extend(claimed);
                    self.failures = failure_backoff();
                    continue;
                }
                Ok(_) => match self.bus.next_visible_in(self.queue).await {
                    Ok(wait) => wait,
                    Err(e) => Some(self.failure_pause(&e)),
                },
                Err(e) => Some(self.failure_pause(&e)),
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        () = &mut published => {}
                        () = tokio::time::sleep(wait.min(MAX_IDLE_WAIT)) => {}
                    }
                }
                None => published.await,
            }
        }
    }

    fn failure_pause(&mut self, error: &BusError) -> Duration {
        let pause = self.failures.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(queue = queue_name(self.queue), %error, retry_in = ?pause, "cannot read the embedded queue; retrying");
        pause
    }
}

/// Pauses after database failures while consuming: 100 ms doubling to 10 s, jittered.
fn failure_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish_event(
        &self,
        event_type: &str,
        event_id: Uuid,
        body: &[u8],
    ) -> Result<(), BusError> {
        self.enqueue(
            QueueRole::Route,
            &event_id.to_string(),
            event_type,
            body,
            Duration::ZERO,
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
        self.enqueue(
            QueueRole::Deliver,
            &first.to_string(),
            DELIVER_KEY,
            body.as_bytes(),
            Duration::ZERO,
        )
        .await
    }

    async fn schedule_retry(&self, delivery_id: Uuid, delay: Duration) -> Result<(), BusError> {
        let id = delivery_id.to_string();
        self.enqueue(QueueRole::Deliver, &id, DELIVER_KEY, id.as_bytes(), delay)
            .await
    }

    async fn consume(
        &self,
        queue: QueueRole,
        concurrency: usize,
        handler: Arc<dyn MessageHandler>,
        shutdown: CancellationToken,
    ) {
        let name = queue_name(queue);
        let lease: Arc<str> = Uuid::now_v7().simple().to_string().into();
        let prefetch = concurrency.clamp(1, MAX_PREFETCH);
        let feed = Feed::new(self, queue, lease.clone(), prefetch);
        let deliveries = stream::unfold(feed, |mut feed| async move {
            let delivery = feed.next_delivery().await;
            Some((delivery, feed))
        });
        tracing::info!(queue = name, database = %self.database().display(), "consuming");
        consumer::run(name, deliveries, concurrency, &handler, &shutdown).await;
        match self.release(queue, &lease).await {
            Ok(0) => {}
            Ok(released) => {
                tracing::info!(queue = name, released, "returned messages leased ahead");
            }
            Err(e) => {
                tracing::warn!(queue = name, error = %e, "cannot return leased messages; they come back when the bus is next opened");
            }
        }
    }
}
