//! Persistence behind small traits, one per stage of the flow, so the router, delivery
//! and API depend on what they need and a second backend (the embedded SQLite default)
//! can implement the same traits. [`pg::PgStore`] is the PostgreSQL implementation.

pub mod batch;
pub mod pg;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use renkei_sdk::{CanonicalEvent, EventType, Identifier};
use uuid::Uuid;

use crate::audit::{AuditEntry, AuditRow};
use crate::registry::document::{Change, RegistryDocument};
use crate::registry::{CareRelationship, Consent, ConsentDecision};

/// A storage failure. `Unavailable` means "try again later" (the MLLP sender gets `AR`,
/// a consumer's message goes back to the queue); `Conflict` and `Rejected` mean the
/// request itself is wrong, and retrying it cannot help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed transiently.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The request contradicts what is stored (e.g. a reference to a missing resource).
    #[error("{0}")]
    Conflict(String),
    /// Stored data could not be read back (a bug or manual tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database refuses the data itself (a value it cannot hold, a key too long):
    /// retrying the same request will never succeed.
    #[error("the database refuses the data: {0}")]
    Rejected(String),
}

/// An accepted input, about to be published.
#[derive(Debug)]
pub struct IngestRecord {
    /// Dedupe namespace, the sender: `<format>|<sending system>|<facility>`, e.g.
    /// `hl7v2|HIS|1319999999` (for HL7 v2: MSH-3 and the code from MSH-4 or EVN-7). An
    /// absent sending system is empty; an absent facility is the event's `source`.
    pub source_key: String,
    /// The sender's message id (MSH-10…).
    pub message_id: String,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// SHA-256 (hex) of the raw input.
    pub raw_sha256: String,
    /// The event serialised as it will be published.
    pub event_json: String,
    /// The raw input (shared with the source's buffer, not copied).
    pub raw: bytes::Bytes,
}

/// Whether an input was seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestClaim {
    /// First time: publish it.
    New,
    /// Seen and published before: acknowledge, do not publish.
    AlreadyPublished {
        /// The first event's id.
        event_id: Uuid,
    },
    /// Seen, but its sender was never told it was accepted: publish the stored event
    /// again (same id as the first time).
    NotYetPublished {
        /// The first event's id.
        event_id: Uuid,
        /// The stored event JSON (same id as the first time).
        event_json: Vec<u8>,
        /// Its type, the routing key.
        event_type: String,
    },
    /// The sender used this message id before for a different message: neither
    /// published nor stored as accepted; the caller refuses it.
    Reused {
        /// The event the id was first accepted as.
        event_id: Uuid,
    },
}

/// What the store holds of an earlier input under the same (source, message id).
#[derive(Debug, Clone)]
pub struct SeenIngest {
    /// The first event's id.
    pub event_id: Uuid,
    /// SHA-256 (hex) of the first input's bytes.
    pub raw_sha256: String,
    /// Whether the first was marked published. The mark commits before its sender is
    /// told `AA` ([`IngestStore::mark_published`]), so an unmarked claim was never
    /// answered `AA`: its sender was told `AR`, got no answer, or is still waiting.
    pub published: bool,
    /// The first event, as stored.
    pub event_json: String,
    /// Its type.
    pub event_type: String,
}

/// The rule for an input whose (source, message id) was seen before, shared by every
/// backend.
///
/// - The same bytes are a resend: acknowledged again (and published again if the first
///   was never confirmed to its sender).
/// - Other bytes after the first was answered `AA` are a reused id: refused, so the
///   second content is kept as a rejected input instead of vanishing.
/// - Other bytes while the first was never answered `AA` are a resend only when they
///   say the same thing (a sender re-stamping MSH-7 on its retry after `AR`): the same
///   event apart from its id and the raw bytes' hash. Anything else is a reused id too:
///   the first may still be answered `AA` in a moment (two connections racing), and
///   taking the second for a resend would acknowledge content that is never published.
pub fn seen_claim(first: &SeenIngest, record: &IngestRecord) -> IngestClaim {
    let resend = first.raw_sha256 == record.raw_sha256
        || (!first.published && same_content(&first.event_json, &record.event_json));
    match (resend, first.published) {
        (true, true) => IngestClaim::AlreadyPublished {
            event_id: first.event_id,
        },
        (true, false) => IngestClaim::NotYetPublished {
            event_id: first.event_id,
            event_json: first.event_json.clone().into_bytes(),
            event_type: first.event_type.clone(),
        },
        (false, _) => IngestClaim::Reused {
            event_id: first.event_id,
        },
    }
}

