//! Conversions between the SDK's [`renkei_sdk::CanonicalEvent`] and its protobuf twin
//! [`event::v1::CanonicalEvent`](crate::event::v1::CanonicalEvent).
//!
//! SDK → protobuf cannot fail. Protobuf → SDK checks what the protobuf types cannot
//! express: UUIDv7 ids, RFC 3339 timestamps with offset, `YYYY-MM-DD` dates, enums that
//! are set and known, JSON text that parses, required fields that are present. The
//! content rules of the JSON Schema (source URN, facility codes, hash format…) are left
//! to schema validation. A [`ConvertError`] names the offending field by its path, e.g.
//! `data.encounter.admitted_at`.

use chrono::{DateTime, FixedOffset, NaiveDate};
use renkei_sdk as sdk;
use uuid::Uuid;

use crate::event::v1 as pb;

/// Why a protobuf canonical event is not a valid [`renkei_sdk::CanonicalEvent`].
///
/// `field` is the path of the offending field in the protobuf message, with indices for
/// repeated fields, e.g. `data.patient.identifiers[1].value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required field is unset (a message) or empty (a string).
    #[error("`{field}` is required but missing")]
    Missing {
        /// Path of the field.
        field: String,
    },
    /// Not a UUID, or a UUID of another version than 7.
    #[error(
        "`{field}` must be a UUIDv7 (e.g. `01965f3c-8a8e-7cc3-9d4b-5f2a3b1c0d9e`), got `{value}`"
    )]
    InvalidUuid {
        /// Path of the field.
        field: String,
        /// The value received.
        value: String,
    },
    /// Not an RFC 3339 timestamp with an explicit offset.
    #[error(
        "`{field}` must be an RFC 3339 timestamp with offset (e.g. `2025-04-10T09:00:00+09:00`), got `{value}`"
    )]
    InvalidTime {
        /// Path of the field.
        field: String,
        /// The value received.
        value: String,
    },
    /// Not a `YYYY-MM-DD` date.
    #[error("`{field}` must be a date `YYYY-MM-DD`, got `{value}`")]
    InvalidDate {
        /// Path of the field.
        field: String,
        /// The value received.
        value: String,
    },
    /// An enum field set to its `UNSPECIFIED` (0) value.
    #[error(
        "`{field}` is UNSPECIFIED: set a real value (leave an optional field unset to say it is not known)"
    )]
    UnspecifiedEnum {
        /// Path of the field.
        field: String,
    },
    /// An enum number this version of the contract does not define.
    #[error("`{field}` has no enum value {value} in renkei.event.v1")]
    UnknownEnum {
        /// Path of the field.
        field: String,
        /// The number received.
        value: i32,
    },
    /// A JSON-text field that does not parse.
    #[error("`{field}` must be JSON text: {reason}")]
    InvalidJson {
        /// Path of the field.
        field: String,
        /// What the JSON parser said.
        reason: String,
    },
    /// A fixed CloudEvents attribute with another value than canonical event v1's.
    #[error("`{field}` must be `{expected}` (or empty), got `{value}`")]
    UnexpectedValue {
        /// Path of the field.
        field: String,
        /// The only value canonical event v1 allows.
        expected: &'static str,
        /// The value received.
        value: String,
    },
}

// ---------------------------------------------------------------------------------------
// SDK → protobuf
// ---------------------------------------------------------------------------------------

impl From<&sdk::CanonicalEvent> for pb::CanonicalEvent {
    fn from(event: &sdk::CanonicalEvent) -> Self {
        Self {
            specversion: event.specversion.clone(),
            id: event.id.hyphenated().to_string(),
            source: event.source.clone(),
            event_type: pb::EventType::from(event.event_type).into(),
            time: event.time.to_rfc3339(),
            subject: event.subject.clone(),
            datacontenttype: event.datacontenttype.clone(),
            dataschema: event.dataschema.clone(),
            data: Some(event_data_to_pb(&event.data)),
        }
    }
}

impl From<sdk::EventType> for pb::EventType {
    fn from(event_type: sdk::EventType) -> Self {
        use sdk::EventType as S;
        match event_type {
            S::InpatientAdmitted => Self::InpatientAdmitted,
            S::InpatientTransferred => Self::InpatientTransferred,
            S::InpatientDischarged => Self::InpatientDischarged,
            S::InpatientCancelled => Self::InpatientCancelled,
            S::PatientUpdated => Self::PatientUpdated,
            S::OutpatientRegistered => Self::OutpatientRegistered,
            S::DocumentDischargeSummary => Self::DocumentDischargeSummary,
            S::DocumentReferral => Self::DocumentReferral,
            S::DocumentNursingSummary => Self::DocumentNursingSummary,
            S::CareAdmissionInfo => Self::CareAdmissionInfo,
            S::CareDischargeInfo => Self::CareDischargeInfo,
            S::CarePlan => Self::CarePlan,
        }
    }
}

