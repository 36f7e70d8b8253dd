//! Ingest: claiming inputs, marking them published, keeping refused ones.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

use super::super::{
    IngestClaim, IngestRecord, IngestStore, PublishMark, Rejection, SeenIngest, StoreError,
    seen_claim,
};
use super::SqliteStore;
use super::audit::append_audit;

#[async_trait]
impl IngestStore for SqliteStore {
    async fn claim_ingests(&self, batch: &[IngestRecord]) -> Result<Vec<IngestClaim>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut claims = Vec::with_capacity(batch.len());
        for record in batch {
            let inserted = sqlx::query(
                "INSERT INTO ingests (source_key, message_id, event_id, event_type, raw_sha256, raw, event, received_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (source_key, message_id) DO NOTHING",
            )
            .bind(&record.source_key)
            .bind(&record.message_id)
            .bind(record.event_id)
            .bind(record.event_type.as_str())
            .bind(&record.raw_sha256)
            .bind(record.raw.as_ref())
            .bind(&record.event_json)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                claims.push(IngestClaim::New);
                continue;
            }
            // Seen before (or earlier in this batch): what was stored the first time.
            let row = sqlx::query(
                "SELECT event_id, event_type, raw_sha256, published_at IS NOT NULL AS published, event
                 FROM ingests WHERE source_key = ? AND message_id = ?",
            )
            .bind(&record.source_key)
            .bind(&record.message_id)
            .fetch_one(&mut *tx)
            .await?;
            let first = SeenIngest {
                event_id: row.try_get("event_id")?,
                raw_sha256: row.try_get("raw_sha256")?,
                published: row.try_get("published")?,
                event_json: row.try_get("event")?,
                event_type: row.try_get("event_type")?,
            };
            claims.push(seen_claim(&first, record));
        }
        tx.commit().await?;
        Ok(claims)
    }

    async fn mark_published(&self, marks: &[PublishMark]) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        // One acceptance per claim, however many copies were confirmed.
        let mut accepted = Vec::new();
        let mut audited = HashSet::new();
        for mark in marks {
            let marked = sqlx::query(
                "UPDATE ingests SET published_at = ? WHERE event_id = ? AND published_at IS NULL",
            )
            .bind(now)
            .bind(mark.event_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if marked == 1 && audited.insert(mark.event_id) {
                accepted.push(mark.audit.clone());
            }
        }
        append_audit(&mut tx, accepted).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_rejection(&self, rejection: Rejection<'_>) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        let sha = renkei_sdk::Origin::sha256_hex(rejection.raw);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO rejected_inputs (id, adapter, peer, received_at, location, reason, raw_sha256, raw)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(rejection.adapter)
        .bind(rejection.peer)
        .bind(Utc::now())
        .bind(rejection.location)
        .bind(rejection.reason)
        .bind(&sha)
        .bind(rejection.raw)
        .execute(&mut *tx)
        .await?;
        let audit = super::super::rejection_audit(&rejection, id, &sha);
        append_audit(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(id)
    }
}
