//! Persistence behind small traits, one per stage of the flow, so the router, delivery
//! and API depend on what they need. Two backends implement every trait: [`pg::PgStore`]
//! (PostgreSQL, for regions that run several hub processes) and [`sqlite::SqliteStore`]
//! (one file, the embedded default). [`open`] builds the one the configuration names.
//!
//! The rules whose outcome the store records — a resent against a reused message id,
//! first route wins, per-participant sequence numbers, a delivery finished only once —
//! live in [`rules`] as plain functions shared by both backends, which hold only the
//! storage. One contract test suite (`hub/tests/it/store.rs`) runs on each backend.

pub mod batch;
pub mod pg;
mod rows;
pub mod rules;
pub mod sqlite;

pub use rules::seen_claim;

use std::sync::Arc;

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

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        store_error(e)
    }
}

/// Maps a driver error to what it means for the caller, the same way for every
/// backend: a broken constraint is a conflict with what is stored, data the database
/// cannot hold is refused, a value that does not decode is corruption, and anything
/// else (connection lost, pool exhausted, database busy) is "try again later".
pub fn store_error(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match &e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::CheckViolation => StoreError::Conflict(format!(
                "{} ({})",
                db.message(),
                db.constraint().unwrap_or("constraint")
            )),
            ErrorKind::NotNullViolation => StoreError::Rejected(db.message().to_owned()),
            _ if is_data_fault(db.as_ref()) => StoreError::Rejected(format!(
                "{} (code {})",
                db.message(),
                db.code().as_deref().unwrap_or("unknown")
            )),
            _ => StoreError::Unavailable(e.to_string()),
        },
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Whether the database refused the data itself (each backend says how it tells).
fn is_data_fault(db: &dyn sqlx::error::DatabaseError) -> bool {
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        pg::is_data_fault(db)
    } else {
        sqlite::is_data_fault(db)
    }
}

/// Stored data that does not read back.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A stored consent scope.
pub(crate) fn consent_scope(stored: &str) -> Result<crate::registry::ConsentScope, StoreError> {
    use crate::registry::ConsentScope;
    [ConsentScope::Blanket, ConsentScope::Facilities]
        .into_iter()
        .find(|scope| scope.as_str() == stored)
        .ok_or_else(|| corrupt("consents.scope", stored))
}

/// A stored consent basis.
pub(crate) fn consent_basis(stored: &str) -> Result<crate::registry::ConsentBasis, StoreError> {
    use crate::registry::ConsentBasis;
    [ConsentBasis::Written, ConsentBasis::OralRecorded]
        .into_iter()
        .find(|basis| basis.as_str() == stored)
        .ok_or_else(|| corrupt("consents.basis", stored))
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

/// The audit row of a kept rejection.
pub(crate) fn rejection_audit(rejection: &Rejection<'_>, id: Uuid, raw_sha256: &str) -> AuditEntry {
    AuditEntry::new(
        &format!("adapter:{}", rejection.adapter),
        "ingest",
        "rejected",
    )
    .detail(serde_json::json!({
        "rejected_input": id,
        "peer": rejection.peer,
        "location": rejection.location,
        "reason": rejection.reason,
        "raw_sha256": raw_sha256,
    }))
}

/// The audit row of an applied registry document, when anything changed.
pub(crate) fn registry_audit(actor: &str, changes: &[Change]) -> Option<AuditEntry> {
    let changed: Vec<String> = changes
        .iter()
        .filter(|c| c.action != crate::registry::document::ChangeAction::Unchanged)
        .map(|c| format!("{c}"))
        .collect();
    (!changed.is_empty()).then(|| {
        AuditEntry::new(actor, "registry.apply", "applied")
            .detail(serde_json::json!({ "changes": changed }))
    })
}

/// The audit row of a new API key.
pub(crate) fn api_key_audit(id: &str, name: &str) -> AuditEntry {
    AuditEntry::new("cli", "api_key.create", "created")
        .detail(serde_json::json!({"key": id, "name": name}))
}

/// The audit row of a new source key.
pub(crate) fn source_key_audit(id: &str, name: &str, facility: &str) -> AuditEntry {
    AuditEntry::new("cli", "source_key.create", "created")
        .detail(serde_json::json!({"key": id, "name": name, "facility": facility}))
}

/// The hash under which an API key (admin or source key) is stored.
pub fn api_key_hash(key: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).to_vec()
}

