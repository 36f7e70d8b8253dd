//! The audit chain: entries are appended inside the transaction of what they record
//! and chained later by one sealer at a time.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{PgConnection, Row};

use super::super::{StoreError, rows, seal_all};
use super::PgStore;
use crate::audit::{AuditEntry, chain_hash};

/// Records audit entries inside the caller's transaction, so they commit (or not)
/// with the decision they record. They wait in `audit_pending` until
/// [`PgStore::seal_audit_batch`] chains them; no lock is taken here.
pub(super) async fn append_audit(
    conn: &mut PgConnection,
    entries: Vec<AuditEntry>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    // PostgreSQL keeps microseconds: hash exactly what will be read back.
    let at = Utc::now().trunc_subsecs(6);
    let n = entries.len();
    let (mut actors, mut actions, mut outcomes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut patients, mut events, mut participants, mut details) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for entry in entries {
        actors.push(entry.actor);
        actions.push(entry.action);
        outcomes.push(entry.outcome);
        patients.push(entry.patient_id);
        events.push(entry.event_id);
        participants.push(entry.participant_id);
        details.push(entry.detail.to_string());
    }
    sqlx::query(
        "INSERT INTO audit_pending (at, actor, action, outcome, patient_id, event_id, participant_id, detail)
         SELECT $1, a, ac, o, p, e, pa, d::json
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::text[])
              AS t(a, ac, o, p, e, pa, d)",
    )
    .bind(at)
    .bind(&actors)
    .bind(&actions)
    .bind(&outcomes)
    .bind(&patients)
    .bind(&events)
    .bind(&participants)
    .bind(&details)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl PgStore {
    /// Moves up to `max` pending audit entries, oldest first, into the hash chain;
    /// returns how many. Sealers in several processes take turns on the chain head's
    /// row lock, and each reads the pending entries only once it holds it.
    pub(super) async fn seal_audit_batch(&self, max: i64) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut prev: Vec<u8> = head.try_get("hash")?;
        let pending = sqlx::query(
            "SELECT id, at, actor, action, outcome, patient_id, event_id, participant_id, detail::text AS detail
             FROM audit_pending ORDER BY id LIMIT $1",
        )
        .bind(max)
        .fetch_all(&mut *tx)
        .await?;
        if pending.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let n = pending.len();
        let mut ids = Vec::with_capacity(n);
        let (mut seqs, mut ats, mut prevs, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut actors, mut actions, mut outcomes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut patients, mut events, mut participants, mut details) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for row in &pending {
            let detail: String = row.try_get("detail")?;
            let at: DateTime<Utc> = row.try_get("at")?;
            let entry = rows::audit_entry(row)?;
            seq += 1;
            let hash = chain_hash(&prev, seq, at, &entry);
            ids.push(row.try_get::<i64, _>("id")?);
            seqs.push(seq);
            ats.push(at);
            prevs.push(std::mem::replace(&mut prev, hash.clone()));
            hashes.push(hash);
            actors.push(entry.actor);
            actions.push(entry.action);
            outcomes.push(entry.outcome);
            patients.push(entry.patient_id);
            events.push(entry.event_id);
            participants.push(entry.participant_id);
            details.push(detail);
        }
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, outcome, patient_id, event_id, participant_id, detail, prev_hash, hash)
             SELECT s, t, a, ac, o, p, e, pa, d::json, ph, h
             FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[], $9::text[], $10::bytea[], $11::bytea[])
                  AS u(s, t, a, ac, o, p, e, pa, d, ph, h)",
        )
        .bind(&seqs)
        .bind(&ats)
        .bind(&actors)
        .bind(&actions)
        .bind(&outcomes)
        .bind(&patients)
        .bind(&events)
        .bind(&participants)
        .bind(&details)
        .bind(&prevs)
        .bind(&hashes)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM audit_pending WHERE id = ANY ($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2")
            .bind(seq)
            .bind(&prev)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// After an administrative write: chain its audit entries now, so they are in the
    /// log even when no hub process runs. A failure is only logged: the next sealer
    /// (any `renkei up`, or `renkei audit verify`) chains them.
    pub(super) async fn seal_soon(&self) {
        if let Err(e) = seal_all(self).await {
            tracing::warn!(error = %e, "audit entries recorded but not yet chained");
        }
    }
}
