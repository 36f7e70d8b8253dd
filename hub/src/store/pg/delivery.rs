//! Delivery: loading jobs, recording their outcome, replays.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::super::{DeliveryFinish, DeliveryJob, DeliveryStore, StoreError, rows, rules};
use super::audit::append_audit;
use super::{PgStore, consents_of_many};

#[async_trait]
impl DeliveryStore for PgStore {
    async fn load_deliveries(&self, ids: &[Uuid]) -> Result<Vec<Option<DeliveryJob>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, e.body::text AS body, d.sequence, d.status, d.attempts,
                    d.next_attempt_at, d.participant_id, p.facility_code, e.patient_id, en.url, en.secrets, en.enabled
             FROM (SELECT DISTINCT w FROM UNNEST($1::uuid[]) AS u(w)) AS u
             CROSS JOIN LATERAL (SELECT * FROM deliveries d WHERE d.id = u.w OFFSET 0) AS d
             CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.id = d.event_id OFFSET 0) AS e
             JOIN participants p ON p.id = d.participant_id
             JOIN endpoints en ON en.participant_id = d.participant_id AND en.name = d.endpoint_name",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        let patients = rows::patients_of(&rows)?;
        // Every consent of every patient concerned, in one read.
        let consents = consents_of_many(&mut conn, &patients).await?;
        let mut jobs: HashMap<Uuid, DeliveryJob> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = rows::delivery_job(row, row.try_get("secrets")?, &consents)?;
            jobs.insert(job.id, job);
        }
        // One answer per id asked, in order (an id asked twice gets the job twice).
        Ok(ids.iter().map(|id| jobs.get(id).cloned()).collect())
    }

    async fn finish_deliveries(&self, batch: &[DeliveryFinish]) -> Result<Vec<bool>, StoreError> {
        let n = batch.len();
        let (mut ids, mut statuses, mut attempts, mut next_ats, mut errors, mut before) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for f in batch {
            let (status, next_at, error) = rules::next_state_columns(&f.next);
            ids.push(f.id);
            statuses.push(status);
            attempts.push(f.attempt.as_ref().map(|a| a.attempt));
            // An attempt counts only if no other copy of the job recorded one meanwhile.
            before.push(rules::attempts_before(f));
            next_ats.push(next_at);
            errors.push(error);
        }
        let mut tx = self.pool.begin().await?;
        // `rules::may_finish`, in SQL: only a delivery still in flight, at the attempt
        // count the job was loaded with, moves.
        let moved: HashSet<Uuid> = sqlx::query_scalar(
            "UPDATE deliveries d SET status = u.st, attempts = COALESCE(u.n, d.attempts),
                    next_attempt_at = u.na, last_error = u.le, updated_at = now()
             FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::timestamptz[], $5::text[], $6::int[])
                  AS u(id, st, n, na, le, before)
             WHERE d.id = ANY ($1) AND d.id = u.id AND d.status IN ('pending', 'retrying')
               AND (u.before IS NULL OR d.attempts = u.before)
             RETURNING d.id",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&attempts)
        .bind(&next_ats)
        .bind(&errors)
        .bind(&before)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut audit = Vec::with_capacity(moved.len());
        let (
            mut a_ids,
            mut a_numbers,
            mut a_starts,
            mut a_durations,
            mut a_codes,
            mut a_errors,
            mut a_outcomes,
        ) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let finished = rules::first_finishes(batch, &moved);
        for (f, _) in batch.iter().zip(&finished).filter(|(_, first)| **first) {
            if let Some(a) = &f.attempt {
                a_ids.push(f.id);
                a_numbers.push(a.attempt);
                a_starts.push(a.started_at);
                a_durations.push(a.duration_ms);
                a_codes.push(a.status_code);
                a_errors.push(a.error.as_deref());
                a_outcomes.push(a.outcome.as_str());
            }
            audit.push(f.audit.clone());
        }
        if !a_ids.is_empty() {
            sqlx::query(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, outcome)
                 SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[], $7::text[])",
            )
            .bind(&a_ids)
            .bind(&a_numbers)
            .bind(&a_starts)
            .bind(&a_durations)
            .bind(&a_codes)
            .bind(&a_errors)
            .bind(&a_outcomes)
            .execute(&mut *tx)
            .await?;
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(finished)
    }

    async fn replay_dead(&self, ids: &[Uuid], actor: &str) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE deliveries d SET status = 'pending', attempts = 0, next_attempt_at = NULL, updated_at = now()
             FROM events e
             WHERE d.id = ANY ($1) AND d.status = 'dead' AND e.id = d.event_id
             RETURNING d.id, d.event_id, d.participant_id, e.patient_id",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut replayed = Vec::with_capacity(rows.len());
        let mut audit = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get("id")?;
            let participant: String = row.try_get("participant_id")?;
            let patient: Option<String> = row.try_get("patient_id")?;
            audit.push(super::super::replay_audit(
                actor,
                id,
                row.try_get("event_id")?,
                &participant,
                patient.as_deref(),
            ));
            replayed.push(id);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.seal_soon().await;
        Ok(replayed)
    }

    async fn unreplay(&self, ids: &[Uuid], reason: &str) -> Result<(), StoreError> {
        // Only those no worker has touched since the replay.
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', last_error = $2, updated_at = now()
             WHERE id = ANY ($1) AND status = 'pending' AND attempts = 0",
        )
        .bind(ids)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
