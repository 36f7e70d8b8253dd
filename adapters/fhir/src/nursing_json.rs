//! The nursing summary (看護サマリー) in the hub's JSON form, `"form":
//! "renkei.nursing_summary"`: the twin of the FHIR document Bundle that [`crate::document`]
//! reads (Composition type LOINC 34745-0). No national nursing-summary format exists, so
//! the hub defines both, and the same content makes the same `document.nursing_summary`
//! event either way: the same document code and title, the same seven sections with the
//! same codes in the same order, the key person, the care-manager office as the
//! patient's `care_office`. Only `origin.format` (`json`) and `document.content` (the
//! JSON form as sent) tell them apart.
//!
//! The form is described by the JSON Schema [`NURSING_SUMMARY_SCHEMA_V1`]
//! (`adapters/fhir/schema/nursing-summary-v1.schema.json`) and checked here against the
//! same rules, member by member:
//!
//! - Required: `form`, `version` (`1` or `1.n`), `document_id`, `created_at` (RFC 3339
//!   with seconds and an offset), `facility.code` (10 digits), `patient.id`, and at
//!   least one of the [`NURSING_SECTIONS`] under `sections`.
//! - Optional members may be absent or `null`, which mean the same; blank text is none.
//! - Unknown members are ignored (the form travels whole in `document.content`), except
//!   in `sections`: a member there that is no section is refused, so that a misspelt
//!   section is never dropped without anyone seeing it.
//! - A list section has at least one item; a section with nothing to say is left out.
//!
//! The mapping:
//!
//! | form | event |
//! |---|---|
//! | `document_id` | `origin.message_id`, `document.id`: the hub's resend key (the same bytes again are one event) |
//! | `created_at` | `time`, `document.created_at`: the same instant, written in +09:00 |
//! | `facility.code` | `source` (`urn:renkei:facility:<code>`), `origin.facility` |
//! | `patient.id` | the patient's identifier in `urn:oid:1.2.392.100495.20.3.51.1<facility code>` |
//! | `stay` | `encounter` (class `inpatient`, `admitted_at`, `discharged_at`, `location.ward`); a date is 00:00 in Japan |
//! | `sections.basic.key_person` | `patient.key_person` |
//! | `sections.basic.care_manager.office_code` | a `care_office` facility (unless it is the sending facility) |
//! | `recipients` | `recipient` facilities |
//! | `author`, `facility.name` | `document.content` only (the Bundle path has no other place for them either) |
//!
//! Section items are the lines the Bundle path writes for the same entries: an ADL item
//! is `移動：屋内は歩行器で見守り、屋外は車いす` (an Observation's item and value), a drug
//! `フロセミド錠20mg 1回1錠 …` (name and dosage, then ` 管理：` and its management), the
//! key person `妻 架空 花江（080-0000-0004）`, the care office `架空居宅介護支援事業所（1379999995）`,
//! a continuing-care need `need：detail` (a CarePlan's title and description); `course`
//! is split into paragraphs at line breaks.
//!
//! Every refusal is a [`NormalizeError`] whose `location` is the JSON path of the first
//! member at fault (`$.patient.id`, `$.sections.adl[1].value`), or a position in the body
//! (`byte 17`, `line 3 column 5`) when the bytes are not UTF-8 JSON; the other problems
//! found follow in the reason, each with its path. Reasons state the rule and never
//! repeat a value: the only values shown are `form`, `version`, facility codes and
//! section member names, and only when they look like codes.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};
use renkei_sdk::file::FileFormat;
use renkei_sdk::{
    Address, CanonicalEvent, Document, DocumentSection, Encounter, EncounterClass, EventData,
    EventType, FacilityRole, Identifier, Location, NormalizeError, Normalizer, Origin, Patient,
    PersonName, RelatedFacility, RelatedPerson, Sex, SourceFormat, TimeWindow, facility_source,
    japan_offset, local_patient_id_system,
};
use serde_json::{Map, Value};

use crate::text::shown_code;

/// The `form` member of the nursing summary's JSON form.
pub const NURSING_SUMMARY_FORM: &str = "renkei.nursing_summary";
/// The JSON Schema (draft 2020-12) of the nursing summary's JSON form, version 1.
pub const NURSING_SUMMARY_SCHEMA_V1: &str =
    include_str!("../schema/nursing-summary-v1.schema.json");
/// The document code of a nursing summary (LOINC 34745-0, Nurse Discharge summary).
pub const NURSING_SUMMARY_CODE: &str = "34745-0";
/// The title of a nursing summary's event.
pub const NURSING_SUMMARY_TITLE: &str = "看護サマリー";

/// One section of the nursing summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NursingSection {
    /// Its member under `sections` in the JSON form, e.g. `nursing_problems`.
    pub member: &'static str,
    /// Its code in [`crate::document::NURSING_SECTION_SYSTEM`], e.g. `nursing-problems`:
    /// `document.sections[].code` of the event.
    pub code: &'static str,
    /// Its title, e.g. `看護上の問題`.
    pub title: &'static str,
    /// Its LOINC section code, where one exists.
    pub loinc: Option<&'static str>,
}

