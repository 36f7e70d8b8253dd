//! Normalisation of HL7 v2 ADT messages to the canonical event v1.
//!
//! | trigger     | event type              | `data.cancels`          |
//! |-------------|-------------------------|-------------------------|
//! | A01         | `inpatient.admitted`    |                         |
//! | A02         | `inpatient.transferred` |                         |
//! | A03         | `inpatient.discharged`  |                         |
//! | A04         | `outpatient.registered` |                         |
//! | A08, A31    | `patient.updated`       |                         |
//! | A11         | `inpatient.cancelled`   | `inpatient.admitted`    |
//! | A12         | `inpatient.cancelled`   | `inpatient.transferred` |
//! | A13         | `inpatient.cancelled`   | `inpatient.discharged`  |
//!
//! The event time is PV1-44 for A01 (then EVN-6, EVN-2), EVN-6 for A02 (then EVN-2),
//! PV1-45 for A03 (then EVN-2), and EVN-2 otherwise; MSH-7 is the last resort. HL7
//! timestamps without an offset are Japan time (+09:00). Every timestamp read, and the
//! date of birth, must lie in the normaliser's [`TimeWindow`] (by default 1900 to a year
//! ahead of the clock); one outside it is refused naming its field.
//!
//! Errors name the HL7 location (`MSH-9`, `PID-3`, `EVN-2`…) and never repeat patient
//! data: names, identifiers and dates of birth are not echoed; codes and timestamps are.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset};
use renkei_sdk::{
    CanonicalEvent, Encounter, EncounterClass, EventData, EventType, Identifier, Insurance,
    Location, MedicalInsurance, NormalizeError, Normalizer, Origin, Patient, PersonName,
    Practitioner, Sex, SourceFormat, TimeWindow, facility_source, local_patient_id_system,
};

use crate::charset::{self, shown};
use crate::dtm;
use crate::parse::{Component, Field, Message, Segment, SegmentFields};

/// The ADT trigger events the hub normalises.
pub const HANDLED_TRIGGERS: [&str; 9] = [
    "A01", "A02", "A03", "A04", "A08", "A11", "A12", "A13", "A31",
];

/// Normalises HL7 v2 ADT messages (ER7, any supported `MSH-18` character set) to
/// canonical events. Stateless and cheap to share.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hl7Normalizer {
    window: TimeWindow,
}

impl Hl7Normalizer {
    /// A normaliser accepting times in the default [`TimeWindow`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A normaliser accepting times in `window` only.
    pub fn with_time_window(window: TimeWindow) -> Self {
        Self { window }
    }
}

impl Normalizer for Hl7Normalizer {
    fn format(&self) -> SourceFormat {
        SourceFormat::Hl7v2
    }

    fn normalize(&self, raw: &[u8]) -> Result<CanonicalEvent, NormalizeError> {
        let decoded = charset::decode(raw)?;
        let message = Message::parse(&decoded.text)?;
        normalize_message(&message, raw, &self.window)
    }
}

/// The event type (and cancelled type) of an ADT trigger.
fn event_for(trigger: &str) -> Option<(EventType, Option<EventType>)> {
    use EventType::*;
    Some(match trigger {
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

/// A trimmed value, `None` when empty or the HL7 null `""`.
/// The longest `MSH-10` taken (HL7 v2.7 widened the field to 199 characters; v2.5 has 20).
pub const MAX_CONTROL_ID_CHARS: usize = 199;

fn text(value: Cow<'_, str>) -> Option<String> {
    let trimmed = present(&value)?;
    if trimmed.len() == value.len() {
        Some(value.into_owned())
    } else {
        Some(trimmed.to_owned())
    }
}

/// [`text`] without the copy, for values that are only looked at.
fn present(value: &str) -> Option<&str> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed == "\"\"" {
        None
    } else {
        Some(trimmed)
    }
}

/// A code-like value (message type, trigger) shown in an error, or a neutral phrase
/// when it does not look like a code (it could then be misplaced patient data).
fn shown_code(value: &str) -> String {
    if !value.is_empty()
        && value.len() <= 16
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '^' | '.' | '-'))
    {
        format!("`{value}`")
    } else {
        "an unrecognised value".to_owned()
    }
}

