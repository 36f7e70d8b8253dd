//! Document Bundles: a Composition first (FHIR bdl-11) whose `type` says what the
//! document is.
//!
//! | Composition.type (LOINC) | event type                   | document                  |
//! |--------------------------|------------------------------|---------------------------|
//! | 18842-5                  | `document.discharge_summary` | JP-CLINS 退院時サマリー    |
//! | 57133-1                  | `document.referral`          | JP-CLINS 診療情報提供書    |
//! | 34745-0                  | `document.nursing_summary`   | the hub's 看護サマリー     |
//!
//! - The event time and `document.created_at` are `Composition.date`; the message id
//!   and `document.id` are `Bundle.identifier.value` (JP-CLINS's stable key:
//!   the same identifier sent again unchanged is a duplicate; a changed document under it is
//!   refused as a reused id until the hub replaces documents).
//! - The facility is the custodian's (an Organization identified in the
//!   medical-institution-number system), else the author Organization's, else the
//!   紹介元 (920) section's, else the Encounter's serviceProvider, else the facility the
//!   Patient's local ids name.
//! - `document.sections`: one per `Composition.section`, nested sections following
//!   their parent, each with its code, title, and items: the narrative's paragraphs,
//!   then a line of text per entry (a Condition's name, a medication with its dosage,
//!   an Observation's item and value, a care plan's activities …). The nursing
//!   summary's sections carry their `urn:renkei:codesystem:nursing-summary-section`
//!   code, found by code (that system, else the section's LOINC code), never by
//!   position or title.
//! - `data.facilities`: the organisations of the 紹介先 section (910) as recipients;
//!   care-manager offices (`urn:renkei:ltc-office`) named in other sections as the
//!   patient's care office.
//! - The key person (`patient.key_person`) is the RelatedPerson of the nursing
//!   summary's `basic` section, else the first RelatedPerson any section names.
//! - The encounter is `Composition.encounter`; for summaries of a stay its admission
//!   and discharge fall back to `Composition.event.period`.

use renkei_sdk::{
    CanonicalEvent, Document, DocumentSection, EventData, EventType, FacilityRole, NormalizeError,
    Origin, RelatedFacility, SourceFormat, TimeWindow, facility_source,
};
use serde_json::Value;

use crate::bundle::{Bundle, Entry, array, string};
use crate::encounter;
use crate::message::check_patient_facility;
use crate::outcome::FIRST_RESOURCE;
use crate::resources::{
    self, Facility, FacilityKind, codings, concept_text, local_id_facilities,
    organization_facility, reference_facility, related_person,
};
use crate::text::{narrative, shown_code};
use crate::time;

/// The code system of the nursing summary's sections.
pub const NURSING_SECTION_SYSTEM: &str = "urn:renkei:codesystem:nursing-summary-section";
/// LOINC.
pub const LOINC_SYSTEM: &str = "http://loinc.org";
/// JP-CLINS document type codes (the LOINC codes of the document kinds).
pub const JP_DOCUMENT_TYPE_SYSTEM: &str = "http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes";

/// The nursing summary's sections that have a LOINC code, by that code.
const NURSING_SECTIONS_BY_LOINC: [(&str, &str); 6] = [
    ("11348-0", "history"),
    ("8648-8", "course"),
    ("47420-5", "adl"),
    ("10160-0", "medication"),
    ("11450-4", "nursing-problems"),
    ("18776-5", "continuing-care"),
];

/// The JP-CLINS referral's 紹介先 (referred-to) section.
const REFERRAL_TO_SECTION: &str = "910";
/// The JP-CLINS referral's 紹介元 (referred-from) section.
const REFERRAL_FROM_SECTION: &str = "920";
/// The nursing summary's basic-information section (key person, care office).
const BASIC_SECTION: &str = "basic";
/// The code of a section that has none.
const UNCODED_SECTION: &str = "uncoded";
/// The longest Bundle.identifier value taken.
const MAX_IDENTIFIER_CHARS: usize = 256;

/// The document kinds the hub takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DischargeSummary,
    Referral,
    NursingSummary,
}

impl Kind {
    fn of(code: &str) -> Option<Kind> {
        match code {
            "18842-5" => Some(Kind::DischargeSummary),
            "57133-1" => Some(Kind::Referral),
            "34745-0" => Some(Kind::NursingSummary),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Kind::DischargeSummary => "18842-5",
            Kind::Referral => "57133-1",
            Kind::NursingSummary => "34745-0",
        }
    }

