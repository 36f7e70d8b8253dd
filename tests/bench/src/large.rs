//! `--large-messages N`: N senders each send a message of `--large-bytes` at the same
//! moment, `--large-rounds` times, resending on `AR` as an EHR does, to show how much
//! memory the hub takes for large messages in flight (its peak RSS) and that
//! `sources.mllp.max_bytes_in_flight` bounds it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use renkei_hl7v2::client::MllpClient;
use serde_json::json;

use crate::Args;
use crate::load::message;

/// What the large-message run saw.
#[derive(Debug, Default)]
pub struct LargeResult {
    /// Concurrent senders.
    pub senders: usize,
    /// Rounds (each sender sends one message per round).
    pub rounds: usize,
    /// Bytes of each message.
    pub message_bytes: usize,
    /// Messages answered `AA`.
    pub accepted: usize,
    /// `AR` answers (each followed by a resend).
    pub ar_answers: usize,
    /// Messages answered `AE`, or sends that got no answer.
    pub failed: usize,
    /// From the first send to the last `AA`.
    pub elapsed: Duration,
    /// The hub's peak RSS before the load (after start-up).
    pub rss_before_bytes: u64,
    /// The hub's peak RSS over the run.
    pub peak_rss_bytes: u64,
}

/// Message `i` with a note that makes it `bytes` long (about).
fn large_message(i: usize, patients: usize, bytes: usize) -> Vec<u8> {
    let mut body = message(i, patients);
    let note = bytes.saturating_sub(body.len() + 8);
    body.extend_from_slice(b"NTE|1||");
    body.resize(body.len() + note, b'X');
    body.push(b'\r');
    body
}

/// Sends the rounds; every sender starts each round at the same moment.
pub async fn run(args: &Args, addr: SocketAddr) -> anyhow::Result<LargeResult> {
    let (senders, rounds, bytes) = (
        args.large_messages,
        args.large_rounds.max(1),
        args.large_bytes,
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(senders));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..senders {
        let mut client = MllpClient::connect(addr, Duration::from_secs(60)).await?;
        let (barrier, patients) = (barrier.clone(), args.patients);
        tasks.spawn(async move {
            let (mut accepted, mut ar, mut failed) = (0, 0, 0);
            for round in 0..rounds {
                let body = large_message(round * senders + s, patients, bytes);
                barrier.wait().await;
                loop {
                    match client.send(&body).await {
                        Ok(ack) if ack.code == "AA" => {
                            accepted += 1;
                            break;
                        }
                        Ok(ack) if ack.code == "AR" => {
                            ar += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok(ack) => {
                            eprintln!("bench: a large message was answered {}", ack.code);
                            failed += 1;
                            break;
                        }
                        Err(e) => {
                            eprintln!("bench: send failed: {e}");
                            failed += 1;
                            client = MllpClient::connect(addr, Duration::from_secs(60)).await?;
                            break;
                        }
                    }
                }
            }
            anyhow::Ok((accepted, ar, failed))
        });
    }
    let mut result = LargeResult {
        senders,
        rounds,
        message_bytes: large_message(0, args.patients, bytes).len(),
        ..LargeResult::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let (accepted, ar, failed) = joined??;
        result.accepted += accepted;
        result.ar_answers += ar;
        result.failed += failed;
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

impl LargeResult {
    /// The JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "mode": "large messages",
            "senders": self.senders,
            "rounds": self.rounds,
            "message_bytes": self.message_bytes,
            "accepted": self.accepted,
            "ar_answers": self.ar_answers,
            "failed": self.failed,
            "seconds": self.elapsed.as_secs_f64(),
            "hub_rss_before_bytes": self.rss_before_bytes,
            "hub_peak_rss_bytes": self.peak_rss_bytes,
        })
    }

    /// The table.
    pub fn table(&self) -> String {
        let mib = |b: u64| b as f64 / 1_048_576.0;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mode                      large messages ({} senders at once × {} rounds, {} bytes each)",
            self.senders, self.rounds, self.message_bytes
        );
        let _ = writeln!(
            out,
            "hub accepted (AA)         {} in {:.2} s  (AR answers resent {}, failed {})",
            self.accepted,
            self.elapsed.as_secs_f64(),
            self.ar_answers,
            self.failed
        );
        let _ = writeln!(
            out,
            "hub peak RSS              {:>9.1} MiB  (after start-up {:.1} MiB)",
            mib(self.peak_rss_bytes),
            mib(self.rss_before_bytes)
        );
        out
    }
}
