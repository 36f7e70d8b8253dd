//! One isolated deployment per test: a fresh PostgreSQL database `e2e_<uuid>`, a bus
//! prefix `e2e-<uuid>` on the shared RabbitMQ — or, on the embedded backend, one SQLite
//! file in the test's folder and the in-process bus — free loopback ports for MLLP and
//! the admin API, and the real `renkei` binary started as child processes. Dropping the
//! [`Env`] kills the processes, drops the database and deletes the prefix's queues and
//! exchanges, also when the test failed (the hubs' logs are printed to the test's
//! output, which the runner shows for failed tests).

use std::fmt;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use renkei_hub::bus::amqp::Topology;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool, SqlitePool};

use crate::registry::Registry;

/// How long anything the tests wait for may take. Generous: the tests share two cores
/// with compilers, and nothing here measures speed.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The delivery retry schedule every test hub runs with (short, so retries happen
/// within a test's deadline).
pub const RETRY_SCHEDULE: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(3),
];
const RETRY_SCHEDULE_ENV: &str = "1s,2s,3s";

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

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The `renkei` binary under test: `$RENKEI_BIN`, else the workspace's debug build.
pub fn renkei_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("RENKEI_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|t| {
                    if t.is_absolute() {
                        t
                    } else {
                        workspace_dir().join(t)
                    }
                })
                .unwrap_or_else(|| workspace_dir().join("target"));
            target.join("debug").join("renkei")
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "the renkei binary is not at {} — build it first with \
         `cargo build -p renkei-hub --bin renkei` (deploy/dev/test.sh does), or point \
         RENKEI_BIN at it",
        path.display()
    );
    Ok(path)
}

/// A loopback address no one listens on right now.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Which roles a hub process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// `renkei up`: every role.
    All,
    /// `renkei up --roles mllp`: only the MLLP listener (ingest).
    MllpOnly,
}

struct Hub {
    child: Child,
    log: PathBuf,
    killed: bool,
}

/// What a one-shot `renkei …` command did.
pub struct CliOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// What a deployment keeps its state and its queue in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL and RabbitMQ.
    Postgres,
    /// The embedded default: a SQLite file and the in-process bus.
    Embedded,
}

/// One test's deployment.
pub struct Env {
    /// What it runs on.
    pub backend: Backend,
    /// The test database's name.
    pub db_name: String,
    /// Its URL.
    pub db_url: String,
    /// The bus prefix.
    pub prefix: String,
    /// Where the MLLP listener listens.
    pub mllp: SocketAddr,
    /// Where the admin API listens.
    pub api: SocketAddr,
    /// A pool on the test database, for inspection (and tampering); PostgreSQL only
    /// (on the embedded backend it points nowhere and every query fails).
    pub db: PgPool,
    /// A pool on the SQLite file (embedded backend only).
    sqlite: Option<SqlitePool>,
    bin: PathBuf,
    dir: PathBuf,
    extra: Mutex<Vec<(String, String)>>,
    hubs: Mutex<Vec<Hub>>,
    files: Mutex<usize>,
}

/// `delivery.allowed_destinations` of the test hubs: loopback, where receivers listen.
pub const LOOPBACK: &str = "127.0.0.0/8,::1";