    fn event_type(self) -> EventType {
        match self {
            Kind::DischargeSummary => EventType::DocumentDischargeSummary,
            Kind::Referral => EventType::DocumentReferral,
            Kind::NursingSummary => EventType::DocumentNursingSummary,
        }
    }

    /// Whether `Composition.event.period` is the hospital stay.
    fn period_is_the_stay(self) -> bool {
        matches!(self, Kind::DischargeSummary | Kind::NursingSummary)
    }
}

/// `Composition.type`.
fn kind(composition: Entry<'_>) -> Result<Kind, NormalizeError> {
    let path = composition.path_to("type");
    let mut seen = None;
    for (system, code) in codings(composition.get("type")) {
        let known_system = matches!(system, None | Some(LOINC_SYSTEM | JP_DOCUMENT_TYPE_SYSTEM));
        if known_system && let Some(kind) = Kind::of(code) {
            return Ok(kind);
        }
        seen.get_or_insert(code);
    }
    let handled = "18842-5 discharge summary, 57133-1 referral, 34745-0 nursing summary";
    Err(NormalizeError::at(
        path,
        match seen {
            Some(code) => format!(
                "Composition.type {} is not a document the hub handles (it takes LOINC {handled})",
                shown_code(code)
            ),
            None => format!("Composition.type has no code: the hub takes LOINC {handled}"),
        },
    ))
}

/// A section's code: for the nursing summary the hub's own code (by that system, else
/// by the section's LOINC code); otherwise the first coding's code.
fn section_code(section: &Value, kind: Kind) -> &str {
    let code = section.get("code");
    if kind == Kind::NursingSummary {
        let own = codings(code).find(|(system, _)| *system == Some(NURSING_SECTION_SYSTEM));
        if let Some((_, own)) = own {
            return own;
        }
        let by_loinc = codings(code).find_map(|(system, loinc)| {
            NURSING_SECTIONS_BY_LOINC
                .iter()
                .find(|(c, _)| *c == loinc && matches!(system, None | Some(LOINC_SYSTEM)))
                .map(|(_, own)| *own)
        });
        if let Some(own) = by_loinc {
            return own;
        }
    }
    codings(code)
        .map(|(_, code)| code)
        .next()
        .or_else(|| string(code.and_then(|c| c.get("text"))))
        .unwrap_or(UNCODED_SECTION)
}

/// Pushes `item` unless it is empty or already there.
fn push_item(items: &mut Vec<String>, item: String) {
    if !item.is_empty() && !items.contains(&item) {
        items.push(item);
    }
}

