//! Delivery: loading jobs, recording their outcome, replays.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::super::{DeliveryFinish, DeliveryJob, DeliveryStore, StoreError, rows, rules};
use super::audit::append_audit;
use super::{SqliteStore, consents_of_many, push_list, string_list};

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn load_deliveries(&self, ids: &[Uuid]) -> Result<Vec<Option<DeliveryJob>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.read.acquire().await?;
        let mut query = QueryBuilder::new(
            "SELECT d.id, d.event_id, e.body, d.sequence, d.status, d.attempts, d.next_attempt_at,
                    d.participant_id, p.facility_code, e.patient_id, en.url, en.secrets, en.enabled
             FROM deliveries d
             JOIN events e ON e.id = d.event_id
             JOIN participants p ON p.id = d.participant_id
             JOIN endpoints en ON en.participant_id = d.participant_id AND en.name = d.endpoint_name
             WHERE d.id IN ",
        );
        push_list(&mut query, ids.iter().copied());
        let rows = query.build().fetch_all(&mut *conn).await?;
        let patients = rows::patients_of(&rows)?;
        // Every consent of every patient concerned, in one read.
        let consents = consents_of_many(&mut conn, &patients).await?;
        let mut jobs: HashMap<Uuid, DeliveryJob> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = rows::delivery_job(row, string_list(row, "secrets")?, &consents)?;
            jobs.insert(job.id, job);
        }
        // One answer per id asked, in order (an id asked twice gets the job twice).
        Ok(ids.iter().map(|id| jobs.get(id).cloned()).collect())
    }

    async fn finish_deliveries(&self, batch: &[DeliveryFinish]) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut tx = self.begin().await?;
        // Where each delivery stands now (the write lock is held: nothing moves it
        // meanwhile), then the rule decides which requests move theirs.
        let mut current =
            QueryBuilder::new("SELECT id, status, attempts FROM deliveries WHERE id IN ");
        push_list(&mut current, batch.iter().map(|f| f.id));
        let mut standing: HashMap<Uuid, (String, i32)> = HashMap::with_capacity(batch.len());
        for row in current.build().fetch_all(&mut *tx).await? {
            standing.insert(
                row.try_get("id")?,
                (row.try_get("status")?, row.try_get("attempts")?),
            );
        }
        let mut moved = HashSet::with_capacity(batch.len());
        let moving: Vec<&DeliveryFinish> = batch
            .iter()
            .filter(|f| {
                standing
                    .get(&f.id)
                    .is_some_and(|(status, attempts)| rules::may_finish(status, *attempts, f))
                    && moved.insert(f.id)
            })
            .collect();
        if !moving.is_empty() {
            let mut update =
                QueryBuilder::new("WITH v(id, status, attempts, next_attempt_at, last_error) AS (");
            update.push_values(&moving, |mut row, f| {
                let (status, next_at, error) = rules::next_state_columns(&f.next);
                row.push_bind(f.id)
                    .push_bind(status)
                    .push_bind(f.attempt.as_ref().map(|a| a.attempt))
                    .push_bind(next_at)
                    .push_bind(error.map(str::to_owned));
            });
            update.push(
                ") UPDATE deliveries SET status = v.status, attempts = COALESCE(v.attempts, deliveries.attempts),
                        next_attempt_at = v.next_attempt_at, last_error = v.last_error, updated_at = ",
            );
            update.push_bind(now);
            update.push(" FROM v WHERE deliveries.id = v.id");
            update.build().execute(&mut *tx).await?;
        }
        let finished = rules::first_finishes(batch, &moved);
        let recorded: Vec<&DeliveryFinish> = batch
            .iter()
            .zip(&finished)
            .filter(|(_, first)| **first)
            .map(|(f, _)| f)
            .collect();
        let attempts: Vec<(Uuid, &crate::store::AttemptRecord)> = recorded
            .iter()
            .filter_map(|f| f.attempt.as_ref().map(|a| (f.id, a)))
            .collect();
        if !attempts.is_empty() {
            let mut insert = QueryBuilder::new(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, outcome) ",
            );
            insert.push_values(&attempts, |mut row, (id, a)| {
                row.push_bind(*id)
                    .push_bind(a.attempt)
                    .push_bind(a.started_at)
                    .push_bind(a.duration_ms)
                    .push_bind(a.status_code)
                    .push_bind(a.error.as_deref())
                    .push_bind(&a.outcome);
            });
            insert.build().execute(&mut *tx).await?;
        }
        append_audit(&mut tx, recorded.iter().map(|f| f.audit.clone()).collect()).await?;
        tx.commit().await?;
        Ok(finished)
    }

    async fn replay_dead(&self, ids: &[Uuid], actor: &str) -> Result<Vec<Uuid>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut replayed = Vec::with_capacity(ids.len());
        let mut audit = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = NULL, updated_at = ?
                 WHERE id = ? AND status = 'dead'
                 RETURNING event_id, participant_id",
            )
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let event: Uuid = row.try_get("event_id")?;
            let participant: String = row.try_get("participant_id")?;
            let patient: Option<String> =
                sqlx::query_scalar("SELECT patient_id FROM events WHERE id = ?")
                    .bind(event)
                    .fetch_one(&mut *tx)
                    .await?;
            audit.push(super::super::replay_audit(
                actor,
                *id,
                event,
                &participant,
                patient.as_deref(),
            ));
            replayed.push(*id);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(replayed)
    }

    async fn unreplay(&self, ids: &[Uuid], reason: &str) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        // Only those no worker has touched since the replay.
        for id in ids {
            sqlx::query(
                "UPDATE deliveries SET status = 'dead', last_error = ?, updated_at = ?
                 WHERE id = ? AND status = 'pending' AND attempts = 0",
            )
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
