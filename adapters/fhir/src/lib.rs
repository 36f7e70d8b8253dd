//! FHIR R4 for Renkei: message and document Bundles (JSON) normalised to the canonical
//! event v1.
//!
//! - **Message Bundles** (`Bundle.type` `message`, a MessageHeader first): ADT events
//!   whose `MessageHeader.eventCoding` is an HL7 table 0003 trigger (A01 admission, A02
//!   transfer, A03 discharge, A04 outpatient registration, A08/A31 patient update,
//!   A11/A12/A13 cancellations) about the Encounter `MessageHeader.focus` names. See
//!   [`message`] for the mapping and the event times.
//! - **Document Bundles** (`Bundle.type` `document`, a Composition first): the JP-CLINS
//!   discharge summary (LOINC 18842-5) and referral (57133-1), and the hub's own
//!   nursing summary (34745-0), with their sections reduced to text. See [`document`].
//!
//! Names follow JP Core (kanji in the `IDE` representation, kana in `SYL`), facility
//! codes the JP Core medical-institution-number system, patient ids the local-id system
//! `urn:oid:1.2.392.100495.20.3.51.1<facility code>`. Instants keep their instant and
//! are written in Japan time: `2025-05-19T23:40:00Z` becomes
//! `2025-05-20T08:40:00+09:00`, never `2025-05-19T23:40:00+09:00`.
//!
//! Every refusal is a [`NormalizeError`](renkei_sdk::NormalizeError) whose `location`
//! is a FHIRPath into the posted Bundle (`Bundle.type`,
//! `Bundle.entry[1].resource.subject`), or a position in the body when the bytes are not
//! UTF-8 JSON; reasons say what to send instead and never repeat patient data (names,
//! ids, birth dates, reference values). [`classify`] tells an HTTP receiver whether to
//! answer 400 or 422, and [`operation_outcome`] builds the `OperationOutcome` to answer
//! with.
//!
//! ```
//! use renkei_fhir::FhirNormalizer;
//! use renkei_sdk::Normalizer;
//!
//! let raw = r#"{"resourceType": "Bundle", "id": "msg-1", "type": "message",
//!   "timestamp": "2025-04-10T09:30:15+09:00",
//!   "entry": [
//!     {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "MessageHeader",
//!       "eventCoding": {"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": "A01"},
//!       "source": {"endpoint": "urn:renkei:facility:1319999999"},
//!       "focus": [{"reference": "urn:uuid:3"}]}},
//!     {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Patient",
//!       "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11319999999", "value": "0000482915"}]}},
//!     {"fullUrl": "urn:uuid:3", "resource": {"resourceType": "Encounter", "status": "in-progress",
//!       "subject": {"reference": "urn:uuid:2"}, "period": {"start": "2025-04-10T00:00:00Z"}}}
//!   ]}"#;
//! let event = FhirNormalizer::new().normalize(raw.as_bytes()).unwrap();
//! assert_eq!(event.event_type.as_str(), "inpatient.admitted");
//! assert_eq!(event.source, "urn:renkei:facility:1319999999");
//! assert_eq!(event.time.to_rfc3339(), "2025-04-10T09:00:00+09:00");
//! assert_eq!(event.data.origin.message_id, "msg-1");
//! ```

#![warn(missing_docs)]

mod bundle;
pub mod document;
mod encounter;
pub mod file;
mod json;
pub mod message;
mod normalize;
pub mod nursing_json;
pub mod outcome;
pub mod receiver;
mod resources;
mod text;
mod time;

pub use file::FhirFile;
pub use normalize::FhirNormalizer;
pub use nursing_json::{NursingSummaryJsonFile, NursingSummaryJsonNormalizer};
pub use outcome::{FhirErrorKind, classify, operation_outcome};
pub use receiver::FhirReceiver;
pub use resources::{LTC_OFFICE_SYSTEM, MEDICAL_INSTITUTION_SYSTEM, NAME_REPRESENTATION};