/// The seven sections, in the order the event lists them.
pub const NURSING_SECTIONS: [NursingSection; 7] = [
    NursingSection {
        member: "basic",
        code: "basic",
        title: "基本情報",
        loinc: None,
    },
    NursingSection {
        member: "history",
        code: "history",
        title: "既往歴・現病歴",
        loinc: Some("11348-0"),
    },
    NursingSection {
        member: "course",
        code: "course",
        title: "入院中の経過",
        loinc: Some("8648-8"),
    },
    NursingSection {
        member: "adl",
        code: "adl",
        title: "ADL",
        loinc: Some("47420-5"),
    },
    NursingSection {
        member: "medication",
        code: "medication",
        title: "服薬・管理方法",
        loinc: Some("10160-0"),
    },
    NursingSection {
        member: "nursing_problems",
        code: "nursing-problems",
        title: "看護上の問題",
        loinc: Some("11450-4"),
    },
    NursingSection {
        member: "continuing_care",
        code: "continuing-care",
        title: "継続課題",
        loinc: Some("18776-5"),
    },
];

/// The longest `document_id` taken (as for a Bundle identifier).
const MAX_DOCUMENT_ID_CHARS: usize = 256;
/// The longest `patient.id` taken.
const MAX_PATIENT_ID_CHARS: usize = 64;
/// How many problems after the first a refusal lists.
const MAX_LISTED_PROBLEMS: usize = 10;
/// The UTF-8 byte-order mark, which some Windows senders put before the JSON.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Normalises the nursing summary's JSON form to a `document.nursing_summary` event.
/// Stateless and cheap to share.
#[derive(Debug, Clone, Copy, Default)]
pub struct NursingSummaryJsonNormalizer {
    window: TimeWindow,
}

impl NursingSummaryJsonNormalizer {
    /// A normaliser accepting times in the default [`TimeWindow`] (1900 to a year ahead
    /// of the clock).
    pub fn new() -> Self {
        Self::default()
    }

    /// A normaliser accepting times (and dates of birth) in `window` only.
    pub fn with_time_window(window: TimeWindow) -> Self {
        Self { window }
    }
}

impl Normalizer for NursingSummaryJsonNormalizer {
    fn format(&self) -> SourceFormat {
        SourceFormat::Json
    }

    fn normalize(&self, raw: &[u8]) -> Result<CanonicalEvent, NormalizeError> {
        let value = parse(raw)?;
        let mut event = {
            let Value::Object(root) = &value else {
                return Err(NormalizeError::at(
                    "$",
                    "the nursing summary must be one JSON object that starts with \"form\": \"renkei.nursing_summary\"",
                ));
            };
            let mut reader = Reader {
                window: &self.window,
                problems: Vec::new(),
            };
            let summary = reader.summary(root);
            match (summary, reader.refusal()) {
                (_, Some(refusal)) => return Err(refusal),
                (Some(summary), None) => summary.into_event(raw),
                (None, None) => {
                    return Err(NormalizeError::at(
                        "$",
                        "the nursing summary could not be read",
                    ));
                }
            }
        };
        // The form as sent travels with the event; the borrow of it has ended.
        if let Some(document) = event.data.document.as_mut() {
            document.content = Some(value);
        }
        Ok(event)
    }
}

/// The nursing summary's JSON form as a [`FileFormat`], for `renkei normalize` and drop
/// folders: a JSON object whose first bytes hold `"renkei.nursing_summary"` (put `form`
/// first) and no `"resourceType"` (a FHIR Bundle is the `fhir` format's).
pub struct NursingSummaryJsonFile;

impl FileFormat for NursingSummaryJsonFile {
    fn name(&self) -> &'static str {
        "nursing-json"
    }

    fn recognizes(&self, _file_name: &str, head: &[u8]) -> bool {
        let head = head.strip_prefix(BOM).unwrap_or(head);
        let contains = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        head.trim_ascii_start().starts_with(b"{")
            && contains(b"\"renkei.nursing_summary\"")
            && !contains(b"\"resourceType\"")
    }

    fn read(
        &self,
        _file_name: &str,
        raw: &[u8],
        window: &TimeWindow,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        NursingSummaryJsonNormalizer::with_time_window(*window)
            .normalize(raw)
            .map(|event| vec![event])
    }
}