/// A new random API key, `rk_<43 base64url characters>`.
pub fn new_api_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "rk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new API key's id.
pub(crate) fn new_api_key_id() -> String {
    format!("key_{}", Uuid::now_v7().simple())
}

/// The audit row of a replayed delivery.
pub(crate) fn replay_audit(
    actor: &str,
    delivery: Uuid,
    event: Uuid,
    participant: &str,
    patient: Option<&str>,
) -> AuditEntry {
    AuditEntry::new(actor, "delivery.replay", "requeued")
        .event(event)
        .participant(participant)
        .patient(patient)
        .detail(serde_json::json!({ "delivery": delivery }))
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
    /// What the source `source` saved under `key`, if anything.
    async fn load_source_state(
        &self,
        source: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Saves a source's value under `key`, replacing the one before.
    async fn save_source_state(
        &self,
        source: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError>;
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
    /// For several events at once: the patient each is about, that patient's
    /// candidates and consents; one answer per question, in order.
    async fn routing_facts_many(
        &self,
        questions: &[FactsQuestion],
    ) -> Result<Vec<RoutingFacts>, StoreError>;
    /// Stores each event, its deliveries and one audit row per decision, in one
    /// transaction. Only the first request for an event id routes it
    /// ([`rules::first_routes`]); a later one (a redelivered message) changes nothing
    /// and gets the event's unfinished deliveries. Per-participant sequence numbers
    /// follow the order of `batch` ([`rules::number_deliveries`]). One result per
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
    /// Loads deliveries with their event, endpoint and the patient's current consents,
    /// in one read; one answer per id, in order (`None` for an unknown id).
    async fn load_deliveries(&self, ids: &[Uuid]) -> Result<Vec<Option<DeliveryJob>>, StoreError>;
    /// Records each delivery's attempt (if any), its new state and its audit row, in
    /// one transaction; one answer per request. `false` when another copy of the
    /// delivery's job finished first ([`rules::may_finish`], [`rules::first_finishes`]):
    /// nothing is recorded for it, and the caller must not schedule anything for it.
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

/// Filter for refused inputs.
#[derive(Debug, Clone, Default)]
pub struct RejectedFilter {
    /// Only those of this source (its name, e.g. `mllp`).
    pub source: Option<String>,
    /// Only those received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only those replayed (`true`) or not yet replayed (`false`).
    pub replayed: Option<bool>,
    /// At most this many (default 100, max 1000), newest first.
    pub limit: Option<i64>,
}

/// A refused input, without its bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RejectedSummary {
    /// Its id (also in the log line and the audit row of the refusal).
    pub id: Uuid,
    /// The source that received it (`adapter` in the audit log).
    pub source: String,
    /// The sender as the source knows it (address, file name).
    pub peer: String,
    /// When it was refused.
    pub received_at: DateTime<Utc>,
    /// Where in the input the problem is (`PID-3`, `row 2, column 生年月日`), if known.
    pub location: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// SHA-256 of the bytes, lower-case hex.
    pub raw_sha256: String,
    /// Size of the bytes kept.
    pub raw_bytes: i64,
    /// When it was replayed, if it was.
    pub replayed_at: Option<DateTime<Utc>>,
    /// The event the replay became.
    pub replayed_event: Option<Uuid>,
}

/// A refused input with its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedInput {
    /// Everything but the bytes.
    pub summary: RejectedSummary,
    /// The bytes exactly as received.
    pub raw: Vec<u8>,
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
    /// Refused inputs, newest first.
    async fn list_rejected(
        &self,
        filter: &RejectedFilter,
    ) -> Result<Vec<RejectedSummary>, StoreError>;
    /// One refused input with its bytes.
    async fn rejected_input(&self, id: Uuid) -> Result<Option<RejectedInput>, StoreError>;
    /// Records that a refused input was replayed as `event` and audits it; `false` (and
    /// nothing recorded) when it was replayed before.
    async fn mark_rejected_replayed(
        &self,
        id: Uuid,
        event: Uuid,
        actor: &str,
    ) -> Result<bool, StoreError>;
    /// Stores a new API key's hash; returns its id.
    async fn create_api_key(&self, name: &str, key_sha256: &[u8]) -> Result<String, StoreError>;
    /// Stores a new source key's hash: it may publish as `facility` only. Returns its id.
    async fn create_source_key(
        &self,
        name: &str,
        facility: &str,
        key_sha256: &[u8],
    ) -> Result<String, StoreError>;
    /// The facility a source key publishes as, if the key exists and is not revoked.
    async fn find_source_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError>;
    /// The key id for an admin key hash, if the key exists and is not revoked (a source
    /// key is not an admin key).
    async fn find_api_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError>;
    /// Appends audit entries (admin actions, reads of patient data).
    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError>;
    /// Reads audit rows with `seq` greater than `after`, in order, at most `limit`.
    async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError>;
    /// The chain head (last seq and hash).
    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError>;
    /// Chains up to `max` pending audit entries, oldest first (see the `audit_pending`
    /// migration); returns how many. Sealers in several processes take turns.
    async fn seal_audit(&self, max: i64) -> Result<usize, StoreError>;
    /// Closes the store's connections, once nothing writes any more (at shutdown).
    /// SQLite then folds its write-ahead log into the database file.
    async fn close(&self);
    /// An event by id.
    async fn event(
        &self,
        id: Uuid,
    ) -> Result<Option<(Option<String>, serde_json::Value)>, StoreError>;
}

/// Audit entries chained per sealing transaction.
pub const SEAL_BATCH: i64 = 2000;

/// Seals until nothing is pending (entries committed meanwhile included); returns how
/// many were chained.
pub async fn seal_all(store: &(impl AdminStore + ?Sized)) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = store.seal_audit(SEAL_BATCH).await?;
        total += n;
        if n < usize::try_from(SEAL_BATCH).unwrap_or(usize::MAX) {
            return Ok(total);
        }
    }
}

