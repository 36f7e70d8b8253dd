//! PostgreSQL implementation of the store traits (sqlx, migrations embedded).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use renkei_sdk::Identifier;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::*;
use crate::audit::{AuditEntry, AuditRow, chain_hash};
use crate::registry::document::{Change, ChangeAction, RegistryDocument};
use crate::registry::{
    CareRelationship, Consent, ConsentBasis, ConsentScope, Endpoint, Facility, Participant,
    PatientIdentifier, PatientRecord, Subscription,
};

/// The migrations compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // foreign_key_violation, unique_violation, check_violation
                Some("23503") | Some("23505") | Some("23514") => StoreError::Conflict(format!(
                    "{} ({})",
                    db.message(),
                    db.constraint().unwrap_or("constraint")
                )),
                // data_exception (a NUL in text, a value out of range…) and
                // program_limit_exceeded (an index key too long): the data, not the
                // database, is at fault.
                Some(code) if code.starts_with("22") || code.starts_with("54") => {
                    StoreError::Rejected(format!("{} (SQLSTATE {code})", db.message()))
                }
                _ => StoreError::Unavailable(e.to_string()),
            },
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// Every consent of the given patients (duplicates allowed), in one read, by patient.
async fn consents_of_many(
    conn: &mut PgConnection,
    patients: &[impl AsRef<str> + Sync],
) -> Result<HashMap<String, Vec<Consent>>, StoreError> {
    let mut consents: HashMap<String, Vec<Consent>> = HashMap::new();
    if patients.is_empty() {
        return Ok(consents);
    }
    let patients: Vec<&str> = patients.iter().map(AsRef::as_ref).collect();
    // Each patient looked up on its own (see `PgStore::connect`): a read whose cost
    // does not depend on how many consents the region has.
    let rows = sqlx::query(
        "SELECT c.id, c.patient_id, c.scope, c.facilities, c.basis, c.valid_from, c.valid_until, c.withdrawn_at
         FROM (SELECT DISTINCT p FROM UNNEST($1::text[]) AS u(p)) AS u
         CROSS JOIN LATERAL (SELECT * FROM consents c WHERE c.patient_id = u.p OFFSET 0) AS c
         ORDER BY c.patient_id, c.id",
    )
    .bind(&patients)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let consent = consent_from_row(row)?;
        consents
            .entry(consent.patient.clone())
            .or_default()
            .push(consent);
    }
    Ok(consents)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl PgStore {
    /// Connects (lazily retrying inside the pool) and applies pending migrations.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("bad database URL: {e}")))?;
        // Every statement on the hub's hot paths is written to be served by an index,
        // one key at a time (lateral lookups, `= ANY` on a unique key). With sequential
        // scans priced out, PostgreSQL keeps it so whatever its statistics say — none on
        // a server without autovacuum, or a table analysed while nearly empty — and
        // whatever plan it cached while the tables were small: an event costs the same
        // after a year of history as on the first day. A statement no index can serve
        // still scans; none on the hot paths needs to.
        let options = options.options([("enable_seqscan", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
    }

    /// The pool (for health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Records audit entries inside the caller's transaction, so they commit (or not)
/// with the decision they record. They wait in `audit_pending` until
/// [`PgStore::seal_audit`] chains them; no lock is taken here.
async fn append_audit(conn: &mut PgConnection, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
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
    pub async fn seal_audit(&self, max: i64) -> Result<usize, StoreError> {
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
            let entry = AuditEntry {
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                outcome: row.try_get("outcome")?,
                patient_id: row.try_get("patient_id")?,
                event_id: row.try_get("event_id")?,
                participant_id: row.try_get("participant_id")?,
                detail: serde_json::from_str(&detail)
                    .map_err(|e| corrupt("audit_pending.detail", e))?,
            };
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
    async fn seal_soon(&self) {
        if let Err(e) = self.seal_all_audit().await {
            tracing::warn!(error = %e, "audit entries recorded but not yet chained");
        }
    }

    /// Seals until nothing is pending (entries committed meanwhile included).
    pub async fn seal_all_audit(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.seal_audit(SEAL_BATCH).await?;
            total += n;
            if n < usize::try_from(SEAL_BATCH).unwrap_or(usize::MAX) {
                return Ok(total);
            }
        }
    }
}

/// Statement parameters above this size make a connection shrink its buffers after
/// the statement.
const LARGE_STATEMENT_BYTES: usize = 1024 * 1024;

/// A connection keeps the buffers its largest statement needed; after one of large
/// messages (a batch of 1 MB inputs, say), every pooled connection would hold tens of
/// megabytes for good. This gives them back.
fn shrink_after_large(conn: &mut PgConnection, bound_bytes: usize) {
    if bound_bytes > LARGE_STATEMENT_BYTES {
        conn.shrink_buffers();
    }
}

/// Audit entries chained per sealing transaction.
pub const SEAL_BATCH: i64 = 2000;

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
        let audit = AuditEntry::new(
            &format!("adapter:{}", rejection.adapter),
            "ingest",
            "rejected",
        )
        .detail(serde_json::json!({
            "rejected_input": id,
            "peer": rejection.peer,
            "location": rejection.location,
            "reason": rejection.reason,
            "raw_sha256": sha,
        }));
        append_audit(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(id)
    }
}

fn consent_from_row(row: &sqlx::postgres::PgRow) -> Result<Consent, StoreError> {
    let scope = match row.try_get::<&str, _>("scope")? {
        "blanket" => ConsentScope::Blanket,
        "facilities" => ConsentScope::Facilities,
        other => return Err(corrupt("consents.scope", other)),
    };
    let basis = match row.try_get::<&str, _>("basis")? {
        "written" => ConsentBasis::Written,
        "oral_recorded" => ConsentBasis::OralRecorded,
        other => return Err(corrupt("consents.basis", other)),
    };
    Ok(Consent {
        id: row.try_get("id")?,
        patient: row.try_get("patient_id")?,
        scope,
        facilities: row.try_get("facilities")?,
        basis,
        valid_from: row.try_get("valid_from")?,
        valid_until: row.try_get("valid_until")?,
        withdrawn_at: row.try_get("withdrawn_at")?,
    })
}

async fn consents_of(
    conn: &mut PgConnection,
    patient_id: &str,
) -> Result<Vec<Consent>, StoreError> {
    sqlx::query(
        "SELECT id, patient_id, scope, facilities, basis, valid_from, valid_until, withdrawn_at
         FROM consents WHERE patient_id = $1 ORDER BY id",
    )
    .bind(patient_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(consent_from_row)
    .collect()
}

#[async_trait]
impl RouteStore for PgStore {
    async fn resolve_patient(
        &self,
        identifiers: &[Identifier],
    ) -> Result<Option<String>, StoreError> {
        let systems: Vec<&str> = identifiers.iter().map(|i| i.system.as_str()).collect();
        let values: Vec<&str> = identifiers.iter().map(|i| i.value.as_str()).collect();
        Ok(sqlx::query_scalar(
            "SELECT pi.patient_id FROM UNNEST($1::text[], $2::text[]) AS wanted(system, value)
             CROSS JOIN LATERAL (
                 SELECT patient_id FROM patient_identifiers pi
                 WHERE pi.system = wanted.system AND pi.value = wanted.value OFFSET 0
             ) AS pi
             ORDER BY pi.patient_id LIMIT 1",
        )
        .bind(&systems)
        .bind(&values)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn routing_facts(
        &self,
        event_type: &str,
        source_facility: Option<&str>,
        patient_id: &str,
    ) -> Result<(Vec<Candidate>, Vec<Consent>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        // One candidate per participant: the first matching subscription by name. A
        // disabled endpoint is still a candidate: its deliveries are recorded (and go
        // dead with the reason) so they can be replayed once it is enabled again.
        let rows = sqlx::query(
            "SELECT DISTINCT ON (s.participant_id)
                    s.participant_id, p.facility_code, s.endpoint_name,
                    cr.role, cr.valid_from, cr.valid_until
             FROM subscriptions s
             JOIN participants p ON p.id = s.participant_id
             JOIN endpoints e ON e.participant_id = s.participant_id AND e.name = s.endpoint_name
             LEFT JOIN LATERAL (
                 SELECT * FROM care_relationships cr
                 WHERE cr.patient_id = $3 AND cr.participant_id = s.participant_id OFFSET 0
             ) AS cr ON true
             WHERE $1 = ANY (s.event_types)
               AND (cardinality(s.source_facilities) = 0 OR $2 = ANY (s.source_facilities))
             ORDER BY s.participant_id, s.name",
        )
        .bind(event_type)
        .bind(source_facility)
        .bind(patient_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in rows {
            let participant_id: String = row.try_get("participant_id")?;
            let role: Option<String> = row.try_get("role")?;
            let care_relationship = match role {
                Some(role) => Some(CareRelationship {
                    patient: patient_id.to_owned(),
                    participant: participant_id.clone(),
                    role,
                    valid_from: row.try_get::<NaiveDate, _>("valid_from")?,
                    valid_until: row.try_get("valid_until")?,
                }),
                None => None,
            };
            candidates.push(Candidate {
                participant_id,
                facility: row.try_get("facility_code")?,
                endpoint_name: row.try_get("endpoint_name")?,
                care_relationship,
            });
        }
        let consents = consents_of(&mut conn, patient_id).await?;
        Ok((candidates, consents))
    }

    async fn routing_facts_many(
        &self,
        questions: &[FactsQuestion],
    ) -> Result<Vec<RoutingFacts>, StoreError> {
        let n = questions.len();
        let mut conn = self.pool.acquire().await?;
        let mut facts = vec![RoutingFacts::default(); n];

        // Patients: for each question, the lowest hub id any identifier names.
        let (mut q_index, mut systems, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (i, q) in questions.iter().enumerate() {
            for id in &q.identifiers {
                q_index.push(i32::try_from(i).unwrap_or(i32::MAX));
                systems.push(id.system.as_str());
                values.push(id.value.as_str());
            }
        }
        let rows = sqlx::query(
            "SELECT w.i, min(pi.patient_id) AS patient_id
             FROM UNNEST($1::int[], $2::text[], $3::text[]) AS w(i, system, value)
             CROSS JOIN LATERAL (
                 SELECT patient_id FROM patient_identifiers pi
                 WHERE pi.system = w.system AND pi.value = w.value OFFSET 0
             ) AS pi
             GROUP BY w.i",
        )
        .bind(&q_index)
        .bind(&systems)
        .bind(&values)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let i: i32 = row.try_get("i")?;
            if let Some(f) = usize::try_from(i).ok().and_then(|i| facts.get_mut(i)) {
                f.patient = row.try_get("patient_id")?;
            }
        }

        // Candidates, one per participant (its first matching subscription by name),
        // for the questions whose patient is known.
        let (mut c_index, mut c_types, mut c_sources, mut c_patients) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, (q, f)) in questions.iter().zip(&facts).enumerate() {
            if let Some(patient) = &f.patient {
                c_index.push(i32::try_from(i).unwrap_or(i32::MAX));
                c_types.push(q.event_type.as_str());
                c_sources.push(q.source_facility.as_deref());
                c_patients.push(patient.as_str());
            }
        }
        if c_index.is_empty() {
            return Ok(facts);
        }
        let rows = sqlx::query(
            "SELECT DISTINCT ON (u.i, s.participant_id)
                    u.i, s.participant_id, p.facility_code, s.endpoint_name,
                    cr.role, cr.valid_from, cr.valid_until
             FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[]) AS u(i, t, f, patient)
             JOIN subscriptions s ON u.t = ANY (s.event_types)
                  AND (cardinality(s.source_facilities) = 0 OR u.f = ANY (s.source_facilities))
             JOIN participants p ON p.id = s.participant_id
             JOIN endpoints e ON e.participant_id = s.participant_id AND e.name = s.endpoint_name
             LEFT JOIN LATERAL (
                 SELECT * FROM care_relationships cr
                 WHERE cr.patient_id = u.patient AND cr.participant_id = s.participant_id OFFSET 0
             ) AS cr ON true
             ORDER BY u.i, s.participant_id, s.name",
        )
        .bind(&c_index)
        .bind(&c_types)
        .bind(&c_sources)
        .bind(&c_patients)
        .fetch_all(&mut *conn)
        .await?;
        let patients: Vec<String> = facts.iter().filter_map(|f| f.patient.clone()).collect();
        for row in rows {
            let i: i32 = row.try_get("i")?;
            let Some(f) = usize::try_from(i).ok().and_then(|i| facts.get_mut(i)) else {
                continue;
            };
            let participant_id: String = row.try_get("participant_id")?;
            let role: Option<String> = row.try_get("role")?;
            let care_relationship = match (role, &f.patient) {
                (Some(role), Some(patient)) => Some(CareRelationship {
                    patient: patient.clone(),
                    participant: participant_id.clone(),
                    role,
                    valid_from: row.try_get::<NaiveDate, _>("valid_from")?,
                    valid_until: row.try_get("valid_until")?,
                }),
                _ => None,
            };
            f.candidates.push(Candidate {
                participant_id,
                facility: row.try_get("facility_code")?,
                endpoint_name: row.try_get("endpoint_name")?,
                care_relationship,
            });
        }

        let consents = consents_of_many(&mut conn, &patients).await?;
        for f in &mut facts {
            if let Some(c) = f.patient.as_ref().and_then(|p| consents.get(p)) {
                f.consents = c.clone();
            }
        }
        Ok(facts)
    }

    async fn commit_routes(&self, batch: &[RouteRequest]) -> Result<Vec<RouteCommit>, StoreError> {
        let n = batch.len();
        let mut tx = self.pool.begin().await?;

        // The events; an id already stored was routed before (a redelivery).
        let (mut ids, mut types, mut sources, mut times, mut patients, mut bodies) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in batch {
            ids.push(r.event.id);
            types.push(r.event.event_type.as_str());
            sources.push(r.event.source.as_str());
            times.push(r.event.time);
            patients.push(r.event.subject.as_deref());
            bodies.push(serde_json::to_string(&r.event).map_err(|e| corrupt("event", e))?);
        }
        let inserted: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO events (id, event_type, source, time, patient_id, body)
             SELECT i, t, s, tm, p, b::json
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
                  AS u(i, t, s, tm, p, b)
             ON CONFLICT (id) DO NOTHING RETURNING id",
        )
        .bind(&ids)
        .bind(&types)
        .bind(&sources)
        .bind(&times)
        .bind(&patients)
        .bind(&bodies)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // Only the first request for an id routes it, even within one batch.
        let mut first = HashSet::with_capacity(n);
        let new: Vec<bool> = batch
            .iter()
            .map(|r| inserted.contains(&r.event.id) && first.insert(r.event.id))
            .collect();

        // Sequence numbers: each participant's counter moves once per batch, locked in
        // id order so concurrent batches (other processes) cannot deadlock.
        fn delivering(r: &RouteRequest) -> impl Iterator<Item = &RouteDecision> {
            r.decisions
                .iter()
                .filter(|d| d.outcome == RouteOutcome::Deliver)
        }
        let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
        for (r, _) in batch.iter().zip(&new).filter(|(_, new)| **new) {
            for d in delivering(r) {
                *wanted.entry(d.participant_id.as_str()).or_default() += 1;
            }
        }
        let mut next: HashMap<String, i64> = HashMap::with_capacity(wanted.len());
        if !wanted.is_empty() {
            let (who, how_many): (Vec<&str>, Vec<i64>) =
                wanted.iter().map(|(p, k)| (*p, *k)).unzip();
            sqlx::query("SELECT id FROM participants WHERE id = ANY ($1) ORDER BY id FOR UPDATE")
                .bind(&who)
                .execute(&mut *tx)
                .await?;
            let rows = sqlx::query(
                "UPDATE participants p SET last_sequence = p.last_sequence + u.k
                 FROM UNNEST($1::text[], $2::bigint[]) AS u(id, k)
                 WHERE p.id = u.id RETURNING p.id, p.last_sequence",
            )
            .bind(&who)
            .bind(&how_many)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let id: String = row.try_get("id")?;
                let last: i64 = row.try_get("last_sequence")?;
                let k = wanted.get(id.as_str()).copied().unwrap_or_default();
                next.insert(id, last - k + 1);
            }
        }

        // Deliveries of the new events, numbered in batch order; audit rows with them.
        let mut commits: Vec<RouteCommit> = Vec::with_capacity(n);
        let (mut d_ids, mut d_events, mut d_participants, mut d_endpoints, mut d_sequences) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut audit = Vec::new();
        for (r, is_new) in batch.iter().zip(&new) {
            let mut commit = RouteCommit {
                pending_deliveries: Vec::new(),
                already_routed: !is_new,
            };
            if *is_new {
                for d in delivering(r) {
                    let sequence = next.get_mut(&d.participant_id).ok_or_else(|| {
                        StoreError::Conflict(format!(
                            "participant {} is not registered",
                            d.participant_id
                        ))
                    })?;
                    let id = Uuid::now_v7();
                    d_ids.push(id);
                    d_events.push(r.event.id);
                    d_participants.push(d.participant_id.clone());
                    d_endpoints.push(d.endpoint_name.clone());
                    d_sequences.push(*sequence);
                    *sequence += 1;
                    commit.pending_deliveries.push(id);
                }
                audit.extend(r.audit.iter().cloned());
            }
            commits.push(commit);
        }
        if !d_ids.is_empty() {
            sqlx::query(
                "INSERT INTO deliveries (id, event_id, participant_id, endpoint_name, sequence, status)
                 SELECT i, e, p, n, s, 'pending'
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[]) AS u(i, e, p, n, s)",
            )
            .bind(&d_ids)
            .bind(&d_events)
            .bind(&d_participants)
            .bind(&d_endpoints)
            .bind(&d_sequences)
            .execute(&mut *tx)
            .await?;
        }

        // Redeliveries: hand on again whatever is unfinished. A delivery waiting for a
        // retry is included: when its first attempt was made in this process (see
        // `DeliveryHandoff`) and the retry could not be parked, nothing else holds it.
        // If a retry was parked after all, the worker re-parks the early arrival.
        let again: Vec<Uuid> = commits
            .iter()
            .zip(&ids)
            .filter(|(c, _)| c.already_routed)
            .map(|(_, id)| *id)
            .collect();
        if !again.is_empty() {
            let rows = sqlx::query(
                "SELECT id, event_id FROM deliveries WHERE event_id = ANY ($1) AND status IN ('pending', 'retrying')",
            )
            .bind(&again)
            .fetch_all(&mut *tx)
            .await?;
            let mut pending: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            for row in rows {
                pending
                    .entry(row.try_get("event_id")?)
                    .or_default()
                    .push(row.try_get("id")?);
            }
            // Once per event: not again for an event this batch has just routed.
            let mut handed: HashSet<Uuid> = first;
            for (commit, id) in commits.iter_mut().zip(&ids) {
                if commit.already_routed && handed.insert(*id) {
                    commit.pending_deliveries = pending.remove(id).unwrap_or_default();
                }
            }
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(commits)
    }
}

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
        let patients: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<Option<String>, _>("patient_id"))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        // Every consent of every patient concerned, in one read.
        let consents = consents_of_many(&mut conn, &patients).await?;
        let mut jobs: HashMap<Uuid, DeliveryJob> = HashMap::with_capacity(rows.len());
        for row in rows {
            let patient_id: Option<String> = row.try_get("patient_id")?;
            let id: Uuid = row.try_get("id")?;
            let job = DeliveryJob {
                id,
                event_id: row.try_get("event_id")?,
                body: row.try_get::<String, _>("body")?.into_bytes(),
                sequence: row.try_get("sequence")?,
                status: row.try_get("status")?,
                attempts: row.try_get("attempts")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                participant_id: row.try_get("participant_id")?,
                facility: row.try_get("facility_code")?,
                consents: patient_id
                    .as_ref()
                    .and_then(|p| consents.get(p).cloned())
                    .unwrap_or_default(),
                patient_id,
                url: row.try_get("url")?,
                secrets: row.try_get("secrets")?,
                endpoint_enabled: row.try_get("enabled")?,
            };
            jobs.insert(id, job);
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
            let (status, next_at, error): (&str, Option<DateTime<Utc>>, Option<&str>) =
                match &f.next {
                    NextState::Delivered => ("delivered", None, None),
                    NextState::Retry { at, error } => ("retrying", Some(*at), Some(error)),
                    NextState::Dead { reason } => ("dead", None, Some(reason)),
                    NextState::Cancelled { reason } => ("cancelled", None, Some(reason)),
                };
            ids.push(f.id);
            statuses.push(status);
            attempts.push(f.attempt.as_ref().map(|a| a.attempt));
            // An attempt counts only if no other copy of the job recorded one meanwhile.
            before.push(f.attempt.as_ref().map(|a| a.attempt - 1));
            next_ats.push(next_at);
            errors.push(error);
        }
        let mut tx = self.pool.begin().await?;
        // Only a delivery still in flight, at the attempt count the job was loaded with,
        // moves: a duplicate copy of the job (a redelivery, a retry parked twice) that
        // finishes second changes nothing.
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
        let mut recorded = HashSet::with_capacity(moved.len());
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
        let mut finished = Vec::with_capacity(n);
        for f in batch {
            // Once per delivery, even if it came twice in this batch.
            let first = moved.contains(&f.id) && recorded.insert(f.id);
            finished.push(first);
            if !first {
                continue;
            }
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
            audit.push(
                AuditEntry::new(actor, "delivery.replay", "requeued")
                    .event(row.try_get("event_id")?)
                    .participant(&participant)
                    .patient(patient.as_deref())
                    .detail(serde_json::json!({ "delivery": id })),
            );
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
    match StoreError::from(e) {
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
        let changed: Vec<&Change> = changes
            .iter()
            .filter(|c| c.action != ChangeAction::Unchanged)
            .collect();
        if !changed.is_empty() {
            let audit =
                AuditEntry::new(actor, "registry.apply", "applied").detail(serde_json::json!({
                    "changes": changed.iter().map(|c| format!("{c}")).collect::<Vec<_>>(),
                }));
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
            doc.facilities.push(Facility {
                code: row.try_get("code")?,
                name: row.try_get("name")?,
                kind: row.try_get("kind")?,
            });
        }
        for row in sqlx::query("SELECT id, facility_code, name FROM participants ORDER BY id")
            .fetch_all(&mut *conn)
            .await?
        {
            doc.participants.push(Participant {
                id: row.try_get("id")?,
                facility: row.try_get("facility_code")?,
                name: row.try_get("name")?,
            });
        }
        for row in sqlx::query(
            "SELECT participant_id, name, url, cardinality(secrets) AS n, enabled FROM endpoints ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            let n: i32 = row.try_get("n")?;
            doc.endpoints.push(Endpoint {
                participant: row.try_get("participant_id")?,
                name: row.try_get("name")?,
                url: crate::registry::masked_url(&row.try_get::<String, _>("url")?),
                secrets: vec!["whsec_********".to_owned(); usize::try_from(n).unwrap_or(0)],
                enabled: row.try_get("enabled")?,
            });
        }
        for row in sqlx::query(
            "SELECT participant_id, name, endpoint_name, event_types, source_facilities FROM subscriptions ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            doc.subscriptions.push(Subscription {
                participant: row.try_get("participant_id")?,
                name: row.try_get("name")?,
                endpoint: row.try_get("endpoint_name")?,
                event_types: row.try_get("event_types")?,
                source_facilities: row.try_get("source_facilities")?,
            });
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
            doc.care_relationships.push(CareRelationship {
                patient: row.try_get("patient_id")?,
                participant: row.try_get("participant_id")?,
                role: row.try_get("role")?,
                valid_from: row.try_get("valid_from")?,
                valid_until: row.try_get("valid_until")?,
            });
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
        let rows = sqlx::query(
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
        rows.iter()
            .map(|row| {
                Ok(DeliverySummary {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    participant_id: row.try_get("participant_id")?,
                    endpoint_name: row.try_get("endpoint_name")?,
                    sequence: row.try_get("sequence")?,
                    status: row.try_get("status")?,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn create_api_key(&self, name: &str, key_sha256: &[u8]) -> Result<String, StoreError> {
        let id = format!("key_{}", Uuid::now_v7().simple());
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO api_keys (id, name, key_sha256) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(key_sha256)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            vec![
                AuditEntry::new("cli", "api_key.create", "created")
                    .detail(serde_json::json!({"key": id, "name": name})),
            ],
        )
        .await?;
        tx.commit().await?;
        self.seal_soon().await;
        Ok(id)
    }

    async fn find_api_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL",
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
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, outcome, patient_id, event_id, participant_id, detail::text AS detail,
                    prev_hash, hash
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(AuditRow {
                    seq: row.try_get("seq")?,
                    at: row.try_get("at")?,
                    entry: AuditEntry {
                        actor: row.try_get("actor")?,
                        action: row.try_get("action")?,
                        outcome: row.try_get("outcome")?,
                        patient_id: row.try_get("patient_id")?,
                        event_id: row.try_get("event_id")?,
                        participant_id: row.try_get("participant_id")?,
                        detail: serde_json::from_str(&detail)
                            .map_err(|e| corrupt("audit_log.detail", e))?,
                    },
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn seal_audit(&self) -> Result<usize, StoreError> {
        self.seal_all_audit().await
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
            Some(row) => {
                let body: String = row.try_get("body")?;
                Ok(Some((
                    row.try_get("patient_id")?,
                    serde_json::from_str(&body).map_err(|e| corrupt("events.body", e))?,
                )))
            }
        }
    }
}