/// Whether two serialised canonical events carry the same content, ignoring what
/// differs between two copies of one message: the event id and the raw bytes' hash.
/// Anything unreadable compares unequal (refusing is safe, accepting might lose).
fn same_content(first: &str, second: &str) -> bool {
    fn comparable(json: &str) -> Option<serde_json::Value> {
        let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
        let object = value.as_object_mut()?;
        object.remove("id");
        let origin = object.get_mut("data")?.get_mut("origin")?.as_object_mut()?;
        origin.remove("raw_sha256");
        Some(value)
    }
    match (comparable(first), comparable(second)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A claim whose event the broker confirmed, about to be answered as accepted.
#[derive(Debug, Clone)]
pub struct PublishMark {
    /// The event the broker confirmed.
    pub event_id: Uuid,
    /// Audit entry for the acceptance, recorded only by the mark that publishes the
    /// claim (a second copy's mark records nothing).
    pub audit: AuditEntry,
}

/// An input the hub will never accept.
#[derive(Debug)]
pub struct Rejection<'a> {
    /// Adapter name.
    pub adapter: &'a str,
    /// Peer description.
    pub peer: &'a str,
    /// Where in the input.
    pub location: Option<&'a str>,
    /// Why.
    pub reason: &'a str,
    /// The bytes as received.
    pub raw: &'a [u8],
}

/// Ingest-side persistence.
#[async_trait]
pub trait IngestStore: Send + Sync {
    /// Records accepted inputs, each unless the same (source, message id) was seen;
    /// one claim per record, in order, decided by [`seen_claim`] for those seen. A
    /// record repeating an earlier one of the same batch is judged against it (it was
    /// not answered yet).
    async fn claim_ingests(&self, batch: &[IngestRecord]) -> Result<Vec<IngestClaim>, StoreError>;
    /// Marks claims as confirmed by the broker and audits each acceptance, in one
    /// commit. It must commit before the sender is told `AA`: [`seen_claim`] takes an
    /// unmarked claim for one whose sender was never told so.
    async fn mark_published(&self, marks: &[PublishMark]) -> Result<(), StoreError>;
    /// Keeps a refused input (raw bytes and reason) and audits it; returns its id.
    async fn record_rejection(&self, rejection: Rejection<'_>) -> Result<Uuid, StoreError>;
}

/// A subscriber who might receive an event.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Participant.
    pub participant_id: String,
    /// Participant's facility.
    pub facility: String,
    /// Endpoint to deliver to.
    pub endpoint_name: String,
    /// Care relationship with the patient, if any.
    pub care_relationship: Option<CareRelationship>,
}

/// The router's verdict for one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// Deliver.
    Deliver,
    /// The participant does not look after this patient.
    NoCareRelationship,
    /// The patient's consent does not cover the participant.
    DeniedByConsent(ConsentDecision),
}

/// One routing decision.
#[derive(Debug, Clone)]
pub struct RouteDecision {
    /// Candidate.
    pub participant_id: String,
    /// Endpoint.
    pub endpoint_name: String,
    /// Verdict.
    pub outcome: RouteOutcome,
}

/// What committing a route produced.
#[derive(Debug, Default)]
pub struct RouteCommit {
    /// Deliveries still to be handed to the delivery workers (new ones, or, when the
    /// event was routed before a crash, those not yet finished).
    pub pending_deliveries: Vec<Uuid>,
    /// The event had already been routed (a redelivered message).
    pub already_routed: bool,
}