impl From<sdk::Sex> for pb::Sex {
    fn from(sex: sdk::Sex) -> Self {
        match sex {
            sdk::Sex::Female => Self::Female,
            sdk::Sex::Male => Self::Male,
            sdk::Sex::Other => Self::Other,
            sdk::Sex::Unknown => Self::Unknown,
        }
    }
}

impl From<sdk::EncounterClass> for pb::EncounterClass {
    fn from(class: sdk::EncounterClass) -> Self {
        match class {
            sdk::EncounterClass::Inpatient => Self::Inpatient,
            sdk::EncounterClass::Outpatient => Self::Outpatient,
            sdk::EncounterClass::Emergency => Self::Emergency,
        }
    }
}

impl From<sdk::SourceFormat> for pb::SourceFormat {
    fn from(format: sdk::SourceFormat) -> Self {
        match format {
            sdk::SourceFormat::Hl7v2 => Self::Hl7v2,
            sdk::SourceFormat::Fhir => Self::Fhir,
            sdk::SourceFormat::Csv => Self::Csv,
            sdk::SourceFormat::Json => Self::Json,
            sdk::SourceFormat::Ssmix2 => Self::Ssmix2,
            sdk::SourceFormat::Grpc => Self::Grpc,
        }
    }
}

fn event_data_to_pb(data: &sdk::EventData) -> pb::EventData {
    pb::EventData {
        patient: Some(patient_to_pb(&data.patient)),
        encounter: data.encounter.as_ref().map(encounter_to_pb),
        document: data.document.as_ref().map(document_to_pb),
        cancels: data.cancels.map(|t| pb::EventType::from(t).into()),
        care: data.care.as_ref().map(|care| care.to_string()),
        origin: Some(origin_to_pb(&data.origin)),
        facilities: data
            .facilities
            .iter()
            .map(|facility| pb::RelatedFacility {
                role: pb::FacilityRole::from(facility.role).into(),
                code: facility.code.clone(),
                name: facility.name.clone(),
            })
            .collect(),
        replaces: data.replaces.map(|id| id.to_string()),
    }
}

impl From<sdk::FacilityRole> for pb::FacilityRole {
    fn from(role: sdk::FacilityRole) -> Self {
        match role {
            sdk::FacilityRole::Hospital => Self::Hospital,
            sdk::FacilityRole::CareOffice => Self::CareOffice,
            sdk::FacilityRole::Recipient => Self::Recipient,
        }
    }
}

fn patient_to_pb(patient: &sdk::Patient) -> pb::Patient {
    pb::Patient {
        identifiers: patient
            .identifiers
            .iter()
            .map(|id| pb::Identifier {
                system: id.system.clone(),
                value: id.value.clone(),
            })
            .collect(),
        name: patient.name.as_ref().map(|name| pb::PersonName {
            kanji: name.kanji.clone(),
            kana: name.kana.clone(),
        }),
        birth_date: patient.birth_date.map(|d| d.format("%Y-%m-%d").to_string()),
        sex: patient.sex.map(|sex| pb::Sex::from(sex).into()),
        insurance: patient.insurance.as_ref().map(|insurance| pb::Insurance {
            medical: insurance
                .medical
                .as_ref()
                .map(|medical| pb::MedicalInsurance {
                    insurer_number: medical.insurer_number.clone(),
                    symbol: medical.symbol.clone(),
                    number: medical.number.clone(),
                }),
            ltc: insurance.ltc.as_ref().map(|ltc| pb::LtcInsurance {
                insurer_number: ltc.insurer_number.clone(),
                insured_number: ltc.insured_number.clone(),
                care_level: ltc.care_level.clone(),
            }),
        }),
        address: patient.address.as_ref().map(|address| pb::Address {
            postal_code: address.postal_code.clone(),
            text: address.text.clone(),
        }),
        phone: patient.phone.clone(),
        key_person: patient.key_person.as_ref().map(|person| pb::RelatedPerson {
            name: person.name.clone(),
            relationship: person.relationship.clone(),
            phone: person.phone.clone(),
        }),
    }
}

