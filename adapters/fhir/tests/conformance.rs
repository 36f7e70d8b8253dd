//! Conformance: every FHIR case of the shared conformance set (the files under `fhir/`
//! and the FHIR files under `bad/`, described in its `EXPECTED.json`) asserted fact by
//! fact, then the same Bundles cut short, corrupted byte by byte, and altered element
//! by element.
//!
//! The set lives outside the repository: `../shared/conformance` next to the checkout,
//! or wherever `RENKEI_CONFORMANCE_DIR` points. When it cannot be read every test here
//! fails; none is skipped.

// A failed `expect` on a conformance fixture is a test failure, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsonschema::Validator;
use renkei_fhir::{FhirErrorKind, FhirNormalizer, classify, operation_outcome};
use renkei_sdk::conformance::check_case;
use renkei_sdk::{CanonicalEvent, EVENT_SCHEMA_V1, FacilityRole, NormalizeError, Normalizer};
use serde_json::{Map, Value};

/// The conformance set, read once per test process.
struct Conformance {
    dir: PathBuf,
    expected: Map<String, Value>,
}

fn conformance() -> &'static Conformance {
    static SET: OnceLock<Conformance> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = renkei_sdk::conformance::set_dir(env!("CARGO_MANIFEST_DIR"));
        let expected = renkei_sdk::conformance::read_object(&dir.join("EXPECTED.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        Conformance { dir, expected }
    })
}

/// One FHIR entry of `EXPECTED.json` with its file's bytes.
struct Case {
    /// The key in `EXPECTED.json`, e.g. `fhir/admit_message.json`.
    name: String,
    raw: Vec<u8>,
    facts: Map<String, Value>,
}

/// Every `fhir` entry whose key starts with `folder`, in key order.
fn cases(folder: &str) -> Vec<Case> {
    let set = conformance();
    let mut cases: Vec<Case> = set
        .expected
        .iter()
        .filter(|(name, _)| name.starts_with(folder))
        .filter(|(_, facts)| facts["format"] == "fhir")
        .map(|(name, facts)| {
            let path = set.dir.join(name);
            let raw = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("EXPECTED.json lists {name}, but {e}"));
            let facts = facts
                .as_object()
                .unwrap_or_else(|| panic!("the entry of {name} is not an object"))
                .clone();
            Case {
                name: name.clone(),
                raw,
                facts,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!cases.is_empty(), "no fhir entry under {folder}");
    cases
}

/// Every FHIR file of the set: the valid ones, then the refused ones.
fn all_bundles() -> Vec<Case> {
    let mut all = cases("fhir/");
    all.extend(cases("bad/"));
    all
}

fn normalize(raw: &[u8]) -> Result<CanonicalEvent, NormalizeError> {
    FhirNormalizer::new().normalize(raw)
}

fn event_of(case: &Case) -> CanonicalEvent {
    normalize(&case.raw).unwrap_or_else(|e| panic!("{}: refused: {e}", case.name))
}

/// The schema compiled once, with `format` checked as well as the patterns.
fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(EVENT_SCHEMA_V1).expect("the schema is not JSON");
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the schema does not compile")
    })
}

/// Every schema violation of `event`, as `<instance path>: <message>`.
fn schema_violations(event: &CanonicalEvent) -> Vec<String> {
    let instance = serde_json::to_value(event).expect("serialise");
    validator()
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_fhir_file_has_an_expected_entry_and_every_entry_a_file() {
    let set = conformance();
    let mut problems = Vec::new();
    let entries = std::fs::read_dir(set.dir.join("fhir"))
        .unwrap_or_else(|e| panic!("cannot list fhir/ of the conformance set: {e}"));
    let mut seen = 0;
    for entry in entries {
        let file_name = entry.expect("directory entry").file_name();
        let key = format!("fhir/{}", file_name.to_string_lossy());
        seen += 1;
        match set.expected.get(&key) {
            None => problems.push(format!("{key} has no entry in EXPECTED.json")),
            Some(facts) if facts["format"] != "fhir" => problems.push(format!(
                "{key} is not declared `\"format\": \"fhir\"` in EXPECTED.json"
            )),
            Some(_) => {}
        }
    }
    assert!(seen > 0, "fhir/ of the conformance set holds no file");
    for (key, facts) in &set.expected {
        if facts["format"] == "fhir" && !set.dir.join(key).is_file() {
            problems.push(format!("EXPECTED.json lists {key}, which is not a file"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn fhir_bundles_carry_every_expected_fact() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases("fhir/") {
        if case.facts.contains_key("error") {
            failures.push(format!(
                "{}: an entry under fhir/ expects an error",
                case.name
            ));
        }
        let event = match normalize(&case.raw) {
            Ok(event) => event,
            Err(e) => {
                failures.push(format!("{}: refused: {e}", case.name));
                continue;
            }
        };
        let (held, problems) = check_case(&event, &case.facts);
        checked += held;
        failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.name)));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked > 0, "no fact was checked");
}

#[test]
fn normalised_conformance_events_match_the_json_schema_and_round_trip() {
    for case in cases("fhir/") {
        let event = event_of(&case);
        let violations = schema_violations(&event);
        assert!(
            violations.is_empty(),
            "{}: {violations:#?}\n{:#}",
            case.name,
            serde_json::to_value(&event).expect("serialise")
        );
        let text = serde_json::to_string(&event).expect("serialise");
        let back: CanonicalEvent = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, event, "{}", case.name);
    }
}

#[test]
fn documents_travel_whole_and_messages_alone() {
    for case in cases("fhir/") {
        let event = event_of(&case);
        let sent: Value = serde_json::from_slice(&case.raw).expect("the sample is JSON");
        assert_eq!(
            event.data.origin.raw_sha256,
            renkei_sdk::Origin::sha256_hex(&case.raw),
            "{}",
            case.name
        );
        let is_document = sent["type"] == "document";
        assert_eq!(
            event.event_type.as_str().starts_with("document."),
            is_document,
            "{}",
            case.name
        );
        match event.data.document {
            Some(document) => {
                assert!(is_document, "{}: a message with a document", case.name);
                assert_eq!(document.content.as_ref(), Some(&sent), "{}", case.name);
                assert_eq!(document.created_at, Some(event.time), "{}", case.name);
                assert_eq!(
                    document.id.as_deref(),
                    sent["identifier"]["value"].as_str(),
                    "{}",
                    case.name
                );
                assert!(
                    !document.sections.is_empty()
                        || sent["entry"][0]["resource"]["section"].is_null(),
                    "{}: the sections are lost",
                    case.name
                );
            }
            None => assert!(!is_document, "{}: a document without one", case.name),
        }
    }
}

/// The nursing summary's sections are the hub's seven, each found by its code.
#[test]
fn the_nursing_summary_has_its_seven_coded_sections() {
    let case = cases("fhir/")
        .into_iter()
        .find(|c| c.name == "fhir/nursing_summary.json")
        .expect("the nursing summary is in the set");
    let event = event_of(&case);
    let document = event.data.document.expect("a document");
    let codes: Vec<&str> = document.sections.iter().map(|s| s.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "basic",
            "history",
            "course",
            "adl",
            "medication",
            "nursing-problems",
            "continuing-care"
        ]
    );
    let items = |code: &str| {
        document
            .sections
            .iter()
            .find(|s| s.code == code)
            .map(|s| s.items.join("\n"))
            .unwrap_or_default()
    };
    // The entries' own text, not only the narrative.
    assert!(
        items("adl").contains("移動：屋内は歩行器で見守り"),
        "{}",
        items("adl")
    );
    assert!(
        items("medication").contains("フロセミド錠20mg 1回1錠"),
        "{}",
        items("medication")
    );
    assert!(
        items("continuing-care").contains("訪問看護で週1回"),
        "{}",
        items("continuing-care")
    );
    let key_person = event.data.patient.key_person.expect("a key person");
    assert_eq!(key_person.name.as_deref(), Some("架空 花江"));
    assert_eq!(key_person.relationship.as_deref(), Some("妻"));
    assert_eq!(key_person.phone.as_deref(), Some("080-0000-0004"));
    let care_offices: Vec<&str> = event
        .data
        .facilities
        .iter()
        .filter(|f| f.role == FacilityRole::CareOffice)
        .map(|f| f.code.as_str())
        .collect();
    assert_eq!(care_offices, ["1379999995"]);
}