impl Env {
    /// A deployment with the test defaults.
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_settings(&[]).await
    }

    /// A deployment whose hubs also get these `RENKEI__…` variables.
    pub async fn with_settings(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::on(Backend::Postgres, extra).await
    }

    /// A deployment on `backend` whose hubs also get these `RENKEI__…` variables.
    pub async fn on(backend: Backend, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        if backend == Backend::Embedded {
            return Self::embedded(extra);
        }
        let bin = renkei_bin()?;
        let admin_url = database_url();
        let mut admin = PgConnection::connect(&admin_url).await.map_err(|e| {
            anyhow::anyhow!(
                "PostgreSQL is not reachable at {admin_url} (RENKEI_TEST_DATABASE_URL): {e}; \
                 start it with deploy/dev/services.sh"
            )
        })?;
        let amqp = amqp_url();
        let probe = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "RabbitMQ is not reachable at {amqp} (RENKEI_TEST_AMQP_URL): {e}; \
                     start it with deploy/dev/services.sh"
                )
            })?;
        let _ = probe.close(200, "probe".into()).await;

        let (mllp, api) = (free_addr()?, free_addr()?);
        let id = uuid::Uuid::now_v7().simple().to_string();
        let db_name = format!("e2e_{id}");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .await?;
        let _ = admin.close().await;
        let db_url = match admin_url.rfind('/') {
            Some(i) => format!("{}/{db_name}", &admin_url[..i]),
            None => anyhow::bail!("RENKEI_TEST_DATABASE_URL has no database path"),
        };
        let db = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(DEADLINE)
            .connect_lazy(&db_url)?;
        let dir = std::env::temp_dir().join(format!("renkei-e2e-{id}"));
        // From here on the guard owns what was created, so a failure below cleans up.
        let env = Self {
            backend,
            sqlite: None,
            db_name,
            db_url,
            prefix: format!("e2e-{id}"),
            mllp,
            api,
            db,
            bin,
            dir,
            extra: Mutex::new(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            hubs: Mutex::new(Vec::new()),
            files: Mutex::new(0),
        };
        std::fs::create_dir_all(&env.dir)?;
        Ok(env)
    }

    /// A deployment on the embedded backend: nothing but the binary and a folder.
    fn embedded(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bin = renkei_bin()?;
        let (mllp, api) = (free_addr()?, free_addr()?);
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("renkei-e2e-{id}"));
        std::fs::create_dir_all(&dir)?;
        let db_url = format!("sqlite://{}", dir.join("renkei.db").display());
        let sqlite = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(DEADLINE)
            .connect_lazy(&db_url)?;
        Ok(Self {
            backend: Backend::Embedded,
            db_name: String::new(),
            db_url,
            prefix: format!("e2e-{id}"),
            mllp,
            api,
            db: PgPoolOptions::new()
                .connect_lazy("postgres://the-embedded-backend-has-no-postgresql.invalid/none")?,
            sqlite: Some(sqlite),
            bin,
            dir,
            extra: Mutex::new(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            hubs: Mutex::new(Vec::new()),
            files: Mutex::new(0),
        })
    }

    /// The integer one query answers, on either backend (portable SQL only).
    pub async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match &self.sqlite {
            Some(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            None => sqlx::query_scalar(sql).fetch_one(&self.db).await?,
        })
    }

    /// The text column a query answers, one per row, on either backend.
    pub async fn strings(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match &self.sqlite {
            Some(pool) => sqlx::query_scalar(sql).fetch_all(pool).await?,
            None => sqlx::query_scalar(sql).fetch_all(&self.db).await?,
        })
    }

    /// The id column a query answers, one per row, on either backend.
    pub async fn uuids(&self, sql: &str) -> anyhow::Result<Vec<uuid::Uuid>> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match &self.sqlite {
            Some(pool) => sqlx::query_scalar(sql).fetch_all(pool).await?,
            None => sqlx::query_scalar(sql).fetch_all(&self.db).await?,
        })
    }

    /// The bus topology the hubs declare (for cleanup and inspection).
    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, &RETRY_SCHEDULE, 1)
    }

    fn next_file(&self, stem: &str, ext: &str) -> PathBuf {
        let mut n = self.files.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        self.dir.join(format!("{stem}-{n}.{ext}"))
    }

    /// Hubs started from now on also get `key=value` (after every other setting).
    pub fn set(&self, key: &str, value: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.to_owned(), value.to_owned()));
    }

    /// `renkei ARGS` with this deployment's configuration and nothing inherited.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(args);
        // Only this test's configuration: no RENKEI_CONFIG or RENKEI__… from outside.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RENKEI_") {
                command.env_remove(key);
            }
        }
        command
            .env("RENKEI__DATABASE__URL", &self.db_url)
            .env("RENKEI__DATABASE__MAX_CONNECTIONS", "8")
            .env(
                "RENKEI__BUS__URL",
                match self.backend {
                    Backend::Postgres => amqp_url(),
                    Backend::Embedded => "embedded".into(),
                },
            )
            .env("RENKEI__BUS__PREFIX", &self.prefix)
            .env("RENKEI__SOURCES__MLLP__LISTEN", self.mllp.to_string())
            .env("RENKEI__API__LISTEN", self.api.to_string())
            .env("RENKEI__DELIVERY__RETRY_SCHEDULE", RETRY_SCHEDULE_ENV)
            .env("RENKEI__DELIVERY__TIMEOUT", "5s")
            // The test receivers listen on this machine's loopback, which webhooks may
            // not reach by default.
            .env("RENKEI__DELIVERY__ALLOWED_DESTINATIONS", LOOPBACK)
            .envs(
                self.extra
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    /// Runs a one-shot command (`admin apply`, `audit verify`…) to completion.
    pub async fn renkei(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let mut command = tokio::process::Command::from(self.command(args));
        command.kill_on_drop(true);
        let output = tokio::time::timeout(DEADLINE, command.output())
            .await
            .map_err(|_| anyhow::anyhow!("`renkei {}` did not finish", args.join(" ")))??;
        Ok(CliOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// A new admin API key from `renkei admin create-api-key`; fails unless it exits 0.
    pub async fn api_key(&self, name: &str) -> anyhow::Result<String> {
        let created = self
            .renkei(&["admin", "create-api-key", "--name", name])
            .await?;
        anyhow::ensure!(created.status.success(), "{created}");
        Ok(created.stdout.trim().to_owned())
    }

    /// Applies a registry document with `renkei admin apply -f FILE`; fails unless it
    /// exits 0.
    pub async fn apply(&self, registry: &Registry) -> anyhow::Result<CliOutput> {
        let path = self.next_file("registry", "toml");
        std::fs::write(&path, registry.to_toml())?;
        let path = path.to_string_lossy().into_owned();
        let output = self.renkei(&["admin", "apply", "-f", &path]).await?;
        anyhow::ensure!(
            output.status.success(),
            "renkei admin apply failed: {output}"
        );
        Ok(output)
    }

    /// Starts a hub process and waits until it serves (its MLLP port accepts, and
    /// `GET /healthz` answers when it runs the API).
    pub async fn start_hub(&self, roles: Roles) -> anyhow::Result<()> {
        let args: &[&str] = match roles {
            Roles::All => &["up"],
            Roles::MllpOnly => &["up", "--roles", "mllp"],
        };
        let log = self.next_file("hub", "log");
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = self
            .command(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?;
        let index = {
            let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
            hubs.push(Hub {
                child,
                log: log.clone(),
                killed: false,
            });
            hubs.len() - 1
        };
        let client = http_client()?;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            {
                let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(status) = hubs[index].child.try_wait()? {
                    hubs[index].killed = true;
                    anyhow::bail!(
                        "`renkei {}` exited with {status} before it was ready:\n{}",
                        args.join(" "),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            let mllp_ready = tokio::net::TcpStream::connect(self.mllp).await.is_ok();
            let api_ready = match roles {
                Roles::MllpOnly => true,
                Roles::All => client
                    .get(format!("http://{}/healthz", self.api))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
            };
            if mllp_ready && api_ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "`renkei {}` was not ready within {DEADLINE:?}:\n{}",
                    args.join(" "),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs every running hub process and reaps it: no shutdown, no flushing.
    pub fn kill_hubs(&self) {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        for hub in hubs.iter_mut().filter(|h| !h.killed) {
            // `Child::kill` is SIGKILL on Unix.
            let _ = hub.child.kill();
            let _ = hub.child.wait();
            hub.killed = true;
        }
    }

    /// Every hub's log so far.
    pub fn hub_logs(&self) -> String {
        let hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.iter()
            .map(|h| {
                format!(
                    "=== {}\n{}",
                    h.log.display(),
                    std::fs::read_to_string(&h.log).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Waits for `check` to give `Some`, polling every 100 ms; fails after
    /// [`DEADLINE`] naming `what`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<T>>>,
    {
        eventually(what, check).await
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("never happened within {DEADLINE:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP client for the admin API (plain HTTP on loopback).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default crypto provider; the hub installs ring, so do
    // the same (it is never used for plain HTTP, but the client wants one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder().timeout(DEADLINE).build()?)
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_hubs();
        // Shown only when the test fails (the runner captures a passing test's output).
        eprintln!("hub logs of {}:\n{}", self.prefix, self.hub_logs());
        if self.backend == Backend::Embedded {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        // Async cleanup on a runtime of its own: the test's runtime may be unwinding.
        let db_name = self.db_name.clone();
        let topology = self.topology();
        let cleanup = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let db = drop_database(&db_name).await;
                let bus = delete_topology(&topology).await;
                db.and(bus)
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("e2e cleanup of {} failed: {e:#}", self.prefix),
            Err(_) => eprintln!("e2e cleanup of {} panicked", self.prefix),
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn drop_database(name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&database_url()).await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await?;
    let _ = conn.close().await;
    Ok(())
}

async fn delete_topology(topology: &Topology) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let conn =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
    for queue in topology.all_queues() {
        // A failed delete closes its channel: one channel per delete.
        let channel = conn.create_channel().await?;
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("cannot delete queue {queue}: {e}"))?;
        let _ = channel.close(200, "done".into()).await;
    }
    for exchange in topology.all_exchanges() {
        let channel = conn.create_channel().await?;
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("cannot delete exchange {exchange}: {e}"))?;
        let _ = channel.close(200, "done".into()).await;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