fn encounter_to_pb(encounter: &sdk::Encounter) -> pb::Encounter {
    pb::Encounter {
        class: encounter.class.map(|c| pb::EncounterClass::from(c).into()),
        visit_number: encounter.visit_number.clone(),
        admitted_at: encounter.admitted_at.map(|t| t.to_rfc3339()),
        discharged_at: encounter.discharged_at.map(|t| t.to_rfc3339()),
        location: encounter.location.as_ref().map(|location| pb::Location {
            ward: location.ward.clone(),
            room: location.room.clone(),
            bed: location.bed.clone(),
        }),
        department: encounter.department.clone(),
        attending: encounter
            .attending
            .as_ref()
            .map(|attending| pb::Practitioner {
                id: attending.id.clone(),
                name: attending.name.clone(),
            }),
        discharge_disposition: encounter.discharge_disposition.clone(),
        discharge_destination: encounter.discharge_destination.clone(),
    }
}

fn document_to_pb(document: &sdk::Document) -> pb::Document {
    pb::Document {
        code: document.code.clone(),
        title: document.title.clone(),
        id: document.id.clone(),
        created_at: document.created_at.map(|t| t.to_rfc3339()),
        content: document.content.as_ref().map(|content| content.to_string()),
        sections: document
            .sections
            .iter()
            .map(|section| pb::DocumentSection {
                code: section.code.clone(),
                title: section.title.clone(),
                items: section.items.clone(),
            })
            .collect(),
    }
}

