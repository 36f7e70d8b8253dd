//! The hub under test: the real `renkei` binary on a fresh database and bus prefix,
//! with a registry of `--patients` patients, each looked after by both receivers'
//! participants and consenting to both.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use renkei_e2e::history::{TABLE_READS_SQL, history_sql};
use sqlx::{Connection, Executor, PgConnection, Row};
use tokio::process::{Child, Command};

use crate::Args;
use crate::load::{HOSPITAL, patient_local_id};
use crate::receiver::Receiver;

/// What PostgreSQL read from the hub's tables (all of them) over a stretch of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableReads {
    /// Sequential scans started.
    pub sequential_scans: i64,
    /// Rows those scans read.
    pub sequential_rows: i64,
    /// Rows fetched through indexes.
    pub index_rows: i64,
    /// Delivery attempts inserted (to know every session has reported).
    pub attempts_inserted: i64,
}

impl TableReads {
    fn since(self, before: &Self) -> Self {
        Self {
            sequential_scans: self.sequential_scans - before.sequential_scans,
            sequential_rows: self.sequential_rows - before.sequential_rows,
            index_rows: self.index_rows - before.index_rows,
            attempts_inserted: self.attempts_inserted - before.attempts_inserted,
        }
    }
}

/// A running hub and what it needs cleaned up.
pub struct Hub {
    child: Child,
    pid: u32,
    mllp: SocketAddr,
    server_url: String,
    database: String,
    amqp_url: String,
    prefix: String,
    /// The embedded default's folder (`--embedded`), removed on drop.
    embedded: Option<tempfile::TempDir>,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn database_url(server: &str, database: &str) -> anyhow::Result<String> {
    match server.rfind('/') {
        Some(i) => Ok(format!("{}/{database}", &server[..i])),
        None => anyhow::bail!("the database URL {server} has no database path"),
    }
}

impl Hub {
    /// Creates the database, starts the hub, waits until it listens, applies the
    /// registry.
    pub async fn start(args: &Args, receivers: &[Receiver]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.hub_bin.exists(),
            "{} does not exist: build it with `cargo build --release -p renkei-hub --bin renkei` (or pass --hub-bin)",
            args.hub_bin.display()
        );
        let id = uuid::Uuid::now_v7().simple().to_string();
        let database = format!("bench_{id}");
        let prefix = format!("bench-{id}");
        let embedded = if args.embedded {
            Some(tempfile::Builder::new().prefix("renkei-bench-").tempdir()?)
        } else {
            let mut admin = PgConnection::connect(&args.database_url)
                .await
                .map_err(|e| anyhow::anyhow!("PostgreSQL is not reachable: {e}"))?;
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                .await?;
            None
        };
        let (db_url, bus_url) = match &embedded {
            Some(dir) => (
                format!("sqlite://{}", dir.path().join("renkei.db").display()),
                "embedded".to_owned(),
            ),
            None => (
                database_url(&args.database_url, &database)?,
                args.amqp_url.clone(),
            ),
        };
        let (mllp, api) = (free_port()?, free_port()?);
        let mut command = Command::new(&args.hub_bin);
        command
            .arg("up")
            .env("RENKEI__DATABASE__URL", &db_url)
            .env("RENKEI__BUS__URL", &bus_url)
            .env("RENKEI__BUS__PREFIX", &prefix)
            .env("RENKEI__SOURCES__MLLP__LISTEN", mllp.to_string())
            .env("RENKEI__API__LISTEN", api.to_string())
            .env("RENKEI__LOG__LEVEL", "warn")
            // Every simulated sender connects from this one address.
            .env(
                "RENKEI__SOURCES__MLLP__MAX_CONNECTIONS_PER_PEER",
                args.senders.max(args.large_messages).to_string(),
            )
            // The receivers listen on loopback, which webhooks may not reach by default.
            .env("RENKEI__DELIVERY__ALLOWED_DESTINATIONS", "127.0.0.0/8,::1")
            .envs(args.hub_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        let mut hub = Self {
            child,
            pid,
            mllp,
            server_url: args.database_url.clone(),
            database,
            amqp_url: args.amqp_url.clone(),
            prefix,
            embedded,
        };
        if let Err(e) = hub.ready(args, receivers).await {
            hub.stop().await;
            return Err(e);
        }
        Ok(hub)
    }

