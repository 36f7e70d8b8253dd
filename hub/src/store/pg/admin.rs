//! The registry, API keys and the operators' reads.

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::super::{
    AdminStore, DeliveryFilter, DeliveryStatus, DeliverySummary, RejectedFilter, RejectedInput,
    RejectedSummary, StoreError, rows,
};
use super::audit::append_audit;
use super::{PgStore, consent_from_row};
use crate::audit::{AuditEntry, AuditRow};
use crate::registry::document::{Change, ChangeAction, RegistryDocument};
use crate::registry::{PatientIdentifier, PatientRecord};

/// Maps an upsert's `RETURNING (xmax = 0)` to a change.
fn change(kind: &'static str, key: String, inserted: Option<bool>) -> Change {
    let action = match inserted {
        Some(true) => ChangeAction::Created,
        Some(false) => ChangeAction::Updated,
        None => ChangeAction::Unchanged,
    };
    Change { kind, key, action }
}

fn located(kind: &str, key: &str, e: sqlx::Error) -> StoreError {
    match super::super::store_error(e) {
        StoreError::Conflict(msg) => StoreError::Conflict(format!(
            "{kind} {key}: {msg}: declare what it refers to first (in this document or an earlier one)"
        )),
        other => other,
    }
}

#[async_trait]
impl AdminStore for PgStore {
    async fn apply_registry(
        &self,
        doc: &RegistryDocument,
        actor: &str,
    ) -> Result<Vec<Change>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut changes = Vec::new();
        for f in &doc.facilities {
            let inserted: Option<bool> = sqlx::query_scalar(
                "INSERT INTO facilities (code, name, kind) VALUES ($1, $2, $3)
                 ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind, updated_at = now()
                 WHERE (facilities.name, facilities.kind) IS DISTINCT FROM (excluded.name, excluded.kind)
                 RETURNING (xmax = 0)",
            )
            .bind(&f.code)
            .bind(&f.name)
            .bind(&f.kind)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| located("facility", &f.code, e))?;
            changes.push(change("facility", f.code.clone(), inserted));
        }
        for p in &doc.participants {
            let inserted: Option<bool> = sqlx::query_scalar(
                "INSERT INTO participants (id, facility_code, name) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET facility_code = excluded.facility_code, name = excluded.name, updated_at = now()
                 WHERE (participants.facility_code, participants.name) IS DISTINCT FROM (excluded.facility_code, excluded.name)
                 RETURNING (xmax = 0)",
            )
            .bind(&p.id)
            .bind(&p.facility)
            .bind(&p.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| located("participant", &p.id, e))?;
            changes.push(change("participant", p.id.clone(), inserted));
        }
        for e in &doc.endpoints {
            let key = format!("{}/{}", e.participant, e.name);
            let inserted: Option<bool> = sqlx::query_scalar(
                "INSERT INTO endpoints (participant_id, name, url, secrets, enabled) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (participant_id, name) DO UPDATE
                   SET url = excluded.url, secrets = excluded.secrets, enabled = excluded.enabled, updated_at = now()
                 WHERE (endpoints.url, endpoints.secrets, endpoints.enabled)
                       IS DISTINCT FROM (excluded.url, excluded.secrets, excluded.enabled)
                 RETURNING (xmax = 0)",
            )
            .bind(&e.participant)
            .bind(&e.name)
            .bind(&e.url)
            .bind(&e.secrets)
            .bind(e.enabled)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|err| located("endpoint", &key, err))?;
            changes.push(change("endpoint", key, inserted));
        }
        for s in &doc.subscriptions {
            let key = format!("{}/{}", s.participant, s.name);
            let inserted: Option<bool> = sqlx::query_scalar(
                "INSERT INTO subscriptions (participant_id, name, endpoint_name, event_types, source_facilities)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (participant_id, name) DO UPDATE
                   SET endpoint_name = excluded.endpoint_name, event_types = excluded.event_types,
                       source_facilities = excluded.source_facilities, updated_at = now()
                 WHERE (subscriptions.endpoint_name, subscriptions.event_types, subscriptions.source_facilities)
                       IS DISTINCT FROM (excluded.endpoint_name, excluded.event_types, excluded.source_facilities)
                 RETURNING (xmax = 0)",
            )
            .bind(&s.participant)
            .bind(&s.name)
            .bind(&s.endpoint)
            .bind(&s.event_types)
            .bind(&s.source_facilities)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| located("subscription", &key, e))?;
            changes.push(change("subscription", key, inserted));
        }
        for p in &doc.patients {
            let created: Option<bool> = sqlx::query_scalar(
                "INSERT INTO patients (id) VALUES ($1) ON CONFLICT (id) DO NOTHING RETURNING true",
            )
            .bind(&p.id)
            .fetch_optional(&mut *tx)
            .await?;
            let mut systems = Vec::with_capacity(p.identifiers.len());
            let mut values = Vec::with_capacity(p.identifiers.len());
            for id in &p.identifiers {
                let system = id.resolved_system().ok_or_else(|| {
                    StoreError::Conflict(format!("patient {}: an identifier has no system", p.id))
                })?;
                systems.push(system);
                values.push(id.value.clone());
            }
            let removed = sqlx::query(
                "DELETE FROM patient_identifiers pi WHERE pi.patient_id = $1
                 AND (pi.system, pi.value) NOT IN (SELECT * FROM UNNEST($2::text[], $3::text[]))",
            )
            .bind(&p.id)
            .bind(&systems)
            .bind(&values)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // An identifier that already belongs to another patient is a conflict the
            // region must resolve, never a silent re-assignment.
            let added = sqlx::query(
                "INSERT INTO patient_identifiers (system, value, patient_id)
                 SELECT s, v, $1 FROM UNNEST($2::text[], $3::text[]) AS t(s, v)
                 ON CONFLICT (system, value) DO NOTHING
                 RETURNING patient_id",
            )
            .bind(&p.id)
            .bind(&systems)
            .bind(&values)
            .fetch_all(&mut *tx)
            .await?
            .len();
            let owned: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM patient_identifiers pi
                 JOIN UNNEST($2::text[], $3::text[]) AS t(s, v) ON pi.system = t.s AND pi.value = t.v
                 WHERE pi.patient_id = $1",
            )
            .bind(&p.id)
            .bind(&systems)
            .bind(&values)
            .fetch_one(&mut *tx)
            .await?;
            if owned != p.identifiers.len() as i64 {
                return Err(StoreError::Conflict(format!(
                    "patient {}: one of its identifiers already belongs to another patient; nothing was applied",
                    p.id
                )));
            }
            let inserted = match (created, removed + added as u64) {
                (Some(_), _) => Some(true),
                (None, 0) => None,
                (None, _) => Some(false),
            };
            changes.push(change("patient", p.id.clone(), inserted));
        }
        for r in &doc.care_relationships {
            let key = format!("{}/{}", r.patient, r.participant);
            let inserted: Option<bool> = sqlx::query_scalar(
                "INSERT INTO care_relationships (patient_id, participant_id, role, valid_from, valid_until)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (patient_id, participant_id) DO UPDATE
                   SET role = excluded.role, valid_from = excluded.valid_from, valid_until = excluded.valid_until, updated_at = now()
                 WHERE (care_relationships.role, care_relationships.valid_from, care_relationships.valid_until)
                       IS DISTINCT FROM (excluded.role, excluded.valid_from, excluded.valid_until)
                 RETURNING (xmax = 0)",
            )
            .bind(&r.patient)
            .bind(&r.participant)
            .bind(&r.role)
            .bind(r.valid_from)
            .bind(r.valid_until)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| located("care_relationship", &key, e))?;
            changes.push(change("care_relationship", key, inserted));
        }
        for c in &doc.consents {
            let inserted: Option<bool> = sqlx::query_scalar(
                "INSERT INTO consents (id, patient_id, scope, facilities, basis, valid_from, valid_until, withdrawn_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE
                   SET patient_id = excluded.patient_id, scope = excluded.scope, facilities = excluded.facilities,
                       basis = excluded.basis, valid_from = excluded.valid_from, valid_until = excluded.valid_until,
                       withdrawn_at = excluded.withdrawn_at, updated_at = now()
                 WHERE (consents.patient_id, consents.scope, consents.facilities, consents.basis,
                        consents.valid_from, consents.valid_until, consents.withdrawn_at)
                       IS DISTINCT FROM (excluded.patient_id, excluded.scope, excluded.facilities, excluded.basis,
                        excluded.valid_from, excluded.valid_until, excluded.withdrawn_at)
                 RETURNING (xmax = 0)",
            )
            .bind(&c.id)
            .bind(&c.patient)
            .bind(c.scope.as_str())
            .bind(&c.facilities)
            .bind(c.basis.as_str())
            .bind(c.valid_from)
            .bind(c.valid_until)
            .bind(c.withdrawn_at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| located("consent", &c.id, e))?;
            changes.push(change("consent", c.id.clone(), inserted));
        }
        if let Some(audit) = super::super::registry_audit(actor, &changes) {
            append_audit(&mut tx, vec![audit]).await?;
        }
        tx.commit().await?;
        self.seal_soon().await;
        Ok(changes)
    }

    async fn export_registry(&self) -> Result<RegistryDocument, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut doc = RegistryDocument::default();
        for row in sqlx::query("SELECT code, name, kind FROM facilities ORDER BY code")
            .fetch_all(&mut *conn)
            .await?
        {
            doc.facilities.push(rows::facility(&row)?);
        }
        for row in sqlx::query("SELECT id, facility_code, name FROM participants ORDER BY id")
            .fetch_all(&mut *conn)
            .await?
        {
            doc.participants.push(rows::participant(&row)?);
        }
        for row in sqlx::query(
            "SELECT participant_id, name, url, cardinality(secrets) AS n, enabled FROM endpoints ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            let n: i32 = row.try_get("n")?;
            doc.endpoints
                .push(rows::masked_endpoint(&row, usize::try_from(n).unwrap_or(0))?);
        }
        for row in sqlx::query(
            "SELECT participant_id, name, endpoint_name, event_types, source_facilities FROM subscriptions ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            doc.subscriptions.push(rows::subscription(
                &row,
                row.try_get("event_types")?,
                row.try_get("source_facilities")?,
            )?);
        }
        for row in sqlx::query(
            "SELECT p.id, array_remove(array_agg(pi.system ORDER BY pi.system, pi.value), NULL) AS systems,
                    array_remove(array_agg(pi.value ORDER BY pi.system, pi.value), NULL) AS ids
             FROM patients p LEFT JOIN patient_identifiers pi ON pi.patient_id = p.id
             GROUP BY p.id ORDER BY p.id",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            let systems: Vec<String> = row.try_get("systems")?;
            let ids: Vec<String> = row.try_get("ids")?;
            doc.patients.push(PatientRecord {
                id: row.try_get("id")?,
                identifiers: systems
                    .into_iter()
                    .zip(ids)
                    .map(|(system, value)| PatientIdentifier {
                        system: Some(system),
                        facility: None,
                        value,
                    })
                    .collect(),
            });
        }
        for row in sqlx::query(
            "SELECT patient_id, participant_id, role, valid_from, valid_until FROM care_relationships ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            doc.care_relationships.push(rows::care_relationship(&row)?);
        }
        for row in sqlx::query(
            "SELECT id, patient_id, scope, facilities, basis, valid_from, valid_until, withdrawn_at FROM consents ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            doc.consents.push(consent_from_row(&row)?);
        }
        Ok(doc)
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
        let found = sqlx::query(
            "SELECT d.id, d.event_id, e.event_type, d.participant_id, d.endpoint_name, d.sequence, d.status,
                    d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.updated_at
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE ($1::uuid IS NULL OR d.event_id = $1)
               AND ($2::text IS NULL OR d.participant_id = $2)
               AND ($3::text IS NULL OR d.status = $3)
             ORDER BY d.created_at DESC, d.id DESC
             LIMIT $4",
        )
        .bind(filter.event_id)
        .bind(filter.participant_id.as_deref())
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::delivery_summary).collect()
    }

    async fn list_rejected(
        &self,
        filter: &RejectedFilter,
    ) -> Result<Vec<RejectedSummary>, StoreError> {
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
        let found = sqlx::query(
            "SELECT id, adapter, peer, received_at, location, reason, raw_sha256, CAST(octet_length(raw) AS BIGINT) AS raw_bytes, replayed_at, replayed_event
             FROM rejected_inputs
             WHERE ($1::text IS NULL OR adapter = $1)
               AND ($2::timestamptz IS NULL OR received_at >= $2)
               AND ($3::boolean IS NULL OR (replayed_at IS NOT NULL) = $3)
             ORDER BY received_at DESC, id DESC
             LIMIT $4",
        )
        .bind(filter.source.as_deref())
        .bind(filter.since)
        .bind(filter.replayed)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::rejected_summary).collect()
    }

    async fn rejected_input(&self, id: Uuid) -> Result<Option<RejectedInput>, StoreError> {
        let found = sqlx::query("SELECT id, adapter, peer, received_at, location, reason, raw_sha256, CAST(octet_length(raw) AS BIGINT) AS raw_bytes, replayed_at, replayed_event, raw FROM rejected_inputs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        found
            .map(|row| {
                Ok(RejectedInput {
                    summary: rows::rejected_summary(&row)?,
                    raw: row.try_get("raw")?,
                })
            })
            .transpose()
    }

    async fn mark_rejected_replayed(
        &self,
        id: Uuid,
        event: Uuid,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query(
            "UPDATE rejected_inputs SET replayed_at = now(), replayed_event = $2
             WHERE id = $1 AND replayed_at IS NULL",
        )
        .bind(id)
        .bind(event)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if marked {
            append_audit(
                &mut tx,
                vec![super::super::rejected_replay_audit(actor, id, event)],
            )
            .await?;
        }
        tx.commit().await?;
        self.seal_soon().await;
        Ok(marked)
    }

    async fn create_api_key(&self, name: &str, key_sha256: &[u8]) -> Result<String, StoreError> {
        let id = super::super::new_api_key_id();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO api_keys (id, name, key_sha256) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(key_sha256)
            .execute(&mut *tx)
            .await?;
        append_audit(&mut tx, vec![super::super::api_key_audit(&id, name)]).await?;
        tx.commit().await?;
        self.seal_soon().await;
        Ok(id)
    }

    async fn create_source_key(
        &self,
        name: &str,
        facility: &str,
        key_sha256: &[u8],
    ) -> Result<String, StoreError> {
        let id = super::super::new_api_key_id();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_sha256, facility) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(name)
        .bind(key_sha256)
        .bind(facility)
        .execute(&mut *tx)
        .await?;
        append_audit(
            &mut tx,
            vec![super::super::source_key_audit(&id, name, facility)],
        )
        .await?;
        tx.commit().await?;
        self.seal_soon().await;
        Ok(id)
    }

    async fn find_source_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT facility FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL AND facility IS NOT NULL")
            .bind(key_sha256)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn find_api_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL AND facility IS NULL",
        )
        .bind(key_sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        self.seal_soon().await;
        Ok(())
    }

    async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let found = sqlx::query(
            "SELECT seq, at, actor, action, outcome, patient_id, event_id, participant_id, detail::text AS detail,
                    prev_hash, hash
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::audit_row).collect()
    }

    async fn seal_audit(&self, max: i64) -> Result<usize, StoreError> {
        self.seal_audit_batch(max).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }

    async fn event(
        &self,
        id: Uuid,
    ) -> Result<Option<(Option<String>, serde_json::Value)>, StoreError> {
        let row = sqlx::query("SELECT patient_id, body::text AS body FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => rows::event(&row).map(Some),
        }
    }
}
