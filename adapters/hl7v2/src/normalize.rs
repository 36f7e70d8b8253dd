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
//! Besides identifiers (PID-3), name (PID-5), date of birth, sex and insurance (IN1),
//! the patient carries what a receiving care office needs: the home address (PID-11),
//! the phone number (PID-13) and the key person (NK1: name, relationship, phone). The
//! character set the bytes were read as, when `MSH-18` did not say it, is
//! `origin.assumed_charset` (see [`charset`]).
//!
//! Errors name the HL7 location (`MSH-9`, `PID-3`, `EVN-2`…) and never repeat patient
//! data: names, identifiers and dates of birth are not echoed; codes and timestamps are.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset};
use renkei_sdk::{
    Address, CanonicalEvent, Encounter, EncounterClass, EventData, EventType, Identifier,
    Insurance, Location, MedicalInsurance, NormalizeError, Normalizer, Origin, Patient, PersonName,
    Practitioner, RelatedPerson, Sex, SourceFormat, TimeWindow, facility_source,
    local_patient_id_system,
};

use crate::charset::{self, shown};
use crate::dtm;
use crate::parse::{Component, Field, Message, Repetition, Segment, SegmentFields};

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
        let mut event = normalize_message(&message, raw, &self.window)?;
        event.data.origin.assumed_charset = decoded.assumed;
        Ok(event)
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
    // PID is read in six places: find its fields once.
    let pid = pid.fields();
    let identifiers = identifiers(pid.field(3), &facility);
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
        name: person_name(pid.field(5)),
        birth_date: birth_date(pid.field(7), window)?,
        sex: sex(pid.field(8)),
        insurance: insurance(message),
        address: address(pid.field(11)),
        phone: phone(pid.field(13)),
        key_person: key_person(message),
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
fn identifiers(field: Field<'_>, facility: &str) -> Vec<Identifier> {
    let mut out: Vec<Identifier> = Vec::new();
    for rep in field.repetitions() {
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

/// The forms of one person's name (an XPN field such as PID-5 or NK1-2), each "family
/// given", by name representation code (XPN.8), the legal name (XPN.7 `L`) first.
#[derive(Debug, Default)]
struct NameForms {
    /// `I`: ideographic (kanji).
    ideographic: Option<String>,
    /// `A`: alphabetic.
    alphabetic: Option<String>,
    /// `P`: phonetic (kana).
    phonetic: Option<String>,
    /// The first repetition without XPN.8.
    unmarked: Option<String>,
}

impl NameForms {
    fn read(field: Field<'_>) -> Self {
        let mut forms = NameForms::default();
        let mut legal = [false; 3];
        for rep in field.repetitions() {
            let Some(name) = join_name(
                rep.component(1).subcomponent(1).value(),
                rep.component(2).value(),
            ) else {
                continue;
            };
            let is_legal = rep.component(7).value().trim() == "L";
            let (slot, was_legal) = match rep.component(8).value().trim() {
                "I" => (&mut forms.ideographic, &mut legal[0]),
                "A" => (&mut forms.alphabetic, &mut legal[1]),
                "P" => (&mut forms.phonetic, &mut legal[2]),
                "" => {
                    forms.unmarked.get_or_insert(name);
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() || (is_legal && !*was_legal) {
                *slot = Some(name);
                *was_legal = is_legal;
            }
        }
        forms
    }

    /// The kanji form: the `I` repetition, else one without XPN.8.
    fn kanji(&mut self) -> Option<String> {
        self.ideographic.take().or_else(|| self.unmarked.take())
    }
}

/// PID-5: the kanji (XPN.8 `I`) and kana (XPN.8 `P`) repetitions, legal names (XPN.7
/// `L`) first; a repetition without XPN.8 is taken as kanji when there is no `I` one.
fn person_name(field: Field<'_>) -> Option<PersonName> {
    let mut forms = NameForms::read(field);
    let kanji = forms.kanji();
    let kana = forms.phonetic;
    (kanji.is_some() || kana.is_some()).then_some(PersonName { kanji, kana })
}

/// PID-11 (XAD): the first home address (XAD.7 `H`), else the first address given.
/// The text is prefecture (XAD.4), city (XAD.3), street (XAD.1) and other designation
/// (XAD.2), as Japanese addresses are written: run together, with a space only before
/// the other designation (a building, a room) and between two Latin words. A 7-digit
/// postal code (XAD.5) is written `100-0001`.
fn address(field: Field<'_>) -> Option<Address> {
    let mut first = None;
    for rep in field.repetitions() {
        let [street, other, city, state, zip, _, kind] = components(rep);
        let (sad_1, sad_2, sad_3) = match street {
            Some(street) => (
                street.subcomponent(1).value(),
                street.subcomponent(2).value(),
                street.subcomponent(3).value(),
            ),
            None => (Cow::Borrowed(""), Cow::Borrowed(""), Cow::Borrowed("")),
        };
        let (state, city, other) = (value(state), value(city), value(other));
        // SAD.2 street name and SAD.3 dwelling number stand in for an empty SAD.1.
        let (street_1, street_2) = match present(&sad_1) {
            Some(line) => (Some(line), None),
            None => (present(&sad_2), present(&sad_3)),
        };
        let parts = [
            present(&state),
            present(&city),
            street_1,
            street_2,
            present(&other),
        ];
        let address = Address {
            postal_code: text(value(zip)).map(postal_code),
            text: join_parts(&parts, 4),
        };
        if address == Address::default() {
            continue;
        }
        if value(kind).trim().eq_ignore_ascii_case("H") {
            return Some(address);
        }
        first.get_or_insert(address);
    }
    first
}

/// The first `N` components of `rep`, found in one pass (`None` past its end).
fn components<const N: usize>(rep: Repetition<'_>) -> [Option<Component<'_>>; N] {
    let mut out = [None; N];
    for (slot, component) in out.iter_mut().zip(rep.components()) {
        *slot = Some(component);
    }
    out
}

/// The value of a component that may be absent.
fn value(component: Option<Component<'_>>) -> Cow<'_, str> {
    component.map_or(Cow::Borrowed(""), |c| c.value())
}

/// A 郵便番号 of seven digits written `NNN-NNNN`; any other value as sent.
fn postal_code(value: String) -> String {
    match value.as_bytes() {
        digits @ [_, _, _, _, _, _, _] if digits.iter().all(u8::is_ascii_digit) => {
            format!("{}-{}", &value[..3], &value[3..])
        }
        _ => value,
    }
}

/// Joins the parts of a Japanese address in order: a part already starting with what
/// came before (a city given with its prefecture) replaces it; a space goes between two
/// Latin letters or digits, and before every part from index `spaced_from` on.
fn join_parts(parts: &[Option<&str>], spaced_from: usize) -> Option<String> {
    let capacity = parts.iter().flatten().map(|p| p.len() + 1).sum();
    let mut line = String::with_capacity(capacity);
    for (index, part) in parts.iter().enumerate() {
        let Some(part) = part else { continue };
        if line.is_empty() || part.starts_with(line.as_str()) {
            line.clear();
        } else {
            let latin = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            if index >= spaced_from
                || (latin(line.chars().next_back()) && latin(part.chars().next()))
            {
                line.push(' ');
            }
        }
        line.push_str(part);
    }
    (!line.is_empty()).then_some(line)
}

/// An XTN field (PID-13, NK1-5): the number of the first repetition used for the
/// primary residence (XTN.2 `PRN`), else of the first telephone given. A repetition
/// that is an e-mail address, a fax or a beeper (XTN.2 `NET`, `BPN`; XTN.3 `Internet`,
/// `X.400`, `FX`, `BP`) is no telephone. The number is XTN.1 as written, else the
/// unformatted XTN.12, else built from XTN.5 to XTN.8 (`03-00000000 内線 12`).
fn phone(field: Field<'_>) -> Option<String> {
    let mut first = None;
    for rep in field.repetitions() {
        let [
            formatted,
            used_for,
            equipment,
            _,
            country,
            area,
            local,
            extension,
            _,
            _,
            _,
            unformatted,
        ] = components(rep);
        let is_one_of = |component, codes: &[&str]| {
            let code = value(component);
            let code = code.trim();
            codes.iter().any(|c| code.eq_ignore_ascii_case(c))
        };
        if is_one_of(used_for, &["NET", "BPN"])
            || is_one_of(equipment, &["Internet", "X.400", "FX", "BP"])
        {
            continue;
        }
        let number = text(value(formatted))
            .or_else(|| text(value(unformatted)))
            .or_else(|| {
                // Country code (when not Japan's), area code, local number, extension.
                let part = |component| text(value(component));
                let mut number = match (part(area), part(local)) {
                    (Some(area), Some(local)) => format!("{area}-{local}"),
                    (None, Some(local)) => local,
                    (_, None) => return None,
                };
                if let Some(country) = part(country).filter(|c| c.trim_start_matches('+') != "81") {
                    number = format!("+{} {number}", country.trim_start_matches('+'));
                }
                if let Some(extension) = part(extension) {
                    number.push_str(" 内線 ");
                    number.push_str(&extension);
                }
                Some(number)
            });
        let Some(number) = number else { continue };
        if is_one_of(used_for, &["PRN"]) {
            return Some(number);
        }
        first.get_or_insert(number);
    }
    first
}

/// The key person (キーパーソン): the first NK1 marked as the emergency contact or key
/// person (NK1-7 contact role `C`, NK1-3 relationship `EMC`, or either one's text
/// naming キーパーソン or 緊急連絡先), else the first NK1 that is not an employer or
/// agency (NK1-7 `E`, `F`, `I`, `S`).
fn key_person(message: &Message<'_>) -> Option<RelatedPerson> {
    let marked = |nk1: &Segment<'_>| {
        let role = nk1.field(7);
        let relationship = nk1.field(3);
        let names_key_person = |field: Field<'_>| {
            let words = field.component(2).value();
            ["キーパーソン", "キー・パーソン", "緊急連絡"]
                .iter()
                .any(|w| words.contains(w))
        };
        role.component(1).value().trim().eq_ignore_ascii_case("C")
            || relationship
                .component(1)
                .value()
                .trim()
                .eq_ignore_ascii_case("EMC")
            || names_key_person(role)
            || names_key_person(relationship)
    };
    let organisation = |nk1: &Segment<'_>| {
        let role = nk1.field(7).component(1).value();
        ["E", "F", "I", "S"]
            .iter()
            .any(|code| role.trim().eq_ignore_ascii_case(code))
    };
    message
        .segments_named("NK1")
        .filter(marked)
        .find_map(related_person)
        .or_else(|| {
            message
                .segments_named("NK1")
                .filter(|nk1| !organisation(nk1))
                .find_map(related_person)
        })
}

/// One NK1: name (NK1-2, the kanji form preferred), relationship (NK1-3) and phone
/// (NK1-5, else the business phone NK1-6).
fn related_person(nk1: Segment<'_>) -> Option<RelatedPerson> {
    let mut names = NameForms::read(nk1.field(2));
    let name = names.kanji().or(names.alphabetic).or(names.phonetic);
    let person = RelatedPerson {
        name,
        relationship: relationship(nk1.field(3)),
        phone: phone(nk1.field(5)).or_else(|| phone(nk1.field(6))),
    };
    (person != RelatedPerson::default()).then_some(person)
}

/// NK1-3 (CWE): the source's text (CWE.2), else the code (CWE.1) in words, HL7 table
/// 0063 codes in Japanese where a care office would use them, any other code as sent.
fn relationship(field: Field<'_>) -> Option<String> {
    if let Some(words) = text(field.component(2).value()) {
        return Some(words);
    }
    let code = text(field.component(1).value())?;
    let words = match code.to_ascii_uppercase().as_str() {
        "SPO" => "配偶者",
        "DOM" => "内縁の配偶者",
        "CHD" | "NCH" => "子",
        "SON" => "息子",
        "DAU" => "娘",
        "SCH" => "継子",
        "FCH" => "里子",
        "GCH" => "孫",
        "PAR" => "親",
        "MTH" => "母",
        "FTH" => "父",
        "GRP" => "祖父母",
        "SIB" => "兄弟姉妹",
        "BRO" => "兄弟",
        "SIS" => "姉妹",
        "EXF" => "親族",
        "GRD" => "後見人",
        "CGV" => "介護者",
        "FND" => "友人",
        "EMC" => "緊急連絡先",
        "SEL" => "本人",
        "OTH" => "その他",
        _ => return Some(code),
    };
    Some(words.to_owned())
}

/// PID-7: the date of birth; a value less precise than a day is left out.
fn birth_date(
    field: Field<'_>,
    window: &TimeWindow,
) -> Result<Option<chrono::NaiveDate>, NormalizeError> {
    let raw = field.value();
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
fn sex(field: Field<'_>) -> Option<Sex> {
    match field.value().trim() {
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
    fn relationship_codes_read_in_japanese_and_source_words_win() {
        let msg = |nk1_3: &str| {
            let event = ok(&format!(
                "{MSH}\rEVN||20250410\rPID|1||42\rNK1|1|架空^一郎|{nk1_3}"
            ));
            event.data.patient.key_person.and_then(|k| k.relationship)
        };
        for (code, words) in [
            ("SPO", "配偶者"),
            ("CHD", "子"),
            ("DAU", "娘"),
            ("son", "息子"),
            ("MTH", "母"),
            ("FTH", "父"),
            ("SIB", "兄弟姉妹"),
            ("GRD", "後見人"),
            ("FND", "友人"),
            ("OTH", "その他"),
            ("SPO^妻^HL70063", "妻"),
            ("^長男", "長男"),
            ("Z01^^99LOCAL", "Z01"),
        ] {
            assert_eq!(msg(code).as_deref(), Some(words), "{code}");
        }
        assert_eq!(msg("\"\""), None);
    }

    #[test]
    fn address_parts_join_as_japanese_addresses_are_written() {
        // `spaced`: the last part is an other designation (a building, a room).
        let join = |parts: [&str; 3], spaced: bool| {
            join_parts(&parts.map(present), if spaced { 1 } else { parts.len() })
        };
        assert_eq!(
            join(["東京都", "架空市", "架空町1-2-3"], false).as_deref(),
            Some("東京都架空市架空町1-2-3")
        );
        assert_eq!(
            join(["東京都", "東京都架空市", ""], false).as_deref(),
            Some("東京都架空市")
        );
        assert_eq!(
            join(["Tokyo", "Kaku City", "1-2-3 Kaku"], false).as_deref(),
            Some("Tokyo Kaku City 1-2-3 Kaku")
        );
        assert_eq!(join(["", "\"\"", " "], false), None);
        assert_eq!(
            join(["架空町1-2-3", "架空ハイツ101", ""], true).as_deref(),
            Some("架空町1-2-3 架空ハイツ101")
        );
        assert_eq!(postal_code("1000001".to_owned()), "100-0001");
        assert_eq!(postal_code("100-0001".to_owned()), "100-0001");
        assert_eq!(postal_code("１００".to_owned()), "１００");
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
