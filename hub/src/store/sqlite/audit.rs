//! The audit chain. With one writer there is no contention on the chain head, so
//! entries are chained inside the transaction that records their decision: they
//! commit (or not) with it, and nothing waits to be sealed.

use chrono::{SubsecRound, Utc};
use sqlx::{Row, SqliteConnection};

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
    for entry in entries {
        seq += 1;
        let hash = chain_hash(&prev, seq, at, &entry);
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, outcome, patient_id, event_id, participant_id, detail, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(at)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.outcome)
        .bind(&entry.patient_id)
        .bind(entry.event_id)
        .bind(&entry.participant_id)
        .bind(entry.detail.to_string())
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
        prev = hash;
    }
    sqlx::query("UPDATE audit_head SET seq = ?, hash = ?")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