/// Entry UUIDs change on every send (JP-CLINS): the document, its id and its facts
/// stay the same.
#[test]
fn a_resent_document_with_new_entry_uuids_is_the_same_document() {
    for case in cases("fhir/") {
        let text = std::str::from_utf8(&case.raw).expect("UTF-8");
        let sent: Value = serde_json::from_str(text).expect("JSON");
        let mut resent = text.to_owned();
        for entry in sent["entry"].as_array().expect("entries") {
            if let Some(url) = entry["fullUrl"].as_str()
                && let Some(uuid) = url.strip_prefix("urn:uuid:")
            {
                let fresh: String = uuid
                    .chars()
                    .map(|c| match c {
                        '0'..='8' => char::from(c as u8 + 1),
                        '9' => '0',
                        other => other,
                    })
                    .collect();
                resent = resent.replace(uuid, &fresh);
            }
        }
        assert_ne!(resent, text, "{}: no entry UUID to change", case.name);
        let first = event_of(&case);
        let second = normalize(resent.as_bytes())
            .unwrap_or_else(|e| panic!("{}: the resent Bundle is refused: {e}", case.name));
        assert_eq!(first.data.origin.message_id, second.data.origin.message_id);
        let (_, problems) = check_case(&second, &case.facts);
        assert!(problems.is_empty(), "{}: {problems:#?}", case.name);
        if let (Some(a), Some(b)) = (&first.data.document, &second.data.document) {
            assert_eq!(a.sections, b.sections, "{}", case.name);
        }
    }
}

/// How one `bad/` Bundle must be refused.
struct Refusal {
    file: &'static str,
    /// `NormalizeError::location`.
    location: &'static str,
    /// What the error's text must mention, following the entry's `error` description.
    mentions: &'static [&'static str],
    /// Data that is in the file and must never be in the error.
    patient_data: &'static [&'static str],
    /// 400 or 422, as an HTTP receiver answers.
    kind: FhirErrorKind,
}

/// The patient of the refused FHIR files.
const JIRO: &[&str] = &[
    "0010203040",
    "架空",
    "次郎",
    "カクウ",
    "ジロウ",
    "1936-11-03",
];

const REFUSALS: &[Refusal] = &[
    Refusal {
        file: "bad/encounter_without_subject.json",
        location: "Bundle.entry[1].resource.subject",
        mentions: &["names no patient", "Encounter.subject"],
        // References can carry ids; none is repeated.
        patient_data: &["33333333-3333-4333-8333-333333333333"],
        kind: FhirErrorKind::Unprocessable,
    },
    Refusal {
        file: "bad/fhir_bundle_wrong_type.json",
        location: "Bundle.type",
        mentions: &["`searchset`", "neither a message nor a document"],
        patient_data: JIRO,
        kind: FhirErrorKind::Invalid,
    },
    Refusal {
        file: "bad/fhir_document_no_composition.json",
        location: "Bundle.entry[0].resource",
        mentions: &["must start with a Composition", "bdl-11", "`Patient`"],
        patient_data: JIRO,
        kind: FhirErrorKind::Invalid,
    },
    Refusal {
        file: "bad/not_json.json",
        location: "line 1 column 46",
        mentions: &["truncated"],
        patient_data: &[],
        kind: FhirErrorKind::Malformed,
    },
];

