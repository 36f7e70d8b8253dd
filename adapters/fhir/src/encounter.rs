//! The Encounter: class, stay, ward/room/bed, attending doctor, discharge.
//!
//! Ward, room and bed are the Locations of `Encounter.location` entries whose status is
//! `active`, by physical type (`wa`, `ro`, `bd`: the entry's own `physicalType`, else
//! the Location's), each given by the Location's first identifier (else its name, else
//! the reference's display). A `completed` entry is where the patient was before.

use chrono::{DateTime, FixedOffset};
use renkei_sdk::{Encounter, EncounterClass, Location, NormalizeError, TimeWindow};
use serde_json::Value;

use crate::bundle::{Bundle, Entry, array, string};
use crate::resources::{codings, concept_code, practitioner};
use crate::time::{self, FhirTime};

/// An Encounter as read, with the times that may become the event's.
#[derive(Debug, Clone, Default)]
pub(crate) struct EncounterFacts {
    /// The mapped encounter.
    pub encounter: Encounter,
    /// `period.start`.
    pub start: Option<DateTime<FixedOffset>>,
    /// `period.end`.
    pub end: Option<DateTime<FixedOffset>>,
    /// The latest start of the active locations: when the patient moved there.
    pub moved_at: Option<DateTime<FixedOffset>>,
}

/// Which of ward, room and bed a physical type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Ward,
    Room,
    Bed,
}

fn place(code: &str) -> Option<Place> {
    match code {
        "wa" => Some(Place::Ward),
        "ro" => Some(Place::Room),
        "bd" => Some(Place::Bed),
        _ => None,
    }
}

/// The instant a `dateTime` stands for (a date is its 00:00 in Japan).
fn start_of(time: Option<FhirTime>) -> Option<DateTime<FixedOffset>> {
    time.and_then(FhirTime::start)
}

/// The start and end of a Period.
type Span = (Option<DateTime<FixedOffset>>, Option<DateTime<FixedOffset>>);

/// Reads the `start` and `end` of the Period `period`, whose FHIRPath is `path`.
pub(crate) fn period(
    period: Option<&Value>,
    path: &dyn Fn() -> String,
    window: &TimeWindow,
) -> Result<Span, NormalizeError> {
    let Some(period) = period else {
        return Ok((None, None));
    };
    let start = time::read(period.get("start"), || format!("{}.start", path()), window)?;
    let end = time::read(period.get("end"), || format!("{}.end", path()), window)?;
    Ok((start_of(start), start_of(end)))
}

/// Encounter.class (a Coding in R4; v3 ActCode).
fn class(encounter: Entry<'_>) -> Option<EncounterClass> {
    let class = encounter.get("class")?;
    let code = string(class.get("code")).or_else(|| concept_code(Some(class)))?;
    match code {
        "IMP" | "ACUTE" | "NONAC" | "PRENC" => Some(EncounterClass::Inpatient),
        "AMB" | "HH" | "VR" | "FLD" => Some(EncounterClass::Outpatient),
        "EMER" => Some(EncounterClass::Emergency),
        _ => None,
    }
}

/// The name of the Location or Organization a reference resolves to, else its display.
pub(crate) fn place_name(bundle: &Bundle<'_>, reference: Option<&Value>) -> Option<String> {
    let resolved = bundle
        .resolve(reference)
        .filter(|e| matches!(e.resource_type, "Location" | "Organization"))
        .and_then(|e| e.str("name"));
    resolved
        .or_else(|| string(reference?.get("display")))
        .map(str::to_owned)
}

/// The attending doctor: the participant of type `ATND`, else the first participant
/// that is a practitioner.
fn attending(bundle: &Bundle<'_>, encounter: Entry<'_>) -> Option<renkei_sdk::Practitioner> {
    let participants = array(encounter.get("participant"));
    let is_attending = |p: &&Value| {
        array(p.get("type"))
            .iter()
            .any(|t| codings(Some(t)).any(|(_, code)| code == "ATND"))
    };
    let chosen = participants
        .iter()
        .find(is_attending)
        .into_iter()
        .chain(participants.iter());
    chosen
        .filter_map(|p| bundle.resolve(p.get("individual")))
        .find_map(|individual| practitioner(bundle, individual))
}

/// Reads an Encounter entry.
pub(crate) fn read(
    bundle: &Bundle<'_>,
    entry: Entry<'_>,
    window: &TimeWindow,
) -> Result<EncounterFacts, NormalizeError> {
    let (start, end) = period(entry.get("period"), &|| entry.path_to("period"), window)?;

    let mut location = Location::default();
    let mut latest: [Option<DateTime<FixedOffset>>; 3] = [None; 3];
    let mut moved_at: Option<DateTime<FixedOffset>> = None;
    for (j, item) in array(entry.get("location")).iter().enumerate() {
        let item_path = || entry.path_to(&format!("location[{j}].period"));
        let (since, _) = period(item.get("period"), &item_path, window)?;
        if string(item.get("status")) != Some("active") {
            continue;
        }
        let target = bundle.resolve_as(item.get("location"), "Location");
        let physical = codings(item.get("physicalType"))
            .find_map(|(_, code)| place(code))
            .or_else(|| {
                codings(target.and_then(|t| t.get("physicalType")))
                    .find_map(|(_, code)| place(code))
            });
        let Some(physical) = physical else {
            continue;
        };
        let value = target
            .and_then(|t| {
                array(t.get("identifier"))
                    .iter()
                    .find_map(|i| string(i.get("value")))
                    .or_else(|| t.str("name"))
            })
            .or_else(|| string(item.get("location").and_then(|l| l.get("display"))));
        let Some(value) = value else {
            continue;
        };
        let (slot, seen) = match physical {
            Place::Ward => (&mut location.ward, &mut latest[0]),
            Place::Room => (&mut location.room, &mut latest[1]),
            Place::Bed => (&mut location.bed, &mut latest[2]),
        };
        // Of two active entries of one kind, the later move is where the patient is.
        if slot.is_none() || since > *seen {
            *slot = Some(value.to_owned());
            *seen = since;
        }
        moved_at = moved_at.max(since);
    }

    let hospitalization = entry.get("hospitalization");
    let encounter = Encounter {
        class: class(entry),
        visit_number: array(entry.get("identifier"))
            .iter()
            .find_map(|i| string(i.get("value")))
            .map(str::to_owned),
        admitted_at: start,
        discharged_at: end,
        location: (location != Location::default()).then_some(location),
        department: None,
        attending: attending(bundle, entry),
        discharge_disposition: concept_code(
            hospitalization.and_then(|h| h.get("dischargeDisposition")),
        )
        .map(str::to_owned),
        discharge_destination: place_name(
            bundle,
            hospitalization.and_then(|h| h.get("destination")),
        ),
    };
    Ok(EncounterFacts {
        encounter,
        start,
        end,
        moved_at,
    })
}