/// A bad timestamp shown in an error, only when it looks like one: a field that holds
/// something else (a misaligned segment may put a name there) is described, never
/// echoed, since errors reach logs, ACKs and the audit log.
fn shown_time(value: &str) -> String {
    if value.len() <= 40
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b':' | b'T' | b' '))
    {
        shown(value)
    } else {
        format!("(a value of {} characters)", value.chars().count())
    }
}

fn is_facility_code(value: &str) -> bool {
    value.len() == 10 && value.bytes().all(|b| b.is_ascii_digit())
}

fn is_oid(value: &str) -> bool {
    !value.is_empty()
        && value
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
}

/// Percent-encodes what is not unreserved in a URN namespace-specific string.
fn urn_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Joins "family given" with one ASCII space.
fn join_name(family: Cow<'_, str>, given: Cow<'_, str>) -> Option<String> {
    match (present(&family), present(&given)) {
        (Some(f), Some(g)) => {
            let mut name = String::with_capacity(f.len() + 1 + g.len());
            name.push_str(f);
            name.push(' ');
            name.push_str(g);
            Some(name)
        }
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    }
}

fn normalize_message(
    message: &Message<'_>,
    raw: &[u8],
    window: &TimeWindow,
) -> Result<CanonicalEvent, NormalizeError> {
    let msh = message.msh();
    let evn = message.segment("EVN");

    // MSH-9 and MSH-10.
    let message_type = msh.field(9);
    let message_code = message_type.component(1).value();
    let control_id = text(msh.field(10).value());
    if message_code.trim().is_empty() && control_id.is_none() {
        return Err(NormalizeError::at(
            "MSH-9",
            format!(
                "MSH is cut short after MSH-{}: there is no message type (MSH-9) and no message control id (MSH-10)",
                msh.field_count()
            ),
        ));
    }
    let message_code = message_code.trim();
    if message_code.is_empty() {
        return Err(NormalizeError::at(
            "MSH-9",
            "the message type (MSH-9) is empty",
        ));
    }
    let mut trigger = message_type
        .component(2)
        .value()
        .trim()
        .to_ascii_uppercase();
    if !message_code.eq_ignore_ascii_case("ADT") {
        return Err(NormalizeError::at(
            "MSH-9",
            format!(
                "message type {} is not handled: the hub takes ADT messages ({}) only",
                shown_code(&format!("{message_code}^{trigger}")),
                HANDLED_TRIGGERS.join(", ")
            ),
        ));
    }
    if trigger.is_empty()
        && let Some(evn) = evn
    {
        trigger = evn.field(1).value().trim().to_ascii_uppercase();
    }
    if trigger.is_empty() {
        return Err(NormalizeError::at(
            "MSH-9",
            "the trigger event (MSH-9.2) is missing, and EVN-1 does not name one either",
        ));
    }
    let Some((event_type, cancels)) = event_for(&trigger) else {
        return Err(NormalizeError::at(
            "MSH-9",
            format!(
                "ADT trigger event {} is not an event the hub handles (it takes {})",
                shown_code(&trigger),
                HANDLED_TRIGGERS.join(", ")
            ),
        ));
    };
    let Some(control_id) = control_id else {
        return Err(NormalizeError::at(
            "MSH-10",
            "the message control id (MSH-10) is empty: the hub needs it to acknowledge and deduplicate the message",
        ));
    };
    if control_id.chars().count() > MAX_CONTROL_ID_CHARS {
        return Err(NormalizeError::at(
            "MSH-10",
            format!(
                "the message control id (MSH-10) is {} characters long; HL7 v2 allows at most {MAX_CONTROL_ID_CHARS}",
                control_id.chars().count()
            ),
        ));
    }

    let facility = facility(msh, evn)?;

    // Patient.
    let pid = message.segment("PID").ok_or_else(|| {
        NormalizeError::at(
            "PID",
            "the message has no PID segment: there is no patient to route for",
        )
    })?;
    let identifiers = identifiers(pid, &facility);
    if identifiers.is_empty() {
        return Err(NormalizeError::at(
            "PID-3",
            "PID-3 is empty: there is no patient to route for",
        ));
    }

    // Timestamps: every one present must be valid, even if another is the event time.
    // PV1 is long and read far into (PV1-44, PV1-45): split it once.
    let pv1 = message.segment("PV1").map(|pv1| pv1.fields());
    let mut problems = Vec::new();
    let mut timestamp = |field: Option<Field<'_>>, location: &'static str| {
        field.and_then(|f| read_timestamp(f, location, window, &mut problems))
    };
    let evn_2 = timestamp(evn.map(|s| s.field(2)), "EVN-2");
    let evn_6 = timestamp(evn.map(|s| s.field(6)), "EVN-6");
    let pv1_44 = timestamp(pv1.as_ref().map(|s| s.field(44)), "PV1-44");
    let pv1_45 = timestamp(pv1.as_ref().map(|s| s.field(45)), "PV1-45");
    if let Some((location, _)) = problems.first() {
        let described: Vec<&str> = problems.iter().map(|(_, p)| p.as_str()).collect();
        return Err(NormalizeError::at(*location, described.join("; ")));
    }
    let preferred: &[Option<DateTime<FixedOffset>>] = match trigger.as_str() {
        "A01" => &[pv1_44, evn_6, evn_2],
        "A02" => &[evn_6, evn_2],
        "A03" => &[pv1_45, evn_2],
        _ => &[evn_2],
    };
    let time = match preferred.iter().flatten().next() {
        Some(time) => *time,
        None => {
            let mut problems = Vec::new();
            match read_timestamp(msh.field(7), "MSH-7", window, &mut problems) {
                Some(time) => time,
                None => {
                    let reason = match problems.first() {
                        Some((_, problem)) => {
                            format!("the event time is missing (EVN-2 is empty) and {problem}")
                        }
                        None => "the event time is missing: EVN-2 and MSH-7 are empty".to_owned(),
                    };
                    return Err(NormalizeError::at("EVN-2", reason));
                }
            }
        }
    };

    let patient = Patient {
        identifiers,
        name: person_name(pid),
        birth_date: birth_date(pid, window)?,
        sex: sex(pid),
        insurance: insurance(message),
        ..Patient::default()
    };
    let encounter = pv1.and_then(|pv1| encounter(&pv1, pv1_44, pv1_45));
    let sending_application = msh.field(3);
    let sending_system = text(sending_application.component(1).value())
        .or_else(|| text(sending_application.component(2).value()));

    let data = EventData {
        patient,
        encounter,
        document: None,
        cancels,
        care: None,
        facilities: Vec::new(),
        replaces: None,
        origin: Origin {
            format: SourceFormat::Hl7v2,
            sending_system,
            facility: Some(facility.clone()),
            message_id: control_id,
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

/// Reads a timestamp field; an invalid one is recorded in `problems`.
fn read_timestamp(
    field: Field<'_>,
    location: &'static str,
    window: &TimeWindow,
    problems: &mut Vec<(&'static str, String)>,
) -> Option<DateTime<FixedOffset>> {
    let raw = field.value();
    let value = present(&raw)?;
    match dtm::parse(value).and_then(dtm::Dtm::to_datetime) {
        Some(time) => match window.check(location, time) {
            Ok(()) => Some(time),
            Err(problem) => {
                problems.push((location, format!("{problem} (it is {})", shown_time(value))));
                None
            }
        },
        None => {
            problems.push((
                location,
                format!(
                    "{location} {} is not an HL7 timestamp (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ], e.g. 20250410093000)",
                    shown_time(value)
                ),
            ));
            None
        }
    }
}

/// The facility code: MSH-4, else EVN-7 (first component, 10 digits).
fn facility(msh: Segment<'_>, evn: Option<Segment<'_>>) -> Result<String, NormalizeError> {
    let msh_4 = msh.field(4).value();
    let evn_7 = evn.map(|evn| evn.field(7).value());
    let candidates = [
        ("MSH-4", present(&msh_4)),
        ("EVN-7", evn_7.as_deref().and_then(present)),
    ];
    if let Some(code) = candidates
        .iter()
        .filter_map(|(_, v)| *v)
        .find(|v| is_facility_code(v))
    {
        return Ok(code.to_owned());
    }
    match candidates.iter().find_map(|(l, v)| v.map(|v| (*l, v))) {
        Some((location, value)) => Err(NormalizeError::at(
            location,
            format!(
                "the sending facility {} is not a 10-digit facility code (医療機関コード); send the code in MSH-4 (or EVN-7)",
                shown_code(value)
            ),
        )),
        None => Err(NormalizeError::at(
            "MSH-4",
            "the sending facility is missing: MSH-4 and EVN-7 are empty, and the hub needs the 10-digit facility code",
        )),
    }
}

/// The identifier system named by an assigning authority (CX.4, an HD whose parts are
/// subcomponents), if it names one.
fn assigning_system(authority: Component<'_>) -> Option<String> {
    let namespace = text(authority.subcomponent(1).value());
    let universal = text(authority.subcomponent(2).value());
    let candidate = universal.or(namespace)?;
    Some(if is_facility_code(&candidate) {
        local_patient_id_system(&candidate)
    } else if is_oid(&candidate) {
        format!("urn:oid:{candidate}")
    } else if candidate.contains(':') && !candidate.contains(char::is_whitespace) {
        candidate
    } else {
        format!(
            "urn:renkei:hl7v2:assigning-authority:{}",
            urn_escape(&candidate)
        )
    })
}

/// PID-3: every repetition with a CX.1.
fn identifiers(pid: Segment<'_>, facility: &str) -> Vec<Identifier> {
    let mut out: Vec<Identifier> = Vec::new();
    for rep in pid.field(3).repetitions() {
        let Some(value) = text(rep.component(1).value()) else {
            continue;
        };
        let system =
            assigning_system(rep.component(4)).unwrap_or_else(|| local_patient_id_system(facility));
        let identifier = Identifier { system, value };
        if !out.contains(&identifier) {
            out.push(identifier);
        }
    }
    out
}

/// PID-5: the kanji (XPN.8 `I`) and kana (XPN.8 `P`) repetitions, legal names (XPN.7
/// `L`) first; a repetition without XPN.8 is taken as kanji when there is no `I` one.
fn person_name(pid: Segment<'_>) -> Option<PersonName> {
    let mut kanji: Option<(String, bool)> = None;
    let mut kana: Option<(String, bool)> = None;
    let mut unmarked: Option<String> = None;
    for rep in pid.field(5).repetitions() {
        let Some(name) = join_name(
            rep.component(1).subcomponent(1).value(),
            rep.component(2).value(),
        ) else {
            continue;
        };
        let legal = rep.component(7).value().trim() == "L";
        let slot = match rep.component(8).value().trim() {
            "I" => &mut kanji,
            "P" => &mut kana,
            "" => {
                unmarked.get_or_insert(name);
                continue;
            }
            _ => continue,
        };
        if slot
            .as_ref()
            .is_none_or(|(_, was_legal)| legal && !was_legal)
        {
            *slot = Some((name, legal));
        }
    }
    let kanji = kanji.map(|(n, _)| n).or(unmarked);
    let kana = kana.map(|(n, _)| n);
    (kanji.is_some() || kana.is_some()).then_some(PersonName { kanji, kana })
}

/// PID-7: the date of birth; a value less precise than a day is left out.
fn birth_date(
    pid: Segment<'_>,
    window: &TimeWindow,
) -> Result<Option<chrono::NaiveDate>, NormalizeError> {
    let raw = pid.field(7).value();
    let Some(value) = present(&raw) else {
        return Ok(None);
    };
    match dtm::parse(value) {
        // The value itself is patient data: the error names the window only.
        Some(dtm) => match window.check_past_date("PID-7", dtm.date) {
            Ok(()) => Ok(dtm.has_day.then_some(dtm.date)),
            Err(problem) => Err(NormalizeError::at(
                "PID-7",
                format!(
                    "the date of birth: {problem} (the value is patient data and is not repeated here)"
                ),
            )),
        },
        None => Err(NormalizeError::at(
            "PID-7",
            "the date of birth (PID-7) is not an HL7 date YYYYMMDD (the value is patient data and is not repeated here)",
        )),
    }
}

/// PID-8: administrative sex (HL7 table 0001).
fn sex(pid: Segment<'_>) -> Option<Sex> {
    match pid.field(8).value().trim() {
        "F" | "f" => Some(Sex::Female),
        "M" | "m" => Some(Sex::Male),
        "O" | "o" | "A" | "a" => Some(Sex::Other),
        "U" | "u" | "N" | "n" => Some(Sex::Unknown),
        _ => None,
    }
}

/// The first IN1 with an insurer number: IN1-3 insurer number (保険者番号), IN1-10
/// symbol (記号) and IN1-11 number (番号), as JAHIS/SS-MIX2 place them.
fn insurance(message: &Message<'_>) -> Option<Insurance> {
    message.segments_named("IN1").find_map(|in1| {
        let insurer_number = text(in1.field(3).value())?;
        Some(Insurance {
            medical: Some(MedicalInsurance {
                insurer_number: Some(insurer_number),
                symbol: text(in1.field(10).value()),
                number: text(in1.field(11).value()),
            }),
            ltc: None,
        })
    })
}

/// PV1-7: the attending doctor, preferring the kanji (XCN.15 `I`) repetition.
fn attending(pv1: &SegmentFields<'_>) -> Option<Practitioner> {
    let field = pv1.field(7);
    let chosen = field
        .repetitions()
        .find(|r| r.component(15).value().trim() == "I")
        .unwrap_or_else(|| field.repetition(1));
    let id = text(chosen.component(1).value()).or_else(|| {
        field
            .repetitions()
            .find_map(|r| text(r.component(1).value()))
    });
    let name = join_name(
        chosen.component(2).subcomponent(1).value(),
        chosen.component(3).value(),
    );
    (id.is_some() || name.is_some()).then_some(Practitioner { id, name })
}

fn encounter(
    pv1: &SegmentFields<'_>,
    admitted_at: Option<DateTime<FixedOffset>>,
    discharged_at: Option<DateTime<FixedOffset>>,
) -> Option<Encounter> {
    let class = match pv1.field(2).value().trim() {
        "I" => Some(EncounterClass::Inpatient),
        "O" => Some(EncounterClass::Outpatient),
        "E" => Some(EncounterClass::Emergency),
        _ => None,
    };
    let place = pv1.field(3);
    let location = Location {
        ward: text(place.component(1).value()),
        room: text(place.component(2).value()),
        bed: text(place.component(3).value()),
    };
    let location = (location != Location::default()).then_some(location);
    let encounter = Encounter {
        class,
        visit_number: text(pv1.field(19).value()),
        admitted_at,
        discharged_at,
        location,
        department: text(pv1.field(10).value()),
        attending: attending(pv1),
        discharge_disposition: text(pv1.field(36).value()),
        discharge_destination: text(pv1.field(37).value()),
    };
    (encounter != Encounter::default()).then_some(encounter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSH: &str = "MSH|^~\\&|HIS01|1319999999|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|C1|P|2.5||||||UNICODE UTF-8";

    fn normalize(text: &str) -> Result<CanonicalEvent, NormalizeError> {
        Hl7Normalizer::new().normalize(text.as_bytes())
    }

    /// A segment with the given fields set.
    fn seg(name: &str, fields: &[(usize, &str)]) -> String {
        let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
        let mut out = name.to_owned();
        for n in 1..=last {
            out.push('|');
            if let Some((_, v)) = fields.iter().find(|(i, _)| *i == n) {
                out.push_str(v);
            }
        }
        out
    }

    fn ok(text: &str) -> CanonicalEvent {
        normalize(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> NormalizeError {
        match normalize(text) {
            Ok(event) => panic!("accepted: {event:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn maps_the_full_admission() {
        let pv1 = seg(
            "PV1",
            &[
                (1, "1"),
                (2, "I"),
                (3, "05^512^2^^^N"),
                (
                    7,
                    "D001^医師^次郎^^^^^^^L^^^^^I~D002^イシ^ジロウ^^^^^^^L^^^^^P",
                ),
                (10, "01"),
                (19, "V123"),
                (36, "01"),
                (37, "03"),
                (44, "202504100900"),
                (45, "202504241000"),
            ],
        );
        let msg = format!(
            "{MSH}\rEVN|A01|20250410093000||||20250410090500|1319999999\r\
             PID|1||0000482915^^^^PI~ABC^^^^MR~X1^^^1.2.392.1&&ISO~L2^^^^^^~Z^^^9999999999\
             ||架空^花子^^^^^L^I~カクウ^ハナコ^^^^^L^P||19380315|F\r{pv1}\r\
             IN1|1|39^後期高齢者医療^JHSD0001|39139999|||||||12345|678"
        );
        let event = ok(&msg);
        assert_eq!(event.event_type, EventType::InpatientAdmitted);
        assert_eq!(event.source, "urn:renkei:facility:1319999999");
        assert_eq!(event.time.to_rfc3339(), "2025-04-10T09:00:00+09:00");
        let local = local_patient_id_system("1319999999");
        let ids: Vec<_> = event
            .data
            .patient
            .identifiers
            .iter()
            .map(|i| (i.system.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                (local.as_str(), "0000482915"),
                (local.as_str(), "ABC"),
                ("urn:oid:1.2.392.1", "X1"),
                (local.as_str(), "L2"),
                ("urn:oid:1.2.392.100495.20.3.51.19999999999", "Z"),
            ]
        );
        let name = event.data.patient.name.clone().unwrap_or_default();
        assert_eq!(name.kanji.as_deref(), Some("架空 花子"));
        assert_eq!(name.kana.as_deref(), Some("カクウ ハナコ"));
        assert_eq!(event.data.patient.sex, Some(Sex::Female));
        assert_eq!(
            event.data.patient.birth_date,
            chrono::NaiveDate::from_ymd_opt(1938, 3, 15)
        );
        let medical = event
            .data
            .patient
            .insurance
            .clone()
            .and_then(|i| i.medical)
            .unwrap_or_default();
        assert_eq!(medical.insurer_number.as_deref(), Some("39139999"));
        assert_eq!(medical.symbol.as_deref(), Some("12345"));
        assert_eq!(medical.number.as_deref(), Some("678"));
        let enc = event.data.encounter.clone().unwrap_or_default();
        assert_eq!(enc.class, Some(EncounterClass::Inpatient));
        assert_eq!(enc.visit_number.as_deref(), Some("V123"));
        assert_eq!(enc.department.as_deref(), Some("01"));
        let attending = enc.attending.clone().unwrap_or_default();
        assert_eq!(attending.id.as_deref(), Some("D001"));
        assert_eq!(attending.name.as_deref(), Some("医師 次郎"));
        assert_eq!(enc.discharge_disposition.as_deref(), Some("01"));
        assert_eq!(enc.discharge_destination.as_deref(), Some("03"));
        let loc = enc.location.clone().unwrap_or_default();
        assert_eq!(
            (loc.ward.as_deref(), loc.room.as_deref(), loc.bed.as_deref()),
            (Some("05"), Some("512"), Some("2"))
        );
        assert_eq!(
            enc.discharged_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2025-04-24T10:00:00+09:00")
        );
        assert_eq!(event.data.origin.sending_system.as_deref(), Some("HIS01"));
        assert_eq!(event.data.origin.message_id, "C1");
        assert_eq!(
            event.data.origin.raw_sha256,
            Origin::sha256_hex(msg.as_bytes())
        );
    }

    #[test]
    fn implausible_times_are_refused_naming_the_field() {
        let admission = |pv1_44: &str| {
            let pv1 = seg("PV1", &[(1, "1"), (2, "I"), (44, pv1_44)]);
            format!("{MSH}\rEVN||20250410080000\rPID|1||42\r{pv1}")
        };
        for year in ["00000101", "99991231235959", "18991231"] {
            let e = err(&admission(year));
            assert_eq!(e.location.as_deref(), Some("PV1-44"), "{year}: {e}");
            assert!(
                e.reason.contains("outside the times the hub accepts"),
                "{e}"
            );
        }
        let e = err(&format!("{MSH}\rEVN||99990101\rPID|1||42"));
        assert_eq!(e.location.as_deref(), Some("EVN-2"), "{e}");
        // Dates of birth too, without repeating the value.
        let e = err(&format!("{MSH}\rEVN||20250410\rPID|1||42||||00010101"));
        assert_eq!(e.location.as_deref(), Some("PID-7"), "{e}");
        assert!(!e.reason.contains("0001"), "{e}");
        // The window is the normaliser's: a narrower one refuses what the default takes.
        let narrow = TimeWindow::between(
            chrono::DateTime::parse_from_rfc3339("2025-04-11T00:00:00Z")
                .map(|t| t.to_utc())
                .unwrap_or_default(),
            chrono::Utc::now(),
        );
        let text = admission("202504100900");
        assert!(Hl7Normalizer::new().normalize(text.as_bytes()).is_ok());
        let refused = Hl7Normalizer::with_time_window(narrow).normalize(text.as_bytes());
        assert_eq!(
            refused.err().and_then(|e| e.location).as_deref(),
            Some("EVN-2")
        );
    }

    #[test]
    fn event_time_fallbacks() {
        let with = |trigger: &str, evn: &str, pv1: &str| {
            let msg = MSH.replace("ADT^A01", &format!("ADT^{trigger}"));
            ok(&format!("{msg}\r{evn}\rPID|1||42\r{pv1}"))
                .time
                .to_rfc3339()
        };
        let pv1 = seg(
            "PV1",
            &[
                (1, "1"),
                (2, "I"),
                (44, "202504100900"),
                (45, "202504241000"),
            ],
        );
        // A01 without PV1-44: EVN-6, then EVN-2.
        assert_eq!(
            with("A01", "EVN||20250410080000||||20250410070000", "PV1|1|I"),
            "2025-04-10T07:00:00+09:00"
        );
        assert_eq!(
            with("A01", "EVN||20250410080000", "PV1|1|I"),
            "2025-04-10T08:00:00+09:00"
        );
        assert_eq!(
            with("A01", "EVN||20250410080000", &pv1),
            "2025-04-10T09:00:00+09:00"
        );
        assert_eq!(
            with("A02", "EVN||20250410080000", &pv1),
            "2025-04-10T08:00:00+09:00"
        );
        assert_eq!(
            with("A03", "EVN||20250410080000", &pv1),
            "2025-04-24T10:00:00+09:00"
        );
        assert_eq!(
            with("A03", "EVN||20250410080000", "PV1|1|I"),
            "2025-04-10T08:00:00+09:00"
        );
        assert_eq!(
            with("A08", "EVN||20250410080000+0000", &pv1),
            "2025-04-10T08:00:00+00:00"
        );
        // No EVN at all: MSH-7.
        assert_eq!(with("A08", "ZZZ|1", "PV1|1|I"), "2025-04-10T09:30:15+09:00");
    }

    #[test]
    fn cancellations_and_updates() {
        for (trigger, ty, cancels) in [
            (
                "A11",
                EventType::InpatientCancelled,
                Some(EventType::InpatientAdmitted),
            ),
            (
                "A12",
                EventType::InpatientCancelled,
                Some(EventType::InpatientTransferred),
            ),
            (
                "A13",
                EventType::InpatientCancelled,
                Some(EventType::InpatientDischarged),
            ),
            ("A31", EventType::PatientUpdated, None),
            ("A04", EventType::OutpatientRegistered, None),
        ] {
            let msg = MSH.replace("ADT^A01", &format!("ADT^{trigger}"));
            let event = ok(&format!("{msg}\rEVN||20250410\rPID|1||42"));
            assert_eq!(
                (event.event_type, event.data.cancels),
                (ty, cancels),
                "{trigger}"
            );
            assert_eq!(event.data.encounter, None);
        }
        // The trigger may come from EVN-1 when MSH-9.2 is empty.
        let msg = MSH.replace("ADT^A01^ADT_A01", "ADT");
        let event = ok(&format!("{msg}\rEVN|A02|20250410\rPID|1||42"));
        assert_eq!(event.event_type, EventType::InpatientTransferred);
    }

    #[test]
    fn errors_name_the_field_and_never_echo_patient_data() {
        let e = err(&format!(
            "{}\rEVN||20250410\rPID|1||42",
            MSH.replace("ADT^A01", "ORU^R01")
        ));
        assert_eq!(e.location.as_deref(), Some("MSH-9"));
        assert!(e.reason.contains("ORU^R01"), "{e}");
        let e = err(&format!(
            "{}\rEVN||20250410\rPID|1||42",
            MSH.replace("ADT^A01", "ADT^架空")
        ));
        assert!(!e.to_string().contains("架空"), "{e}");
        let e = err(&format!("{MSH}\rEVN||20250410\rPID|1||^^^^PI||架空^花子"));
        assert_eq!(e.location.as_deref(), Some("PID-3"));
        assert!(!e.to_string().contains("架空"), "{e}");
        let e = err(&format!("{MSH}\rEVN||20250410"));
        assert_eq!(e.location.as_deref(), Some("PID"));
        let e = err(&format!("{MSH}\rEVN||20250410\rPID|1||42||||19381315"));
        assert_eq!(e.location.as_deref(), Some("PID-7"));
        assert!(!e.to_string().contains("19381315"), "{e}");
        let e = err(&format!(
            "{}\rEVN||20250410\rPID|1||42",
            MSH.replace("|C1|", "||")
        ));
        assert_eq!(e.location.as_deref(), Some("MSH-10"));
        let e = err(&format!(
            "{}\rEVN||20250410\rPID|1||42",
            MSH.replace(
                "|C1|",
                &format!("|{}|", "9".repeat(MAX_CONTROL_ID_CHARS + 1))
            )
        ));
        assert_eq!(e.location.as_deref(), Some("MSH-10"));
        assert!(e.reason.contains("200 characters"), "{e}");
        let e = err(&format!(
            "{}\rEVN||20250410\rPID|1||42",
            MSH.replace("1319999999", "HOSP")
        ));
        assert_eq!(e.location.as_deref(), Some("MSH-4"));
        let e = err(&format!(
            "{}\rEVN||20250410\rPID|1||42",
            MSH.replace("1319999999", "")
        ));
        assert_eq!(e.location.as_deref(), Some("MSH-4"));
        // EVN-7 stands in for an empty MSH-4.
        let event = ok(&format!(
            "{}\rEVN||20250410|||||1329999999\rPID|1||42",
            MSH.replace("1319999999", "")
        ));
        assert_eq!(event.source_facility(), Some("1329999999"));
        let e = err(&format!(
            "{}\rEVN|\rPID|1||42",
            MSH.replace("20250410093015", "x")
        ));
        assert_eq!(e.location.as_deref(), Some("EVN-2"));
        assert!(e.reason.contains("MSH-7"), "{e}");
        let e = err(&format!("{MSH}\rEVN||20250410||||2025-04-10\rPID|1||42"));
        assert_eq!(e.location.as_deref(), Some("EVN-6"));
        assert!(e.reason.contains("`2025-04-10`"), "{e}");
        // A field that is not a timestamp at all is not echoed.
        let e = err(&format!("{MSH}\rEVN||20250410||||架空花子\rPID|1||42"));
        assert_eq!(e.location.as_deref(), Some("EVN-6"));
        assert!(!e.to_string().contains("架空"), "{e}");
    }

    #[test]
    fn escaped_values_and_other_delimiters() {
        let msg = "MSH#$*!@#HIS#1319999999#R#F#20250410##ADT$A08#C!F!2#P#2.5\r\
                   EVN##20250410\rPID#1##A!S!1*B2##Family!T!X$Given";
        let event = ok(msg);
        let ids: Vec<_> = event
            .data
            .patient
            .identifiers
            .iter()
            .map(|i| i.value.as_str())
            .collect();
        assert_eq!(ids, ["A$1", "B2"]);
        assert_eq!(event.data.origin.message_id, "C#2");
        let name = event.data.patient.name.unwrap_or_default();
        assert_eq!(name.kanji.as_deref(), Some("Family@X Given"));
    }
}
