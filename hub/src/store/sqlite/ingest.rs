//! Ingest: claiming inputs, marking them published, keeping refused ones.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::super::{
    IngestClaim, IngestRecord, IngestStore, PublishMark, Rejection, SeenIngest, StoreError,
    seen_claim,
};
use super::audit::append_audit;
use super::{SqliteStore, push_list};

#[async_trait]
impl IngestStore for SqliteStore {
    async fn claim_ingests(&self, batch: &[IngestRecord]) -> Result<Vec<IngestClaim>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut insert = QueryBuilder::new(
            "INSERT INTO ingests (source_key, message_id, event_id, event_type, raw_sha256, raw, event, received_at) ",
        );
        insert.push_values(batch, |mut row, r| {
            row.push_bind(&r.source_key)
                .push_bind(&r.message_id)
                .push_bind(r.event_id)
                .push_bind(r.event_type.as_str())
                .push_bind(&r.raw_sha256)
                .push_bind(r.raw.as_ref())
                .push_bind(&r.event_json)
                .push_bind(now);
        });
        insert.push(" ON CONFLICT (source_key, message_id) DO NOTHING RETURNING event_id");
        let inserted: HashSet<Uuid> = insert
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("event_id"))
            .collect::<Result<_, _>>()?;
        let mut claims = Vec::with_capacity(batch.len());
        for record in batch {
            if inserted.contains(&record.event_id) {
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
        if marks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut update = QueryBuilder::new("UPDATE ingests SET published_at = ");
        update.push_bind(Utc::now());
        update.push(" WHERE published_at IS NULL AND event_id IN ");
        push_list(&mut update, marks.iter().map(|m| m.event_id));
        update.push(" RETURNING event_id");
        let marked: HashSet<Uuid> = update
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("event_id"))
            .collect::<Result<_, _>>()?;
        // One acceptance per claim, however many copies were confirmed.
        let mut audited = HashSet::new();
        let accepted: Vec<_> = marks
            .iter()
            .filter(|m| marked.contains(&m.event_id) && audited.insert(m.event_id))
            .map(|m| m.audit.clone())
            .collect();
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

    async fn load_source_state(
        &self,
        source: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM source_state WHERE source = ? AND key = ?")
                .bind(source)
                .bind(key)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn save_source_state(
        &self,
        source: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO source_state (source, key, value, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (source, key) DO UPDATE SET value = excluded.value,
                                                     updated_at = excluded.updated_at",
        )
        .bind(source)
        .bind(key)
        .bind(value)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
