//! Message Bundles: a MessageHeader first (FHIR bdl-12) whose `eventCoding` is an HL7
//! table 0003 trigger and whose `focus` is the Encounter (or, for a patient update,
//! the Patient).
//!
//! | `eventCoding` | event type              | `data.cancels`          | event time                        |
//! |---------------|-------------------------|-------------------------|-----------------------------------|
//! | A01           | `inpatient.admitted`    |                         | Encounter.period.start            |
//! | A02           | `inpatient.transferred` |                         | start of the new active locations |
//! | A03           | `inpatient.discharged`  |                         | Encounter.period.end              |
//! | A04           | `outpatient.registered` |                         | Bundle.timestamp                  |
//! | A08, A31      | `patient.updated`       |                         | Bundle.timestamp                  |
//! | A11           | `inpatient.cancelled`   | `inpatient.admitted`    | Bundle.timestamp                  |
//! | A12           | `inpatient.cancelled`   | `inpatient.transferred` | Bundle.timestamp                  |
//! | A13           | `inpatient.cancelled`   | `inpatient.discharged`  | Bundle.timestamp                  |
//!
//! When the preferred time is absent the event time is `Bundle.timestamp`.
//!
//! The facility is the sender's: `MessageHeader.sender` (an Organization identified in
//! the medical-institution-number system), `Encounter.serviceProvider`, or
//! `MessageHeader.source.endpoint` `urn:renkei:facility:<code>` (those given must
//! agree), else the facility the Patient's local ids name. The message id is
//! `Bundle.id` (else `MessageHeader.id`).

use chrono::{DateTime, FixedOffset};
use renkei_sdk::{
    CanonicalEvent, EventData, EventType, NormalizeError, Origin, SourceFormat, TimeWindow,
    facility_source,
};

use crate::bundle::{Bundle, Entry, string};
use crate::encounter::{self, EncounterFacts};
use crate::outcome::FIRST_RESOURCE;
use crate::resources::{self, endpoint_facility, local_id_facilities, reference_facility};
use crate::text::shown_code;
use crate::time;

/// The HL7 v2 event-type code system (table 0003) of `MessageHeader.eventCoding`.
pub const EVENT_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0003";

/// The `eventCoding` codes the hub normalises.
pub const HANDLED_EVENTS: [&str; 9] = [
    "A01", "A02", "A03", "A04", "A08", "A11", "A12", "A13", "A31",
];

/// The longest Bundle.id FHIR allows (the `id` type).
const MAX_ID_CHARS: usize = 64;

/// The event type (and cancelled type) of a trigger event code.
fn event_for(code: &str) -> Option<(EventType, Option<EventType>)> {
    use EventType::*;
    Some(match code {
        "A01" => (InpatientAdmitted, None),
        "A02" => (InpatientTransferred, None),
        "A03" => (InpatientDischarged, None),
        "A04" => (OutpatientRegistered, None),
        "A08" | "A31" => (PatientUpdated, None),
        "A11" => (InpatientCancelled, Some(InpatientAdmitted)),
        "A12" => (InpatientCancelled, Some(InpatientTransferred)),
        "A13" => (InpatientCancelled, Some(InpatientDischarged)),
        _ => return None,
    })
}

/// `MessageHeader.eventCoding` read and checked.
fn event(header: Entry<'_>) -> Result<(&str, EventType, Option<EventType>), NormalizeError> {
    let path = header.path_to("eventCoding");
    let Some(coding) = header.get("eventCoding") else {
        let reason = if header.get("eventUri").is_some() {
            format!(
                "MessageHeader.eventUri is not handled: send MessageHeader.eventCoding with an HL7 table 0003 code ({EVENT_SYSTEM}: {})",
                HANDLED_EVENTS.join(", ")
            )
        } else {
            format!(
                "MessageHeader.eventCoding is missing: the hub needs the trigger event ({EVENT_SYSTEM}: {})",
                HANDLED_EVENTS.join(", ")
            )
        };
        return Err(NormalizeError::at(path, reason));
    };
    let system = string(coding.get("system"));
    if let Some(system) = system
        && system != EVENT_SYSTEM
    {
        return Err(NormalizeError::at(
            format!("{path}.system"),
            format!(
                "MessageHeader.eventCoding is from the code system {}; the hub takes HL7 table 0003 ({EVENT_SYSTEM}) codes {}",
                shown_code(system),
                HANDLED_EVENTS.join(", ")
            ),
        ));
    }
    let Some(code) = string(coding.get("code")) else {
        return Err(NormalizeError::at(
            format!("{path}.code"),
            "MessageHeader.eventCoding has no code: the hub needs the trigger event (A01, A02, A03 …)",
        ));
    };
    let Some((event_type, cancels)) = event_for(code) else {
        return Err(NormalizeError::at(
            format!("{path}.code"),
            format!(
                "MessageHeader.eventCoding {} is not an event the hub handles (it takes {} of {EVENT_SYSTEM})",
                shown_code(code),
                HANDLED_EVENTS.join(", ")
            ),
        ));
    };
    Ok((code, event_type, cancels))
}

