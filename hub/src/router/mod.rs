//! The router: who should receive an event. Candidates are the participants subscribed
//! to its type (and source facility); each receives it only if they are in a care
//! relationship with the patient and the patient's consent covers their facility.
//! Every decision is an audit row, written in the same transaction as the deliveries.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use renkei_sdk::CanonicalEvent;

use crate::audit::AuditEntry;
use crate::bus::{Bus, DeliveryHandoff, HandleOutcome, MessageHandler, ViaBus};
use crate::registry::{ConsentDecision, consent_decision};
use crate::store::batch::GroupCommit;
use crate::store::{
    Candidate, FactsQuestion, RouteCommit, RouteDecision, RouteOutcome, RouteRequest, RouteStore,
    RoutingFacts, StoreError,
};

const ACTOR: &str = "router";

/// Japan time, in which care relationships' day boundaries are read.
fn japan() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| unreachable!("+09:00 is a valid offset"))
}

/// Decides one candidate.
pub fn decide(
    candidate: &Candidate,
    consents: &[crate::registry::Consent],
    now: DateTime<Utc>,
) -> RouteOutcome {
    let today = now.with_timezone(&japan()).date_naive();
    if !candidate
        .care_relationship
        .as_ref()
        .is_some_and(|r| r.active_on(today))
    {
        return RouteOutcome::NoCareRelationship;
    }
    match consent_decision(consents, &candidate.facility, now) {
        ConsentDecision::Covered => RouteOutcome::Deliver,
        denied => RouteOutcome::DeniedByConsent(denied),
    }
}

fn audit_of(event: &CanonicalEvent, patient: Option<&str>, decision: &RouteDecision) -> AuditEntry {
    let (outcome, reason) = match &decision.outcome {
        RouteOutcome::Deliver => (
            "delivered",
            "subscribed, in a care relationship, covered by consent",
        ),
        RouteOutcome::NoCareRelationship => (
            "no_care_relationship",
            "no active care relationship with the patient",
        ),
        RouteOutcome::DeniedByConsent(ConsentDecision::NoConsentInForce) => {
            ("denied_by_consent", "the patient has no consent in force")
        }
        RouteOutcome::DeniedByConsent(_) => (
            "denied_by_consent",
            "the patient's consent does not cover this participant's facility",
        ),
    };
    AuditEntry::new(ACTOR, "route", outcome)
        .event(event.id)
        .patient(patient)
        .participant(&decision.participant_id)
        .detail(serde_json::json!({
            "type": event.event_type.as_str(),
            "endpoint": decision.endpoint_name,
            "reason": reason,
        }))
}

/// Why routing could not finish now (the event goes back to the queue).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Handing deliveries to the workers failed.
    #[error("deliveries not handed on: {0}")]
    Handoff(String),
}

/// Routes events from the bus.
pub struct Router {
    handoff: Arc<dyn DeliveryHandoff>,
    facts: GroupCommit<FactsQuestion, RoutingFacts>,
    commits: GroupCommit<RouteRequest, RouteCommit>,
}

/// Events committed per routing transaction, at most.
const ROUTE_BATCH: usize = 128;

impl Router {
    /// A router over a store that hands deliveries to the bus. Starts the task that
    /// commits routed events in batches (see [`GroupCommit`]); call it inside the
    /// runtime.
    pub fn new(store: Arc<dyn RouteStore>, bus: Arc<dyn Bus>) -> Self {
        Self::with_handoff(store, Arc::new(ViaBus(bus)))
    }

    /// A router that hands deliveries to `handoff` (see [`DeliveryHandoff`]).
    pub fn with_handoff(store: Arc<dyn RouteStore>, handoff: Arc<dyn DeliveryHandoff>) -> Self {
        let committer = store.clone();
        let commits = GroupCommit::spawn(ROUTE_BATCH, move |batch| {
            let store = committer.clone();
            Box::pin(async move { store.commit_routes(batch).await })
        });
        // Concurrent events' reads are batched the same way.
        let facts = GroupCommit::spawn(ROUTE_BATCH, move |questions| {
            let store = store.clone();
            Box::pin(async move { store.routing_facts_many(questions).await })
        });
        Self {
            handoff,
            facts,
            commits,
        }
    }

