//! The canonical event v1: a CloudEvents 1.0 structured JSON document.
//!
//! Every adapter produces exactly this shape; the JSON Schema in
//! `adapters/sdk/schema/event-v1.schema.json` describes it and is tested against every
//! event the normalisers produce.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The CloudEvents version every canonical event declares.
pub const SPEC_VERSION: &str = "1.0";
/// The `dataschema` of canonical event v1.
pub const DATA_SCHEMA_V1: &str = "urn:renkei:schema:event:v1";
/// The `datacontenttype` of canonical events.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// Prefix of a facility's `source` URN; the 10-digit facility code follows.
pub const FACILITY_URN_PREFIX: &str = "urn:renkei:facility:";
/// Prefix of the identifier system for a facility-local patient id (as JP Core does);
/// the 10-digit facility code follows.
pub const LOCAL_PATIENT_ID_SYSTEM_PREFIX: &str = "urn:oid:1.2.392.100495.20.3.51.1";

/// One canonical event (CloudEvents 1.0, structured mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalEvent {
    /// Always `"1.0"`.
    pub specversion: String,
    /// UUIDv7, assigned once at ingest and stable across every retry and redelivery.
    pub id: Uuid,
    /// `urn:renkei:facility:<10-digit code>` or the adapter's URN.
    pub source: String,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened, with its UTC offset (Japan time when the source gave none).
    pub time: DateTime<FixedOffset>,
    /// The hub patient id, when the router has resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// Always [`DATA_SCHEMA_V1`] for this version.
    pub dataschema: String,
    /// The clinical and care content.
    pub data: EventData,
}

impl CanonicalEvent {
    /// Builds an event with a fresh UUIDv7 id and the fixed CloudEvents attributes.
    pub fn new(
        source: String,
        event_type: EventType,
        time: DateTime<FixedOffset>,
        data: EventData,
    ) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7(),
            source,
            event_type,
            time,
            subject: None,
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            dataschema: DATA_SCHEMA_V1.to_owned(),
            data,
        }
    }

    /// The 10-digit facility code when `source` is a facility URN.
    pub fn source_facility(&self) -> Option<&str> {
        self.source.strip_prefix(FACILITY_URN_PREFIX)
    }
}

/// The `source` URN of a facility.
pub fn facility_source(facility_code: &str) -> String {
    format!("{FACILITY_URN_PREFIX}{facility_code}")
}

/// Japan standard time, +09:00 (Japan keeps no daylight saving): the offset of a
/// source time that names none, and of a calendar date's midnight.
pub fn japan_offset() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| unreachable!("+09:00 is a valid offset"))
}

/// The identifier system of a patient id that is only unique within `facility_code`.
pub fn local_patient_id_system(facility_code: &str) -> String {
    format!("{LOCAL_PATIENT_ID_SYSTEM_PREFIX}{facility_code}")
}

/// Event types of canonical event v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// ADT^A01; FHIR A01 / Encounter in-progress; care CSV admission.
    #[serde(rename = "inpatient.admitted")]
    InpatientAdmitted,
    /// ADT^A02.
    #[serde(rename = "inpatient.transferred")]
    InpatientTransferred,
    /// ADT^A03; FHIR Encounter finished / discharge summary.
    #[serde(rename = "inpatient.discharged")]
    InpatientDischarged,
    /// ADT^A11/A12/A13, naming the event it cancels in `data.cancels`.
    #[serde(rename = "inpatient.cancelled")]
    InpatientCancelled,
    /// ADT^A08 (A31).
    #[serde(rename = "patient.updated")]
    PatientUpdated,
    /// ADT^A04.
    #[serde(rename = "outpatient.registered")]
    OutpatientRegistered,
    /// JP-CLINS discharge summary (LOINC 18842-5).
    #[serde(rename = "document.discharge_summary")]
    DocumentDischargeSummary,
    /// JP-CLINS referral (LOINC 57133-1).
    #[serde(rename = "document.referral")]
    DocumentReferral,
    /// Nursing summary (hub-defined format).
    #[serde(rename = "document.nursing_summary")]
    DocumentNursingSummary,
    /// 入院時情報提供書 from a care-manager office.
    #[serde(rename = "care.admission_info")]
    CareAdmissionInfo,
    /// 退院・退所情報記録書.
    #[serde(rename = "care.discharge_info")]
    CareDischargeInfo,
    /// ケアプランデータ連携 CSV.
    #[serde(rename = "care.plan")]
    CarePlan,
}