fn refusal(name: &str) -> &'static Refusal {
    REFUSALS
        .iter()
        .find(|r| r.file == name)
        .unwrap_or_else(|| panic!("{name} is listed in EXPECTED.json but not in REFUSALS"))
}

#[test]
fn bad_bundles_are_refused_naming_the_element_at_fault_without_patient_data() {
    let bad = cases("bad/");
    let listed: BTreeSet<&str> = bad.iter().map(|c| c.name.as_str()).collect();
    let tabled: BTreeSet<&str> = REFUSALS.iter().map(|r| r.file).collect();
    assert_eq!(listed, tabled, "REFUSALS and EXPECTED.json disagree");
    for case in &bad {
        let refusal = refusal(&case.name);
        assert!(
            case.facts["error"].is_string(),
            "{}: no error description",
            case.name
        );
        // The data we look for really is in the file, so its absence means something.
        let text = String::from_utf8_lossy(&case.raw);
        for data in refusal.patient_data {
            assert!(
                text.contains(data),
                "{}: `{data}` is not in the file",
                case.name
            );
        }
        let err = match normalize(&case.raw) {
            Ok(event) => panic!("{}: accepted as {}", case.name, event.event_type),
            Err(err) => err,
        };
        let shown = err.to_string();
        assert_eq!(
            err.location.as_deref(),
            Some(refusal.location),
            "{}: {shown}",
            case.name
        );
        assert!(
            shown.starts_with(&format!("{}: ", refusal.location)),
            "{}: {shown}",
            case.name
        );
        for mention in refusal.mentions {
            assert!(
                shown.contains(mention),
                "{}: the error does not mention `{mention}`: {shown}",
                case.name
            );
        }
        for data in refusal.patient_data {
            assert!(
                !shown.contains(data),
                "{}: the error repeats patient data `{data}`: {shown}",
                case.name
            );
        }
        assert_eq!(classify(&err), refusal.kind, "{}: {shown}", case.name);
        let outcome = operation_outcome(&err);
        let issue = &outcome["issue"][0];
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(issue["severity"], "error");
        assert_eq!(issue["code"], refusal.kind.issue_code(), "{}", case.name);
        if refusal.kind == FhirErrorKind::Malformed {
            assert!(issue.get("expression").is_none(), "{}", case.name);
            assert_eq!(issue["diagnostics"], shown.as_str());
        } else {
            assert_eq!(
                issue["expression"],
                serde_json::json!([refusal.location]),
                "{}",
                case.name
            );
            assert_eq!(issue["diagnostics"], err.reason.as_str());
        }
    }
}

/// Bytes that structure JSON, and bytes that are not UTF-8.
const STRUCTURE: [u8; 12] = [
    b'"', b'{', b'}', b'[', b']', b':', b',', b'\\', b'0', 0x00, 0xff, 0xe3,
];

/// Prefixes of `raw` (every byte of small files; every 7th byte, and every byte of the
/// first and last 400, of large ones), then at each position a byte replaced by a
/// structural byte (even positions) or one inserted (odd ones), cycling through
/// [`STRUCTURE`].
fn corruptions(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let every =
        |i: usize| raw.len() < 4000 || i < 400 || i + 400 > raw.len() || i.is_multiple_of(7);
    let mut out = Vec::new();
    for end in (0..raw.len()).filter(|&i| every(i)) {
        out.push((format!("truncated at {end}"), raw[..end].to_vec()));
    }
    for i in (0..raw.len()).filter(|&i| every(i)) {
        let byte = STRUCTURE[i % STRUCTURE.len()];
        let mut mutant = raw.to_vec();
        if i.is_multiple_of(2) {
            mutant[i] = byte;
            out.push((format!("byte {i} set to {byte:#04x}"), mutant));
        } else {
            mutant.insert(i, byte);
            out.push((format!("{byte:#04x} inserted at {i}"), mutant));
        }
    }
    out
}

