//! The audit chain. With one writer there is no contention on the chain head, so
//! entries are chained inside the transaction that records their decision: they
//! commit (or not) with it, and nothing waits to be sealed.

use chrono::{SubsecRound, Utc};
use sqlx::{QueryBuilder, Row, SqliteConnection};

use super::super::StoreError;
use crate::audit::{AuditEntry, chain_hash};

/// Chains `entries` onto the log inside the caller's write transaction.
pub(super) async fn append_audit(
    conn: &mut SqliteConnection,
    entries: Vec<AuditEntry>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head")
        .fetch_one(&mut *conn)
        .await?;
    let mut seq: i64 = head.try_get("seq")?;
    let mut prev: Vec<u8> = head.try_get("hash")?;
    // The same precision as PostgreSQL keeps, so a chain reads back the same anywhere.
    let at = Utc::now().trunc_subsecs(6);
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let hash = chain_hash(&prev, seq, at, &entry);
        let prev_hash = std::mem::replace(&mut prev, hash.clone());
        rows.push((seq, entry, prev_hash, hash));
    }
    // One statement for the batch: each statement is a round trip to the connection's
    // thread, which costs more than SQLite's own work.
    let mut insert = QueryBuilder::new(
        "INSERT INTO audit_log (seq, at, actor, action, outcome, patient_id, event_id, participant_id, detail, prev_hash, hash) ",
    );
    insert.push_values(&rows, |mut row, (seq, entry, prev_hash, hash)| {
        row.push_bind(*seq)
            .push_bind(at)
            .push_bind(&entry.actor)
            .push_bind(&entry.action)
            .push_bind(&entry.outcome)
            .push_bind(&entry.patient_id)
            .push_bind(entry.event_id)
            .push_bind(&entry.participant_id)
            .push_bind(entry.detail.to_string())
            .push_bind(prev_hash)
            .push_bind(hash);
    });
    insert.build().execute(&mut *conn).await?;
    sqlx::query("UPDATE audit_head SET seq = ?, hash = ?")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