    /// Routes one event: decisions, deliveries and audit committed together, then the
    /// deliveries handed to the workers. Safe to repeat for the same event.
    pub async fn route(&self, mut event: CanonicalEvent) -> Result<usize, RouteError> {
        let now = Utc::now();
        let RoutingFacts {
            patient,
            candidates,
            consents,
        } = self
            .facts
            .submit(FactsQuestion {
                identifiers: event.data.patient.identifiers.clone(),
                event_type: event.event_type,
                source_facility: event.source_facility().map(str::to_owned),
            })
            .await?;
        let mut decisions = Vec::new();
        let mut audit = Vec::new();
        match &patient {
            None => audit.push(
                AuditEntry::new(ACTOR, "route", "patient_unknown")
                    .event(event.id)
                    .detail(serde_json::json!({
                        "type": event.event_type.as_str(),
                        "reason": "no registered patient has any of the event's identifiers",
                    })),
            ),
            Some(patient_id) => {
                event.subject = Some(patient_id.clone());
                for candidate in &candidates {
                    let decision = RouteDecision {
                        participant_id: candidate.participant_id.clone(),
                        endpoint_name: candidate.endpoint_name.clone(),
                        outcome: decide(candidate, &consents, now),
                    };
                    audit.push(audit_of(&event, Some(patient_id), &decision));
                    decisions.push(decision);
                }
                if candidates.is_empty() {
                    audit.push(
                        AuditEntry::new(ACTOR, "route", "no_subscribers")
                            .event(event.id)
                            .patient(Some(patient_id))
                            .detail(serde_json::json!({ "type": event.event_type.as_str() })),
                    );
                }
            }
        }
        let event_id = event.id;
        let commit = self
            .commits
            .submit(RouteRequest {
                event,
                decisions,
                audit,
            })
            .await?;
        // All of the event's deliveries are handed on together.
        if !commit.pending_deliveries.is_empty() {
            self.handoff
                .hand_off(&commit.pending_deliveries)
                .await
                .map_err(RouteError::Handoff)?;
        }
        if commit.already_routed {
            tracing::debug!(%event_id, "event was routed before; unfinished deliveries handed on again");
        }
        Ok(commit.pending_deliveries.len())
    }
}

#[async_trait]
impl MessageHandler for Router {
    async fn handle(&self, body: &[u8], _redelivered: bool) -> HandleOutcome {
        let event: CanonicalEvent = match serde_json::from_slice(body) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, "a message on the events queue is not a canonical event; dead-lettered");
                return HandleOutcome::DeadLetter;
            }
        };
        let event_id = event.id;
        match self.route(event).await {
            Ok(deliveries) => {
                tracing::debug!(%event_id, deliveries, "routed");
                HandleOutcome::Ack
            }
            Err(RouteError::Store(e @ (StoreError::Rejected(_) | StoreError::Conflict(_)))) => {
                // Retrying cannot help; the dead-letter queue keeps the event for an
                // operator, and the events around it are routed as usual.
                tracing::error!(%event_id, error = %e, "the store refuses this event; dead-lettered");
                HandleOutcome::DeadLetter
            }
            Err(e) => {
                tracing::warn!(%event_id, error = %e, "routing failed; the event goes back to the queue");
                HandleOutcome::Requeue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{CareRelationship, Consent, ConsentBasis, ConsentScope};
    use chrono::TimeZone;

    fn candidate(relationship: bool) -> Candidate {
        Candidate {
            participant_id: "sakura".into(),
            facility: "1379999999".into(),
            endpoint_name: "main".into(),
            care_relationship: relationship.then(|| CareRelationship {
                patient: "P-1".into(),
                participant: "sakura".into(),
                role: "care_manager".into(),
                valid_from: chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default(),
                valid_until: None,
            }),
        }
    }

    fn blanket(excluded: &[&str]) -> Consent {
        Consent {
            id: "c".into(),
            patient: "P-1".into(),
            scope: ConsentScope::Blanket,
            facilities: excluded.iter().map(|s| s.to_string()).collect(),
            basis: ConsentBasis::Written,
            valid_from: Utc
                .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            valid_until: None,
            withdrawn_at: None,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 4, 10, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn delivers_only_with_relationship_and_consent() {
        assert_eq!(
            decide(&candidate(true), &[blanket(&[])], now()),
            RouteOutcome::Deliver
        );
        assert_eq!(
            decide(&candidate(false), &[blanket(&[])], now()),
            RouteOutcome::NoCareRelationship
        );
        assert_eq!(
            decide(&candidate(true), &[blanket(&["1379999999"])], now()),
            RouteOutcome::DeniedByConsent(ConsentDecision::FacilityNotCovered)
        );
        assert_eq!(
            decide(&candidate(true), &[], now()),
            RouteOutcome::DeniedByConsent(ConsentDecision::NoConsentInForce)
        );
    }

    #[test]
    fn care_relationship_days_are_japan_days() {
        let mut c = candidate(true);
        if let Some(r) = c.care_relationship.as_mut() {
            r.valid_from = chrono::NaiveDate::from_ymd_opt(2025, 4, 10).unwrap_or_default();
        }
        // 2025-04-09T15:00Z is already 2025-04-10 in Japan.
        let at = Utc
            .with_ymd_and_hms(2025, 4, 9, 15, 0, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(decide(&c, &[blanket(&[])], at), RouteOutcome::Deliver);
    }
}
