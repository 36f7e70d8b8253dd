//! The registry, API keys and the operators' reads.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::super::{
    AdminStore, DeliveryFilter, DeliveryStatus, DeliverySummary, RejectedFilter, RejectedInput,
    RejectedSummary, StoreError, rows,
};
use super::audit::append_audit;
use super::{SqliteStore, consent_from_row, json_list, string_list};
use crate::audit::{AuditEntry, AuditRow};
use crate::registry::document::{Change, ChangeAction, RegistryDocument};
use crate::registry::{PatientIdentifier, PatientRecord};

/// What an upsert did: `existed` before it, and whether it wrote a row (an update
/// writes only when something differs).
fn change(kind: &'static str, key: String, existed: bool, wrote: bool) -> Change {
    let action = match (existed, wrote) {
        (false, _) => ChangeAction::Created,
        (true, true) => ChangeAction::Updated,
        (true, false) => ChangeAction::Unchanged,
    };
    Change { kind, key, action }
}

/// Whether the row with these key values exists (`sql` selects it by `?` per key).
async fn exists(
    conn: &mut SqliteConnection,
    sql: &'static str,
    keys: &[&str],
) -> Result<bool, StoreError> {
    let mut query = sqlx::query(sql);
    for key in keys {
        query = query.bind(*key);
    }
    Ok(query.fetch_optional(&mut *conn).await?.is_some())
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
impl AdminStore for SqliteStore {
    async fn apply_registry(
        &self,
        doc: &RegistryDocument,
        actor: &str,
    ) -> Result<Vec<Change>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut changes = Vec::new();
        for f in &doc.facilities {
            let existed = exists(
                &mut tx,
                "SELECT 1 FROM facilities WHERE code = ?",
                &[&f.code],
            )
            .await?;
            let wrote = sqlx::query(
                "INSERT INTO facilities (code, name, kind, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind, updated_at = excluded.updated_at
                 WHERE (facilities.name, facilities.kind) IS NOT (excluded.name, excluded.kind)",
            )
            .bind(&f.code)
            .bind(&f.name)
            .bind(&f.kind)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| located("facility", &f.code, e))?
            .rows_affected()
                > 0;
            changes.push(change("facility", f.code.clone(), existed, wrote));
        }
        for p in &doc.participants {
            let existed =
                exists(&mut tx, "SELECT 1 FROM participants WHERE id = ?", &[&p.id]).await?;
            let wrote = sqlx::query(
                "INSERT INTO participants (id, facility_code, name, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET facility_code = excluded.facility_code, name = excluded.name,
                     updated_at = excluded.updated_at
                 WHERE (participants.facility_code, participants.name) IS NOT (excluded.facility_code, excluded.name)",
            )
            .bind(&p.id)
            .bind(&p.facility)
            .bind(&p.name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| located("participant", &p.id, e))?
            .rows_affected()
                > 0;
            changes.push(change("participant", p.id.clone(), existed, wrote));
        }
        for e in &doc.endpoints {
            let key = format!("{}/{}", e.participant, e.name);
            let existed = exists(
                &mut tx,
                "SELECT 1 FROM endpoints WHERE participant_id = ? AND name = ?",
                &[&e.participant, &e.name],
            )
            .await?;
            let wrote = sqlx::query(
                "INSERT INTO endpoints (participant_id, name, url, secrets, enabled, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (participant_id, name) DO UPDATE
                   SET url = excluded.url, secrets = excluded.secrets, enabled = excluded.enabled,
                       updated_at = excluded.updated_at
                 WHERE (endpoints.url, endpoints.secrets, endpoints.enabled)
                       IS NOT (excluded.url, excluded.secrets, excluded.enabled)",
            )
            .bind(&e.participant)
            .bind(&e.name)
            .bind(&e.url)
            .bind(json_list(&e.secrets))
            .bind(e.enabled)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|err| located("endpoint", &key, err))?
            .rows_affected()
                > 0;
            changes.push(change("endpoint", key, existed, wrote));
        }
        for s in &doc.subscriptions {
            let key = format!("{}/{}", s.participant, s.name);
            let existed = exists(
                &mut tx,
                "SELECT 1 FROM subscriptions WHERE participant_id = ? AND name = ?",
                &[&s.participant, &s.name],
            )
            .await?;
            let wrote = sqlx::query(
                "INSERT INTO subscriptions (participant_id, name, endpoint_name, event_types, source_facilities, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (participant_id, name) DO UPDATE
                   SET endpoint_name = excluded.endpoint_name, event_types = excluded.event_types,
                       source_facilities = excluded.source_facilities, updated_at = excluded.updated_at
                 WHERE (subscriptions.endpoint_name, subscriptions.event_types, subscriptions.source_facilities)
                       IS NOT (excluded.endpoint_name, excluded.event_types, excluded.source_facilities)",
            )
            .bind(&s.participant)
            .bind(&s.name)
            .bind(&s.endpoint)
            .bind(json_list(&s.event_types))
            .bind(json_list(&s.source_facilities))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| located("subscription", &key, e))?
            .rows_affected()
                > 0;
            changes.push(change("subscription", key, existed, wrote));
        }
        for p in &doc.patients {
            let existed = exists(&mut tx, "SELECT 1 FROM patients WHERE id = ?", &[&p.id]).await?;
            if !existed {
                sqlx::query("INSERT INTO patients (id, updated_at) VALUES (?, ?)")
                    .bind(&p.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut wanted = HashSet::with_capacity(p.identifiers.len());
            for id in &p.identifiers {
                let system = id.resolved_system().ok_or_else(|| {
                    StoreError::Conflict(format!("patient {}: an identifier has no system", p.id))
                })?;
                wanted.insert((system, id.value.clone()));
            }
            let held: Vec<(String, String)> = sqlx::query_as(
                "SELECT system, value FROM patient_identifiers WHERE patient_id = ?",
            )
            .bind(&p.id)
            .fetch_all(&mut *tx)
            .await?;
            let mut changed = false;
            for (system, value) in held.iter().filter(|held| !wanted.contains(*held)) {
                sqlx::query("DELETE FROM patient_identifiers WHERE system = ? AND value = ?")
                    .bind(system)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                changed = true;
            }
            for (system, value) in &wanted {
                // An identifier that already belongs to another patient is a conflict
                // the region must resolve, never a silent re-assignment.
                let owner: Option<String> = sqlx::query_scalar(
                    "SELECT patient_id FROM patient_identifiers WHERE system = ? AND value = ?",
                )
                .bind(system)
                .bind(value)
                .fetch_optional(&mut *tx)
                .await?;
                match owner {
                    Some(owner) if owner == p.id => {}
                    Some(_) => {
                        return Err(StoreError::Conflict(format!(
                            "patient {}: one of its identifiers already belongs to another patient; nothing was applied",
                            p.id
                        )));
                    }
                    None => {
                        sqlx::query(
                            "INSERT INTO patient_identifiers (system, value, patient_id) VALUES (?, ?, ?)",
                        )
                        .bind(system)
                        .bind(value)
                        .bind(&p.id)
                        .execute(&mut *tx)
                        .await?;
                        changed = true;
                    }
                }
            }
            changes.push(change("patient", p.id.clone(), existed, changed));
        }
        for r in &doc.care_relationships {
            let key = format!("{}/{}", r.patient, r.participant);
            let existed = exists(
                &mut tx,
                "SELECT 1 FROM care_relationships WHERE patient_id = ? AND participant_id = ?",
                &[&r.patient, &r.participant],
            )
            .await?;
            let wrote = sqlx::query(
                "INSERT INTO care_relationships (patient_id, participant_id, role, valid_from, valid_until, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (patient_id, participant_id) DO UPDATE
                   SET role = excluded.role, valid_from = excluded.valid_from, valid_until = excluded.valid_until,
                       updated_at = excluded.updated_at
                 WHERE (care_relationships.role, care_relationships.valid_from, care_relationships.valid_until)
                       IS NOT (excluded.role, excluded.valid_from, excluded.valid_until)",
            )
            .bind(&r.patient)
            .bind(&r.participant)
            .bind(&r.role)
            .bind(r.valid_from)
            .bind(r.valid_until)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| located("care_relationship", &key, e))?
            .rows_affected()
                > 0;
            changes.push(change("care_relationship", key, existed, wrote));
        }
        for c in &doc.consents {
            let existed = exists(&mut tx, "SELECT 1 FROM consents WHERE id = ?", &[&c.id]).await?;
            let wrote = sqlx::query(
                "INSERT INTO consents (id, patient_id, scope, facilities, basis, valid_from, valid_until, withdrawn_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE
                   SET patient_id = excluded.patient_id, scope = excluded.scope, facilities = excluded.facilities,
                       basis = excluded.basis, valid_from = excluded.valid_from, valid_until = excluded.valid_until,
                       withdrawn_at = excluded.withdrawn_at, updated_at = excluded.updated_at
                 WHERE (consents.patient_id, consents.scope, consents.facilities, consents.basis,
                        consents.valid_from, consents.valid_until, consents.withdrawn_at)
                       IS NOT (excluded.patient_id, excluded.scope, excluded.facilities, excluded.basis,
                        excluded.valid_from, excluded.valid_until, excluded.withdrawn_at)",
            )
            .bind(&c.id)
            .bind(&c.patient)
            .bind(c.scope.as_str())
            .bind(json_list(&c.facilities))
            .bind(c.basis.as_str())
            .bind(c.valid_from)
            .bind(c.valid_until)
            .bind(c.withdrawn_at)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| located("consent", &c.id, e))?
            .rows_affected()
                > 0;
            changes.push(change("consent", c.id.clone(), existed, wrote));
        }
        if let Some(audit) = super::super::registry_audit(actor, &changes) {
            append_audit(&mut tx, vec![audit]).await?;
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn export_registry(&self) -> Result<RegistryDocument, StoreError> {
        let mut conn = self.read.acquire().await?;
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
            "SELECT participant_id, name, url, json_array_length(secrets) AS n, enabled FROM endpoints ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            let n: i64 = row.try_get("n")?;
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
                string_list(&row, "event_types")?,
                string_list(&row, "source_facilities")?,
            )?);
        }
        let patients: Vec<String> = sqlx::query_scalar("SELECT id FROM patients ORDER BY id")
            .fetch_all(&mut *conn)
            .await?;
        for id in patients {
            let identifiers: Vec<(String, String)> = sqlx::query_as(
                "SELECT system, value FROM patient_identifiers WHERE patient_id = ? ORDER BY system, value",
            )
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?;
            doc.patients.push(PatientRecord {
                id,
                identifiers: identifiers
                    .into_iter()
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
             WHERE (?1 IS NULL OR d.event_id = ?1)
               AND (?2 IS NULL OR d.participant_id = ?2)
               AND (?3 IS NULL OR d.status = ?3)
             ORDER BY d.id DESC
             LIMIT ?4",
        )
        .bind(filter.event_id)
        .bind(filter.participant_id.as_deref())
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        found.iter().map(rows::delivery_summary).collect()
    }

    async fn list_rejected(
        &self,
        filter: &RejectedFilter,
    ) -> Result<Vec<RejectedSummary>, StoreError> {
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
        let found = sqlx::query(
            "SELECT id, adapter, peer, received_at, location, reason, raw_sha256, length(raw) AS raw_bytes, replayed_at, replayed_event
             FROM rejected_inputs
             WHERE (?1 IS NULL OR adapter = ?1)
               AND (?2 IS NULL OR received_at >= ?2)
               AND (?3 IS NULL OR (replayed_at IS NOT NULL) = ?3)
             ORDER BY received_at DESC, id DESC
             LIMIT ?4",
        )
        .bind(filter.source.as_deref())
        .bind(filter.since)
        .bind(filter.replayed)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        found.iter().map(rows::rejected_summary).collect()
    }

    async fn rejected_input(&self, id: Uuid) -> Result<Option<RejectedInput>, StoreError> {
        let found = sqlx::query("SELECT id, adapter, peer, received_at, location, reason, raw_sha256, length(raw) AS raw_bytes, replayed_at, replayed_event, raw FROM rejected_inputs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
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
        let mut tx = self.begin().await?;
        let marked = sqlx::query(
            "UPDATE rejected_inputs SET replayed_at = ?, replayed_event = ?
             WHERE id = ? AND replayed_at IS NULL",
        )
        .bind(Utc::now())
        .bind(event)
        .bind(id)
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
        Ok(marked)
    }

    async fn create_api_key(&self, name: &str, key_sha256: &[u8]) -> Result<String, StoreError> {
        let id = super::super::new_api_key_id();
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO api_keys (id, name, key_sha256, created_at) VALUES (?, ?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(key_sha256)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
        append_audit(&mut tx, vec![super::super::api_key_audit(&id, name)]).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn create_source_key(
        &self,
        name: &str,
        facility: &str,
        key_sha256: &[u8],
    ) -> Result<String, StoreError> {
        let id = super::super::new_api_key_id();
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO api_keys (id, name, key_sha256, facility, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(key_sha256)
            .bind(facility)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            vec![super::super::source_key_audit(&id, name, facility)],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn find_source_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT facility FROM api_keys WHERE key_sha256 = ? AND revoked_at IS NULL AND facility IS NOT NULL")
            .bind(key_sha256)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn find_api_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE key_sha256 = ? AND revoked_at IS NULL AND facility IS NULL",
        )
        .bind(key_sha256)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let found = sqlx::query(
            "SELECT seq, at, actor, action, outcome, patient_id, event_id, participant_id, detail, prev_hash, hash
             FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        found.iter().map(rows::audit_row).collect()
    }

    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head")
            .fetch_one(&self.read)
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }

    async fn seal_audit(&self, _max: i64) -> Result<usize, StoreError> {
        // Entries are chained as they are recorded (see `audit`): nothing waits.
        Ok(0)
    }

    async fn close(&self) {
        // The last connection to close checkpoints the write-ahead log into the file.
        self.read.close().await;
        self.write.close().await;
    }

    async fn event(
        &self,
        id: Uuid,
    ) -> Result<Option<(Option<String>, serde_json::Value)>, StoreError> {
        let row = sqlx::query("SELECT patient_id, body FROM events WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => rows::event(&row).map(Some),
        }
    }
}
