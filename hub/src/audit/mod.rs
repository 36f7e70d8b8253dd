//! The tamper-evident audit log: entries, their hash chain, and verification.
//!
//! Each row's hash is SHA-256 over the previous row's hash and a canonical text of the
//! row's own fields, so altering a row breaks its hash and removing one breaks the
//! chain (and leaves a gap in `seq`). Persisting rows is the store's job; this module is
//! pure so the chain rules are tested without a database.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The hash that precedes the first row.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// What the hub records. Free text about patients never goes in `detail`: identify
/// them by hub patient id only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Who acted: `adapter:<name>` (e.g. `adapter:mllp`), `router`, `delivery`,
    /// `admin:<key id>`, `cli`, `demo` (`renkei demo`'s sample region).
    pub actor: String,
    /// What was done, with the outcomes each action records:
    /// - `ingest`: `accepted`, or `rejected` for an input that could not be normalised
    ///   (kept in `rejected_inputs`);
    /// - `route`: per candidate recipient `delivered`, `no_care_relationship` or
    ///   `denied_by_consent`; per event `patient_unknown` or `no_subscribers`;
    /// - `deliver`: per attempt `delivered`, `retry` or `dead`; or `cancelled_by_consent`;
    /// - `registry.apply`: `applied`;
    /// - `delivery.replay`: `requeued`;
    /// - `api_key.create`: `created`;
    /// - `audit.anchor`: `anchored` (another database's verified chain head, recorded
    ///   by `renkei audit anchor` when a region moves);
    /// - `read`: `registry` or `event` (what was read).
    pub action: String,
    /// How it ended; see `action` for the values of each action.
    pub outcome: String,
    /// The hub patient id, when the action concerns a known patient.
    pub patient_id: Option<String>,
    /// The canonical event concerned.
    pub event_id: Option<Uuid>,
    /// The participant concerned.
    pub participant_id: Option<String>,
    /// Structured particulars (reasons, counts, changed resources).
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// An entry with an empty detail object.
    pub fn new(actor: &str, action: &str, outcome: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            patient_id: None,
            event_id: None,
            participant_id: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    /// Sets the patient.
    pub fn patient(mut self, patient_id: Option<&str>) -> Self {
        self.patient_id = patient_id.map(str::to_owned);
        self
    }

    /// Sets the event.
    pub fn event(mut self, event_id: Uuid) -> Self {
        self.event_id = Some(event_id);
        self
    }

    /// Sets the participant.
    pub fn participant(mut self, participant_id: &str) -> Self {
        self.participant_id = Some(participant_id.to_owned());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When (UTC, microsecond precision as PostgreSQL stores it).
    pub at: DateTime<Utc>,
    /// The entry.
    pub entry: AuditEntry,
    /// Hash of the previous row (or [`GENESIS_HASH`]).
    pub prev_hash: Vec<u8>,
    /// This row's hash.
    pub hash: Vec<u8>,
}

/// The hash of a row with these fields following `prev_hash`.
pub fn chain_hash(prev_hash: &[u8], seq: i64, at: DateTime<Utc>, entry: &AuditEntry) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    // Canonical text: fixed field order; `detail` as compact JSON with sorted keys
    // (serde_json's map is a BTreeMap here), so the same row always hashes the same.
    let text = serde_json::json!([
        seq,
        at.to_rfc3339_opts(SecondsFormat::Micros, true),
        entry.actor,
        entry.action,
        entry.outcome,
        entry.patient_id,
        entry.event_id,
        entry.participant_id,
        entry.detail,
    ]);
    hasher.update(text.to_string().as_bytes());
    hasher.finalize().to_vec()
}

/// Where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// A row's content no longer matches its hash: it was altered.
    #[error("audit row {seq} was altered: its content does not match its hash")]
    Altered {
        /// The row.
        seq: i64,
    },
    /// A row does not follow the one before it: rows were removed or re-ordered.
    #[error(
        "audit rows missing before row {seq}: expected seq {expected} with the previous row's hash"
    )]
    Missing {
        /// The row found.
        seq: i64,
        /// The row expected.
        expected: i64,
    },
    /// The chain's recorded head does not match the last row: rows were removed at the end.
    #[error("audit log ends at row {last} but its head says {head}: rows were removed at the end")]
    Truncated {
        /// The last row found.
        last: i64,
        /// The row count recorded in the head.
        head: i64,
    },
}

/// Incremental verifier: feed rows in `seq` order.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: Vec<u8>,
    /// Every break found (verification goes on after a break to report them all).
    pub breaks: Vec<ChainBreak>,
    /// Rows checked.
    pub rows: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_vec(),
            breaks: Vec::new(),
            rows: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks one row.
    pub fn push(&mut self, row: &AuditRow) {
        self.rows += 1;
        if row.seq != self.expected_seq || row.prev_hash != self.prev_hash {
            self.breaks.push(ChainBreak::Missing {
                seq: row.seq,
                expected: self.expected_seq,
            });
        }
        if chain_hash(&row.prev_hash, row.seq, row.at, &row.entry) != row.hash {
            self.breaks.push(ChainBreak::Altered { seq: row.seq });
        }
        self.expected_seq = row.seq + 1;
        self.prev_hash = row.hash.clone();
    }

    /// Checks the end of the chain against the recorded head.
    pub fn finish(mut self, head_seq: i64, head_hash: &[u8]) -> Vec<ChainBreak> {
        let last = self.expected_seq - 1;
        if last != head_seq || self.prev_hash != head_hash {
            self.breaks.push(ChainBreak::Truncated {
                last,
                head: head_seq,
            });
        }
        self.breaks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS_HASH.to_vec();
        let at = DateTime::<Utc>::from_timestamp(1_744_000_000, 123_000).unwrap_or_default();
        (1..=n)
            .map(|seq| {
                let entry = AuditEntry::new("router", "route", "delivered")
                    .patient(Some("P-1"))
                    .detail(serde_json::json!({"n": seq}));
                let hash = chain_hash(&prev, seq, at, &entry);
                AuditRow {
                    seq,
                    at,
                    entry,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                }
            })
            .collect()
    }

    fn verify(rows: &[AuditRow], head: &AuditRow) -> Vec<ChainBreak> {
        let mut v = ChainVerifier::default();
        rows.iter().for_each(|r| v.push(r));
        v.finish(head.seq, &head.hash)
    }

    #[test]
    fn intact_chain_verifies() {
        let rows = chain(5);
        assert_eq!(verify(&rows, &rows[4]), vec![]);
    }

    #[test]
    fn altered_row_is_found() {
        let mut rows = chain(5);
        rows[2].entry.outcome = "denied_by_consent".into();
        assert_eq!(
            verify(&rows, &rows[4].clone()),
            vec![ChainBreak::Altered { seq: 3 }]
        );
    }

    #[test]
    fn removed_row_is_found() {
        let mut rows = chain(5);
        rows.remove(1);
        assert_eq!(
            verify(&rows, &rows[3].clone()),
            vec![ChainBreak::Missing {
                seq: 3,
                expected: 2
            }]
        );
    }

    #[test]
    fn removed_tail_is_found() {
        let rows = chain(5);
        let head = rows[4].clone();
        assert_eq!(
            verify(&rows[..3], &head),
            vec![ChainBreak::Truncated { last: 3, head: 5 }]
        );
    }
}
