//! Per-test store (a PostgreSQL database or a SQLite file) and RabbitMQ prefix.

use std::time::Duration;

use std::sync::Arc;

use renkei_hub::config::{BusSettings, DatabaseSettings};
use renkei_hub::store::Store;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

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

/// A store backend the contract suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: a fresh database on the test server.
    Postgres,
    /// SQLite: a fresh file in a temporary folder.
    Sqlite,
}

/// A fresh store with the hub's migrations applied; removed by [`TestDb::drop_db`].
pub struct TestDb {
    pub backend: Backend,
    pub name: String,
    pub url: String,
    pub store: Arc<dyn Store>,
    /// The SQLite file's folder, removed on drop.
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh PostgreSQL database.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(Backend::Postgres).await
    }

    /// A fresh store on `backend`, opened through the hub's own factory.
    pub async fn on(backend: Backend) -> anyhow::Result<Self> {
        let name = format!("it_{}", uuid::Uuid::now_v7().simple());
        let (url, dir) = match backend {
            Backend::Postgres => {
                let admin = database_url();
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .map_err(|e| anyhow::anyhow!("PostgreSQL is not reachable at {admin}: {e}"))?;
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await?;
                let url = match admin.rfind('/') {
                    Some(i) => format!("{}/{name}", &admin[..i]),
                    None => anyhow::bail!("RENKEI_TEST_DATABASE_URL has no database path"),
                };
                (url, None)
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("renkei.db").display());
                (url, Some(dir))
            }
        };
        let settings = DatabaseSettings {
            url: url.clone(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        };
        let store = renkei_hub::store::open(&settings).await?;
        Ok(Self {
            backend,
            name,
            url,
            store,
            _dir: dir,
        })
    }

    /// Another store on the same database, as a restarted hub opens it.
    pub async fn reopen(&self) -> anyhow::Result<Arc<dyn Store>> {
        let settings = DatabaseSettings {
            url: self.url.clone(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(10),
        };
        Ok(renkei_hub::store::open(&settings).await?)
    }

    /// Runs one statement on a connection of its own (tampering, inspection).
    pub async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Postgres => {
                PgConnection::connect(&self.url).await?.execute(sql).await?;
            }
            Backend::Sqlite => {
                SqliteConnection::connect(&self.url)
                    .await?
                    .execute(sql)
                    .await?;
            }
        }
        Ok(())
    }

    /// The one integer a query answers (a count…).
    pub async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match self.backend {
            Backend::Postgres => {
                sqlx::query_scalar(sql)
                    .fetch_one(&mut PgConnection::connect(&self.url).await?)
                    .await?
            }
            Backend::Sqlite => {
                sqlx::query_scalar(sql)
                    .fetch_one(&mut SqliteConnection::connect(&self.url).await?)
                    .await?
            }
        })
    }

    /// The integers a query answers, one per row.
    pub async fn column(&self, sql: &str) -> anyhow::Result<Vec<i64>> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match self.backend {
            Backend::Postgres => {
                sqlx::query_scalar(sql)
                    .fetch_all(&mut PgConnection::connect(&self.url).await?)
                    .await?
            }
            Backend::Sqlite => {
                sqlx::query_scalar(sql)
                    .fetch_all(&mut SqliteConnection::connect(&self.url).await?)
                    .await?
            }
        })
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        let Self {
            backend,
            name,
            store,
            ..
        } = self;
        drop(store);
        if backend == Backend::Postgres {
            let mut conn = PgConnection::connect(&database_url()).await?;
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await?;
        }
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
    dir: tempfile::TempDir,
}

impl TempDatabase {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    /// The database file (not created yet).
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("renkei.db")
    }
}