/// What a message is about: its Encounter (and so its Patient), or a Patient alone.
struct Focus<'a> {
    encounter: Option<Entry<'a>>,
    patient: Entry<'a>,
}

/// The Encounter named by `MessageHeader.focus` (else the only Encounter of the
/// Bundle), and its subject; a patient update may focus on the Patient itself.
fn focus<'a>(
    bundle: &Bundle<'a>,
    header: Entry<'a>,
    event_type: EventType,
) -> Result<Focus<'a>, NormalizeError> {
    let focused: Vec<Entry<'a>> = crate::bundle::array(header.get("focus"))
        .iter()
        .filter_map(|f| bundle.resolve(Some(f)))
        .collect();
    let encounter = focused
        .iter()
        .find(|e| e.resource_type == "Encounter")
        .copied()
        .or_else(|| {
            let mut encounters = bundle
                .entries
                .iter()
                .filter(|e| e.resource_type == "Encounter");
            match (encounters.next(), encounters.next()) {
                (Some(only), None) if focused.is_empty() => Some(*only),
                _ => None,
            }
        });
    if let Some(encounter) = encounter {
        let subject = encounter.get("subject");
        let Some(subject) = subject.filter(|s| string(s.get("reference")).is_some()) else {
            return Err(NormalizeError::at(
                encounter.path_to("subject"),
                if subject.is_some() {
                    "the Encounter names no patient: Encounter.subject has no reference; refer to the Patient entry of the Bundle (its fullUrl, or Patient/<id>)"
                } else {
                    "the Encounter names no patient (Encounter.subject is missing): there is no patient to route the event for; refer to the Patient entry of the Bundle"
                },
            ));
        };
        let Some(patient) = bundle.resolve_as(Some(subject), "Patient") else {
            return Err(NormalizeError::at(
                encounter.path_to("subject"),
                "Encounter.subject does not resolve to a Patient entry of the Bundle: the message must carry the Patient (refer to its fullUrl, or Patient/<id>)",
            ));
        };
        return Ok(Focus {
            encounter: Some(encounter),
            patient,
        });
    }
    let patient = focused
        .iter()
        .find(|e| e.resource_type == "Patient")
        .copied();
    match patient {
        Some(patient) if event_type == EventType::PatientUpdated => Ok(Focus {
            encounter: None,
            patient,
        }),
        _ => Err(NormalizeError::at(
            header.path_to("focus"),
            format!(
                "MessageHeader.focus names no Encounter of the Bundle: a {} message is about an Encounter, which must be an entry of the Bundle (focus refers to its fullUrl, or Encounter/<id>)",
                event_type
            ),
        )),
    }
}

/// The sending facility; see the module documentation.
fn facility(
    bundle: &Bundle<'_>,
    header: Entry<'_>,
    focus: &Focus<'_>,
) -> Result<String, NormalizeError> {
    let mut named: Vec<(String, String)> = Vec::new();
    let sender_path = || header.path_to("sender");
    if let Some(facility) = reference_facility(bundle, header.get("sender"), sender_path)? {
        named.push((sender_path(), facility.code));
    }
    if let Some(encounter) = focus.encounter {
        let path = || encounter.path_to("serviceProvider");
        if let Some(facility) = reference_facility(bundle, encounter.get("serviceProvider"), path)?
        {
            named.push((path(), facility.code));
        }
    }
    let endpoint = header.get("source").and_then(|s| string(s.get("endpoint")));
    if let Some(code) = endpoint_facility(endpoint) {
        named.push((header.path_to("source.endpoint"), code.to_owned()));
    }
    if let Some((first_path, first)) = named.first() {
        if let Some((path, other)) = named.iter().find(|(_, code)| code != first) {
            return Err(NormalizeError::at(
                path.clone(),
                format!(
                    "{path} names facility {other} but {first_path} names {first}: the hub cannot tell which facility the event comes from; send the same 10-digit code in both"
                ),
            ));
        }
        return Ok(first.clone());
    }
    match local_id_facilities(focus.patient).as_slice() {
        [only] => Ok((*only).to_owned()),
        _ => Err(NormalizeError::at(
            header.path_to("sender"),
            "the sending facility is unknown: refer MessageHeader.sender (or Encounter.serviceProvider) to an Organization identified in http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no, or send MessageHeader.source.endpoint urn:renkei:facility:<10-digit code>",
        )),
    }
}

