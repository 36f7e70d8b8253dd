//! Ingest: claiming inputs, marking them published, keeping refused ones.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::super::{
    IngestClaim, IngestRecord, IngestStore, PublishMark, Rejection, SeenIngest, StoreError,
    seen_claim,
};
use super::audit::append_audit;
use super::{PgStore, shrink_after_large};
use crate::audit::AuditEntry;

#[async_trait]
impl IngestStore for PgStore {
    async fn claim_ingests(&self, batch: &[IngestRecord]) -> Result<Vec<IngestClaim>, StoreError> {
        let n = batch.len();
        let (mut keys, mut message_ids, mut event_ids, mut types, mut shas, mut raws, mut jsons) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in batch {
            keys.push(r.source_key.as_str());
            message_ids.push(r.message_id.as_str());
            event_ids.push(r.event_id);
            types.push(r.event_type.as_str());
            shas.push(r.raw_sha256.as_str());
            raws.push(r.raw.as_ref());
            jsons.push(r.event_json.as_str());
        }
        let mut tx = self.pool.begin().await?;
        let inserted: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO ingests (source_key, message_id, event_id, event_type, raw_sha256, raw, event)
             SELECT k, m, e, t, h, r, j::json
             FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::bytea[], $7::text[])
                  AS u(k, m, e, t, h, r, j)
             ON CONFLICT (source_key, message_id) DO NOTHING
             RETURNING event_id",
        )
        .bind(&keys)
        .bind(&message_ids)
        .bind(&event_ids)
        .bind(&types)
        .bind(&shas)
        .bind(&raws)
        .bind(&jsons)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let bound: usize = batch.iter().map(|r| r.raw.len() + r.event_json.len()).sum();
        shrink_after_large(&mut tx, bound);

        // Seen before (or earlier in this batch): what was stored the first time.
        let mut seen: HashMap<(String, String), SeenIngest> = HashMap::new();
        if inserted.len() < n {
            let (k, m): (Vec<&str>, Vec<&str>) = keys
                .iter()
                .zip(&message_ids)
                .zip(&event_ids)
                .filter(|(_, id)| !inserted.contains(id))
                .map(|((k, m), _)| (*k, *m))
                .unzip();
            let rows = sqlx::query(
                "SELECT i.source_key, i.message_id, i.event_id, i.event_type, i.raw_sha256,
                        i.published_at IS NOT NULL AS published, i.event::text AS event
                 FROM UNNEST($1::text[], $2::text[]) AS u(k, m)
                 CROSS JOIN LATERAL (
                     SELECT * FROM ingests i WHERE i.source_key = u.k AND i.message_id = u.m OFFSET 0
                 ) AS i",
            )
            .bind(&k)
            .bind(&m)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                seen.insert(
                    (row.try_get("source_key")?, row.try_get("message_id")?),
                    SeenIngest {
                        event_id: row.try_get("event_id")?,
                        raw_sha256: row.try_get("raw_sha256")?,
                        published: row.try_get("published")?,
                        event_json: row.try_get("event")?,
                        event_type: row.try_get("event_type")?,
                    },
                );
            }
        }
        tx.commit().await?;
        batch
            .iter()
            .map(|record| {
                if inserted.contains(&record.event_id) {
                    return Ok(IngestClaim::New);
                }
                let first = seen
                    .get(&(record.source_key.clone(), record.message_id.clone()))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "ingest of event {} neither stored nor found",
                            record.event_id
                        ))
                    })?;
                Ok(seen_claim(first, record))
            })
            .collect()
    }

    async fn mark_published(&self, marks: &[PublishMark]) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = marks.iter().map(|m| m.event_id).collect();
        let mut tx = self.pool.begin().await?;
        let marked: HashSet<Uuid> = sqlx::query_scalar(
            "UPDATE ingests SET published_at = now()
             WHERE event_id = ANY ($1) AND published_at IS NULL
             RETURNING event_id",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // One acceptance per claim, however many copies were confirmed.
        let mut audited = HashSet::new();
        let accepted: Vec<AuditEntry> = marks
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rejected_inputs (id, adapter, peer, location, reason, raw_sha256, raw)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(rejection.adapter)
        .bind(rejection.peer)
        .bind(rejection.location)
        .bind(rejection.reason)
        .bind(&sha)
        .bind(rejection.raw)
        .execute(&mut *tx)
        .await?;
        shrink_after_large(&mut tx, rejection.raw.len());
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
            sqlx::query_scalar("SELECT value FROM source_state WHERE source = $1 AND key = $2")
                .bind(source)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn save_source_state(
        &self,
        source: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_state (source, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (source, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(source)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