/// Router-side persistence.
#[async_trait]
pub trait RouteStore: Send + Sync {
    /// The hub patient id for any of these identifiers.
    async fn resolve_patient(
        &self,
        identifiers: &[Identifier],
    ) -> Result<Option<String>, StoreError>;
    /// Subscribers to `event_type` (from `source_facility`), with their care
    /// relationship to `patient_id`; and the patient's consents.
    async fn routing_facts(
        &self,
        event_type: &str,
        source_facility: Option<&str>,
        patient_id: &str,
    ) -> Result<(Vec<Candidate>, Vec<Consent>), StoreError>;
    /// For several events at once: the patient each is about, that patient's
    /// candidates and consents; one answer per question, in order.
    async fn routing_facts_many(
        &self,
        questions: &[FactsQuestion],
    ) -> Result<Vec<RoutingFacts>, StoreError>;
    /// Stores the event, its deliveries and one audit row per decision, atomically.
    /// Idempotent: a second call for the same event id changes nothing and returns the
    /// unfinished deliveries.
    async fn commit_route(
        &self,
        event: &CanonicalEvent,
        decisions: &[RouteDecision],
        audit: Vec<AuditEntry>,
    ) -> Result<RouteCommit, StoreError> {
        let request = RouteRequest {
            event: event.clone(),
            decisions: decisions.to_vec(),
            audit,
        };
        let mut commits = self.commit_routes(std::slice::from_ref(&request)).await?;
        commits
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no result for a routed event".into()))
    }

    /// [`commit_route`](Self::commit_route) for several events in one transaction:
    /// per-participant sequence numbers follow the order of `batch`. One result per
    /// request, in order.
    async fn commit_routes(&self, batch: &[RouteRequest]) -> Result<Vec<RouteCommit>, StoreError>;
}

/// What the router needs to know about one event.
#[derive(Debug, Clone)]
pub struct FactsQuestion {
    /// The event's patient identifiers.
    pub identifiers: Vec<Identifier>,
    /// Its type.
    pub event_type: EventType,
    /// The facility it comes from.
    pub source_facility: Option<String>,
}

/// The answer to a [`FactsQuestion`].
#[derive(Debug, Clone, Default)]
pub struct RoutingFacts {
    /// The hub patient, when one is registered with any of the identifiers.
    pub patient: Option<String>,
    /// Subscribers, with their care relationship to the patient.
    pub candidates: Vec<Candidate>,
    /// The patient's consents.
    pub consents: Vec<Consent>,
}

/// One event's routing, to commit.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    /// The event (with `subject` set when the patient is known).
    pub event: CanonicalEvent,
    /// One decision per candidate.
    pub decisions: Vec<RouteDecision>,
    /// The audit rows of the decisions.
    pub audit: Vec<AuditEntry>,
}

/// Everything a delivery worker needs for one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// Delivery id.
    pub id: Uuid,
    /// Event id (the `webhook-id`).
    pub event_id: Uuid,
    /// Event JSON body as routed.
    pub body: Vec<u8>,
    /// Per-participant sequence number.
    pub sequence: i64,
    /// `pending`, `retrying`, `delivered`, `dead`, `cancelled`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// When a waiting retry is due (`retrying` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Recipient.
    pub participant_id: String,
    /// Recipient's facility.
    pub facility: String,
    /// Patient (for the consent re-check and the audit row).
    pub patient_id: Option<String>,
    /// Patient's consents as of now.
    pub consents: Vec<Consent>,
    /// Endpoint URL.
    pub url: String,
    /// Endpoint secrets (`whsec_…`).
    pub secrets: Vec<String>,
    /// Endpoint enabled.
    pub endpoint_enabled: bool,
}

/// One attempt's record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: i32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// HTTP status, if a response came.
    pub status_code: Option<i32>,
    /// Transport error or response summary.
    pub error: Option<String>,
    /// `delivered`, `retry`, `dead`.
    pub outcome: String,
}

/// One delivery's outcome, to record.
#[derive(Debug, Clone)]
pub struct DeliveryFinish {
    /// The delivery.
    pub id: Uuid,
    /// The attempt made, if one was.
    pub attempt: Option<AttemptRecord>,
    /// Its next state.
    pub next: NextState,
    /// The audit row.
    pub audit: AuditEntry,
}