impl EventType {
    /// Every event type, in declaration order.
    pub const ALL: [EventType; 12] = [
        EventType::InpatientAdmitted,
        EventType::InpatientTransferred,
        EventType::InpatientDischarged,
        EventType::InpatientCancelled,
        EventType::PatientUpdated,
        EventType::OutpatientRegistered,
        EventType::DocumentDischargeSummary,
        EventType::DocumentReferral,
        EventType::DocumentNursingSummary,
        EventType::CareAdmissionInfo,
        EventType::CareDischargeInfo,
        EventType::CarePlan,
    ];

    /// The wire name, e.g. `inpatient.admitted` (also the bus routing key).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::InpatientAdmitted => "inpatient.admitted",
            EventType::InpatientTransferred => "inpatient.transferred",
            EventType::InpatientDischarged => "inpatient.discharged",
            EventType::InpatientCancelled => "inpatient.cancelled",
            EventType::PatientUpdated => "patient.updated",
            EventType::OutpatientRegistered => "outpatient.registered",
            EventType::DocumentDischargeSummary => "document.discharge_summary",
            EventType::DocumentReferral => "document.referral",
            EventType::DocumentNursingSummary => "document.nursing_summary",
            EventType::CareAdmissionInfo => "care.admission_info",
            EventType::CareDischargeInfo => "care.discharge_info",
            EventType::CarePlan => "care.plan",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// A string that names no event type of canonical event v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a canonical event type (expected one of inpatient.admitted, inpatient.transferred, inpatient.discharged, inpatient.cancelled, patient.updated, outpatient.registered, document.*, care.*)"
)]
pub struct UnknownEventType(pub String);

/// The `data` member of a canonical event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// Who the event is about.
    pub patient: Patient,
    /// The hospital stay or visit, when the event concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Encounter>,
    /// The clinical document, for `document.*` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<Document>,
    /// For `inpatient.cancelled`: the type of the event being cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancels: Option<EventType>,
    /// For `care.*` events: the care content as the source sent it, mapped to named fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub care: Option<serde_json::Value>,
    /// Other facilities the event names, each with its part: the hospital an admission
    /// information sheet is addressed to, the clinic a referral goes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facilities: Vec<RelatedFacility>,
    /// The id of an earlier event this one replaces (a corrected document resent under
    /// the same document identifier). Set by the hub at ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Uuid>,
    /// Where the event came from.
    pub origin: Origin,
}

/// The patient, as the source system knows them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Patient {
    /// Identifiers; a facility-local id has the system [`local_patient_id_system`].
    pub identifiers: Vec<Identifier>,
    /// Name in kanji and kana.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<PersonName>,
    /// Date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<NaiveDate>,
    /// Administrative sex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Medical and long-term-care insurance, where the source has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurance: Option<Insurance>,
    /// Home address (PID-11, Patient.address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Phone number (PID-13, Patient.telecom), as written by the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The key person or next of kin (NK1; キーパーソン in care forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_person: Option<RelatedPerson>,
}

/// A postal address in Japan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Address {
    /// 郵便番号, e.g. `100-0001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// The address as one line, prefecture first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A person close to the patient: key person (キーパーソン), next of kin, family.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RelatedPerson {
    /// Name, "family given".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Relationship to the patient as the source words it (e.g. `長女`, `妻`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// Another facility an event names, with its part in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedFacility {
    /// What the facility is to this event.
    pub role: FacilityRole,
    /// Its 10-digit code (医療機関コード or 介護保険事業所番号).
    pub code: String,
    /// Its name, when the source gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The part a [`RelatedFacility`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FacilityRole {
    /// The hospital or facility of the stay the event is about.
    Hospital,
    /// The care-manager office (居宅介護支援事業所) of the patient.
    CareOffice,
    /// Where a referral or a care plan is addressed (紹介先, 提供先).
    Recipient,
}

/// An identifier: a value that is unique within its system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identifier {
    /// The namespace (URI) of the value.
    pub system: String,
    /// The identifier itself.
    pub value: String,
}

/// A Japanese personal name: kanji (漢字) and kana (カナ) forms, each "family given".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersonName {
    /// e.g. `架空 花子`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kanji: Option<String>,
    /// e.g. `カクウ ハナコ`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kana: Option<String>,
}

/// Administrative sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other.
    Other,
    /// Unknown.
    Unknown,
}

/// Insurance coverage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Insurance {
    /// Medical insurance (医療保険).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medical: Option<MedicalInsurance>,
    /// Long-term-care insurance (介護保険).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ltc: Option<LtcInsurance>,
}

