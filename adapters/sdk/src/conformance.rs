//! Checks a canonical event against the facts of a conformance case.
//!
//! The conformance set (`EXPECTED.json` beside sample inputs) describes, for each input,
//! the facts its event must carry as plain descriptions rather than field names:
//! `name_kanji`, `ltc_insured_number`, `hospital_facility`, `diagnosis_contains`,
//! `admission_date` …. [`check_fact`] maps each onto the canonical event, so every
//! adapter's tests (and a vendor's own) read a case the same way:
//!
//! - `*_contains`: some text of the event holds the value. Where the prefix names a part
//!   of the event (a document section, the destination, the key person) only that part
//!   is searched; otherwise every string of the event except the document as sent
//!   (`data.document.content`), which would hold anything.
//! - `*_date`: a calendar date in Japan: a `YYYY-MM-DD` member, or an instant that falls
//!   on that day in Japan.
//! - `*_at` and `time`: an instant with the same offset.
//! - `*_facility`: another facility's code in `data.facilities`.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::Value;

use crate::event::{
    CanonicalEvent, FacilityRole, facility_source, japan_offset, local_patient_id_system,
};

/// The environment variable that says where the conformance set is.
pub const DIR_VARIABLE: &str = "RENKEI_CONFORMANCE_DIR";

/// The conformance set's folder: `$RENKEI_CONFORMANCE_DIR`, else `shared/conformance`
/// beside the checkout, for a crate under `adapters/` (`manifest_dir` is its
/// `CARGO_MANIFEST_DIR`).
pub fn set_dir(manifest_dir: &str) -> std::path::PathBuf {
    match std::env::var_os(DIR_VARIABLE) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::Path::new(manifest_dir).join("../../../shared/conformance"),
    }
}

/// A JSON object file of the set (`EXPECTED.json`). The error says the tests using it
/// never skip, and how to provide the set.
pub fn read_object(path: &std::path::Path) -> Result<serde_json::Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "the conformance set is missing: cannot read {} ({e}). These tests never skip: \
             put the set at ../shared/conformance next to the checkout or set {DIR_VARIABLE}",
            path.display()
        )
    })?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        other => Err(format!(
            "{} is not a JSON object: {other:?}",
            path.display()
        )),
    }
}

/// Keys of a case that describe the entry rather than the event.
pub const NOT_FACTS: [&str; 3] = ["note", "format", "skip"];

/// The outcome of checking one fact against an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The event carries the fact.
    Holds,
    /// It does not: what was expected and what was found.
    Fails(String),
    /// A key this checker does not know how to map onto the canonical event.
    UnknownKey,
}

fn compare(expected: &str, actual: Option<&str>) -> Check {
    if actual == Some(expected) {
        Check::Holds
    } else {
        Check::Fails(format!("expected `{expected}`, got {actual:?}"))
    }
}

/// Equal instants *and* equal offsets (`DateTime` equality ignores the offset).
fn compare_time(expected: &str, actual: Option<DateTime<FixedOffset>>) -> Check {
    let wanted = match DateTime::parse_from_rfc3339(expected) {
        Ok(t) => t,
        Err(e) => return Check::Fails(format!("`{expected}` is not an RFC 3339 time: {e}")),
    };
    match actual {
        Some(t) if t == wanted && t.offset() == wanted.offset() => Check::Holds,
        other => Check::Fails(format!(
            "expected {expected}, got {:?}",
            other.map(|t| t.to_rfc3339())
        )),
    }
}

/// The Japanese calendar date a JSON value names: a date, or an instant's day in Japan.
fn date_in_japan(value: &Value) -> Option<NaiveDate> {
    let text = value.as_str()?;
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(date);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&japan_offset()).date_naive())
}