/// Where a delivery goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    /// Done.
    Delivered,
    /// Try again at this time.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Why.
        error: String,
    },
    /// Given up (non-retryable, or retries exhausted).
    Dead {
        /// Why.
        reason: String,
    },
    /// Stopped without an attempt (consent withdrawn, endpoint disabled).
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// Delivery-side persistence.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Loads a delivery with its event, endpoint and the patient's current consents.
    async fn load_delivery(&self, id: Uuid) -> Result<Option<DeliveryJob>, StoreError> {
        Ok(self.load_deliveries(&[id]).await?.pop().flatten())
    }
    /// [`load_delivery`](Self::load_delivery) for several ids in one read; one answer
    /// per id, in order.
    async fn load_deliveries(&self, ids: &[Uuid]) -> Result<Vec<Option<DeliveryJob>>, StoreError>;
    /// Records the attempt (if any), the new state and the audit row, atomically.
    /// `false` when another copy of the delivery's job finished first (the delivery was
    /// no longer in flight, or its attempt count had moved on): nothing is recorded, and
    /// the caller must not schedule anything for it.
    async fn finish_delivery(
        &self,
        id: Uuid,
        attempt: Option<AttemptRecord>,
        next: NextState,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let finished = self
            .finish_deliveries(&[DeliveryFinish {
                id,
                attempt,
                next,
                audit,
            }])
            .await?;
        Ok(finished.first().copied().unwrap_or(false))
    }
    /// [`finish_delivery`](Self::finish_delivery) for several deliveries in one
    /// transaction; one answer per request.
    async fn finish_deliveries(&self, batch: &[DeliveryFinish]) -> Result<Vec<bool>, StoreError>;
    /// Moves dead deliveries back to pending for a replay; returns their ids.
    async fn replay_dead(&self, ids: &[Uuid], actor: &str) -> Result<Vec<Uuid>, StoreError>;
    /// Puts replayed deliveries whose job could not be queued back to `dead`, with the
    /// reason, so a later replay finds them again.
    async fn unreplay(&self, ids: &[Uuid], reason: &str) -> Result<(), StoreError>;
}

/// A delivery's state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt (or replayed).
    Pending,
    /// Failed; the next attempt is scheduled.
    Retrying,
    /// The receiver accepted it.
    Delivered,
    /// Given up (non-retryable, retries exhausted, endpoint disabled); can be replayed.
    Dead,
    /// Stopped without an attempt (consent withdrawn).
    Cancelled,
}

impl DeliveryStatus {
    /// Every status, in the order of a delivery's life.
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Retrying,
        DeliveryStatus::Delivered,
        DeliveryStatus::Dead,
        DeliveryStatus::Cancelled,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }
}

/// A delivery status name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a delivery status: pending, retrying, delivered, dead or cancelled")]
pub struct UnknownDeliveryStatus(pub String);

impl std::str::FromStr for DeliveryStatus {
    type Err = UnknownDeliveryStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownDeliveryStatus(s.to_owned()))
    }
}

/// A row of the delivery log.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeliverySummary {
    /// Delivery id.
    pub id: Uuid,
    /// Event id.
    pub event_id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Recipient.
    pub participant_id: String,
    /// Endpoint.
    pub endpoint_name: String,
    /// Per-participant sequence.
    pub sequence: i64,
    /// State (one of the [`DeliveryStatus`] names; the database's CHECK constraint
    /// holds it to them).
    #[schema(value_type = DeliveryStatus)]
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Next attempt, when retrying.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Last error.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Filter for the delivery log.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct DeliveryFilter {
    /// Only this event.
    pub event_id: Option<Uuid>,
    /// Only this participant.
    pub participant_id: Option<String>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<i64>,
}

