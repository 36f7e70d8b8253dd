//! Per-test PostgreSQL database and RabbitMQ prefix.

use std::time::Duration;

use renkei_hub::config::BusSettings;
use renkei_hub::store::pg::PgStore;
use sqlx::{Connection, Executor, PgConnection};

/// The admin URL of the test PostgreSQL server.
pub fn database_url() -> String {
    std::env::var("RENKEI_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// The test RabbitMQ URL.
pub fn amqp_url() -> String {
    std::env::var("RENKEI_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A fresh database with the hub's migrations applied; dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: PgStore,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        let admin = database_url();
        let name = format!("it_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .map_err(|e| anyhow::anyhow!("PostgreSQL is not reachable at {admin}: {e}"))?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        let url = match admin.rfind('/') {
            Some(i) => format!("{}/{name}", &admin[..i]),
            None => anyhow::bail!("RENKEI_TEST_DATABASE_URL has no database path"),
        };
        let store = PgStore::connect(&url, 8, Duration::from_secs(10)).await?;
        store.migrate().await?;
        Ok(Self { name, url, store })
    }

    /// A raw connection, for tampering and inspection.
    pub async fn conn(&self) -> anyhow::Result<PgConnection> {
        Ok(PgConnection::connect(&self.url).await?)
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        self.store.pool().close().await;
        let mut conn = PgConnection::connect(&database_url()).await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .await?;
        Ok(())
    }
}

/// Bus settings with a unique prefix.
pub fn bus_settings() -> BusSettings {
    BusSettings {
        url: amqp_url(),
        prefix: format!("it-{}", uuid::Uuid::now_v7().simple()),
        prefetch: 16,
        quorum_initial_group_size: 1,
    }
}

/// Deletes every queue and exchange of a bus prefix.
pub async fn delete_topology(topology: &renkei_hub::bus::amqp::Topology) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let conn =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    for queue in topology.all_queues() {
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in topology.all_exchanges() {
        channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// Messages waiting in a queue.
pub async fn queue_depth(queue: &str) -> anyhow::Result<u32> {
    use lapin::options::QueueDeclareOptions;
    let conn =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let count = q.message_count();
    conn.close(200, "done".into()).await?;
    Ok(count)
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `within` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("never happened within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh directory holding one test's SQLite database file; removed when dropped.
pub struct TempDatabase {
    dir: std::path::PathBuf,
}

impl TempDatabase {
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("renkei-it-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The database file (not created yet).
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.join("renkei.db")
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