/// `a：b`, or whichever of them there is.
fn labelled(label: Option<&str>, value: Option<&str>) -> Option<String> {
    match (label, value) {
        (Some(label), Some(value)) => Some(format!("{label}：{value}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    }
}

/// An Observation's value as text.
fn observation_value(observation: Entry<'_>) -> Option<String> {
    if let Some(text) = observation.str("valueString") {
        return Some(text.to_owned());
    }
    if let Some(quantity) = observation.get("valueQuantity") {
        let value = quantity.get("value").filter(|v| v.is_number())?.to_string();
        let unit = string(quantity.get("unit")).or_else(|| string(quantity.get("code")));
        return Some(unit.map_or_else(|| value.clone(), |unit| format!("{value} {unit}")));
    }
    if let Some(text) = concept_text(observation.get("valueCodeableConcept")) {
        return Some(text.to_owned());
    }
    ["valueBoolean", "valueInteger", "valueDateTime"]
        .iter()
        .find_map(|key| match observation.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(if *b { "はい" } else { "いいえ" }.to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// The texts of `notes` (Annotation list).
fn notes(entry: Entry<'_>) -> Option<String> {
    let texts: Vec<&str> = array(entry.get("note"))
        .iter()
        .filter_map(|n| string(n.get("text")))
        .collect();
    (!texts.is_empty()).then(|| texts.join(" "))
}

/// A line of text (or a few) for one entry a section refers to.
fn summarize(bundle: &Bundle<'_>, entry: Entry<'_>, items: &mut Vec<String>) {
    let line = match entry.resource_type {
        // Already the event's patient; the document as sent keeps everything else.
        "Patient" | "Composition" | "Bundle" | "Binary" => None,
        "Condition" | "Procedure" => concept_text(entry.get("code")).map(str::to_owned),
        "AllergyIntolerance" => labelled(concept_text(entry.get("code")), notes(entry).as_deref()),
        "MedicationStatement"
        | "MedicationRequest"
        | "MedicationAdministration"
        | "MedicationDispense" => {
            let medication = concept_text(entry.get("medicationCodeableConcept")).or_else(|| {
                let reference = entry.get("medicationReference");
                bundle
                    .resolve_as(reference, "Medication")
                    .and_then(|m| concept_text(m.get("code")))
                    .or_else(|| string(reference?.get("display")))
            });
            let dosage: Vec<&str> = ["dosage", "dosageInstruction"]
                .iter()
                .flat_map(|key| array(entry.get(key)))
                .filter_map(|d| string(d.get("text")))
                .collect();
            let dosage = (!dosage.is_empty()).then(|| dosage.join(" "));
            match (medication, dosage) {
                (Some(m), Some(d)) => Some(format!("{m} {d}")),
                (Some(one), None) => Some(one.to_owned()),
                (None, Some(one)) => Some(one),
                (None, None) => None,
            }
        }
        "Observation" => labelled(
            concept_text(entry.get("code")),
            observation_value(entry).as_deref(),
        ),
        "CarePlan" => {
            if let Some(line) = labelled(entry.str("title"), entry.str("description")) {
                push_item(items, line);
            }
            for activity in array(entry.get("activity")) {
                let detail = activity.get("detail");
                let text = detail
                    .and_then(|d| string(d.get("description")))
                    .or_else(|| concept_text(detail.and_then(|d| d.get("code"))));
                if let Some(text) = text {
                    push_item(items, text.to_owned());
                }
            }
            None
        }
        "Organization" => {
            entry
                .str("name")
                .map(|name| match organization_facility(entry).ok().flatten() {
                    Some(facility) => format!("{name}（{}）", facility.code),
                    None => name.to_owned(),
                })
        }
        "RelatedPerson" => related_person(entry.resource).map(|person| {
            let mut line = [person.relationship.as_deref(), person.name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(phone) = person.phone {
                line.push_str(&format!("（{phone}）"));
            }
            line
        }),
        "Practitioner" | "PractitionerRole" => resources::practitioner(bundle, entry)
            .and_then(|p| p.name)
            .map(|name| {
                let qualification = array(entry.get("qualification"))
                    .iter()
                    .find_map(|q| concept_text(q.get("code")));
                labelled(qualification, Some(&name)).unwrap_or(name)
            }),
        "Encounter" => {
            let reasons: Vec<&str> = array(entry.get("reasonCode"))
                .iter()
                .filter_map(|r| concept_text(Some(r)))
                .collect();
            (!reasons.is_empty()).then(|| reasons.join("、"))
        }
        "DocumentReference" => entry
            .str("description")
            .or_else(|| concept_text(entry.get("type")))
            .map(str::to_owned),
        "Location" => entry.str("name").map(str::to_owned),
        _ => concept_text(entry.get("code"))
            .or_else(|| entry.str("title"))
            .or_else(|| entry.str("description"))
            .or_else(|| entry.str("name"))
            .map(str::to_owned),
    };
    if let Some(line) = line {
        push_item(items, line);
    }
}

/// What the sections say besides their text.
struct SectionFacts<'a> {
    sections: Vec<DocumentSection>,
    /// Every (section code, entry) a section refers to, in order.
    entries: Vec<(&'a str, Entry<'a>)>,
}

/// Reads `sections` (and their nested sections) in order.
fn read_sections<'a>(
    bundle: &Bundle<'a>,
    sections: &'a [Value],
    kind: Kind,
    out: &mut SectionFacts<'a>,
) {
    for section in sections {
        let code = section_code(section, kind);
        let mut items = Vec::new();
        if let Some(div) = string(section.get("text").and_then(|t| t.get("div"))) {
            for paragraph in narrative(div) {
                push_item(&mut items, paragraph);
            }
        }
        for reference in array(section.get("entry")) {
            if let Some(entry) = bundle.resolve(Some(reference)) {
                summarize(bundle, entry, &mut items);
                out.entries.push((code, entry));
            }
        }
        out.sections.push(DocumentSection {
            code: code.to_owned(),
            title: string(section.get("title")).map(str::to_owned),
            items,
        });
        read_sections(bundle, array(section.get("section")), kind, out);
    }
}

/// The facility of the first Organization (or PractitionerRole) among `entries` of
/// the section `code`.
fn section_facility(
    entries: &[(&str, Entry<'_>)],
    bundle: &Bundle<'_>,
    code: &str,
) -> Option<Facility> {
    entries
        .iter()
        .filter(|(c, _)| *c == code)
        .find_map(|(_, entry)| entry_facility(bundle, *entry))
}

/// The facility an Organization or PractitionerRole entry stands for.
fn entry_facility(bundle: &Bundle<'_>, entry: Entry<'_>) -> Option<Facility> {
    let org = match entry.resource_type {
        "Organization" => entry,
        "PractitionerRole" => bundle.resolve_as(entry.get("organization"), "Organization")?,
        _ => return None,
    };
    organization_facility(org).ok().flatten()
}

/// The facility the document comes from; see the module documentation.
fn facility(
    bundle: &Bundle<'_>,
    composition: Entry<'_>,
    encounter: Option<Entry<'_>>,
    patient: Entry<'_>,
    sections: &SectionFacts<'_>,
) -> Result<String, NormalizeError> {
    let custodian = || composition.path_to("custodian");
    if let Some(facility) = reference_facility(bundle, composition.get("custodian"), custodian)? {
        return Ok(facility.code);
    }
    for (i, author) in array(composition.get("author")).iter().enumerate() {
        let path = || composition.path_to(&format!("author[{i}]"));
        if let Some(facility) = reference_facility(bundle, Some(author), path)? {
            return Ok(facility.code);
        }
    }
    if let Some(facility) = section_facility(&sections.entries, bundle, REFERRAL_FROM_SECTION) {
        return Ok(facility.code);
    }
    if let Some(encounter) = encounter {
        let path = || encounter.path_to("serviceProvider");
        if let Some(facility) = reference_facility(bundle, encounter.get("serviceProvider"), path)?
        {
            return Ok(facility.code);
        }
    }
    match local_id_facilities(patient).as_slice() {
        [only] => Ok((*only).to_owned()),
        _ => Err(NormalizeError::at(
            custodian(),
            "the facility the document comes from is unknown: refer Composition.custodian (or an author) to an Organization identified in http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no",
        )),
    }
}

/// Recipients (910) and care offices named by the sections.
fn related_facilities(
    bundle: &Bundle<'_>,
    sections: &SectionFacts<'_>,
    source: &str,
) -> Vec<RelatedFacility> {
    let mut out: Vec<RelatedFacility> = Vec::new();
    for (code, entry) in &sections.entries {
        let Some(facility) = entry_facility(bundle, *entry) else {
            continue;
        };
        let role = if *code == REFERRAL_TO_SECTION {
            FacilityRole::Recipient
        } else if facility.kind == FacilityKind::CareOffice {
            FacilityRole::CareOffice
        } else {
            continue;
        };
        if facility.code == source && role != FacilityRole::Recipient {
            continue;
        }
        if out
            .iter()
            .any(|f| f.role == role && f.code == facility.code)
        {
            continue;
        }
        out.push(RelatedFacility {
            role,
            code: facility.code,
            name: facility.name,
        });
    }
    out
}

/// `Bundle.identifier.value` (bdl-9).
fn identifier(bundle: &Bundle<'_>) -> Result<String, NormalizeError> {
    let Some(value) = string(bundle.root.get("identifier").and_then(|i| i.get("value"))) else {
        return Err(NormalizeError::at(
            "Bundle.identifier",
            "the document Bundle has no identifier value (FHIR bdl-9): the hub needs it as the document's id (JP-CLINS: 医療機関番号^被保険者個人識別子^ローカルID)",
        ));
    };
    if value.chars().count() > MAX_IDENTIFIER_CHARS {
        return Err(NormalizeError::at(
            "Bundle.identifier.value",
            format!(
                "Bundle.identifier.value is {} characters long; the hub takes at most {MAX_IDENTIFIER_CHARS}",
                value.chars().count()
            ),
        ));
    }
    Ok(value.to_owned())
}

/// Normalises a document Bundle; `document.content` is left for the caller to fill
/// with the Bundle (which `bundle` borrows).
pub(crate) fn normalize(
    bundle: &Bundle<'_>,
    raw: &[u8],
    window: &TimeWindow,
) -> Result<CanonicalEvent, NormalizeError> {
    let Some(composition) = bundle.first().filter(|e| e.resource_type == "Composition") else {
        let found = bundle.first().map_or("nothing", |e| e.resource_type);
        return Err(NormalizeError::at(
            FIRST_RESOURCE,
            format!(
                "a document Bundle must start with a Composition (FHIR bdl-11), but entry 0 is {}: without it there is no document type, author or date",
                shown_code(found)
            ),
        ));
    };
    if composition.str("status") == Some("entered-in-error") {
        return Err(NormalizeError::at(
            composition.path_to("status"),
            "Composition.status is entered-in-error: the document is withdrawn, and the hub has no event for a withdrawal yet; tell the recipients another way",
        ));
    }
    let kind = kind(composition)?;
    let date_path = || composition.path_to("date");
    let Some(time) =
        time::read(composition.get("date"), date_path, window)?.and_then(time::FhirTime::start)
    else {
        return Err(NormalizeError::at(
            date_path(),
            "Composition.date is missing or less precise than a day: the hub needs when the document was written",
        ));
    };
    let subject = composition.get("subject");
    let Some(patient_entry) = bundle.resolve_as(subject, "Patient") else {
        return Err(NormalizeError::at(
            composition.path_to("subject"),
            if subject.is_some() {
                "Composition.subject does not resolve to a Patient entry of the Bundle: the document must carry its Patient (refer to its fullUrl, or Patient/<id>)"
            } else {
                "the Composition names no patient (Composition.subject is missing): there is no patient to route the document for"
            },
        ));
    };
    let message_id = identifier(bundle)?;
    let encounter_entry = bundle.resolve_as(composition.get("encounter"), "Encounter");

    let mut sections = SectionFacts {
        sections: Vec::new(),
        entries: Vec::new(),
    };
    read_sections(
        bundle,
        array(composition.get("section")),
        kind,
        &mut sections,
    );

    let facility = facility(
        bundle,
        composition,
        encounter_entry,
        patient_entry,
        &sections,
    )?;
    check_patient_facility(patient_entry, &facility)?;
    let mut patient = resources::patient(patient_entry, &facility, window)?;
    let basic_person = sections
        .entries
        .iter()
        .filter(|(code, e)| *code == BASIC_SECTION && e.resource_type == "RelatedPerson")
        .chain(
            sections
                .entries
                .iter()
                .filter(|(_, e)| e.resource_type == "RelatedPerson"),
        )
        .find_map(|(_, e)| related_person(e.resource));
    if let Some(person) = basic_person {
        patient.key_person = Some(person);
    }

    let mut encounter = encounter_entry
        .map(|e| encounter::read(bundle, e, window))
        .transpose()?
        .map(|facts| facts.encounter)
        .unwrap_or_default();
    if kind.period_is_the_stay() {
        for (i, event) in array(composition.get("event")).iter().enumerate() {
            let path = || composition.path_to(&format!("event[{i}].period"));
            let (start, end) = encounter::period(event.get("period"), &path, window)?;
            encounter.admitted_at = encounter.admitted_at.or(start);
            encounter.discharged_at = encounter.discharged_at.or(end);
        }
    }
    let encounter = (encounter != renkei_sdk::Encounter::default()).then_some(encounter);
    let facilities = related_facilities(bundle, &sections, &facility);

    let title = composition
        .str("title")
        .or_else(|| concept_text(composition.get("type")))
        .map(str::to_owned);
    let document = Document {
        code: Some(kind.code().to_owned()),
        title,
        id: Some(message_id.clone()),
        created_at: Some(time),
        content: None,
        sections: sections.sections,
    };
    let data = EventData {
        patient,
        encounter,
        document: Some(document),
        cancels: None,
        care: None,
        facilities,
        replaces: None,
        origin: Origin {
            format: SourceFormat::Fhir,
            sending_system: None,
            facility: Some(facility.clone()),
            message_id,
            raw_sha256: Origin::sha256_hex(raw),
            assumed_charset: None,
        },
    };
    Ok(CanonicalEvent::new(
        facility_source(&facility),
        kind.event_type(),
        time,
        data,
    ))
}
