//! Sample events for tests: an adapter's tests, a receiver's tests and the hub's own
//! (the JSON Schema and protobuf round-trip tests use these). Every value is invented.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::json;

use crate::{
    Address, CanonicalEvent, Document, DocumentSection, Encounter, EncounterClass, EventData,
    EventType, FacilityRole, Identifier, Insurance, Location, LtcInsurance, MedicalInsurance,
    Origin, Patient, PersonName, Practitioner, RelatedFacility, RelatedPerson, Sex, SourceFormat,
    facility_source, local_patient_id_system,
};

/// The facility code the samples come from.
pub const FACILITY: &str = "1319999999";

fn at(rfc3339: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap_or_default()
}

/// Only what every event must carry: a `patient.updated` with one identifier.
pub fn minimal_event() -> CanonicalEvent {
    CanonicalEvent::new(
        facility_source(FACILITY),
        EventType::PatientUpdated,
        at("2025-05-01T08:55:00+09:00"),
        EventData {
            patient: Patient {
                identifiers: vec![Identifier {
                    system: local_patient_id_system(FACILITY),
                    value: "0000482915".to_owned(),
                }],
                ..Patient::default()
            },
            encounter: None,
            document: None,
            cancels: None,
            care: None,
            facilities: Vec::new(),
            replaces: None,
            origin: Origin {
                format: SourceFormat::Hl7v2,
                sending_system: None,
                facility: None,
                message_id: "20250501000801".to_owned(),
                raw_sha256: Origin::sha256_hex(b"MSH|^~\\&|"),
                assumed_charset: None,
            },
        },
    )
}

/// Every member of the model set, with timestamps in three different offsets,
/// nanoseconds, and JSON `null` inside free-form content.
pub fn full_event() -> CanonicalEvent {
    let mut event = CanonicalEvent::new(
        facility_source(FACILITY),
        EventType::InpatientCancelled,
        at("2025-04-10T11:29:00.123456789+09:00"),
        EventData {
            patient: Patient {
                identifiers: vec![
                    Identifier {
                        system: local_patient_id_system(FACILITY),
                        value: "0000482915".to_owned(),
                    },
                    Identifier {
                        system: "urn:renkei:patient".to_owned(),
                        value: "P-0001".to_owned(),
                    },
                ],
                name: Some(PersonName {
                    kanji: Some("架空 花子".to_owned()),
                    kana: Some("カクウ ハナコ".to_owned()),
                }),
                birth_date: Some(NaiveDate::from_ymd_opt(1938, 3, 15).unwrap_or_default()),
                sex: Some(Sex::Female),
                insurance: Some(Insurance {
                    medical: Some(MedicalInsurance {
                        insurer_number: Some("39131234".to_owned()),
                        symbol: Some("１２３".to_owned()),
                        number: Some("4567".to_owned()),
                    }),
                    ltc: Some(LtcInsurance {
                        insurer_number: Some("131999".to_owned()),
                        insured_number: Some("0001234567".to_owned()),
                        care_level: Some("要介護2".to_owned()),
                    }),
                }),
                address: Some(Address {
                    postal_code: Some("100-0001".to_owned()),
                    text: Some("東京都千代田区架空町1-2-3".to_owned()),
                }),
                phone: Some("03-0000-0000".to_owned()),
                key_person: Some(RelatedPerson {
                    name: Some("架空 花江".to_owned()),
                    relationship: Some("長女".to_owned()),
                    phone: Some("090-0000-0000".to_owned()),
                }),
            },
            encounter: Some(Encounter {
                class: Some(EncounterClass::Emergency),
                visit_number: Some("V-2025-0042".to_owned()),
                admitted_at: Some(at("2025-04-10T09:00:00+09:00")),
                // A different offset from the event's: each timestamp keeps its own.
                discharged_at: Some(at("2025-04-24T01:00:00Z")),
                location: Some(Location {
                    ward: Some("05".to_owned()),
                    room: Some("512".to_owned()),
                    bed: Some("2".to_owned()),
                }),
                department: Some("01".to_owned()),
                attending: Some(Practitioner {
                    id: Some("D001".to_owned()),
                    name: Some("医師 一郎".to_owned()),
                }),
                discharge_disposition: Some("01".to_owned()),
                discharge_destination: Some("自宅".to_owned()),
            }),
            document: Some(Document {
                code: Some("18842-5".to_owned()),
                title: Some("退院時サマリー".to_owned()),
                id: Some("1319999999^2025^00000042".to_owned()),
                created_at: Some(at("2025-04-24T10:00:00-03:30")),
                content: Some(json!({"resourceType": "Bundle", "entry": [{"n": 1}]})),
                sections: vec![DocumentSection {
                    code: "11348-0".to_owned(),
                    title: Some("既往歴".to_owned()),
                    items: vec!["高血圧症".to_owned(), "2型糖尿病".to_owned()],
                }],
            }),
            cancels: Some(EventType::InpatientAdmitted),
            care: Some(
                json!({"care_manager": "居宅 太郎", "services": ["訪問介護", 2, true, null]}),
            ),
            facilities: vec![RelatedFacility {
                role: FacilityRole::Recipient,
                code: "1379999999".to_owned(),
                name: Some("架空居宅介護支援事業所".to_owned()),
            }],
            replaces: Some(uuid::Uuid::from_u128(
                0x0196_1b2a_0000_7000_8000_0000_0000_0001,
            )),
            origin: Origin {
                format: SourceFormat::Grpc,
                sending_system: Some("HIS".to_owned()),
                facility: Some(FACILITY.to_owned()),
                message_id: "20250410000199".to_owned(),
                raw_sha256: Origin::sha256_hex(b"MSH|^~\\&|HIS|"),
                assumed_charset: Some("ISO-2022-JP".to_owned()),
            },
        },
    );
    event.subject = Some("hub-patient-0001".to_owned());
    event
}