/// Registry, API-key and read-side persistence for operators.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Applies a validated document in one transaction and audits it.
    async fn apply_registry(
        &self,
        doc: &RegistryDocument,
        actor: &str,
    ) -> Result<Vec<Change>, StoreError>;
    /// The registry as a document (secrets masked).
    async fn export_registry(&self) -> Result<RegistryDocument, StoreError>;
    /// The delivery log.
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliverySummary>, StoreError>;
    /// Stores a new API key's hash; returns its id.
    async fn create_api_key(&self, name: &str, key_sha256: &[u8]) -> Result<String, StoreError>;
    /// The key id for a key hash, if the key exists and is not revoked.
    async fn find_api_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError>;
    /// Appends audit entries (admin actions, reads of patient data).
    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError>;
    /// Reads audit rows with `seq` greater than `after`, in order, at most `limit`.
    async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError>;
    /// The chain head (last seq and hash).
    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError>;
    /// Chains every audit entry still pending (see the `audit_pending` migration);
    /// returns how many.
    async fn seal_audit(&self) -> Result<usize, StoreError>;
    /// An event by id.
    async fn event(
        &self,
        id: Uuid,
    ) -> Result<Option<(Option<String>, serde_json::Value)>, StoreError>;
}

/// Every store trait; what `renkei up` wires together.
pub trait Store: IngestStore + RouteStore + DeliveryStore + AdminStore {}
impl<T: IngestStore + RouteStore + DeliveryStore + AdminStore> Store for T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(patient: &str) -> String {
        serde_json::json!({
            "id": Uuid::now_v7(),
            "type": "inpatient.admitted",
            "data": {
                "patient": { "identifiers": [{ "system": "urn:test", "value": patient }] },
                "origin": { "message_id": "K1", "raw_sha256": format!("sha-of-{patient}-{}", Uuid::now_v7()) }
            }
        })
        .to_string()
    }

    fn record(raw_sha256: &str, event_json: String) -> IngestRecord {
        IngestRecord {
            source_key: "hl7v2|HIS|1319999999".into(),
            message_id: "K1".into(),
            event_id: Uuid::now_v7(),
            event_type: EventType::InpatientAdmitted,
            raw_sha256: raw_sha256.into(),
            event_json,
            raw: bytes::Bytes::new(),
        }
    }

    fn first(published: bool, event_json: String) -> SeenIngest {
        SeenIngest {
            event_id: Uuid::now_v7(),
            raw_sha256: "aaa".into(),
            published,
            event_json,
            event_type: "inpatient.admitted".into(),
        }
    }

    #[test]
    fn other_content_under_an_id_answered_aa_is_a_reused_id() {
        let seen = first(true, event("patient-1"));
        let claim = seen_claim(&seen, &record("bbb", event("patient-2")));
        assert_eq!(
            claim,
            IngestClaim::Reused {
                event_id: seen.event_id
            }
        );
        // Even the same content with other bytes: the first was answered AA.
        let claim = seen_claim(&seen, &record("bbb", event("patient-1")));
        assert!(matches!(claim, IngestClaim::Reused { .. }), "{claim:?}");
    }

    #[test]
    fn other_content_under_an_id_not_yet_answered_is_a_reused_id_too() {
        // The first may be answered AA any moment: taking the second for its resend
        // would acknowledge content that is never published.
        let seen = first(false, event("patient-1"));
        let claim = seen_claim(&seen, &record("bbb", event("patient-2")));
        assert!(matches!(claim, IngestClaim::Reused { .. }), "{claim:?}");
    }

    #[test]
    fn a_resend_is_acknowledged_and_published_again_when_never_answered_aa() {
        let seen = first(false, event("patient-1"));
        // The same bytes, or a re-stamped copy that says the same thing.
        for (sha, json) in [("aaa", event("patient-2")), ("ccc", event("patient-1"))] {
            let claim = seen_claim(&seen, &record(sha, json));
            assert!(
                matches!(&claim, IngestClaim::NotYetPublished { event_id, .. } if *event_id == seen.event_id),
                "{claim:?}"
            );
        }
        let published = first(true, event("patient-1"));
        assert_eq!(
            seen_claim(&published, &record("aaa", event("patient-1"))),
            IngestClaim::AlreadyPublished {
                event_id: published.event_id
            }
        );
    }

    #[test]
    fn unreadable_stored_content_is_never_taken_for_a_resend() {
        let seen = first(false, "not json".into());
        let claim = seen_claim(&seen, &record("bbb", event("patient-1")));
        assert!(matches!(claim, IngestClaim::Reused { .. }), "{claim:?}");
    }
}