/// Medical insurance (医療保険): insurer number, card symbol and number.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MedicalInsurance {
    /// 保険者番号.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurer_number: Option<String>,
    /// 記号.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// 番号.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
}

/// Long-term-care insurance (介護保険).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LtcInsurance {
    /// 保険者番号 (6 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurer_number: Option<String>,
    /// 被保険者番号 (10 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insured_number: Option<String>,
    /// 要介護度, e.g. `要介護2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub care_level: Option<String>,
}

/// A hospital stay or visit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Encounter {
    /// Inpatient, outpatient, emergency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<EncounterClass>,
    /// The source's visit or encounter number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number: Option<String>,
    /// Admission time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<DateTime<FixedOffset>>,
    /// Discharge time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharged_at: Option<DateTime<FixedOffset>>,
    /// Current (or, for transfers, new) location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Department (診療科) code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Attending doctor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attending: Option<Practitioner>,
    /// Discharge disposition code (PV1-36).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_disposition: Option<String>,
    /// Where the patient went on discharge (PV1-37), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_destination: Option<String>,
}

/// Encounter class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncounterClass {
    /// 入院.
    Inpatient,
    /// 外来.
    Outpatient,
    /// 救急.
    Emergency,
}

/// Ward, room and bed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Location {
    /// 病棟.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// 病室.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// 病床.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<String>,
}

/// A doctor or other practitioner.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Practitioner {
    /// The source's practitioner id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (kanji when the source has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A clinical document (discharge summary, referral, nursing summary).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Document {
    /// LOINC code of the document kind, e.g. `18842-5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The document's own identifier at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When the document was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<FixedOffset>>,
    /// The document as the source sent it (e.g. the FHIR Bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
    /// The document's sections as plain text, in the source's order, for a receiver that
    /// shows them without reading `content`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<DocumentSection>,
}

/// One section of a document, reduced to text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DocumentSection {
    /// The section code (e.g. LOINC `11348-0`, JP-CLINS `950`, or the hub's own
    /// `urn:renkei:codesystem:nursing-summary-section` code such as `adl`).
    pub code: String,
    /// The section title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its content as text items: the narrative, then one item per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Source format.
    pub format: SourceFormat,
    /// The sending application (e.g. MSH-3), when the source names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_system: Option<String>,
    /// The 10-digit code of the facility that sent it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    /// The source's own message id (MSH-10, FHIR MessageHeader.id, file name…).
    pub message_id: String,
    /// Lower-case hex SHA-256 of the raw bytes as received.
    pub raw_sha256: String,
    /// The character set the bytes were read as when the source did not declare it,
    /// or declared another (MSH-18 missing or wrong, the bytes unambiguous), so a
    /// receiver and the sender's engineer can see what the hub assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assumed_charset: Option<String>,
}

impl Origin {
    /// The lower-case hex SHA-256 of `raw`.
    pub fn sha256_hex(raw: &[u8]) -> String {
        hex::encode(Sha256::digest(raw))
    }
}

/// The kinds of input the hub understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// HL7 v2.x (ER7 pipe-delimited).
    Hl7v2,
    /// FHIR R4 JSON.
    Fhir,
    /// Vendor or standard CSV.
    Csv,
    /// The hub's own JSON forms (care files, nursing summary).
    Json,
    /// HL7 v2 read from SS-MIX2 standardized storage.
    #[serde(rename = "ss-mix2")]
    Ssmix2,
    /// An out-of-process adapter over gRPC.
    Grpc,
}

impl SourceFormat {
    /// Every format, in declaration order.
    pub const ALL: [SourceFormat; 6] = [
        SourceFormat::Hl7v2,
        SourceFormat::Fhir,
        SourceFormat::Csv,
        SourceFormat::Json,
        SourceFormat::Ssmix2,
        SourceFormat::Grpc,
    ];

    /// Where an input of this format carries `origin.message_id`, for errors about it
    /// (`MSH-10`); `None` when it is not one field (a file name, a FHIR Bundle's
    /// identifier or header, whichever the Bundle type uses).
    pub fn message_id_location(self) -> Option<&'static str> {
        match self {
            SourceFormat::Hl7v2 | SourceFormat::Ssmix2 => Some("MSH-10"),
            SourceFormat::Fhir | SourceFormat::Csv | SourceFormat::Json | SourceFormat::Grpc => {
                None
            }
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Hl7v2 => "hl7v2",
            SourceFormat::Fhir => "fhir",
            SourceFormat::Csv => "csv",
            SourceFormat::Json => "json",
            SourceFormat::Ssmix2 => "ss-mix2",
            SourceFormat::Grpc => "grpc",
        }
    }
}
