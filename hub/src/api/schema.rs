//! OpenAPI schemas for the registry's types, which live in `registry/` and know nothing
//! of the API. Each mirrors its registry type field for field, with the same serde
//! attributes (so required fields, defaults and `additionalProperties: false` come out
//! as the real type reads them); a test serializes fully populated registry values and
//! validates them against these schemas, so a field added, renamed or removed on either
//! side fails it.

#![allow(dead_code)] // Fields are read by the schema derive only.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

/// A registry document (the same shape as the TOML file of `renkei admin apply -f`, see
/// docs/registry.md). Every section is optional. Applying is idempotent: listed
/// resources are created or updated, others are left as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RegistryDocument)]
pub struct RegistryDocumentSchema {
    /// Facilities.
    #[serde(default)]
    facilities: Vec<FacilitySchema>,
    /// Participants.
    #[serde(default)]
    participants: Vec<ParticipantSchema>,
    /// Webhook endpoints. Secrets are `whsec_` values (`env:` references are refused
    /// over the API); an export shows them masked.
    #[serde(default)]
    endpoints: Vec<EndpointSchema>,
    /// Subscriptions.
    #[serde(default)]
    subscriptions: Vec<SubscriptionSchema>,
    /// Patients and their identifiers.
    #[serde(default)]
    patients: Vec<PatientSchema>,
    /// Care relationships.
    #[serde(default)]
    care_relationships: Vec<CareRelationshipSchema>,
    /// Consents.
    #[serde(default)]
    consents: Vec<ConsentSchema>,
}

/// A participating facility.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Facility)]
struct FacilitySchema {
    /// 10-digit medical institution / care provider code.
    #[schema(pattern = "^[0-9]{10}$")]
    code: String,
    /// Display name.
    name: String,
    /// `hospital`, `clinic`, `visiting_nursing`, `care_management`, `care_facility`,
    /// `pharmacy` or `other`.
    kind: String,
}

/// A receiving party at a facility.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Participant)]
struct ParticipantSchema {
    /// Stable id chosen by the region, e.g. `kyotaku-sakura`.
    id: String,
    /// The facility's 10-digit code.
    #[schema(pattern = "^[0-9]{10}$")]
    facility: String,
    /// Display name.
    name: String,
}

/// A webhook endpoint of a participant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Endpoint)]
struct EndpointSchema {
    /// Owner.
    participant: String,
    /// Name, unique per participant.
    name: String,
    /// `https://…` or `http://…`.
    url: String,
    /// Signing secrets `whsec_<base64>`; all of them sign each request (rotation).
    secrets: Vec<String>,
    /// Disabled endpoints receive nothing (their deliveries go dead, to replay later).
    #[serde(default)]
    #[schema(default = true)]
    enabled: bool,
}

/// Which events a participant wants, at which endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Subscription)]
struct SubscriptionSchema {
    /// Owner.
    participant: String,
    /// Name, unique per participant.
    name: String,
    /// Endpoint name.
    endpoint: String,
    /// Canonical event types, e.g. `inpatient.admitted`.
    event_types: Vec<String>,
    /// Only events from these facilities (empty: any).
    #[serde(default)]
    source_facilities: Vec<String>,
}

/// A patient with the identifiers each facility uses.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Patient)]
struct PatientSchema {
    /// Hub patient id (the canonical event's `subject`).
    id: String,
    /// Identifiers, each unique within its system.
    identifiers: Vec<PatientIdentifierSchema>,
}

/// A patient identifier: exactly one of `system` or `facility` (whose local id system
/// is implied).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PatientIdentifier)]
struct PatientIdentifierSchema {
    /// Identifier system URI.
    #[serde(default)]
    system: Option<String>,
    /// The facility whose local patient id this is.
    #[serde(default)]
    facility: Option<String>,
    /// The id.
    value: String,
}

/// A participant looks after a patient.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CareRelationship)]
struct CareRelationshipSchema {
    /// Patient.
    patient: String,
    /// Participant.
    participant: String,
    /// e.g. `care_manager`, `visiting_nurse`, `home_doctor`.
    role: String,
    /// First day.
    valid_from: NaiveDate,
    /// Last day, if it ends.
    #[serde(default)]
    valid_until: Option<NaiveDate>,
}

/// How a consent covers recipients.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ConsentScope)]
enum ConsentScopeSchema {
    /// Every participating facility except those listed.
    Blanket,
    /// Only the facilities listed.
    Facilities,
}

/// How the consent was obtained.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ConsentBasis)]
enum ConsentBasisSchema {
    /// Signed consent form.
    Written,
    /// Oral consent, recorded in the facility's records.
    OralRecorded,
}

/// A patient's consent to share their information with participating facilities.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Consent)]
struct ConsentSchema {
    /// Region-assigned id.
    id: String,
    /// Patient.
    patient: String,
    /// Blanket (with exclusions) or per-facility.
    scope: ConsentScopeSchema,
    /// Exclusions for a blanket consent; the covered facilities otherwise.
    #[serde(default)]
    facilities: Vec<String>,
    /// How it was obtained.
    basis: ConsentBasisSchema,
    /// Start of validity (with its offset).
    valid_from: DateTime<Utc>,
    /// End of validity, if any.
    #[serde(default)]
    valid_until: Option<DateTime<Utc>>,
    /// When the patient withdrew it.
    #[serde(default)]
    withdrawn_at: Option<DateTime<Utc>>,
}

/// What applying did to one resource.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Change)]
pub struct ChangeSchema {
    /// The kind of resource.
    kind: ResourceKindSchema,
    /// The resource's key, e.g. `sakura-care/main`.
    key: String,
    /// What applying did.
    action: ChangeActionSchema,
}

/// A kind of registry resource.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ResourceKind)]
enum ResourceKindSchema {
    Facility,
    Participant,
    Endpoint,
    Subscription,
    Patient,
    CareRelationship,
    Consent,
}

/// The effect of applying one resource.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ChangeAction)]
enum ChangeActionSchema {
    /// It did not exist.
    Created,
    /// It existed and differed.
    Updated,
    /// It already matched.
    Unchanged,
}
