//! Delivery: loading jobs, recording their outcome, replays.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

use super::super::{DeliveryFinish, DeliveryJob, DeliveryStore, StoreError, rules};
use super::audit::append_audit;
use super::{SqliteStore, consents_of_many, string_list};

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn load_deliveries(&self, ids: &[Uuid]) -> Result<Vec<Option<DeliveryJob>>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let mut jobs: HashMap<Uuid, DeliveryJob> = HashMap::with_capacity(ids.len());
        for id in ids {
            if jobs.contains_key(id) {
                continue;
            }
            let row = sqlx::query(
                "SELECT d.id, d.event_id, e.body, d.sequence, d.status, d.attempts, d.next_attempt_at,
                        d.participant_id, p.facility_code, e.patient_id, en.url, en.secrets, en.enabled
                 FROM deliveries d
                 JOIN events e ON e.id = d.event_id
                 JOIN participants p ON p.id = d.participant_id
                 JOIN endpoints en ON en.participant_id = d.participant_id AND en.name = d.endpoint_name
                 WHERE d.id = ?",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else { continue };
            let patient_id: Option<String> = row.try_get("patient_id")?;
            let consents = match &patient_id {
                Some(p) => consents_of_many(&mut conn, &[p])
                    .await?
                    .remove(p)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let job = DeliveryJob {
                id: *id,
                event_id: row.try_get("event_id")?,
                body: row.try_get::<String, _>("body")?.into_bytes(),
                sequence: row.try_get("sequence")?,
                status: row.try_get("status")?,
                attempts: row.try_get("attempts")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                participant_id: row.try_get("participant_id")?,
                facility: row.try_get("facility_code")?,
                consents,
                patient_id,
                url: row.try_get("url")?,
                secrets: string_list(&row, "secrets")?,
                endpoint_enabled: row.try_get("enabled")?,
            };
            jobs.insert(*id, job);
        }
        // One answer per id asked, in order (an id asked twice gets the job twice).
        Ok(ids.iter().map(|id| jobs.get(id).cloned()).collect())
    }

    async fn finish_deliveries(&self, batch: &[DeliveryFinish]) -> Result<Vec<bool>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut moved = HashSet::with_capacity(batch.len());
        for f in batch {
            if moved.contains(&f.id) {
                continue;
            }
            let current = sqlx::query("SELECT status, attempts FROM deliveries WHERE id = ?")
                .bind(f.id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(current) = current else { continue };
            let status: String = current.try_get("status")?;
            let attempts: i32 = current.try_get("attempts")?;
            if !rules::may_finish(&status, attempts, f) {
                continue;
            }
            let (status, next_at, error) = rules::next_state_columns(&f.next);
            sqlx::query(
                "UPDATE deliveries SET status = ?, attempts = COALESCE(?, attempts),
                        next_attempt_at = ?, last_error = ?, updated_at = ?
                 WHERE id = ?",
            )
            .bind(status)
            .bind(f.attempt.as_ref().map(|a| a.attempt))
            .bind(next_at)
            .bind(error)
            .bind(now)
            .bind(f.id)
            .execute(&mut *tx)
            .await?;
            moved.insert(f.id);
        }
        let finished = rules::first_finishes(batch, &moved);
        let mut audit = Vec::with_capacity(moved.len());
        for (f, _) in batch.iter().zip(&finished).filter(|(_, first)| **first) {
            if let Some(a) = &f.attempt {
                sqlx::query(
                    "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, outcome)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(f.id)
                .bind(a.attempt)
                .bind(a.started_at)
                .bind(a.duration_ms)
                .bind(a.status_code)
                .bind(a.error.as_deref())
                .bind(&a.outcome)
                .execute(&mut *tx)
                .await?;
            }
            audit.push(f.audit.clone());
        }
        append_audit(&mut tx, audit).await?;
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