/// Every string under `value`, with the JSON path of each.
fn strings<'a>(value: &'a Value, path: &mut String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((path.clone(), s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                strings(item, path, out);
                path.truncate(len);
            }
        }
        Value::Object(members) => {
            for (key, member) in members {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                if path != "$.data.document.content" {
                    strings(member, path, out);
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Where a `*_contains` fact is looked for: JSON paths (prefixes) of the event.
fn contains_scope(prefix: &str) -> &'static [&'static str] {
    match prefix {
        "destination" => &["$.data.encounter.discharge_destination", "$.data.care"],
        "key_person" => &["$.data.patient.key_person", "$.data.care"],
        "diagnosis" | "adl" | "medication" | "nursing_problem" | "continuing_care"
        | "referral_purpose" => &["$.data.document.sections", "$.data.care"],
        _ => &["$"],
    }
}

/// Every `YYYY-MM-DD`-like member whose key is `<prefix>_date`, plus the encounter's
/// times for the dates that name them.
fn date_candidates<'a>(event: &'a Value, prefix: &str) -> Vec<&'a Value> {
    fn walk<'a>(value: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
        match value {
            Value::Object(members) => {
                for (k, member) in members {
                    if k == key {
                        out.push(member);
                    } else if k != "content" {
                        walk(member, key, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, key, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(event, &format!("{prefix}_date"), &mut out);
    let encounter = &event["data"]["encounter"];
    match prefix {
        "admission" => out.push(&encounter["admitted_at"]),
        "discharge" => out.push(&encounter["discharged_at"]),
        _ => {}
    }
    out
}

/// Checks one fact of a conformance case against `event`.
pub fn check_fact(event: &CanonicalEvent, key: &str, expected: &str) -> Check {
    let data = &event.data;
    let patient = &data.patient;
    let name = patient.name.as_ref();
    let encounter = data.encounter.as_ref();
    let location = encounter.and_then(|e| e.location.as_ref());
    let ltc = patient.insurance.as_ref().and_then(|i| i.ltc.as_ref());
    let document = data.document.as_ref();
    let related = |role: FacilityRole| {
        let codes: Vec<&str> = data
            .facilities
            .iter()
            .filter(|f| f.role == role)
            .map(|f| f.code.as_str())
            .collect();
        if codes.contains(&expected) {
            Check::Holds
        } else {
            Check::Fails(format!(
                "expected a {role:?} facility `{expected}`, got {codes:?}"
            ))
        }
    };
    match key {
        "format" => compare(expected, Some(data.origin.format.as_str())),
        "type" => compare(expected, Some(event.event_type.as_str())),
        "cancels" => compare(expected, data.cancels.map(|t| t.as_str())),
        // The event comes from the facility: its source URN and its origin say so.
        "facility" => match (
            compare(&facility_source(expected), Some(&event.source)),
            compare(expected, data.origin.facility.as_deref()),
        ) {
            (Check::Holds, Check::Holds) => Check::Holds,
            (Check::Fails(why), _) => Check::Fails(format!("source: {why}")),
            (_, Check::Fails(why)) => Check::Fails(format!("data.origin.facility: {why}")),
            _ => Check::UnknownKey,
        },
        // A facility-local id, in the local-id system of the facility the event is from.
        "patient_id" => {
            let Some(facility) = event.source_facility() else {
                return Check::Fails(format!("source `{}` names no facility", event.source));
            };
            let system = local_patient_id_system(facility);
            if patient
                .identifiers
                .iter()
                .any(|i| i.system == system && i.value == expected)
            {
                Check::Holds
            } else {
                Check::Fails(format!(
                    "no identifier {{system: {system}, value: {expected}}} in {:?}",
                    patient.identifiers
                ))
            }
        }
        "name_kanji" => compare(expected, name.and_then(|n| n.kanji.as_deref())),
        "name_kana" => compare(expected, name.and_then(|n| n.kana.as_deref())),
        "birth_date" => compare(
            expected,
            patient
                .birth_date
                .map(|d| d.format("%Y-%m-%d").to_string())
                .as_deref(),
        ),
        "sex" => compare(
            expected,
            patient
                .sex
                .and_then(|s| serde_json::to_value(s).ok())
                .as_ref()
                .and_then(Value::as_str),
        ),
        "time" => compare_time(expected, Some(event.time)),
        "admitted_at" => compare_time(expected, encounter.and_then(|e| e.admitted_at)),
        "discharged_at" => compare_time(expected, encounter.and_then(|e| e.discharged_at)),
        "ward" => compare(expected, location.and_then(|l| l.ward.as_deref())),
        "room" => compare(expected, location.and_then(|l| l.room.as_deref())),
        "bed" => compare(expected, location.and_then(|l| l.bed.as_deref())),
        "message_id" => compare(expected, Some(&data.origin.message_id)),
        "ltc_insurer" => compare(expected, ltc.and_then(|l| l.insurer_number.as_deref())),
        "ltc_insured_number" => compare(expected, ltc.and_then(|l| l.insured_number.as_deref())),
        "care_level" => compare(expected, ltc.and_then(|l| l.care_level.as_deref())),
        "document_title" => compare(expected, document.and_then(|d| d.title.as_deref())),
        "document_type_code" => compare(expected, document.and_then(|d| d.code.as_deref())),
        "hospital_facility" => related(FacilityRole::Hospital),
        "care_office_facility" => related(FacilityRole::CareOffice),
        "referral_to_facility" => related(FacilityRole::Recipient),
        _ => check_pattern(event, key, expected),
    }
}

/// The `*_contains` and `*_date` families.
fn check_pattern(event: &CanonicalEvent, key: &str, expected: &str) -> Check {
    let Ok(json) = serde_json::to_value(event) else {
        return Check::Fails("the event does not serialise".to_owned());
    };
    if let Some(prefix) = key.strip_suffix("_contains") {
        let mut all = Vec::new();
        strings(&json, &mut "$".to_owned(), &mut all);
        let scope = contains_scope(prefix);
        let found = all.iter().any(|(path, text)| {
            scope.iter().any(|s| path.starts_with(s)) && text.contains(expected)
        });
        return if found {
            Check::Holds
        } else {
            Check::Fails(format!("no text under {scope:?} contains `{expected}`"))
        };
    }
    if let Some(prefix) = key.strip_suffix("_date") {
        let Ok(wanted) = NaiveDate::parse_from_str(expected, "%Y-%m-%d") else {
            return Check::Fails(format!("`{expected}` is not a YYYY-MM-DD date"));
        };
        let candidates = date_candidates(&json, prefix);
        let dates: Vec<NaiveDate> = candidates.iter().filter_map(|v| date_in_japan(v)).collect();
        return if dates.contains(&wanted) {
            Check::Holds
        } else {
            Check::Fails(format!(
                "expected the date {expected} (in Japan) under `{prefix}_date`, found {dates:?}"
            ))
        };
    }
    Check::UnknownKey
}

/// Every fact of `facts` checked against `event`: the failures, as `key: why`, and how
/// many facts held.
pub fn check_case(
    event: &CanonicalEvent,
    facts: &serde_json::Map<String, Value>,
) -> (usize, Vec<String>) {
    let mut held = 0;
    let mut failures = Vec::new();
    for (key, value) in facts {
        if NOT_FACTS.contains(&key.as_str()) {
            continue;
        }
        let Some(expected) = value.as_str() else {
            failures.push(format!(
                "{key}: the expected value is not a string: {value}"
            ));
            continue;
        };
        match check_fact(event, key, expected) {
            Check::Holds => held += 1,
            Check::Fails(why) => failures.push(format!("{key}: {why}")),
            Check::UnknownKey => failures.push(format!(
                "{key}: a fact the checker does not map onto the canonical event"
            )),
        }
    }
    (held, failures)
}

/// One item a receiving office needs, and whether an event carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What it is, e.g. `patient.address`, `section 950 (紹介目的)`, `care.key_person_name`.
    pub name: String,
    /// Whether the event carries it (a member present and not empty).
    pub present: bool,
}

/// The items of its kind a receiver needs, each marked carried or missing: the check a
/// vendor runs on sample exports before going live (`renkei normalize --report`).
/// Care files list every item of their layout (`data.care`, empty ones missing).
pub fn receiver_items(event: &CanonicalEvent) -> Vec<Item> {
    use crate::event::EventType as T;
    let Ok(json) = serde_json::to_value(event) else {
        return Vec::new();
    };
    let data = &json["data"];
    let carried = |path: &[&str]| {
        let mut value = data;
        for key in path {
            value = &value[*key];
        }
        match value {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            Value::Array(items) => !items.is_empty(),
            Value::Object(members) => !members.is_empty(),
            _ => true,
        }
    };
    let mut items = Vec::new();
    let mut want = |name: &str, path: &[&str]| {
        items.push(Item {
            name: name.to_owned(),
            present: carried(path),
        });
    };
    want("patient.identifiers", &["patient", "identifiers"]);
    want("patient.name.kanji", &["patient", "name", "kanji"]);
    want("patient.name.kana", &["patient", "name", "kana"]);
    want("patient.birth_date", &["patient", "birth_date"]);
    want("patient.sex", &["patient", "sex"]);
    let kind = event.event_type;
    let adt = matches!(
        kind,
        T::InpatientAdmitted
            | T::InpatientTransferred
            | T::InpatientDischarged
            | T::PatientUpdated
            | T::OutpatientRegistered
    );
    if adt || matches!(kind, T::DocumentNursingSummary) {
        want("patient.address", &["patient", "address"]);
        want("patient.phone", &["patient", "phone"]);
        want("patient.key_person", &["patient", "key_person"]);
    }
    if matches!(
        kind,
        T::InpatientAdmitted | T::InpatientTransferred | T::InpatientDischarged
    ) {
        want("encounter.admitted_at", &["encounter", "admitted_at"]);
        want(
            "encounter.location.ward",
            &["encounter", "location", "ward"],
        );
        want(
            "encounter.location.room",
            &["encounter", "location", "room"],
        );
        want("encounter.location.bed", &["encounter", "location", "bed"]);
        want("encounter.department", &["encounter", "department"]);
        want("encounter.attending", &["encounter", "attending"]);
    }
    if matches!(kind, T::InpatientDischarged | T::DocumentDischargeSummary) {
        want("encounter.discharged_at", &["encounter", "discharged_at"]);
        want(
            "encounter.discharge_destination",
            &["encounter", "discharge_destination"],
        );
    }
    if matches!(kind, T::InpatientDischarged) {
        want(
            "encounter.discharge_disposition",
            &["encounter", "discharge_disposition"],
        );
    }
    let sections: &[(&str, &str)] = match kind {
        T::DocumentReferral => &[
            ("920", "紹介元"),
            ("910", "紹介先"),
            ("950", "紹介目的"),
            ("340", "傷病名・主訴"),
            ("360", "現病歴"),
        ],
        T::DocumentNursingSummary => &[
            ("basic", "基本情報"),
            ("history", "既往歴・現病歴"),
            ("course", "入院中の経過"),
            ("adl", "ADL"),
            ("medication", "服薬・管理方法"),
            ("nursing-problems", "看護上の問題"),
            ("continuing-care", "継続課題"),
        ],
        _ => &[],
    };
    if matches!(
        kind,
        T::DocumentDischargeSummary | T::DocumentReferral | T::DocumentNursingSummary
    ) {
        want("document.id", &["document", "id"]);
        want("document.created_at", &["document", "created_at"]);
        want("document.title", &["document", "title"]);
        want("document.sections", &["document", "sections"]);
    }
    let present_sections: Vec<&str> = data["document"]["sections"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|s| s["items"].as_array().is_some_and(|i| !i.is_empty()))
                .filter_map(|s| s["code"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for (code, title) in sections {
        items.push(Item {
            name: format!("section {code} ({title})"),
            present: present_sections.contains(code),
        });
    }
    if let Some(care) = data["care"].as_object() {
        for (key, value) in care {
            items.push(Item {
                name: format!("care.{key}"),
                present: match value {
                    Value::Null => false,
                    Value::String(s) => !s.trim().is_empty(),
                    _ => true,
                },
            });
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::full_event;

    #[test]
    fn facts_of_the_full_sample_hold_and_wrong_ones_fail() {
        let event = full_event();
        assert_eq!(check_fact(&event, "name_kanji", "架空 花子"), Check::Holds);
        assert_eq!(check_fact(&event, "care_level", "要介護2"), Check::Holds);
        assert_eq!(
            check_fact(&event, "referral_to_facility", "1379999999"),
            Check::Holds
        );
        assert_eq!(
            check_fact(&event, "diagnosis_contains", "糖尿病"),
            Check::Holds
        );
        assert_eq!(
            check_fact(&event, "key_person_contains", "花江"),
            Check::Holds
        );
        // 2025-04-10T09:00+09:00 is 10 April in Japan.
        assert_eq!(
            check_fact(&event, "admission_date", "2025-04-10"),
            Check::Holds
        );
        assert!(matches!(
            check_fact(&event, "admission_date", "2025-04-09"),
            Check::Fails(_)
        ));
        assert!(matches!(
            check_fact(&event, "diagnosis_contains", "心不全"),
            Check::Fails(_)
        ));
        assert_eq!(check_fact(&event, "no_such_key", "x"), Check::UnknownKey);
    }

    #[test]
    fn the_document_as_sent_is_not_searched() {
        let mut event = full_event();
        if let Some(document) = event.data.document.as_mut() {
            document.content = Some(serde_json::json!({"text": "only-in-content"}));
        }
        assert!(matches!(
            check_fact(&event, "anything_contains", "only-in-content"),
            Check::Fails(_)
        ));
    }

    #[test]
    fn receiver_items_mark_what_an_event_carries() {
        let mut event = full_event();
        event.event_type = crate::event::EventType::InpatientDischarged;
        let items = receiver_items(&event);
        let present = |name: &str| items.iter().find(|i| i.name == name).map(|i| i.present);
        assert_eq!(present("patient.address"), Some(true));
        assert_eq!(present("encounter.discharge_destination"), Some(true));
        assert_eq!(present("care.care_manager"), Some(true));
        event.data.patient.phone = None;
        let items = receiver_items(&event);
        assert_eq!(
            items
                .iter()
                .find(|i| i.name == "patient.phone")
                .map(|i| i.present),
            Some(false)
        );
    }

    #[test]
    fn a_utc_instant_names_its_day_in_japan() {
        let value = Value::String("2025-05-19T23:40:00Z".to_owned());
        assert_eq!(date_in_japan(&value), NaiveDate::from_ymd_opt(2025, 5, 20));
    }
}
