//! Routing: the facts a routing decision needs, and committing it.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::NaiveDate;
use sqlx::Row;
use uuid::Uuid;

use super::super::{
    Candidate, FactsQuestion, RouteCommit, RouteRequest, RouteStore, RoutingFacts, StoreError,
    corrupt, rules,
};
use super::audit::append_audit;
use super::{PgStore, consents_of_many};
use crate::registry::CareRelationship;

#[async_trait]
impl RouteStore for PgStore {
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
        let (new, routed) = rules::first_routes(batch, &inserted);

        // Sequence numbers: each participant's counter moves once per batch, locked in
        // id order so concurrent batches (other processes) cannot deadlock.
        let wanted = rules::sequences_wanted(batch, &new);
        let mut next: HashMap<String, i64> = HashMap::with_capacity(wanted.len());
        if !wanted.is_empty() {
            let (who, how_many): (Vec<&str>, Vec<i64>) =
                wanted.iter().map(|(p, k)| (p.as_str(), *k)).unzip();
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
                let k = wanted.get(&id).copied().unwrap_or_default();
                next.insert(id, rules::first_reserved(last, k));
            }
        }

        // Deliveries of the new events, numbered in batch order; audit rows with them.
        let rules::Numbered {
            deliveries,
            mut commits,
            audit,
        } = rules::number_deliveries(batch, &new, next)?;
        if !deliveries.is_empty() {
            let n = deliveries.len();
            let (mut d_ids, mut d_events, mut d_participants, mut d_endpoints, mut d_sequences) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for d in &deliveries {
                d_ids.push(d.id);
                d_events.push(d.event_id);
                d_participants.push(d.participant_id.as_str());
                d_endpoints.push(d.endpoint_name.as_str());
                d_sequences.push(d.sequence);
            }
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

        // Redeliveries: hand on again whatever is unfinished.
        let again = rules::routed_before(batch, &commits);
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
            rules::hand_on_again(batch, &mut commits, routed, pending);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(commits)
    }
}