/// Every element of `value` altered in turn: removed, or replaced by a value of each
/// other JSON kind. These reach past the parser into the mapping.
fn alterations(value: &Value) -> Vec<(String, Value)> {
    fn paths(value: &Value, path: &mut Vec<PathPart>, out: &mut Vec<Vec<PathPart>>) {
        match value {
            Value::Object(members) => {
                for (key, member) in members {
                    path.push(PathPart::Key(key.clone()));
                    out.push(path.clone());
                    paths(member, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(PathPart::Index(i));
                    out.push(path.clone());
                    paths(item, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    paths(value, &mut Vec::new(), &mut all);
    let replacements = [
        None,
        Some(Value::Null),
        Some(serde_json::json!(12)),
        Some(serde_json::json!("")),
        Some(serde_json::json!("Patient/x")),
        Some(serde_json::json!({})),
        Some(serde_json::json!([])),
    ];
    let mut out = Vec::new();
    for path in &all {
        for (n, replacement) in replacements.iter().enumerate() {
            let mut mutant = value.clone();
            if alter(&mut mutant, path, replacement.clone()) {
                out.push((format!("{path:?} alteration {n}"), mutant));
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum PathPart {
    Key(String),
    Index(usize),
}

/// Removes (`None`) or replaces the element at `path`.
fn alter(value: &mut Value, path: &[PathPart], replacement: Option<Value>) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut parent = value;
    for part in parents {
        parent = match (part, parent) {
            (PathPart::Key(key), Value::Object(members)) => match members.get_mut(key) {
                Some(member) => member,
                None => return false,
            },
            (PathPart::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                Some(item) => item,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, parent, replacement) {
        (PathPart::Key(key), Value::Object(members), None) => members.remove(key).is_some(),
        (PathPart::Key(key), Value::Object(members), Some(new)) => {
            members.insert(key.clone(), new);
            true
        }
        (PathPart::Index(i), Value::Array(items), None) if *i < items.len() => {
            items.remove(*i);
            true
        }
        (PathPart::Index(i), Value::Array(items), Some(new)) if *i < items.len() => {
            items[*i] = new;
            true
        }
        _ => false,
    }
}

/// Runs every mutant; returns how many were tried and accepted.
fn survive(name: &str, mutants: Vec<(String, Vec<u8>)>) -> (usize, usize) {
    let (mut tried, mut accepted) = (0usize, 0usize);
    for (what, mutant) in mutants {
        tried += 1;
        match catch_unwind(AssertUnwindSafe(|| normalize(&mutant))) {
            Err(_) => panic!("{name}: {what}: the normaliser panicked"),
            Ok(Err(e)) => {
                assert!(e.location.is_some(), "{name}: {what}: no location: {e}");
                // The answer an HTTP receiver would give is always buildable.
                let _ = operation_outcome(&e);
            }
            Ok(Ok(event)) => {
                accepted += 1;
                let violations = schema_violations(&event);
                assert!(
                    violations.is_empty(),
                    "{name}: {what}: accepted but schema-invalid: {violations:?}"
                );
            }
        }
    }
    (tried, accepted)
}

#[test]
fn cut_and_corrupted_conformance_bundles_never_panic() {
    let (mut tried, mut accepted) = (0, 0);
    for case in all_bundles() {
        let (t, a) = survive(&case.name, corruptions(&case.raw));
        tried += t;
        accepted += a;
    }
    // Both outcomes occur, so the corruptions reach past the first checks.
    assert!(
        accepted > 0 && accepted < tried,
        "{accepted} of {tried} accepted"
    );
}

#[test]
fn altered_elements_of_conformance_bundles_never_panic() {
    let (mut tried, mut accepted) = (0, 0);
    for case in all_bundles() {
        let Ok(value) = serde_json::from_slice::<Value>(&case.raw) else {
            continue;
        };
        let mutants = alterations(&value)
            .into_iter()
            .map(|(what, v)| (what, serde_json::to_vec(&v).expect("serialise")))
            .collect();
        let (t, a) = survive(&case.name, mutants);
        tried += t;
        accepted += a;
    }
    assert!(
        accepted > 0 && accepted < tried,
        "{accepted} of {tried} accepted"
    );
}

/// The nursing summary's JSON form (`"form": "renkei.nursing_summary"`): a twin of
/// `fhir/nursing_summary.json` (`tests/data/nursing_summary_form.json`, the same content
/// written in the form) checked against the form's JSON Schema, normalised, and held to
/// every fact of the Bundle's conformance entry, to the Bundle's sections, and to the
/// schema's verdict on every alteration of it.
mod nursing_summary_json_form {
    use super::*;

    use renkei_fhir::nursing_json::{NURSING_SECTIONS, NURSING_SUMMARY_SCHEMA_V1};
    use renkei_fhir::{NursingSummaryJsonFile, NursingSummaryJsonNormalizer};
    use renkei_sdk::file::FileFormat;
    use renkei_sdk::{EncounterClass, SourceFormat, TimeWindow};
    use serde_json::json;

    /// The twin, as a vendor would write it.
    const TWIN: &str = include_str!("data/nursing_summary_form.json");

    /// Data of the twin's patient that no error may repeat.
    const PATIENT_DATA: &[&str] = &[
        "0010203040",
        "架空",
        "次郎",
        "カクウ",
        "ジロウ",
        "1936",
        "03-0000-3333",
        "080-0000-0004",
        "花江",
        "N0000412",
    ];

    fn twin() -> Value {
        serde_json::from_str(TWIN).expect("the twin is JSON")
    }

    fn normalize_form(value: &Value) -> Result<CanonicalEvent, NormalizeError> {
        NursingSummaryJsonNormalizer::new()
            .normalize(&serde_json::to_vec(value).expect("serialise"))
    }

    fn accepted(value: &Value) -> CanonicalEvent {
        normalize_form(value).unwrap_or_else(|e| panic!("refused: {e}"))
    }

    /// The form's schema compiled once, formats asserted.
    fn form_validator() -> &'static Validator {
        static VALIDATOR: OnceLock<Validator> = OnceLock::new();
        VALIDATOR.get_or_init(|| {
            let schema: Value =
                serde_json::from_str(NURSING_SUMMARY_SCHEMA_V1).expect("the form's schema is JSON");
            jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .expect("the form's schema does not compile")
        })
    }

    /// The instance paths (JSON pointers) of every schema violation of `value`.
    fn form_violations(value: &Value) -> Vec<String> {
        form_validator()
            .iter_errors(value)
            .map(|e| e.instance_path().to_string())
            .collect()
    }

    /// `$.sections.adl[1].value` as a JSON pointer, `/sections/adl/1/value`.
    fn pointer(path: &str) -> String {
        let tail = path.strip_prefix('$').expect("a JSON path");
        tail.replace('[', ".")
            .replace(']', "")
            .split('.')
            .filter(|part| !part.is_empty())
            .map(|part| format!("/{part}"))
            .collect()
    }

    fn bundle_event() -> CanonicalEvent {
        let case = cases("fhir/")
            .into_iter()
            .find(|c| c.name == "fhir/nursing_summary.json")
            .expect("the nursing summary is in the set");
        event_of(&case)
    }

    fn bundle_facts() -> Map<String, Value> {
        conformance()
            .expected
            .get("fhir/nursing_summary.json")
            .and_then(Value::as_object)
            .expect("EXPECTED.json has the nursing summary")
            .clone()
    }

    fn section_items<'a>(event: &'a CanonicalEvent, code: &str) -> &'a [String] {
        event
            .data
            .document
            .as_ref()
            .and_then(|d| d.sections.iter().find(|s| s.code == code))
            .map_or(&[], |s| s.items.as_slice())
    }

    #[test]
    fn the_twin_is_valid_against_the_forms_draft_2020_12_schema() {
        let schema: Value = serde_json::from_str(NURSING_SUMMARY_SCHEMA_V1).expect("JSON");
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(
            schema["properties"]["form"]["const"],
            "renkei.nursing_summary"
        );
        let members: Vec<&str> = schema["properties"]["sections"]["properties"]
            .as_object()
            .expect("the sections")
            .keys()
            .map(String::as_str)
            .collect();
        for section in &NURSING_SECTIONS {
            assert!(members.contains(&section.member), "{}", section.member);
        }
        assert_eq!(members.len(), NURSING_SECTIONS.len());
        assert_eq!(form_violations(&twin()), Vec::<String>::new());
    }

    #[test]
    fn the_twin_carries_every_fact_of_the_bundles_conformance_entry_but_its_format() {
        let event = accepted(&twin());
        let mut facts = bundle_facts();
        assert_eq!(facts.remove("format"), Some(json!("fhir")));
        let (held, problems) = check_case(&event, &facts);
        assert!(problems.is_empty(), "{problems:#?}");
        let facts_listed = facts
            .keys()
            .filter(|k| !renkei_sdk::conformance::NOT_FACTS.contains(&k.as_str()))
            .count();
        assert_eq!(held, facts_listed, "every fact is checked, none skipped");
        // `format` describes the entry, so check_case leaves it out: it is checked alone.
        assert_eq!(event.data.origin.format, SourceFormat::Json);
        assert_eq!(
            renkei_sdk::conformance::check_fact(&event, "format", "json"),
            renkei_sdk::conformance::Check::Holds
        );
        // A valid canonical event like any other, and stable through JSON.
        let violations = schema_violations(&event);
        assert!(violations.is_empty(), "{violations:#?}");
        let text = serde_json::to_string(&event).expect("serialise");
        let back: CanonicalEvent = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, event);
    }

    #[test]
    fn the_twin_makes_the_bundles_event_with_the_same_sections_in_the_same_order() {
        let bundle = bundle_event();
        let form = accepted(&twin());
        assert_eq!(form.event_type, bundle.event_type);
        assert_eq!(form.source, bundle.source);
        assert_eq!(form.time, bundle.time);
        assert_eq!(form.time.offset(), bundle.time.offset());
        assert_eq!(form.data.origin.message_id, bundle.data.origin.message_id);
        assert_eq!(form.data.origin.facility, bundle.data.origin.facility);
        // The patient in full: ids, names, birth date, sex, address, phone, key person.
        assert_eq!(form.data.patient, bundle.data.patient);
        let care_offices = |event: &CanonicalEvent| {
            event
                .data
                .facilities
                .iter()
                .filter(|f| f.role == FacilityRole::CareOffice)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(care_offices(&form), care_offices(&bundle));
        let (Some(f), Some(b)) = (&form.data.document, &bundle.data.document) else {
            panic!("both are documents");
        };
        assert_eq!((&f.code, &f.title, &f.id), (&b.code, &b.title, &b.id));
        assert_eq!(f.created_at, b.created_at);
        let heads = |d: &renkei_sdk::Document| {
            d.sections
                .iter()
                .map(|s| (s.code.clone(), s.title.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(heads(f), heads(b));
        let codes: Vec<&str> = NURSING_SECTIONS.iter().map(|s| s.code).collect();
        let sent: Vec<&str> = f.sections.iter().map(|s| s.code.as_str()).collect();
        assert_eq!(sent, codes);
        // The stay: the Bundle's Encounter period.
        let stay = |event: &CanonicalEvent| {
            let e = event.data.encounter.clone().unwrap_or_default();
            (e.class, e.admitted_at, e.discharged_at)
        };
        assert_eq!(stay(&form), stay(&bundle));
        assert_eq!(stay(&form).0, Some(EncounterClass::Inpatient));

        // Items: where both say the same thing they say it in the same words. The
        // Bundle's narrative paragraphs have no structured twin, except in sections
        // that are the same list (ADL, problems) or text (course).
        for code in ["course", "adl", "nursing-problems"] {
            assert_eq!(
                section_items(&form, code),
                section_items(&bundle, code),
                "{code}"
            );
        }
        let lines: [(&str, &[&str]); 4] = [
            (
                "basic",
                &[
                    "妻 架空 花江（080-0000-0004）",
                    "架空居宅介護支援事業所（1379999995）",
                ],
            ),
            (
                "history",
                &[
                    "慢性心不全（急性増悪後）",
                    "2型糖尿病",
                    "心筋梗塞（PCI施行）",
                ],
            ),
            (
                "medication",
                &[
                    "フロセミド錠20mg 1回1錠 1日1回 朝食後（一包化）",
                    "インスリン注射（持効型） 1日1回 朝 8単位 自己注射",
                ],
            ),
            (
                "continuing-care",
                &[
                    "退院後の継続看護：毎朝の体重測定と記録、下肢浮腫の観察。2日で2kg以上の増加で受診。",
                ],
            ),
        ];
        for (code, lines) in lines {
            for line in lines {
                assert!(
                    section_items(&bundle, code).iter().any(|item| item == line),
                    "{code}: the Bundle has no item `{line}`: {:?}",
                    section_items(&bundle, code)
                );
                assert!(
                    section_items(&form, code)
                        .iter()
                        .any(|item| item.starts_with(line)),
                    "{code}: no item of the form starts with `{line}`: {:?}",
                    section_items(&form, code)
                );
            }
        }
        assert!(section_items(&form, "basic").contains(&"要介護度：要介護3".to_owned()));
        assert!(
            section_items(&form, "medication")
                .iter()
                .any(|item| item.ends_with(" 管理：一包化し、妻が朝夕に手渡している"))
        );
    }

    #[test]
    fn the_form_travels_whole_and_a_utc_time_keeps_its_instant() {
        let event = accepted(&twin());
        let document = event.data.document.as_ref().expect("a document");
        assert_eq!(document.content.as_ref(), Some(&twin()));
        assert_eq!(document.created_at, Some(event.time));
        assert_eq!(
            event.data.origin.raw_sha256,
            renkei_sdk::Origin::sha256_hex(&serde_json::to_vec(&twin()).expect("serialise"))
        );
        let mut utc = twin();
        utc["created_at"] = json!("2025-06-25T00:40:00Z");
        let event = accepted(&utc);
        assert_eq!(event.time.to_rfc3339(), "2025-06-25T09:40:00+09:00");
        // A stay given as dates starts and ends at 00:00 in Japan, as on the Bundle path.
        let mut dates = twin();
        dates["stay"] = json!({"admitted_at": "2025-06-11", "discharged_at": "2025-06-25"});
        let stay = accepted(&dates).data.encounter.expect("a stay");
        assert_eq!(
            stay.admitted_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2025-06-11T00:00:00+09:00")
        );
        assert_eq!(stay.location, None);
        let ward = accepted(&twin()).data.encounter.and_then(|e| e.location);
        assert_eq!(ward.and_then(|l| l.ward).as_deref(), Some("5階西病棟"));
    }

    /// A change made to the twin.
    type Alteration = fn(&mut Value);

    /// A refused alteration of the twin and where its error must point.
    struct BadForm {
        what: &'static str,
        alter: Alteration,
        location: &'static str,
        mentions: &'static [&'static str],
    }

    fn remove(value: &mut Value, parent: &str, key: &str) {
        value
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .and_then(|o| o.remove(key))
            .expect("the member is there");
    }

    const BAD_FORMS: &[BadForm] = &[
        BadForm {
            what: "no patient id",
            alter: |v| remove(v, "/patient", "id"),
            location: "$.patient.id",
            mentions: &["is missing", "patient id"],
        },
        BadForm {
            what: "a patient id sent as a number",
            alter: |v| v["patient"]["id"] = json!(10203040),
            location: "$.patient.id",
            mentions: &["must be a string", "leading zeros"],
        },
        BadForm {
            what: "a padded patient id",
            alter: |v| v["patient"]["id"] = json!(" 0010203040"),
            location: "$.patient.id",
            mentions: &["padded"],
        },
        BadForm {
            what: "another form",
            alter: |v| v["form"] = json!("renkei.admission_info"),
            location: "$.form",
            mentions: &["`renkei.admission_info`", "care-json"],
        },
        BadForm {
            what: "no form",
            alter: |v| remove(v, "", "form"),
            location: "$.form",
            mentions: &["is missing", "renkei.nursing_summary"],
        },
        BadForm {
            what: "a version the hub does not read",
            alter: |v| v["version"] = json!("2"),
            location: "$.version",
            mentions: &["`2`", "\"1\""],
        },
        BadForm {
            what: "a creation time that is no RFC 3339",
            alter: |v| v["created_at"] = json!("2025-06-25 09:40"),
            location: "$.created_at",
            mentions: &["RFC 3339", "offset"],
        },
        BadForm {
            what: "a creation time without an offset",
            alter: |v| v["created_at"] = json!("2025-06-25T09:40:00"),
            location: "$.created_at",
            mentions: &["offset"],
        },
        BadForm {
            what: "an impossible date of birth",
            alter: |v| v["patient"]["birth_date"] = json!("1936-13-03"),
            location: "$.patient.birth_date",
            mentions: &["YYYY-MM-DD", "not repeated"],
        },
        BadForm {
            what: "an impossible admission date",
            alter: |v| v["stay"]["admitted_at"] = json!("2025-06-31"),
            location: "$.stay.admitted_at",
            mentions: &["YYYY-MM-DD"],
        },
        BadForm {
            what: "an unknown section",
            alter: |v| v["sections"]["discharge_plan"] = json!(["自宅退院"]),
            location: "$.sections.discharge_plan",
            mentions: &[
                "`discharge_plan` is not a section",
                "refused rather than dropped",
            ],
        },
        BadForm {
            what: "a section under its code instead of its member",
            alter: |v| {
                let problems = v["sections"]["nursing_problems"].take();
                remove(v, "/sections", "nursing_problems");
                v["sections"]["nursing-problems"] = problems;
            },
            location: "$.sections.nursing-problems",
            mentions: &["`nursing_problems`"],
        },
        BadForm {
            what: "an unknown section whose name is patient data",
            alter: |v| v["sections"]["架空 次郎"] = json!("x"),
            location: "$.sections",
            mentions: &["a member of 5 characters is not a section"],
        },
        BadForm {
            what: "no section",
            alter: |v| v["sections"] = json!({}),
            location: "$.sections",
            mentions: &["none of the nursing summary's sections"],
        },
        BadForm {
            what: "only null sections",
            alter: |v| v["sections"] = json!({"basic": null, "course": null}),
            location: "$.sections",
            mentions: &["none of the nursing summary's sections"],
        },
        BadForm {
            what: "an empty list section",
            alter: |v| v["sections"]["history"] = json!([]),
            location: "$.sections.history",
            mentions: &["empty list"],
        },
        BadForm {
            what: "an ADL entry without its value",
            alter: |v| remove(v, "/sections/adl/1", "value"),
            location: "$.sections.adl[1].value",
            mentions: &["is missing", "how the patient does"],
        },
        BadForm {
            what: "a facility code with a separator",
            alter: |v| v["facility"]["code"] = json!("13-19999998"),
            location: "$.facility.code",
            mentions: &["10-digit 医療機関コード"],
        },
        BadForm {
            what: "a care-office number of nine digits",
            alter: |v| {
                v["sections"]["basic"]["care_manager"]["office_code"] = json!("137999999");
            },
            location: "$.sections.basic.care_manager.office_code",
            mentions: &["10-digit 介護保険事業所番号"],
        },
        BadForm {
            what: "no document id",
            alter: |v| remove(v, "", "document_id"),
            location: "$.document_id",
            mentions: &["is missing", "stable id"],
        },
        BadForm {
            what: "a sex the form does not know",
            alter: |v| v["patient"]["sex"] = json!("M"),
            location: "$.patient.sex",
            mentions: &["\"male\""],
        },
    ];

    #[test]
    fn bad_forms_are_refused_at_their_json_path_by_normaliser_and_schema_alike() {
        for bad in BAD_FORMS {
            let mut value = twin();
            (bad.alter)(&mut value);
            let err = match normalize_form(&value) {
                Ok(event) => panic!("{}: accepted as {}", bad.what, event.event_type),
                Err(err) => err,
            };
            let shown = err.to_string();
            assert_eq!(
                err.location.as_deref(),
                Some(bad.location),
                "{}: {shown}",
                bad.what
            );
            for mention in bad.mentions {
                assert!(
                    shown.contains(mention),
                    "{}: no `{mention}` in: {shown}",
                    bad.what
                );
            }
            for data in PATIENT_DATA {
                assert!(
                    !shown.contains(data),
                    "{}: repeats `{data}`: {shown}",
                    bad.what
                );
            }
            // The schema refuses it too, at that member or one that holds it.
            let at = pointer(bad.location);
            let violations = form_violations(&value);
            assert!(
                violations
                    .iter()
                    .any(|v| at == *v || at.starts_with(&format!("{v}/")) || v.is_empty()),
                "{}: the schema's violations {violations:?} are not at {at}",
                bad.what
            );
        }
    }

    #[test]
    fn every_problem_is_listed_with_its_path_and_the_first_one_locates_the_refusal() {
        let mut value = twin();
        value["created_at"] = json!("yesterday");
        remove(&mut value, "/patient", "id");
        value["sections"]["adl"][0]["item"] = json!(5);
        let err = normalize_form(&value).expect_err("refused");
        assert_eq!(err.location.as_deref(), Some("$.created_at"));
        assert!(
            err.reason.contains("; also $.patient.id: is missing"),
            "{err}"
        );
        assert!(
            err.reason
                .contains("$.sections.adl[0].item: must be a string"),
            "{err}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_json_are_refused_at_their_position() {
        let normalizer = NursingSummaryJsonNormalizer::new();
        let cut = &TWIN.as_bytes()[..TWIN.len() / 2];
        let err = normalizer.normalize(cut).expect_err("truncated");
        assert!(
            err.location
                .as_deref()
                .is_some_and(|l| l.starts_with("line ")),
            "{err}"
        );
        assert!(err.reason.contains("truncated"), "{err}");
        let mut latin = TWIN.as_bytes().to_vec();
        latin[10] = 0xff;
        let err = normalizer.normalize(&latin).expect_err("not UTF-8");
        assert_eq!(err.location.as_deref(), Some("byte 10"));
        let mut with_mark = b"\xEF\xBB\xBF".to_vec();
        with_mark.extend_from_slice(TWIN.as_bytes());
        assert!(normalizer.normalize(&with_mark).is_ok());
        let err = normalizer.normalize(b"[]").expect_err("not an object");
        assert_eq!(err.location.as_deref(), Some("$"));
    }

    #[test]
    fn null_and_absent_optional_members_and_unknown_members_outside_sections_are_accepted() {
        let variants: [(&str, Alteration); 8] = [
            ("null author and stay", |v| {
                v["author"] = Value::Null;
                v["stay"] = Value::Null;
            }),
            ("a null phone and sex", |v| {
                v["patient"]["phone"] = Value::Null;
                v["patient"]["sex"] = Value::Null;
            }),
            ("a vendor's own member", |v| {
                v["x_vendor"] = json!({"system": "看護支援"})
            }),
            ("a note in an ADL entry", |v| {
                v["sections"]["adl"][0]["note"] = json!("自主トレ")
            }),
            ("a minor version", |v| v["version"] = json!("1.2")),
            ("one section only", |v| {
                let course = v["sections"]["course"].take();
                v["sections"] = json!({ "course": course });
            }),
            ("null sections beside one", |v| {
                v["sections"]["history"] = Value::Null;
                v["sections"]["basic"] = Value::Null;
            }),
            ("a blank ward", |v| v["stay"]["ward"] = json!("  ")),
        ];
        for (what, alter) in variants {
            let mut value = twin();
            alter(&mut value);
            assert_eq!(form_violations(&value), Vec::<String>::new(), "{what}");
            let event = normalize_form(&value).unwrap_or_else(|e| panic!("{what}: {e}"));
            let (_, problems) = check_case(
                &event,
                &Map::from_iter([
                    ("patient_id".to_owned(), json!("0010203040")),
                    ("message_id".to_owned(), json!("1319999998^2025^N0000412")),
                ]),
            );
            assert!(problems.is_empty(), "{what}: {problems:?}");
        }
        let mut null_stay = twin();
        null_stay["stay"] = Value::Null;
        assert_eq!(accepted(&null_stay).data.encounter, None);
        let mut one = twin();
        one["sections"] = json!({"course": "経過は良好。"});
        let codes: Vec<String> = accepted(&one)
            .data
            .document
            .map(|d| d.sections.into_iter().map(|s| s.code).collect())
            .unwrap_or_default();
        assert_eq!(codes, ["course"]);
    }

    #[test]
    fn sections_follow_the_table_order_whatever_order_the_members_are_sent_in() {
        let reversed = r#"{"form": "renkei.nursing_summary", "version": "1",
            "document_id": "D-1", "created_at": "2025-06-25T09:40:00+09:00",
            "facility": {"code": "1319999998"}, "patient": {"id": "P-1"},
            "sections": {"continuing_care": [{"need": "体重測定"}], "nursing_problems": ["転倒"],
                         "course": "安定", "basic": {"household": "独居"}}}"#;
        let event = NursingSummaryJsonNormalizer::new()
            .normalize(reversed.as_bytes())
            .expect("accepted");
        let codes: Vec<String> = event
            .data
            .document
            .map(|d| d.sections.into_iter().map(|s| s.code).collect())
            .unwrap_or_default();
        assert_eq!(
            codes,
            ["basic", "course", "nursing-problems", "continuing-care"]
        );
    }

    #[test]
    fn the_care_manager_and_recipients_become_items_and_facilities() {
        let mut value = twin();
        value["sections"]["basic"]["care_manager"]["name"] = json!("模擬 介子");
        value["sections"]["basic"]["care_manager"]["phone"] = json!("03-0000-5555");
        value["recipients"] = json!(["1379999995", "1369999999", "1369999999"]);
        let event = accepted(&value);
        assert!(
            section_items(&event, "basic")
                .contains(&"ケアマネジャー：模擬 介子（03-0000-5555）".to_owned()),
            "{:?}",
            section_items(&event, "basic")
        );
        let facilities: Vec<(FacilityRole, &str)> = event
            .data
            .facilities
            .iter()
            .map(|f| (f.role, f.code.as_str()))
            .collect();
        assert_eq!(
            facilities,
            [
                (FacilityRole::CareOffice, "1379999995"),
                (FacilityRole::Recipient, "1379999995"),
                (FacilityRole::Recipient, "1369999999"),
            ]
        );
        let (_, problems) = check_case(
            &event,
            &Map::from_iter([
                ("care_office_facility".to_owned(), json!("1379999995")),
                ("referral_to_facility".to_owned(), json!("1369999999")),
            ]),
        );
        assert!(problems.is_empty(), "{problems:?}");
        // The sending hospital is no care office of its own patient.
        let mut own = twin();
        own["sections"]["basic"]["care_manager"]["office_code"] = json!("1319999998");
        assert!(accepted(&own).data.facilities.is_empty());
    }

    #[test]
    fn schema_and_normaliser_give_every_alteration_of_the_twin_the_same_verdict() {
        let (mut tried, mut refused) = (0, 0);
        for (what, mutant) in alterations(&twin()) {
            tried += 1;
            let raw = serde_json::to_vec(&mutant).expect("serialise");
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                NursingSummaryJsonNormalizer::new().normalize(&raw)
            }))
            .unwrap_or_else(|_| panic!("{what}: the normaliser panicked"));
            let violations = form_violations(&mutant);
            match outcome {
                Ok(event) => {
                    assert!(
                        violations.is_empty(),
                        "{what}: accepted, but the schema says {violations:?}"
                    );
                    let problems = schema_violations(&event);
                    assert!(
                        problems.is_empty(),
                        "{what}: accepted but schema-invalid: {problems:?}"
                    );
                }
                Err(e) => {
                    refused += 1;
                    assert!(
                        !violations.is_empty(),
                        "{what}: refused ({e}), but the schema accepts it"
                    );
                    assert!(
                        e.location.as_deref().is_some_and(|l| l.starts_with('$')),
                        "{what}: {e}"
                    );
                    for data in PATIENT_DATA {
                        assert!(
                            !e.to_string().contains(data),
                            "{what}: repeats `{data}`: {e}"
                        );
                    }
                }
            }
        }
        assert!(
            refused > 0 && refused < tried,
            "{refused} of {tried} refused"
        );
    }

    #[test]
    fn the_file_format_takes_the_form_and_leaves_bundles_and_care_forms_alone() {
        let format = NursingSummaryJsonFile;
        assert_eq!(format.name(), "nursing-json");
        assert!(format.recognizes("summary.json", TWIN.as_bytes()));
        assert!(format.recognizes("anything", format!("\u{feff}  {TWIN}").as_bytes()));
        let bundle = cases("fhir/")
            .into_iter()
            .find(|c| c.name == "fhir/nursing_summary.json")
            .expect("the Bundle");
        assert!(!format.recognizes("nursing_summary.json", &bundle.raw));
        let care = br#"{"form": "renkei.admission_info", "version": "1"}"#;
        assert!(!format.recognizes("NYUIN_x.json", care));
        let events = format
            .read("summary.json", TWIN.as_bytes(), &TimeWindow::default())
            .expect("read");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.origin.message_id, "1319999998^2025^N0000412");
        // The window a drop folder configures applies.
        let past = TimeWindow::between(
            chrono::DateTime::<chrono::Utc>::MIN_UTC,
            chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
                .expect("time")
                .to_utc(),
        );
        let err = format
            .read("summary.json", TWIN.as_bytes(), &past)
            .expect_err("too late");
        assert_eq!(err.location.as_deref(), Some("$.created_at"));
    }
}

/// The vendor document's examples of the JSON form stay in step with the normaliser.
mod nursing_summary_document {
    use super::*;
    use renkei_fhir::NursingSummaryJsonNormalizer;

    #[test]
    fn the_documents_json_form_examples_are_accepted_and_the_complete_one_is_the_twin() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/nursing-summary.md");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let examples: Vec<Value> = text
            .split("```json\n")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .filter_map(|block| serde_json::from_str::<Value>(block).ok())
            .filter(|value| value["form"] == "renkei.nursing_summary")
            .collect();
        assert_eq!(examples.len(), 2, "the complete and the smallest example");
        for example in &examples {
            let raw = serde_json::to_vec(example).expect("serialise");
            if let Err(e) = NursingSummaryJsonNormalizer::new().normalize(&raw) {
                panic!("an example of docs/nursing-summary.md is refused: {e}");
            }
        }
        let twin: Value = serde_json::from_str(include_str!("data/nursing_summary_form.json"))
            .expect("the twin is JSON");
        assert_eq!(examples[0], twin, "the complete example is the test twin");
    }
}