fn origin_to_pb(origin: &sdk::Origin) -> pb::Origin {
    pb::Origin {
        format: pb::SourceFormat::from(origin.format).into(),
        sending_system: origin.sending_system.clone(),
        facility: origin.facility.clone(),
        message_id: origin.message_id.clone(),
        raw_sha256: origin.raw_sha256.clone(),
        assumed_charset: origin.assumed_charset.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// protobuf → SDK
// ---------------------------------------------------------------------------------------

impl TryFrom<pb::CanonicalEvent> for sdk::CanonicalEvent {
    type Error = ConvertError;

    fn try_from(event: pb::CanonicalEvent) -> Result<Self, Self::Error> {
        Ok(Self {
            specversion: fixed("specversion", event.specversion, sdk::SPEC_VERSION)?,
            id: uuid_v7("id", event.id)?,
            source: required("source", event.source)?,
            event_type: event_type("event_type", event.event_type)?,
            time: timestamp("time", &required("time", event.time)?)?,
            subject: event.subject,
            datacontenttype: fixed(
                "datacontenttype",
                event.datacontenttype,
                sdk::DATA_CONTENT_TYPE,
            )?,
            dataschema: fixed("dataschema", event.dataschema, sdk::DATA_SCHEMA_V1)?,
            data: event_data_from_pb(present("data", event.data)?)?,
        })
    }
}

fn event_data_from_pb(data: pb::EventData) -> Result<sdk::EventData, ConvertError> {
    Ok(sdk::EventData {
        patient: patient_from_pb(present("data.patient", data.patient)?)?,
        encounter: data.encounter.map(encounter_from_pb).transpose()?,
        document: data.document.map(document_from_pb).transpose()?,
        cancels: data
            .cancels
            .map(|t| event_type("data.cancels", t))
            .transpose()?,
        care: data.care.map(|care| json("data.care", &care)).transpose()?,
        facilities: data
            .facilities
            .into_iter()
            .enumerate()
            .map(|(i, facility)| facility_from_pb(i, facility))
            .collect::<Result<_, _>>()?,
        replaces: data
            .replaces
            .map(|id| uuid_v7("data.replaces", id))
            .transpose()?,
        origin: origin_from_pb(present("data.origin", data.origin)?)?,
    })
}

fn facility_from_pb(
    i: usize,
    facility: pb::RelatedFacility,
) -> Result<sdk::RelatedFacility, ConvertError> {
    let field = format!("data.facilities[{i}].role");
    let role = match known::<pb::FacilityRole>(&field, facility.role)? {
        pb::FacilityRole::Unspecified => return Err(unspecified(&field)),
        pb::FacilityRole::Hospital => sdk::FacilityRole::Hospital,
        pb::FacilityRole::CareOffice => sdk::FacilityRole::CareOffice,
        pb::FacilityRole::Recipient => sdk::FacilityRole::Recipient,
    };
    Ok(sdk::RelatedFacility {
        role,
        code: required(&format!("data.facilities[{i}].code"), facility.code)?,
        name: facility.name,
    })
}

fn patient_from_pb(patient: pb::Patient) -> Result<sdk::Patient, ConvertError> {
    let identifiers = patient
        .identifiers
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            Ok(sdk::Identifier {
                system: required(&format!("data.patient.identifiers[{i}].system"), id.system)?,
                value: required(&format!("data.patient.identifiers[{i}].value"), id.value)?,
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    let birth_date = patient
        .birth_date
        .map(|d| date("data.patient.birth_date", &d))
        .transpose()?;
    let sex = patient
        .sex
        .map(|sex| match known::<pb::Sex>("data.patient.sex", sex)? {
            pb::Sex::Unspecified => Err(unspecified("data.patient.sex")),
            pb::Sex::Female => Ok(sdk::Sex::Female),
            pb::Sex::Male => Ok(sdk::Sex::Male),
            pb::Sex::Other => Ok(sdk::Sex::Other),
            pb::Sex::Unknown => Ok(sdk::Sex::Unknown),
        })
        .transpose()?;
    Ok(sdk::Patient {
        identifiers,
        name: patient.name.map(|name| sdk::PersonName {
            kanji: name.kanji,
            kana: name.kana,
        }),
        birth_date,
        sex,
        insurance: patient.insurance.map(|insurance| sdk::Insurance {
            medical: insurance.medical.map(|medical| sdk::MedicalInsurance {
                insurer_number: medical.insurer_number,
                symbol: medical.symbol,
                number: medical.number,
            }),
            ltc: insurance.ltc.map(|ltc| sdk::LtcInsurance {
                insurer_number: ltc.insurer_number,
                insured_number: ltc.insured_number,
                care_level: ltc.care_level,
            }),
        }),
        address: patient.address.map(|address| sdk::Address {
            postal_code: address.postal_code,
            text: address.text,
        }),
        phone: patient.phone,
        key_person: patient.key_person.map(|person| sdk::RelatedPerson {
            name: person.name,
            relationship: person.relationship,
            phone: person.phone,
        }),
    })
}

fn encounter_from_pb(encounter: pb::Encounter) -> Result<sdk::Encounter, ConvertError> {
    let class = encounter
        .class
        .map(
            |class| match known::<pb::EncounterClass>("data.encounter.class", class)? {
                pb::EncounterClass::Unspecified => Err(unspecified("data.encounter.class")),
                pb::EncounterClass::Inpatient => Ok(sdk::EncounterClass::Inpatient),
                pb::EncounterClass::Outpatient => Ok(sdk::EncounterClass::Outpatient),
                pb::EncounterClass::Emergency => Ok(sdk::EncounterClass::Emergency),
            },
        )
        .transpose()?;
    Ok(sdk::Encounter {
        class,
        visit_number: encounter.visit_number,
        admitted_at: encounter
            .admitted_at
            .map(|t| timestamp("data.encounter.admitted_at", &t))
            .transpose()?,
        discharged_at: encounter
            .discharged_at
            .map(|t| timestamp("data.encounter.discharged_at", &t))
            .transpose()?,
        location: encounter.location.map(|location| sdk::Location {
            ward: location.ward,
            room: location.room,
            bed: location.bed,
        }),
        department: encounter.department,
        attending: encounter.attending.map(|attending| sdk::Practitioner {
            id: attending.id,
            name: attending.name,
        }),
        discharge_disposition: encounter.discharge_disposition,
        discharge_destination: encounter.discharge_destination,
    })
}

fn document_from_pb(document: pb::Document) -> Result<sdk::Document, ConvertError> {
    Ok(sdk::Document {
        code: document.code,
        title: document.title,
        id: document.id,
        created_at: document
            .created_at
            .map(|t| timestamp("data.document.created_at", &t))
            .transpose()?,
        content: document
            .content
            .map(|content| json("data.document.content", &content))
            .transpose()?,
        sections: document
            .sections
            .into_iter()
            .enumerate()
            .map(|(i, section)| {
                Ok(sdk::DocumentSection {
                    code: required(&format!("data.document.sections[{i}].code"), section.code)?,
                    title: section.title,
                    items: section.items,
                })
            })
            .collect::<Result<_, ConvertError>>()?,
    })
}

fn origin_from_pb(origin: pb::Origin) -> Result<sdk::Origin, ConvertError> {
    let format = match known::<pb::SourceFormat>("data.origin.format", origin.format)? {
        pb::SourceFormat::Unspecified => return Err(unspecified("data.origin.format")),
        pb::SourceFormat::Hl7v2 => sdk::SourceFormat::Hl7v2,
        pb::SourceFormat::Fhir => sdk::SourceFormat::Fhir,
        pb::SourceFormat::Csv => sdk::SourceFormat::Csv,
        pb::SourceFormat::Json => sdk::SourceFormat::Json,
        pb::SourceFormat::Ssmix2 => sdk::SourceFormat::Ssmix2,
        pb::SourceFormat::Grpc => sdk::SourceFormat::Grpc,
    };
    Ok(sdk::Origin {
        format,
        sending_system: origin.sending_system,
        facility: origin.facility,
        message_id: required("data.origin.message_id", origin.message_id)?,
        raw_sha256: required("data.origin.raw_sha256", origin.raw_sha256)?,
        assumed_charset: origin.assumed_charset,
    })
}

fn event_type(field: &str, value: i32) -> Result<sdk::EventType, ConvertError> {
    use sdk::EventType as S;
    Ok(match known::<pb::EventType>(field, value)? {
        pb::EventType::Unspecified => return Err(unspecified(field)),
        pb::EventType::InpatientAdmitted => S::InpatientAdmitted,
        pb::EventType::InpatientTransferred => S::InpatientTransferred,
        pb::EventType::InpatientDischarged => S::InpatientDischarged,
        pb::EventType::InpatientCancelled => S::InpatientCancelled,
        pb::EventType::PatientUpdated => S::PatientUpdated,
        pb::EventType::OutpatientRegistered => S::OutpatientRegistered,
        pb::EventType::DocumentDischargeSummary => S::DocumentDischargeSummary,
        pb::EventType::DocumentReferral => S::DocumentReferral,
        pb::EventType::DocumentNursingSummary => S::DocumentNursingSummary,
        pb::EventType::CareAdmissionInfo => S::CareAdmissionInfo,
        pb::EventType::CareDischargeInfo => S::CareDischargeInfo,
        pb::EventType::CarePlan => S::CarePlan,
    })
}

/// An enum number this version defines (`UNSPECIFIED` included: callers reject it).
fn known<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, ConvertError> {
    E::try_from(value).map_err(|_| ConvertError::UnknownEnum {
        field: field.to_owned(),
        value,
    })
}

fn unspecified(field: &str) -> ConvertError {
    ConvertError::UnspecifiedEnum {
        field: field.to_owned(),
    }
}

fn present<T>(field: &str, value: Option<T>) -> Result<T, ConvertError> {
    value.ok_or_else(|| ConvertError::Missing {
        field: field.to_owned(),
    })
}

/// proto3 strings have no presence: empty means unset.
fn required(field: &str, value: String) -> Result<String, ConvertError> {
    if value.is_empty() {
        Err(ConvertError::Missing {
            field: field.to_owned(),
        })
    } else {
        Ok(value)
    }
}

/// A fixed CloudEvents attribute: empty (unset) reads as the only allowed value.
fn fixed(field: &str, value: String, expected: &'static str) -> Result<String, ConvertError> {
    if value.is_empty() || value == expected {
        Ok(expected.to_owned())
    } else {
        Err(ConvertError::UnexpectedValue {
            field: field.to_owned(),
            expected,
            value,
        })
    }
}

fn uuid_v7(field: &str, value: String) -> Result<Uuid, ConvertError> {
    let value = required(field, value)?;
    match Uuid::parse_str(&value) {
        Ok(id) if id.get_version_num() == 7 => Ok(id),
        _ => Err(ConvertError::InvalidUuid {
            field: field.to_owned(),
            value,
        }),
    }
}

fn timestamp(field: &str, value: &str) -> Result<DateTime<FixedOffset>, ConvertError> {
    DateTime::parse_from_rfc3339(value).map_err(|_| ConvertError::InvalidTime {
        field: field.to_owned(),
        value: value.to_owned(),
    })
}

fn date(field: &str, value: &str) -> Result<NaiveDate, ConvertError> {
    // The same parser serde uses for `NaiveDate`, so both wire forms accept the same dates.
    value
        .parse::<NaiveDate>()
        .map_err(|_| ConvertError::InvalidDate {
            field: field.to_owned(),
            value: value.to_owned(),
        })
}

fn json(field: &str, value: &str) -> Result<serde_json::Value, ConvertError> {
    serde_json::from_str(value).map_err(|e| ConvertError::InvalidJson {
        field: field.to_owned(),
        reason: e.to_string(),
    })
}
