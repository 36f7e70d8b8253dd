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

/// Overrides where the conformance set is read from.
const DIR_VARIABLE: &str = "RENKEI_CONFORMANCE_DIR";

/// The conformance set, read once per test process.
struct Conformance {
    dir: PathBuf,
    expected: Map<String, Value>,
}

fn conformance() -> &'static Conformance {
    static SET: OnceLock<Conformance> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = match std::env::var_os(DIR_VARIABLE) {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
        };
        let path = dir.join("EXPECTED.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the conformance set is missing: cannot read {} ({e}). These tests never skip: \
                 put the set at ../shared/conformance next to the checkout or set {DIR_VARIABLE}",
                path.display()
            )
        });
        let expected = match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => map,
            other => panic!("{} is not a JSON object: {other:?}", path.display()),
        };
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
