//! Routing: the facts a routing decision needs, and committing it.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::super::{
    Candidate, FactsQuestion, RouteCommit, RouteRequest, RouteStore, RoutingFacts, StoreError,
    corrupt, rules,
};
use super::audit::append_audit;
use super::{SqliteStore, consents_of_many};
use crate::registry::CareRelationship;

#[async_trait]
impl RouteStore for SqliteStore {
    async fn routing_facts_many(
        &self,
        questions: &[FactsQuestion],
    ) -> Result<Vec<RoutingFacts>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let mut facts = Vec::with_capacity(questions.len());
        for q in questions {
            let mut f = RoutingFacts::default();
            // The lowest hub id any identifier names.
            for id in &q.identifiers {
                let found: Option<String> = sqlx::query_scalar(
                    "SELECT patient_id FROM patient_identifiers WHERE system = ? AND value = ?",
                )
                .bind(&id.system)
                .bind(&id.value)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(found) = found
                    && f.patient.as_ref().is_none_or(|p| found < *p)
                {
                    f.patient = Some(found);
                }
            }
            let Some(patient) = f.patient.clone() else {
                facts.push(f);
                continue;
            };
            // One candidate per participant: its first matching subscription by name. A
            // disabled endpoint is still a candidate (its deliveries go dead with the
            // reason, to be replayed once it is enabled again).
            let rows = sqlx::query(
                "SELECT s.participant_id, p.facility_code, s.endpoint_name,
                        cr.role, cr.valid_from, cr.valid_until
                 FROM subscriptions s
                 JOIN participants p ON p.id = s.participant_id
                 JOIN endpoints e ON e.participant_id = s.participant_id AND e.name = s.endpoint_name
                 LEFT JOIN care_relationships cr
                        ON cr.patient_id = ?3 AND cr.participant_id = s.participant_id
                 WHERE EXISTS (SELECT 1 FROM json_each(s.event_types) WHERE value = ?1)
                   AND (json_array_length(s.source_facilities) = 0
                        OR EXISTS (SELECT 1 FROM json_each(s.source_facilities) WHERE value = ?2))
                 ORDER BY s.participant_id, s.name",
            )
            .bind(q.event_type.as_str())
            .bind(q.source_facility.as_deref())
            .bind(&patient)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                let participant_id: String = row.try_get("participant_id")?;
                if f.candidates
                    .last()
                    .is_some_and(|c| c.participant_id == participant_id)
                {
                    continue;
                }
                let role: Option<String> = row.try_get("role")?;
                let care_relationship = match role {
                    Some(role) => Some(CareRelationship {
                        patient: patient.clone(),
                        participant: participant_id.clone(),
                        role,
                        valid_from: row.try_get::<NaiveDate, _>("valid_from")?,
                        valid_until: row.try_get("valid_until")?,
                    }),
                    None => None,
                };
                f.candidates.push(Candidate {
                    participant_id,
                    facility: row.try_get("facility_code")?,
                    endpoint_name: row.try_get("endpoint_name")?,
                    care_relationship,
                });
            }
            f.consents = consents_of_many(&mut conn, &[&patient])
                .await?
                .remove(&patient)
                .unwrap_or_default();
            facts.push(f);
        }
        Ok(facts)
    }

    async fn commit_routes(&self, batch: &[RouteRequest]) -> Result<Vec<RouteCommit>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin().await?;

        // The events; an id already stored was routed before (a redelivery).
        let bodies = batch
            .iter()
            .map(|r| serde_json::to_string(&r.event).map_err(|e| corrupt("event", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut insert = QueryBuilder::new(
            "INSERT INTO events (id, event_type, source, time, patient_id, body, routed_at) ",
        );
        insert.push_values(batch.iter().zip(&bodies), |mut row, (r, body)| {
            row.push_bind(r.event.id)
                .push_bind(r.event.event_type.as_str())
                .push_bind(&r.event.source)
                .push_bind(r.event.time)
                .push_bind(r.event.subject.as_deref())
                .push_bind(body)
                .push_bind(now);
        });
        insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        let inserted: HashSet<Uuid> = insert
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let (new, routed) = rules::first_routes(batch, &inserted);

        // Sequence numbers: each participant's counter moves once per batch (the write
        // lock is held already).
        let wanted = rules::sequences_wanted(batch, &new);
        let mut next = HashMap::with_capacity(wanted.len());
        for (participant, count) in &wanted {
            let last: Option<i64> = sqlx::query_scalar(
                "UPDATE participants SET last_sequence = last_sequence + ? WHERE id = ? RETURNING last_sequence",
            )
            .bind(count)
            .bind(participant)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(last) = last {
                next.insert(participant.clone(), rules::first_reserved(last, *count));
            }
        }

        // Deliveries of the new events, numbered in batch order; audit rows with them.
        let rules::Numbered {
            deliveries,
            mut commits,
            audit,
        } = rules::number_deliveries(batch, &new, next)?;
        if !deliveries.is_empty() {
            let mut insert = QueryBuilder::new(
                "INSERT INTO deliveries (id, event_id, participant_id, endpoint_name, sequence, status, created_at, updated_at) ",
            );
            insert.push_values(&deliveries, |mut row, d| {
                row.push_bind(d.id)
                    .push_bind(d.event_id)
                    .push_bind(&d.participant_id)
                    .push_bind(&d.endpoint_name)
                    .push_bind(d.sequence)
                    .push_bind("pending")
                    .push_bind(now)
                    .push_bind(now);
            });
            insert.build().execute(&mut *tx).await?;
        }

        // Redeliveries: hand on again whatever is unfinished.
        let again = rules::routed_before(batch, &commits);
        if !again.is_empty() {
            let mut pending: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            for event in &again {
                let ids: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM deliveries WHERE event_id = ? AND status IN ('pending', 'retrying') ORDER BY id",
                )
                .bind(event)
                .fetch_all(&mut *tx)
                .await?;
                pending.insert(*event, ids);
            }
            rules::hand_on_again(batch, &mut commits, routed, pending);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(commits)
    }
}
