//! `renkei-bench`: the hub end to end beside the raw broker, in one run, on the local
//! RabbitMQ and PostgreSQL.
//!
//! 1. **Raw broker baseline** — persistent messages the size of a canonical event,
//!    each publisher-confirmed, through a quorum queue, consumed and acked; as many
//!    publishers as the hub gets MLLP senders and the hub's prefetch.
//! 2. **Hub end to end** — the real `renkei` binary; MLLP senders (each waits for its
//!    ACK, as an EHR does) → hub (consent checks and audit on) → two webhook
//!    receivers, every event going to both.
//!
//! It prints events/s accepted, deliveries/s, ACK and source-to-receiver latency
//! percentiles, the hub's CPU seconds and peak RSS, and the ratio of hub events/s to
//! raw-broker messages/s. `--rate N --seconds S` holds a fixed rate instead of
//! sending as fast as the hub accepts. `--large-messages N` instead sends N messages
//! of `--large-bytes` (1 MB) at the same moment, `--large-rounds` times, and prints the
//! hub's peak RSS.
//!
//! ```text
//! bash deploy/dev/bench.sh [--json] [--rate 500 --seconds 60]
//! ```
//!
//! (which builds `renkei` and this program in release mode and runs it).

mod broker;
mod hub;
mod large;
mod load;
mod receiver;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(about = "The Renkei hub end to end beside the raw broker, in one run")]
pub struct Args {
    /// Concurrent MLLP connections (and raw-broker publishers).
    #[arg(long, default_value_t = 96)]
    pub senders: usize,
    /// Events to send in throughput mode.
    #[arg(long, default_value_t = 30_000)]
    pub messages: usize,
    /// Fixed-rate mode: events per second, held for --seconds.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Length of a fixed-rate run.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Patients in the registry (events cycle through them).
    #[arg(long, default_value_t = 1_000)]
    pub patients: usize,
    /// Past events to write under the running hub before the load (each with both
    /// deliveries, an attempt each and an ingest row; one patient per ten events), to
    /// show that the work per event does not grow with history.
    #[arg(long, default_value_t = 0)]
    pub history: usize,
    /// Large-message mode: this many senders each send one message of --large-bytes
    /// at the same moment (per round), resending on AR; prints the hub's peak RSS.
    #[arg(long, default_value_t = 0)]
    pub large_messages: usize,
    /// Rounds of the large-message mode.
    #[arg(long, default_value_t = 1)]
    pub large_rounds: usize,
    /// Size of each message in the large-message mode.
    #[arg(long, default_value_t = 1_000_000)]
    pub large_bytes: usize,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Skip the raw-broker baseline.
    #[arg(long)]
    pub skip_broker: bool,
    /// Run the hub on the embedded default (a SQLite file in a temporary folder and
    /// the in-process bus) instead of PostgreSQL and RabbitMQ; no raw-broker baseline.
    #[arg(long)]
    pub embedded: bool,
    /// The hub binary.
    #[arg(long, env = "RENKEI_BIN", default_value = "target/release/renkei")]
    pub hub_bin: PathBuf,
    /// PostgreSQL server (a fresh database is created on it and dropped afterwards).
    #[arg(
        long,
        env = "RENKEI_TEST_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// RabbitMQ (queues and exchanges with a fresh prefix are deleted afterwards).
    #[arg(
        long,
        env = "RENKEI_TEST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Extra `KEY=VALUE` environment for the hub, e.g. RENKEI__BUS__PREFETCH=256.
    #[arg(long = "hub-env", value_parser = parse_env)]
    pub hub_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

impl Args {
    /// Events this run sends.
    pub fn total(&self) -> usize {
        match self.rate {
            Some(rate) => usize::try_from(u64::from(rate) * self.seconds).unwrap_or(usize::MAX),
            None => self.messages,
        }
    }

    /// How long to wait for the last deliveries once no new one arrives.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !(args.embedded && args.history > 0),
        "--history writes PostgreSQL history; it cannot be combined with --embedded"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.large_messages > 0 {
        let result = runtime.block_on(run_large(&args))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&result.to_json())?);
        } else {
            print!("{}", result.table());
        }
        return Ok(());
    }
    let report = runtime.block_on(run(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

async fn run_large(args: &Args) -> anyhow::Result<large::LargeResult> {
    let sent = std::sync::Arc::new(load::SendTimes::new(
        args.large_messages * args.large_rounds.max(1),
    ));
    let receivers = [
        receiver::Receiver::start(sent.clone()).await?,
        receiver::Receiver::start(sent.clone()).await?,
    ];
    let hub = hub::Hub::start(args, &receivers).await?;
    let outcome = async {
        eprintln!(
            "bench: large messages ({} senders at once, {} rounds, {} bytes)",
            args.large_messages, args.large_rounds, args.large_bytes
        );
        let rss_before = hub.peak_rss_bytes()?;
        let mut result = large::run(args, hub.mllp_addr()).await?;
        result.rss_before_bytes = rss_before;
        result.peak_rss_bytes = hub.peak_rss_bytes()?;
        anyhow::Ok(result)
    }
    .await;
    hub.stop().await;
    outcome
}

async fn run(args: &Args) -> anyhow::Result<report::Report> {
    let sample = load::sample_event_bytes(args.patients)?;
    let broker = if args.skip_broker || args.embedded {
        None
    } else {
        eprintln!(
            "bench: raw broker baseline ({} senders, {} messages of {} bytes)",
            args.senders,
            args.messages,
            sample.len()
        );
        Some(broker::baseline(&args.amqp_url, args.senders, args.messages, &sample).await?)
    };
    let sent = std::sync::Arc::new(load::SendTimes::new(args.total()));
    let receivers = [
        receiver::Receiver::start(sent.clone()).await?,
        receiver::Receiver::start(sent.clone()).await?,
    ];
    let mut hub = hub::Hub::start(args, &receivers).await?;
    let outcome = async {
        eprintln!(
            "bench: hub end to end ({} senders, {})",
            args.senders,
            match args.rate {
                Some(rate) => format!("{rate} events/s for {} s", args.seconds),
                None => format!("{} events as fast as accepted", args.messages),
            }
        );
        let reads_before = hub.table_reads().await?;
        let cpu_before = hub.cpu_seconds()?;
        let load = load::run(args, hub.mllp_addr(), &sent, &receivers).await?;
        let cpu = hub.cpu_seconds()? - cpu_before;
        let peak_rss = hub.peak_rss_bytes()?;
        // The hub's database sessions report what they read when they end.
        hub.kill().await;
        let reads = hub
            .table_reads_after(&reads_before, load.deliveries)
            .await?;
        anyhow::Ok(report::Report::new(
            args,
            sample.len(),
            broker,
            load,
            cpu,
            peak_rss,
            reads,
        ))
    }
    .await;
    hub.stop().await;
    outcome
}