/// Parses the body (UTF-8, a leading byte-order mark allowed) into a JSON value.
fn parse(raw: &[u8]) -> Result<Value, NormalizeError> {
    let body = raw.strip_prefix(BOM).unwrap_or(raw);
    let text = std::str::from_utf8(body).map_err(|bad| {
        NormalizeError::at(
            format!("byte {}", raw.len() - body.len() + bad.valid_up_to()),
            "the body is not UTF-8: the nursing summary's JSON form is UTF-8 (Shift_JIS and ISO-2022-JP are not accepted); check the sender's character set",
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        // serde_json's message names what it expected, never the input; its own
        // " at line L column C" suffix repeats the location, so it is cut.
        let message = e.to_string();
        let what = message
            .rfind(" at line ")
            .map_or(message.as_str(), |at| &message[..at]);
        let reason = if e.is_eof() {
            format!(
                "the JSON is truncated ({what}): check that the sender writes, and the transport delivers, the whole file"
            )
        } else {
            format!("the body is malformed JSON ({what}); send the nursing summary as one JSON object")
        };
        NormalizeError::at(format!("line {} column {}", e.line(), e.column()), reason)
    })
}

type Object = Map<String, Value>;

/// A member at fault and what is wrong with it.
struct Problem {
    path: String,
    reason: String,
}

/// `path.key`.
fn member(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

/// Whether a member name may be shown in an error (it looks like a name, not data).
fn is_member_name(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Whether `text` has `YYYY-MM-DD` at `at`.
fn date_shape_at(bytes: &[u8], at: usize) -> bool {
    let digits = |from: usize, len: usize| {
        bytes
            .get(at + from..at + from + len)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    digits(0, 4)
        && bytes.get(at + 4) == Some(&b'-')
        && digits(5, 2)
        && bytes.get(at + 7) == Some(&b'-')
        && digits(8, 2)
}

/// A calendar date `YYYY-MM-DD`.
fn date(text: &str) -> Option<NaiveDate> {
    (text.len() == 10 && date_shape_at(text.as_bytes(), 0))
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
}

/// An RFC 3339 date-time with seconds and an explicit offset
/// (`YYYY-MM-DDThh:mm:ss[.f](Z|±hh:mm)`), as the same instant in Japan time.
fn instant(text: &str) -> Option<DateTime<FixedOffset>> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| {
        b.get(from..from + len)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let clock = date_shape_at(b, 0)
        && b.get(10) == Some(&b'T')
        && digits(11, 2)
        && b.get(13) == Some(&b':')
        && digits(14, 2)
        && b.get(16) == Some(&b':')
        && digits(17, 2);
    if !clock {
        return None;
    }
    let mut rest = b.get(19..)?;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        rest = &fraction[len..];
    }
    let offset = match rest {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] => {
            matches!(sign, b'+' | b'-') && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
        }
        _ => false,
    };
    if !offset {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&japan_offset()))
}

/// Pushes `item` unless it is empty or already there (as the Bundle path does).
fn push_item(items: &mut Vec<String>, item: String) {
    if !item.is_empty() && !items.contains(&item) {
        items.push(item);
    }
}

/// `label：value`, or whichever of them there is.
fn labelled(label: Option<&str>, value: Option<&str>) -> Option<String> {
    match (label, value) {
        (Some(label), Some(value)) => Some(format!("{label}：{value}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    }
}

/// The text as paragraphs: one per line, white space collapsed (the ideographic space
/// kept), as the Bundle path reads a narrative.
fn paragraphs(text: &str) -> Vec<String> {
    text.split(['\n', '\r'])
        .map(|line| {
            line.split(|c: char| c.is_whitespace() && c != '\u{3000}')
                .filter(|word| !word.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|paragraph| !paragraph.is_empty())
        .collect()
}

/// The key person's line, as the Bundle path writes a RelatedPerson.
fn person_line(person: &RelatedPerson) -> String {
    let mut line = [person.relationship.as_deref(), person.name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(phone) = &person.phone {
        line.push_str(&format!("（{phone}）"));
    }
    line
}

/// What the form says, read and checked.
struct Summary<'a> {
    document_id: &'a str,
    created_at: DateTime<FixedOffset>,
    facility: &'a str,
    patient: Patient,
    encounter: Option<Encounter>,
    sections: Vec<DocumentSection>,
    facilities: Vec<RelatedFacility>,
}

impl Summary<'_> {
    fn into_event(self, raw: &[u8]) -> CanonicalEvent {
        let document = Document {
            code: Some(NURSING_SUMMARY_CODE.to_owned()),
            title: Some(NURSING_SUMMARY_TITLE.to_owned()),
            id: Some(self.document_id.to_owned()),
            created_at: Some(self.created_at),
            content: None,
            sections: self.sections,
        };
        let data = EventData {
            patient: self.patient,
            encounter: self.encounter,
            document: Some(document),
            cancels: None,
            care: None,
            facilities: self.facilities,
            replaces: None,
            origin: Origin {
                format: SourceFormat::Json,
                sending_system: None,
                facility: Some(self.facility.to_owned()),
                message_id: self.document_id.to_owned(),
                raw_sha256: Origin::sha256_hex(raw),
                assumed_charset: None,
            },
        };
        CanonicalEvent::new(
            facility_source(self.facility),
            EventType::DocumentNursingSummary,
            self.created_at,
            data,
        )
    }
}

/// What the `basic` section gives besides its items.
#[derive(Default)]
struct BasicFacts {
    key_person: Option<RelatedPerson>,
    care_office: Option<RelatedFacility>,
}

/// Reads the form member by member, collecting every problem.
struct Reader<'w> {
    window: &'w TimeWindow,
    problems: Vec<Problem>,
}

impl<'w> Reader<'w> {
    fn refuse(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// The refusal for the problems found: the first one's path, every reason.
    fn refusal(&mut self) -> Option<NormalizeError> {
        let mut problems = std::mem::take(&mut self.problems).into_iter();
        let first = problems.next()?;
        let others: Vec<String> = problems
            .map(|p| format!("{}: {}", p.path, p.reason))
            .collect();
        let mut reason = first.reason;
        if !others.is_empty() {
            let listed = others.len().min(MAX_LISTED_PROBLEMS);
            reason.push_str("; also ");
            reason.push_str(&others[..listed].join("; "));
            if others.len() > listed {
                reason.push_str(&format!(" (and {} more)", others.len() - listed));
            }
        }
        Some(NormalizeError::at(first.path, reason))
    }

    /// An optional object member (absent or null: none).
    fn object<'a>(&mut self, parent: &'a Object, path: &str, key: &str) -> Option<&'a Object> {
        match parent.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(object)) => Some(object),
            Some(_) => {
                self.refuse(member(path, key), "must be a JSON object (or null)");
                None
            }
        }
    }

    /// A required object member; `missing` says why it is needed.
    fn required_object<'a>(
        &mut self,
        parent: &'a Object,
        path: &str,
        key: &str,
        missing: &str,
    ) -> Option<&'a Object> {
        match parent.get(key) {
            Some(Value::Object(object)) => Some(object),
            None | Some(Value::Null) => {
                self.refuse(member(path, key), missing);
                None
            }
            Some(_) => {
                self.refuse(member(path, key), "must be a JSON object");
                None
            }
        }
    }

    /// Optional text: absent, null or blank is none; the text is trimmed.
    fn text<'a>(&mut self, parent: &'a Object, path: &str, key: &str) -> Option<&'a str> {
        match parent.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.trim()).filter(|t| !t.is_empty()),
            Some(_) => {
                self.refuse(member(path, key), "must be a string (or null)");
                None
            }
        }
    }

    /// Required text (trimmed, not blank).
    fn required_text<'a>(
        &mut self,
        parent: &'a Object,
        path: &str,
        key: &str,
        missing: &str,
    ) -> Option<&'a str> {
        let path = member(path, key);
        self.required_text_value(parent.get(key), &path, missing)
    }

    fn required_text_value<'a>(
        &mut self,
        value: Option<&'a Value>,
        path: &str,
        missing: &str,
    ) -> Option<&'a str> {
        match value {
            Some(Value::String(text)) if !text.trim().is_empty() => Some(text.trim()),
            Some(Value::String(_)) => {
                self.refuse(path, format!("is blank: {missing}"));
                None
            }
            None | Some(Value::Null) => {
                self.refuse(path, format!("is missing: {missing}"));
                None
            }
            Some(_) => {
                self.refuse(path, "must be a string");
                None
            }
        }
    }

    /// A required identifier: a string with no white space at either end, no line
    /// break, at most `max` characters. Taken as sent.
    fn id<'a>(
        &mut self,
        parent: &'a Object,
        path: &str,
        key: &str,
        max: usize,
        what: &str,
    ) -> Option<&'a str> {
        let path = member(path, key);
        let text = match parent.get(key) {
            Some(Value::String(text)) => text.as_str(),
            None | Some(Value::Null) => {
                self.refuse(path, format!("is missing: {what}"));
                return None;
            }
            Some(_) => {
                self.refuse(
                    path,
                    "must be a string (send a number-like id as a string, with its leading zeros)",
                );
                return None;
            }
        };
        let padded = |c: Option<char>| c.is_none_or(char::is_whitespace);
        if padded(text.chars().next()) || padded(text.chars().last()) || text.contains('\n') {
            self.refuse(
                path,
                format!(
                    "is empty, padded with white space or holds a line break: {what}, sent exactly as the facility writes it"
                ),
            );
            return None;
        }
        let chars = text.chars().count();
        if chars > max {
            self.refuse(
                path,
                format!("is {chars} characters long; the hub takes at most {max}"),
            );
            return None;
        }
        Some(text)
    }

    /// A 10-digit facility code at `path` (`value` present and not null).
    fn facility_code<'a>(&mut self, value: &'a Value, path: &str, what: &str) -> Option<&'a str> {
        match value.as_str() {
            Some(code) if code.len() == 10 && code.bytes().all(|b| b.is_ascii_digit()) => {
                Some(code)
            }
            Some(code) => {
                self.refuse(
                    path,
                    format!(
                        "{} is not a 10-digit {what}; send the code without separators",
                        shown_code(code)
                    ),
                );
                None
            }
            None => {
                self.refuse(path, format!("must be the 10-digit {what} as a string"));
                None
            }
        }
    }

    /// An optional list: null is none, an empty list is refused.
    fn list<'a>(&mut self, value: &'a Value, path: &str) -> Option<&'a [Value]> {
        match value {
            Value::Array(items) if !items.is_empty() => Some(items),
            Value::Array(_) => {
                self.refuse(
                    path,
                    "is an empty list: send at least one item, or leave the member out",
                );
                None
            }
            _ => {
                self.refuse(path, "must be a list (a JSON array) or null");
                None
            }
        }
    }

    /// The objects of a list section, each with its path.
    fn list_objects<'a>(&mut self, value: &'a Value, path: &str) -> Vec<(String, &'a Object)> {
        let mut out = Vec::new();
        for (i, item) in self
            .list(value, path)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let item_path = format!("{path}[{i}]");
            match item {
                Value::Object(object) => out.push((item_path, object)),
                _ => self.refuse(item_path, "must be a JSON object"),
            }
        }
        out
    }

    /// An instant (RFC 3339 with an offset) in the time window.
    fn instant_value(&mut self, value: &Value, path: &str) -> Option<DateTime<FixedOffset>> {
        let Some(time) = value.as_str().and_then(instant) else {
            self.refuse(
                path,
                "must be an RFC 3339 date-time with seconds and an offset, e.g. 2025-06-25T09:40:00+09:00 (the value is not repeated here)",
            );
            return None;
        };
        self.in_window(time, path)
    }

    fn in_window(
        &mut self,
        time: DateTime<FixedOffset>,
        path: &str,
    ) -> Option<DateTime<FixedOffset>> {
        match self.window.check(path, time) {
            Ok(()) => Some(time),
            Err(problem) => {
                self.refuse(path, problem);
                None
            }
        }
    }

    /// An optional instant or date (a date is its 00:00 in Japan, as FHIR does).
    fn instant_or_date(
        &mut self,
        parent: &Object,
        path: &str,
        key: &str,
    ) -> Option<DateTime<FixedOffset>> {
        let path = member(path, key);
        let value = parent.get(key).filter(|v| !v.is_null())?;
        if let Some(day) = value.as_str().and_then(date) {
            let midnight = day
                .and_time(NaiveTime::MIN)
                .and_local_timezone(japan_offset())
                .single()?;
            return self.in_window(midnight, &path);
        }
        if value.as_str().and_then(instant).is_none() {
            self.refuse(
                path,
                "must be an RFC 3339 date-time with an offset (e.g. 2025-06-11T10:30:00+09:00) or a date YYYY-MM-DD (the value is not repeated here)",
            );
            return None;
        }
        self.instant_value(value, &path)
    }

    /// The whole form; `None` when a required part could not be read (the problems say
    /// why).
    fn summary<'a>(&mut self, root: &'a Object) -> Option<Summary<'a>> {
        if !self.form_and_version(root) {
            return None;
        }
        let document_id = self.id(
            root,
            "$",
            "document_id",
            MAX_DOCUMENT_ID_CHARS,
            "the document's stable id at the facility is needed to replace it when it is sent again",
        );
        let created_at = match root.get("created_at").filter(|v| !v.is_null()) {
            Some(value) => self.instant_value(value, "$.created_at"),
            None => {
                self.refuse(
                    "$.created_at",
                    "is missing: the hub needs when the summary was written (作成日時), e.g. 2025-06-25T09:40:00+09:00",
                );
                None
            }
        };
        if let Some(author) = self.object(root, "$", "author") {
            self.text(author, "$.author", "name");
            self.text(author, "$.author", "role");
        }
        let facility = self.facility(root);
        let encounter = self.stay(root);
        let patient = self.patient(root, facility.unwrap_or_default());
        let (sections, basic) = self.sections(root, facility);
        let recipients = self.recipients(root);

        let mut patient = patient?;
        patient.key_person = basic.key_person;
        let mut facilities: Vec<RelatedFacility> = basic.care_office.into_iter().collect();
        for code in recipients {
            let recipient = RelatedFacility {
                role: FacilityRole::Recipient,
                code: code.to_owned(),
                name: None,
            };
            if !facilities.contains(&recipient) {
                facilities.push(recipient);
            }
        }
        Some(Summary {
            document_id: document_id?,
            created_at: created_at?,
            facility: facility?,
            patient,
            encounter,
            sections: sections?,
            facilities,
        })
    }

    /// `form` and `version`; false when the object is not this form (nothing else is
    /// then read: it would mean something else).
    fn form_and_version(&mut self, root: &Object) -> bool {
        match root.get("form") {
            Some(Value::String(form)) if form == NURSING_SUMMARY_FORM => {}
            Some(Value::String(form)) => {
                let hint = if form == "renkei.admission_info" {
                    " (the 入院時情報提供書 is read by the care-json format)"
                } else {
                    ""
                };
                self.refuse(
                    "$.form",
                    format!(
                        "`form` is {}, not \"{NURSING_SUMMARY_FORM}\": this reads the nursing summary only{hint}",
                        shown_code(form)
                    ),
                );
                return false;
            }
            Some(_) => {
                self.refuse(
                    "$.form",
                    format!("`form` must be the string \"{NURSING_SUMMARY_FORM}\""),
                );
                return false;
            }
            None => {
                let hint = if root.contains_key("resourceType") {
                    "; this is a FHIR resource: send it as FHIR (the fhir format)"
                } else {
                    ""
                };
                self.refuse(
                    "$.form",
                    format!(
                        "`form` is missing: the nursing summary's JSON form starts with \"form\": \"{NURSING_SUMMARY_FORM}\"{hint}"
                    ),
                );
                return false;
            }
        }
        let supported = |v: &str| {
            v.strip_prefix('1').is_some_and(|minor| {
                minor.is_empty()
                    || minor
                        .strip_prefix('.')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        };
        match root.get("version") {
            Some(Value::String(version)) if supported(version) => true,
            Some(Value::String(version)) => {
                self.refuse(
                    "$.version",
                    format!(
                        "version {} is not a version of the form the hub reads (it reads \"1\" and \"1.n\")",
                        shown_code(version)
                    ),
                );
                false
            }
            None | Some(Value::Null) => {
                self.refuse(
                    "$.version",
                    "is missing: send \"version\": \"1\" (the version of the form the summary is written in)",
                );
                false
            }
            Some(_) => {
                self.refuse("$.version", "must be a string such as \"1\"");
                false
            }
        }
    }

    /// `facility`: its code.
    fn facility<'a>(&mut self, root: &'a Object) -> Option<&'a str> {
        let facility = self.required_object(
            root,
            "$",
            "facility",
            "is missing: the hub needs the facility the summary comes from ({\"code\": its 10-digit 医療機関コード})",
        )?;
        self.text(facility, "$.facility", "name");
        match facility.get("code").filter(|v| !v.is_null()) {
            Some(code) => self.facility_code(code, "$.facility.code", "医療機関コード"),
            None => {
                self.refuse(
                    "$.facility.code",
                    "is missing: the facility's 10-digit 医療機関コード names where the summary comes from",
                );
                None
            }
        }
    }

    /// `stay`: the encounter, when it says anything.
    fn stay(&mut self, root: &Object) -> Option<Encounter> {
        let stay = self.object(root, "$", "stay")?;
        let admitted_at = self.instant_or_date(stay, "$.stay", "admitted_at");
        let discharged_at = self.instant_or_date(stay, "$.stay", "discharged_at");
        let ward = self.text(stay, "$.stay", "ward").map(str::to_owned);
        if admitted_at.is_none() && discharged_at.is_none() && ward.is_none() {
            return None;
        }
        Some(Encounter {
            // A nursing summary is written for an inpatient stay.
            class: Some(EncounterClass::Inpatient),
            admitted_at,
            discharged_at,
            location: ward.map(|ward| Location {
                ward: Some(ward),
                room: None,
                bed: None,
            }),
            ..Encounter::default()
        })
    }

    /// `patient`, its id in the local-id system of `facility`.
    fn patient(&mut self, root: &Object, facility: &str) -> Option<Patient> {
        let patient = self.required_object(
            root,
            "$",
            "patient",
            "is missing: there is no patient to route the summary for; send at least {\"id\": the facility's patient id}",
        )?;
        let path = "$.patient";
        let id = self.id(
            patient,
            path,
            "id",
            MAX_PATIENT_ID_CHARS,
            "the facility's patient id is needed to route the summary",
        );
        let name = self.object(patient, path, "name").and_then(|name| {
            let kanji = self
                .text(name, "$.patient.name", "kanji")
                .map(str::to_owned);
            let kana = self.text(name, "$.patient.name", "kana").map(str::to_owned);
            (kanji.is_some() || kana.is_some()).then_some(PersonName { kanji, kana })
        });
        let birth_date = match patient.get("birth_date") {
            None | Some(Value::Null) => None,
            Some(value) => self.birth_date(value, "$.patient.birth_date"),
        };
        let sex = match patient.get("sex") {
            None | Some(Value::Null) => None,
            Some(Value::String(sex)) if sex == "male" => Some(Sex::Male),
            Some(Value::String(sex)) if sex == "female" => Some(Sex::Female),
            Some(Value::String(sex)) if sex == "other" => Some(Sex::Other),
            Some(Value::String(sex)) if sex == "unknown" => Some(Sex::Unknown),
            Some(_) => {
                self.refuse(
                    "$.patient.sex",
                    "must be one of \"male\", \"female\", \"other\", \"unknown\" (or null); the value is not repeated here",
                );
                None
            }
        };
        let address = self.object(patient, path, "address").and_then(|address| {
            let address = Address {
                postal_code: self
                    .text(address, "$.patient.address", "postal_code")
                    .map(str::to_owned),
                text: self
                    .text(address, "$.patient.address", "text")
                    .map(str::to_owned),
            };
            (address != Address::default()).then_some(address)
        });
        let phone = self.text(patient, path, "phone").map(str::to_owned);
        Some(Patient {
            identifiers: vec![Identifier {
                system: local_patient_id_system(facility),
                value: id?.to_owned(),
            }],
            name,
            birth_date,
            sex,
            insurance: None,
            address,
            phone,
            key_person: None,
        })
    }

    fn birth_date(&mut self, value: &Value, path: &str) -> Option<NaiveDate> {
        let Some(day) = value.as_str().and_then(date) else {
            self.refuse(
                path,
                "the date of birth must be a date YYYY-MM-DD (the value is patient data and is not repeated here)",
            );
            return None;
        };
        match self.window.check_past_date(path, day) {
            Ok(()) => Some(day),
            Err(problem) => {
                self.refuse(
                    path,
                    format!(
                        "the date of birth: {problem} (the value is patient data and is not repeated here)"
                    ),
                );
                None
            }
        }
    }

    /// `sections`: the event's sections in the order of [`NURSING_SECTIONS`], and what
    /// `basic` says of the key person and the care office.
    fn sections(
        &mut self,
        root: &Object,
        facility: Option<&str>,
    ) -> (Option<Vec<DocumentSection>>, BasicFacts) {
        let path = "$.sections";
        let mut basic = BasicFacts::default();
        let Some(sections) = self.required_object(
            root,
            "$",
            "sections",
            "is missing: a nursing summary has at least one of its sections (basic, history, course, adl, medication, nursing_problems, continuing_care)",
        ) else {
            return (None, basic);
        };
        for key in sections.keys() {
            if NURSING_SECTIONS.iter().any(|s| s.member == key) {
                continue;
            }
            let known = "the sections are basic, history, course, adl, medication, nursing_problems and continuing_care";
            if !is_member_name(key) {
                self.refuse(
                    path,
                    format!(
                        "a member of {} characters is not a section of the nursing summary: {known}",
                        key.chars().count()
                    ),
                );
            } else if let Some(section) = NURSING_SECTIONS.iter().find(|s| s.code == key) {
                self.refuse(
                    member(path, key),
                    format!(
                        "`{key}` is the section's code; its member in the JSON form is `{}`",
                        section.member
                    ),
                );
            } else {
                self.refuse(
                    member(path, key),
                    format!(
                        "`{key}` is not a section of the nursing summary ({known}); it is refused rather than dropped, so that no content is lost unseen"
                    ),
                );
            }
        }
        let mut out = Vec::new();
        for section in &NURSING_SECTIONS {
            let Some(value) = sections.get(section.member).filter(|v| !v.is_null()) else {
                continue;
            };
            let section_path = member(path, section.member);
            let items = match section.member {
                "basic" => self.basic(value, &section_path, facility, &mut basic),
                "history" => self.history(value, &section_path),
                "course" => self.course(value, &section_path),
                "adl" => self.adl(value, &section_path),
                "medication" => self.medication(value, &section_path),
                "nursing_problems" => self.nursing_problems(value, &section_path),
                _ => self.continuing_care(value, &section_path),
            };
            out.push(DocumentSection {
                code: section.code.to_owned(),
                title: Some(section.title.to_owned()),
                items,
            });
        }
        if out.is_empty() {
            self.refuse(
                path,
                "holds none of the nursing summary's sections (basic, history, course, adl, medication, nursing_problems, continuing_care): send at least one",
            );
            return (None, basic);
        }
        (Some(out), basic)
    }

    /// 基本情報: care level, household, key person, care manager and office.
    fn basic(
        &mut self,
        value: &Value,
        path: &str,
        facility: Option<&str>,
        facts: &mut BasicFacts,
    ) -> Vec<String> {
        let mut items = Vec::new();
        let basic = match value {
            Value::Object(basic) if !basic.is_empty() => basic,
            Value::Object(_) => {
                self.refuse(
                    path,
                    "is an empty object: send at least one of care_level, household, key_person, care_manager, or leave the section out",
                );
                return items;
            }
            _ => {
                self.refuse(path, "must be a JSON object (or null)");
                return items;
            }
        };
        if let Some(level) = self.text(basic, path, "care_level") {
            push_item(&mut items, format!("要介護度：{level}"));
        }
        if let Some(household) = self.text(basic, path, "household") {
            push_item(&mut items, format!("家族構成：{household}"));
        }
        if let Some(person) = self.object(basic, path, "key_person") {
            let at = member(path, "key_person");
            let person = RelatedPerson {
                name: self.text(person, &at, "name").map(str::to_owned),
                relationship: self.text(person, &at, "relationship").map(str::to_owned),
                phone: self.text(person, &at, "phone").map(str::to_owned),
            };
            if person != RelatedPerson::default() {
                push_item(&mut items, person_line(&person));
                facts.key_person = Some(person);
            }
        }
        if let Some(manager) = self.object(basic, path, "care_manager") {
            let at = member(path, "care_manager");
            let name = self.text(manager, &at, "name");
            let office_name = self.text(manager, &at, "office_name");
            let phone = self.text(manager, &at, "phone");
            let office_code = match manager.get("office_code").filter(|v| !v.is_null()) {
                Some(code) => {
                    self.facility_code(code, &member(&at, "office_code"), "介護保険事業所番号")
                }
                None => None,
            };
            let office = match (office_name, office_code) {
                (Some(name), Some(code)) => Some(format!("{name}（{code}）")),
                (Some(name), None) => Some(name.to_owned()),
                (None, Some(code)) => Some(format!("居宅介護支援事業所（{code}）")),
                (None, None) => None,
            };
            if let Some(office) = office {
                push_item(&mut items, office);
            }
            let person = match (name, phone) {
                (Some(name), Some(phone)) => Some(format!("ケアマネジャー：{name}（{phone}）")),
                (Some(name), None) => Some(format!("ケアマネジャー：{name}")),
                (None, Some(phone)) => Some(format!("ケアマネジャー（{phone}）")),
                (None, None) => None,
            };
            if let Some(person) = person {
                push_item(&mut items, person);
            }
            // A facility is not its own patient's care office (as on the Bundle path).
            if let Some(code) = office_code.filter(|code| Some(*code) != facility) {
                facts.care_office = Some(RelatedFacility {
                    role: FacilityRole::CareOffice,
                    code: code.to_owned(),
                    name: office_name.map(str::to_owned),
                });
            }
        }
        items
    }

    /// 既往歴・現病歴: one condition per item, with its onset.
    fn history(&mut self, value: &Value, path: &str) -> Vec<String> {
        let mut items = Vec::new();
        for (at, condition) in self.list_objects(value, path) {
            let name = self.required_text(condition, &at, "name", "each condition has a name");
            let onset = self.text(condition, &at, "onset");
            if let Some(name) = name {
                let line = match onset {
                    Some(onset) => format!("{name}（発症：{onset}）"),
                    None => name.to_owned(),
                };
                push_item(&mut items, line);
            }
        }
        items
    }

    /// 入院中の経過: text, a paragraph per line.
    fn course(&mut self, value: &Value, path: &str) -> Vec<String> {
        self.required_text_value(
            Some(value),
            path,
            "the course is text; leave the section out when there is nothing to say",
        )
        .map(paragraphs)
        .unwrap_or_default()
    }

    /// ADL: `item：value` per activity.
    fn adl(&mut self, value: &Value, path: &str) -> Vec<String> {
        let mut items = Vec::new();
        for (at, activity) in self.list_objects(value, path) {
            let item = self.required_text(
                activity,
                &at,
                "item",
                "each ADL entry names its activity (移動, 移乗, 食事, 排泄, 入浴 …)",
            );
            let how = self.required_text(
                activity,
                &at,
                "value",
                "each ADL entry says how the patient does the activity (自立, 見守り, 一部介助 …)",
            );
            if let Some(line) = labelled(item, how) {
                push_item(&mut items, line);
            }
        }
        items
    }

    /// 服薬・管理方法: `name dosage`, then how it is managed.
    fn medication(&mut self, value: &Value, path: &str) -> Vec<String> {
        let mut items = Vec::new();
        for (at, drug) in self.list_objects(value, path) {
            let name = self.required_text(drug, &at, "name", "each medication has a name");
            let dosage = self.text(drug, &at, "dosage");
            let management = self.text(drug, &at, "management");
            let Some(name) = name else {
                continue;
            };
            let mut line = match dosage {
                Some(dosage) => format!("{name} {dosage}"),
                None => name.to_owned(),
            };
            if let Some(management) = management {
                line.push_str(&format!(" 管理：{management}"));
            }
            push_item(&mut items, line);
        }
        items
    }

    /// 看護上の問題: one text per problem.
    fn nursing_problems(&mut self, value: &Value, path: &str) -> Vec<String> {
        let mut items = Vec::new();
        for (i, problem) in self
            .list(value, path)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = format!("{path}[{i}]");
            if let Some(text) =
                self.required_text_value(Some(problem), &at, "each nursing problem is text")
            {
                push_item(&mut items, text.to_owned());
            }
        }
        items
    }

    /// 継続課題: `need：detail`.
    fn continuing_care(&mut self, value: &Value, path: &str) -> Vec<String> {
        let mut items = Vec::new();
        for (at, need) in self.list_objects(value, path) {
            let what = self.required_text(
                need,
                &at,
                "need",
                "each continuing-care entry names the need",
            );
            let detail = self.text(need, &at, "detail");
            if let Some(line) = what.and_then(|what| labelled(Some(what), detail)) {
                push_item(&mut items, line);
            }
        }
        items
    }

    /// `recipients`: 10-digit codes.
    fn recipients<'a>(&mut self, root: &'a Object) -> Vec<&'a str> {
        let Some(value) = root.get("recipients").filter(|v| !v.is_null()) else {
            return Vec::new();
        };
        let Value::Array(codes) = value else {
            self.refuse("$.recipients", "must be a list of 10-digit codes (or null)");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, code) in codes.iter().enumerate() {
            let path = format!("$.recipients[{i}]");
            if let Some(code) =
                self.facility_code(code, &path, "介護保険事業所番号 or 医療機関コード")
                && !out.contains(&code)
            {
                out.push(code);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_need_seconds_and_an_offset_and_are_kept_as_the_same_instant() {
        let utc = instant("2025-06-25T00:40:00Z").map(|t| t.to_rfc3339());
        assert_eq!(utc.as_deref(), Some("2025-06-25T09:40:00+09:00"));
        assert!(instant("2025-06-25T09:40:00.250+09:00").is_some());
        for bad in [
            "2025-06-25T09:40:00",
            "2025-06-25T09:40+09:00",
            "2025-06-25 09:40:00+09:00",
            "2025-06-25t09:40:00z",
            "2025-13-25T09:40:00+09:00",
            "2025-06-25T09:40:00.+09:00",
            "2025-06-25",
            "",
        ] {
            assert_eq!(instant(bad), None, "{bad}");
        }
        assert!(date("2025-02-28").is_some());
        assert_eq!(date("2025-02-30"), None);
        assert_eq!(date("+2025-02-28"), None);
    }

    #[test]
    fn course_text_becomes_paragraphs_as_a_narrative_does() {
        assert_eq!(
            paragraphs("  一行目  の\t経過\r\n\n\u{3000}二行目 "),
            ["一行目 の 経過", "\u{3000}二行目"]
        );
    }

    #[test]
    fn only_name_like_members_are_shown() {
        assert!(is_member_name("discharge_plan"));
        assert!(!is_member_name("架空 次郎"));
        assert!(!is_member_name(""));
    }

    #[test]
    fn the_section_table_holds_each_code_once() {
        for (i, a) in NURSING_SECTIONS.iter().enumerate() {
            for b in &NURSING_SECTIONS[i + 1..] {
                assert_ne!(a.code, b.code);
                assert_ne!(a.member, b.member);
            }
        }
    }
}