/// Refuses a Patient whose local ids are all another facility's: the event would reach
/// the care team of a patient of that facility.
pub(crate) fn check_patient_facility(
    patient: Entry<'_>,
    facility: &str,
) -> Result<(), NormalizeError> {
    let local = local_id_facilities(patient);
    if local.is_empty() || local.contains(&facility) {
        return Ok(());
    }
    Err(NormalizeError::at(
        patient.path_to("identifier"),
        format!(
            "the Patient's local ids are in the system of facility {} but the Bundle comes from facility {facility}: a misattributed id would reach the wrong care team; send the id the sending facility gives the patient",
            local.join(", ")
        ),
    ))
}

/// The message id: `Bundle.id`, else `MessageHeader.id`.
fn message_id(bundle: &Bundle<'_>, header: Entry<'_>) -> Result<String, NormalizeError> {
    let (path, id) = match (string(bundle.root.get("id")), header.str("id")) {
        (Some(id), _) => ("Bundle.id".to_owned(), id),
        (None, Some(id)) => (header.path_to("id"), id),
        (None, None) => {
            return Err(NormalizeError::at(
                "Bundle.id",
                "the message has no id (Bundle.id, or MessageHeader.id): the hub needs it to acknowledge and deduplicate the message",
            ));
        }
    };
    let valid = id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if !valid {
        return Err(NormalizeError::at(
            path.clone(),
            format!(
                "{path} is not a FHIR id (1 to {MAX_ID_CHARS} characters of A-Z, a-z, 0-9, `-` and `.`): it is {} characters long",
                id.chars().count()
            ),
        ));
    }
    Ok(id.to_owned())
}

/// Normalises a message Bundle.
pub(crate) fn normalize(
    bundle: &Bundle<'_>,
    raw: &[u8],
    window: &TimeWindow,
) -> Result<CanonicalEvent, NormalizeError> {
    let Some(header) = bundle
        .first()
        .filter(|e| e.resource_type == "MessageHeader")
    else {
        let found = bundle.first().map_or("nothing", |e| e.resource_type);
        return Err(NormalizeError::at(
            FIRST_RESOURCE,
            format!(
                "a message Bundle must start with its MessageHeader (FHIR bdl-12), but entry 0 is {}",
                shown_code(found)
            ),
        ));
    };
    let (code, event_type, cancels) = event(header)?;
    let focus = focus(bundle, header, event_type)?;
    let facility = facility(bundle, header, &focus)?;
    check_patient_facility(focus.patient, &facility)?;
    let message_id = message_id(bundle, header)?;
    let timestamp = time::read(
        bundle.root.get("timestamp"),
        || "Bundle.timestamp".to_owned(),
        window,
    )?
    .and_then(time::FhirTime::start);
    let facts: Option<EncounterFacts> = focus
        .encounter
        .map(|e| encounter::read(bundle, e, window))
        .transpose()?;
    let preferred: Option<DateTime<FixedOffset>> = facts.as_ref().and_then(|f| match code {
        "A01" => f.start,
        "A02" => f.moved_at,
        "A03" => f.end,
        _ => None,
    });
    let Some(time) = preferred.or(timestamp) else {
        let wanted = match code {
            "A01" => "Encounter.period.start",
            "A02" => "the period.start of the Encounter's active locations",
            "A03" => "Encounter.period.end",
            _ => "Bundle.timestamp",
        };
        return Err(NormalizeError::at(
            "Bundle.timestamp",
            format!(
                "the event time is missing: the message has no {wanted} and no Bundle.timestamp"
            ),
        ));
    };
    let patient = resources::patient(focus.patient, &facility, window)?;
    let sending_system = header
        .get("source")
        .and_then(|s| string(s.get("name")).or_else(|| string(s.get("software"))))
        .map(str::to_owned);
    let encounter = facts
        .map(|f| f.encounter)
        .filter(|e| *e != renkei_sdk::Encounter::default());
    let data = EventData {
        patient,
        encounter,
        document: None,
        cancels,
        care: None,
        facilities: Vec::new(),
        replaces: None,
        origin: Origin {
            format: SourceFormat::Fhir,
            sending_system,
            facility: Some(facility.clone()),
            message_id,
            raw_sha256: Origin::sha256_hex(raw),
            assumed_charset: None,
        },
    };
    Ok(CanonicalEvent::new(
        facility_source(&facility),
        event_type,
        time,
        data,
    ))
}
