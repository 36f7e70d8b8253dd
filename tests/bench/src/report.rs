//! The figures, as a table for people and as JSON for machines.

use std::fmt::Write as _;

use serde_json::json;

use crate::Args;
use crate::broker::Baseline;
use crate::hub::TableReads;
use crate::load::LoadResult;

/// Percentiles of a latency sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        let at = |q: f64| -> f64 {
            if ns.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len());
            ns.get(rank - 1).copied().unwrap_or_default() as f64 / 1e6
        };
        Self {
            count: ns.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    fn to_json(self) -> serde_json::Value {
        json!({"count": self.count, "p50_ms": self.p50, "p95_ms": self.p95, "p99_ms": self.p99, "max_ms": self.max})
    }
}

/// One run's figures.
pub struct Report {
    mode: String,
    fixed_rate: bool,
    senders: usize,
    event_bytes: usize,
    broker: Option<Baseline>,
    load: LoadResult,
    ack: Percentiles,
    end_to_end: Percentiles,
    hub_cpu_seconds: f64,
    hub_peak_rss_bytes: u64,
    history: usize,
    /// `None` on the embedded default (SQLite keeps no such counters).
    database_reads: Option<TableReads>,
    backend: &'static str,
}

impl Report {
    /// Puts a run together.
    pub fn new(
        args: &Args,
        event_bytes: usize,
        broker: Option<Baseline>,
        mut load: LoadResult,
        hub_cpu_seconds: f64,
        hub_peak_rss_bytes: u64,
        database_reads: TableReads,
    ) -> Self {
        let ack = Percentiles::of(std::mem::take(&mut load.ack_ns));
        let end_to_end = Percentiles::of(std::mem::take(&mut load.end_to_end_ns));
        Self {
            mode: match args.rate {
                Some(rate) => format!("fixed rate {rate} events/s for {} s", args.seconds),
                None => format!("throughput, {} events", args.messages),
            },
            fixed_rate: args.rate.is_some(),
            senders: args.senders,
            event_bytes,
            broker,
            load,
            ack,
            end_to_end,
            hub_cpu_seconds,
            hub_peak_rss_bytes,
            history: args.history,
            database_reads: (!args.embedded).then_some(database_reads),
            backend: if args.embedded {
                "embedded (SQLite file + in-process bus)"
            } else {
                "PostgreSQL + RabbitMQ"
            },
        }
    }

    /// PostgreSQL rows read per accepted event: (by sequential scans, through indexes).
    fn rows_read_per_event(&self, reads: &TableReads) -> (f64, f64) {
        let events = self.load.accepted.max(1) as f64;
        (
            reads.sequential_rows as f64 / events,
            reads.index_rows as f64 / events,
        )
    }

    fn events_per_second(&self) -> f64 {
        self.load.accepted as f64 / self.load.send_elapsed.as_secs_f64()
    }

    fn deliveries_per_second(&self) -> f64 {
        self.load.deliveries as f64 / self.load.delivery_elapsed.as_secs_f64()
    }

    /// Only in throughput mode: at a fixed rate the hub's events/s is the rate.
    fn ratio(&self) -> Option<f64> {
        if self.fixed_rate {
            return None;
        }
        self.broker
            .as_ref()
            .map(|b| self.events_per_second() / b.rate())
    }

    /// The JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "mode": self.mode,
            "senders": self.senders,
            "event_bytes": self.event_bytes,
            "raw_broker": self.broker.as_ref().map(|b| json!({
                "messages": b.messages,
                "seconds": b.elapsed.as_secs_f64(),
                "messages_per_second": b.rate(),
            })),
            "hub": {
                "accepted": self.load.accepted,
                "refused_ae": self.load.refused,
                "rejected_ar": self.load.rejected,
                "send_errors": self.load.errors,
                "events_per_second": self.events_per_second(),
                "deliveries": self.load.deliveries,
                "deliveries_missing": self.load.missing,
                "deliveries_duplicated": self.load.duplicates,
                "signatures_refused": self.load.bad_signatures,
                "deliveries_per_second": self.deliveries_per_second(),
                "ack_latency": self.ack.to_json(),
                "source_to_receiver_latency": self.end_to_end.to_json(),
                "cpu_seconds": self.hub_cpu_seconds,
                "peak_rss_bytes": self.hub_peak_rss_bytes,
                "cpu_ms_per_event": self.hub_cpu_seconds * 1e3 / self.load.accepted.max(1) as f64,
            },
            "backend": self.backend,
            "postgresql": self.database_reads.as_ref().map(|reads| json!({
                "history_events": self.history,
                "rows_read_sequentially_per_event": self.rows_read_per_event(reads).0,
                "rows_read_by_index_per_event": self.rows_read_per_event(reads).1,
                "sequential_scans": reads.sequential_scans,
            })),
            "hub_to_raw_broker_ratio": self.ratio(),
        })
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let l = &self.load;
        let _ = writeln!(
            out,
            "mode                      {} ({} senders, {}-byte events)",
            self.mode, self.senders, self.event_bytes
        );
        let _ = writeln!(out, "backend                   {}", self.backend);
        if let Some(b) = &self.broker {
            let _ = writeln!(
                out,
                "raw broker                {:>9.0} msg/s  ({} messages in {:.2} s)",
                b.rate(),
                b.messages,
                b.elapsed.as_secs_f64()
            );
        }
        let _ = writeln!(
            out,
            "hub accepted (AA)         {:>9.0} events/s  ({} in {:.2} s; AE {}, AR {}, errors {})",
            self.events_per_second(),
            l.accepted,
            l.send_elapsed.as_secs_f64(),
            l.refused,
            l.rejected,
            l.errors
        );
        let _ = writeln!(
            out,
            "hub delivered             {:>9.0} deliveries/s  ({} in {:.2} s; missing {}, duplicated {}, signatures refused {})",
            self.deliveries_per_second(),
            l.deliveries,
            l.delivery_elapsed.as_secs_f64(),
            l.missing,
            l.duplicates,
            l.bad_signatures
        );
        for (name, p) in [
            ("ACK latency", self.ack),
            ("source→receiver latency", self.end_to_end),
        ] {
            let _ = writeln!(
                out,
                "{name:<25} p50 {:>7.2} ms   p95 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
                p.p50, p.p95, p.p99, p.max
            );
        }
        let _ = writeln!(
            out,
            "hub CPU                   {:>9.2} s  ({:.2} cores over the run)",
            self.hub_cpu_seconds,
            self.hub_cpu_seconds / l.delivery_elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "hub CPU per event         {:>9.3} ms",
            self.hub_cpu_seconds * 1e3 / l.accepted.max(1) as f64
        );
        let _ = writeln!(
            out,
            "hub peak RSS              {:>9.1} MB",
            self.hub_peak_rss_bytes as f64 / 1_048_576.0
        );
        if let Some(reads) = &self.database_reads {
            let (sequential, index) = self.rows_read_per_event(reads);
            let _ = writeln!(
                out,
                "PostgreSQL rows read      {:>9.1} per event  ({sequential:.1} sequentially in {} scans, {index:.1} by index; history {} events)",
                sequential + index,
                reads.sequential_scans,
                self.history
            );
        }
        if let Some(ratio) = self.ratio() {
            let _ = writeln!(out, "hub events/s ÷ raw broker {ratio:>9.3}");
        }
        out
    }
}