    async fn ready(&mut self, args: &Args, receivers: &[Receiver]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(self.mllp).await.is_err() {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the hub exited during start-up ({status})");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the hub did not listen within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let file = std::env::temp_dir().join(format!("{}-registry.toml", self.prefix));
        std::fs::write(&file, registry(args.patients, receivers))?;
        let applied = Command::new(&args.hub_bin)
            .args(["admin", "apply", "-f"])
            .arg(&file)
            .env("RENKEI__DATABASE__URL", self.database_url()?)
            .env("RENKEI__LOG__LEVEL", "warn")
            // The receivers listen on loopback, which webhooks may not reach by default.
            .env("RENKEI__DELIVERY__ALLOWED_DESTINATIONS", "127.0.0.0/8,::1")
            .stdout(Stdio::null())
            .output()
            .await?;
        let _ = std::fs::remove_file(&file);
        anyhow::ensure!(
            applied.status.success(),
            "renkei admin apply failed: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        if args.history > 0 {
            let started = Instant::now();
            let participants: Vec<String> = (0..receivers.len())
                .map(|n| format!("office-{n}"))
                .collect();
            let participants: Vec<&str> = participants.iter().map(String::as_str).collect();
            let mut conn = self.connect().await?;
            for statement in history_sql(args.history, &participants) {
                conn.execute(sqlx::AssertSqlSafe(statement)).await?;
            }
            conn.close().await?;
            eprintln!(
                "bench: {} events of history written under the running hub in {:.1} s",
                args.history,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// The hub's database.
    fn database_url(&self) -> anyhow::Result<String> {
        match &self.embedded {
            Some(dir) => Ok(format!(
                "sqlite://{}",
                dir.path().join("renkei.db").display()
            )),
            None => database_url(&self.server_url, &self.database),
        }
    }

    async fn connect(&self) -> anyhow::Result<PgConnection> {
        Ok(PgConnection::connect(&database_url(&self.server_url, &self.database)?).await?)
    }

    /// PostgreSQL's counters for the hub's tables, summed (none on the embedded
    /// default).
    pub async fn table_reads(&self) -> anyhow::Result<TableReads> {
        if self.embedded.is_some() {
            return Ok(TableReads::default());
        }
        let mut conn = self.connect().await?;
        let mut reads = TableReads::default();
        for row in sqlx::query(TABLE_READS_SQL).fetch_all(&mut conn).await? {
            reads.sequential_scans += row.try_get::<i64, _>("seq_scan")?;
            reads.sequential_rows += row.try_get::<i64, _>("seq_tup_read")?;
            reads.index_rows += row.try_get::<i64, _>("idx_tup_fetch")?;
            if row.try_get::<String, _>("relname")? == "delivery_attempts" {
                reads.attempts_inserted = row.try_get("n_tup_ins")?;
            }
        }
        conn.close().await?;
        Ok(reads)
    }

    /// What was read since `before`, once the statistics show the `attempts` delivery
    /// attempts made since then (the hub must have stopped: a session reports its
    /// counts when it ends, or after idling a while).
    pub async fn table_reads_after(
        &self,
        before: &TableReads,
        attempts: usize,
    ) -> anyhow::Result<TableReads> {
        if self.embedded.is_some() {
            return Ok(TableReads::default());
        }
        let wanted = i64::try_from(attempts)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reads = self.table_reads().await?.since(before);
            if reads.attempts_inserted >= wanted || Instant::now() > deadline {
                return Ok(reads);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the hub process (its database and broker objects stay until [`Hub::stop`]).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The MLLP listener.
    pub fn mllp_addr(&self) -> SocketAddr {
        self.mllp
    }

    /// User + system CPU seconds the hub has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(i)
                .ok_or_else(|| anyhow::anyhow!("short /proc stat"))?
                .parse::<f64>()?)
        };
        // Fields are numbered from 3 after the name: utime is the 12th of `rest`.
        Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
    }

    /// Peak resident set size (VmHWM).
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{}/status", self.pid))?;
        Ok(kib * 1024)
    }

    /// Stops the hub and removes its database and broker objects.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        if let Err(e) = self.cleanup().await {
            eprintln!("bench: cleanup failed: {e}");
        }
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        if self.embedded.is_some() {
            // The folder goes with `self.embedded`.
            return Ok(());
        }
        let mut admin = PgConnection::connect(&self.server_url).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            )))
            .await?;
        let settings = renkei_hub::config::Settings::load(None)?;
        let topology = renkei_hub::bus::topology::Topology::new(
            &self.prefix,
            &settings.delivery.retry_schedule,
            1,
        );
        let conn =
            lapin::Connection::connect(&self.amqp_url, lapin::ConnectionProperties::default())
                .await?;
        let channel = conn.create_channel().await?;
        for queue in topology.all_queues() {
            channel
                .queue_delete(
                    queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await?;
        }
        for exchange in topology.all_exchanges() {
            channel
                .exchange_delete(
                    exchange.as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await?;
        }
        Ok(())
    }
}

fn clock_ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture the hub targets.
    100.0
}

/// Two participants, one receiver each, subscribed to admissions; every patient looked
/// after by both and consenting to both.
fn registry(patients: usize, receivers: &[Receiver]) -> String {
    let mut toml = format!(
        "[[facilities]]\ncode = \"{HOSPITAL}\"\nname = \"Bench Hospital\"\nkind = \"hospital\"\n"
    );
    for (n, receiver) in receivers.iter().enumerate() {
        let _ = write!(
            toml,
            r#"
[[facilities]]
code = "137000000{n}"
name = "Care office {n}"
kind = "care_management"

[[participants]]
id = "office-{n}"
facility = "137000000{n}"
name = "Care office {n}"

[[endpoints]]
participant = "office-{n}"
name = "main"
url = "{url}"
secrets = ["{secret}"]

[[subscriptions]]
participant = "office-{n}"
name = "adt"
endpoint = "main"
event_types = ["inpatient.admitted"]
"#,
            url = receiver.url(),
            secret = receiver.secret()
        );
    }
    for p in 0..patients {
        let _ = write!(
            toml,
            "\n[[patients]]\nid = \"P{p}\"\nidentifiers = [{{ facility = \"{HOSPITAL}\", value = \"{}\" }}]\n",
            patient_local_id(p)
        );
        for n in 0..receivers.len() {
            let _ = write!(
                toml,
                "\n[[care_relationships]]\npatient = \"P{p}\"\nparticipant = \"office-{n}\"\nrole = \"care_manager\"\nvalid_from = 2020-01-01\n"
            );
        }
        let _ = write!(
            toml,
            "\n[[consents]]\nid = \"C{p}\"\npatient = \"P{p}\"\nscope = \"blanket\"\nbasis = \"written\"\nvalid_from = 2020-01-01T00:00:00Z\n"
        );
    }
    toml
}