/// The audit entry of a refused input replayed as `event`.
pub(crate) fn rejected_replay_audit(actor: &str, id: Uuid, event: Uuid) -> AuditEntry {
    AuditEntry::new(actor, "rejected.replay", "accepted")
        .event(event)
        .detail(serde_json::json!({ "rejected_input": id }))
}

/// Every store trait; what `renkei up` wires together.
pub trait Store: IngestStore + RouteStore + DeliveryStore + AdminStore {}
impl<T: IngestStore + RouteStore + DeliveryStore + AdminStore> Store for T {}

/// Opens the store `settings.url` names — `postgres://…` or `sqlite://path` — and
/// applies its pending migrations.
pub async fn open(
    settings: &crate::config::DatabaseSettings,
) -> Result<Arc<dyn Store>, StoreError> {
    let url = settings.url.as_str();
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    match scheme {
        "postgres" | "postgresql" => {
            let store =
                pg::PgStore::connect(url, settings.max_connections, settings.acquire_timeout)
                    .await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        "sqlite" => {
            let store =
                sqlite::SqliteStore::open(url, settings.max_connections, settings.acquire_timeout)
                    .await?;
            Ok(Arc::new(store))
        }
        _ => Err(StoreError::Unavailable(format!(
            "database.url: `{scheme}:` is not a database this hub can use; \
             give `sqlite://<file>` (the embedded default) or `postgres://…`"
        ))),
    }
}
