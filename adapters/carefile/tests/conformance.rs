//! Conformance: every care file of the shared conformance set — the care CSVs and JSON
//! described in its `EXPECTED.json` (format `csv` and `json`, the refused ones under
//! `bad/` included) and the care-plan CSVs described in `csv/careplan/EXPECTED.json` —
//! asserted fact by fact, then the same files corrupted and cut short.
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

use chrono::NaiveDate;
use jsonschema::Validator;
use renkei_carefile::careplan::{
    CarePlanContent, CarePlanFileKind, TransmissionKind, TransmissionStatus,
};
use renkei_carefile::{
    AdmissionInfoJsonNormalizer, CareCsvNormalizer, CarePlanFile, CarePlanSet, decode_ms932,
};
use renkei_sdk::conformance::{Check, check_case, check_fact};
use renkei_sdk::{CanonicalEvent, EVENT_SCHEMA_V1, EventType, NormalizeError, Normalizer};
use serde_json::{Map, Value, json};

/// The conformance set, read once per test process.
struct Conformance {
    dir: PathBuf,
    expected: Map<String, Value>,
    careplan: Map<String, Value>,
}

fn read_object(path: &Path) -> Map<String, Value> {
    renkei_sdk::conformance::read_object(path).unwrap_or_else(|e| panic!("{e}"))
}

fn conformance() -> &'static Conformance {
    static SET: OnceLock<Conformance> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = renkei_sdk::conformance::set_dir(env!("CARGO_MANIFEST_DIR"));
        let expected = read_object(&dir.join("EXPECTED.json"));
        let careplan = read_object(&dir.join("csv/careplan/EXPECTED.json"));
        let careplan = careplan["files"]
            .as_object()
            .expect("csv/careplan/EXPECTED.json has no `files` object")
            .clone();
        Conformance {
            dir,
            expected,
            careplan,
        }
    })
}

/// One care entry of `EXPECTED.json` with its file's bytes.
struct Case {
    /// The key in `EXPECTED.json`, e.g. `csv/NYUIN_….CSV`.
    name: String,
    raw: Vec<u8>,
    facts: Map<String, Value>,
}

impl Case {
    fn file_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    fn is_json(&self) -> bool {
        self.facts["format"] == "json"
    }
}

/// Every `csv` and `json` entry whose key starts with `folder`, in key order.
fn cases(folder: &str) -> Vec<Case> {
    let set = conformance();
    let mut cases: Vec<Case> = set
        .expected
        .iter()
        .filter(|(name, _)| name.starts_with(folder))
        .filter(|(_, facts)| facts["format"] == "csv" || facts["format"] == "json")
        .map(|(name, facts)| Case {
            name: name.clone(),
            raw: std::fs::read(set.dir.join(name))
                .unwrap_or_else(|e| panic!("EXPECTED.json lists {name}, but {e}")),
            facts: facts.as_object().expect("an entry is an object").clone(),
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!cases.is_empty(), "no csv/json entry under {folder}");
    cases
}

/// The care files that must be accepted.
fn good_cases() -> Vec<Case> {
    let mut all = cases("csv/");
    all.extend(cases("json/"));
    all
}

/// What a file-drop source does: the whole file, by name.
fn normalize_file(case: &Case) -> Result<Vec<CanonicalEvent>, NormalizeError> {
    if case.is_json() {
        AdmissionInfoJsonNormalizer::new()
            .normalize_file(case.file_name(), &case.raw)
            .map(|e| vec![e])
    } else {
        CareCsvNormalizer::new().normalize_file(case.file_name(), &case.raw)
    }
}

/// The bytes-only [`Normalizer`] of the case's format.
fn normalize_bytes(case: &Case) -> Result<CanonicalEvent, NormalizeError> {
    if case.is_json() {
        AdmissionInfoJsonNormalizer::new().normalize(&case.raw)
    } else {
        CareCsvNormalizer::new().normalize(&case.raw)
    }
}

fn event_of(case: &Case) -> CanonicalEvent {
    let mut events = normalize_file(case).unwrap_or_else(|e| panic!("{}: refused: {e}", case.name));
    assert_eq!(events.len(), 1, "{}: one data row, one event", case.name);
    events.pop().expect("one event")
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

fn assert_schema_valid_and_round_trips(name: &str, event: &CanonicalEvent) {
    let violations = schema_violations(event);
    assert!(
        violations.is_empty(),
        "{name}: {violations:#?}\n{:#}",
        serde_json::to_value(event).expect("serialise")
    );
    let text = serde_json::to_string(event).expect("serialise");
    let back: CanonicalEvent = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(&back, event, "{name}");
}

#[test]
fn every_care_file_has_an_expected_entry_and_every_entry_a_file() {
    let set = conformance();
    let mut problems = Vec::new();
    for (folder, extension) in [("csv", "csv"), ("json", "json")] {
        let entries = std::fs::read_dir(set.dir.join(folder))
            .unwrap_or_else(|e| panic!("cannot list {folder}/ of the conformance set: {e}"));
        let mut seen = 0;
        for entry in entries {
            let file_name = entry.expect("directory entry").file_name();
            let file_name = file_name.to_string_lossy();
            if !file_name.to_ascii_lowercase().ends_with(extension) {
                continue;
            }
            seen += 1;
            let key = format!("{folder}/{file_name}");
            match set.expected.get(&key) {
                None => problems.push(format!("{key} has no entry in EXPECTED.json")),
                Some(facts) if facts["format"] != folder => problems.push(format!(
                    "{key} is not declared `\"format\": \"{folder}\"` in EXPECTED.json"
                )),
                Some(_) => {}
            }
        }
        assert!(seen > 0, "{folder}/ of the conformance set holds no file");
    }
    for (key, facts) in &set.expected {
        if (facts["format"] == "csv" || facts["format"] == "json") && !set.dir.join(key).is_file() {
            problems.push(format!("EXPECTED.json lists {key}, which is not a file"));
        }
    }
    let careplan_dir = set.dir.join("csv/careplan");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&careplan_dir)
        .expect("csv/careplan/ of the conformance set")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().ends_with(".csv"))
        .collect();
    let listed: BTreeSet<String> = set.careplan.keys().cloned().collect();
    assert!(
        !listed.is_empty(),
        "csv/careplan/EXPECTED.json lists no file"
    );
    assert_eq!(
        on_disk, listed,
        "csv/careplan/ and its EXPECTED.json disagree"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn care_files_carry_every_expected_fact() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in good_cases() {
        if case.facts.contains_key("error") {
            failures.push(format!("{}: an accepted file expects an error", case.name));
        }
        let events = match normalize_file(&case) {
            Ok(events) => events,
            Err(e) => {
                failures.push(format!("{}: refused: {e}", case.name));
                continue;
            }
        };
        for event in &events {
            let (held, problems) = check_case(event, &case.facts);
            checked += held;
            failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.name)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked > 0, "no fact was checked");
}

#[test]
fn the_bytes_only_normalizer_gives_the_same_facts() {
    for case in good_cases() {
        let event =
            normalize_bytes(&case).unwrap_or_else(|e| panic!("{}: refused: {e}", case.name));
        let (_, problems) = check_case(&event, &case.facts);
        assert!(problems.is_empty(), "{}: {problems:#?}", case.name);
        let by_file = event_of(&case);
        // Everything but the fresh id and the message id (which has no file name to use).
        let mut same = event.clone();
        same.id = by_file.id;
        same.data
            .origin
            .message_id
            .clone_from(&by_file.data.origin.message_id);
        assert_eq!(same, by_file, "{}", case.name);
    }
}

#[test]
fn normalised_care_events_match_the_json_schema_and_round_trip() {
    for case in good_cases() {
        assert_schema_valid_and_round_trips(&case.name, &event_of(&case));
    }
}

#[test]
fn care_events_name_the_person_by_ltc_insurance_and_the_file_row_as_message_id() {
    for case in good_cases() {
        let event = event_of(&case);
        let insurer = case.facts["ltc_insurer"].as_str().expect("ltc_insurer");
        let insured = case.facts["ltc_insured_number"].as_str().expect("insured");
        let ids = &event.data.patient.identifiers;
        assert_eq!(ids.len(), 1, "{}", case.name);
        assert_eq!(ids[0].system, format!("urn:renkei:ltc-insured:{insurer}"));
        assert_eq!(ids[0].value, insured, "{}", case.name);
        let expected_id = if case.is_json() {
            case.file_name().to_owned()
        } else {
            format!("{}#2", case.file_name())
        };
        assert_eq!(event.data.origin.message_id, expected_id, "{}", case.name);
        // A resend of the same file has the same message id and a fresh event id.
        let again = event_of(&case);
        assert_eq!(again.data.origin.message_id, event.data.origin.message_id);
        assert_ne!(again.id, event.id);
        assert_eq!(again.data.origin.raw_sha256, event.data.origin.raw_sha256);
        let care = event.data.care.as_ref().expect("data.care");
        assert!(care["form"].is_string(), "{}", case.name);
        assert_eq!(
            check_fact(
                &event,
                "care_office_facility",
                case.facts["facility"].as_str().expect("facility")
            ),
            Check::Holds,
            "{}",
            case.name
        );
    }
}

#[test]
fn admission_info_care_keys_are_exactly_the_json_form_keys() {
    let keys = [
        "version",
        "insurer_number",
        "insured_number",
        "name",
        "name_kana",
        "birth_date",
        "sex",
        "admission_date",
        "hospital_code",
        "care_level",
        "certification_start",
        "certification_end",
        "copayment_ratio",
        "independence_bedridden",
        "independence_dementia",
        "mobility",
        "eating",
        "toileting",
        "medication_management",
        "medical_procedures",
        "key_person_name",
        "key_person_relationship",
        "key_person_phone",
        "care_office_code",
        "care_manager_name",
        "care_manager_phone",
    ];
    for case in good_cases() {
        let event = event_of(&case);
        if event.event_type != EventType::CareAdmissionInfo {
            continue;
        }
        let care = event
            .data
            .care
            .as_ref()
            .and_then(Value::as_object)
            .expect("care");
        let got: BTreeSet<&str> = care.keys().map(String::as_str).collect();
        let mut wanted: BTreeSet<&str> = keys.into_iter().collect();
        wanted.insert("form");
        assert_eq!(got, wanted, "{}", case.name);
        assert_eq!(care["form"], "renkei.admission_info");
        let kp = event.data.patient.key_person.as_ref().expect("key person");
        assert_eq!(kp.name.as_deref(), care["key_person_name"].as_str());
        assert_eq!(
            kp.relationship.as_deref(),
            care["key_person_relationship"].as_str()
        );
        assert_eq!(kp.phone.as_deref(), care["key_person_phone"].as_str());
    }
}

#[test]
fn discharge_info_keeps_all_46_columns_under_named_keys() {
    let case = cases("csv/TAIIN").into_iter().next().expect("a TAIIN case");
    let event = event_of(&case);
    let care = event
        .data
        .care
        .as_ref()
        .and_then(Value::as_object)
        .expect("care");
    assert_eq!(care.len(), 46 + 1, "46 columns and `form`");
    for (key, wanted) in [
        ("admission_date", "2025-04-10"),
        ("planned_discharge_date", "2025-04-24"),
        ("record_date", "2025-04-21"),
        ("interview_date", "2025-04-21"),
        ("informant_role", "病棟看護師"),
        ("hospital_name", "架空総合病院"),
        ("follow_up_method", "訪問診療"),
        ("conference_attended", "あり"),
    ] {
        assert_eq!(care[key], wanted, "{key}");
    }
    assert!(
        care["medical_procedures"]
            .as_str()
            .expect("text")
            .contains("在宅酸素療法")
    );
    assert!(
        care["nursing_viewpoint"]
            .as_str()
            .expect("text")
            .contains("水分制限")
    );
    assert!(care["diet_udf_category"].is_null(), "an empty cell is null");
    let hospital = &event.data.facilities[0];
    assert_eq!(hospital.name.as_deref(), Some("架空総合病院"));
}

/// How one `bad/` file must be refused.
struct Refusal {
    file: &'static str,
    /// `NormalizeError::location` from `normalize_file` (it starts with the file name).
    location: &'static str,
    /// What the error's text must mention, following the entry's `error` description.
    mentions: &'static [&'static str],
    /// Patient data that is in the file and must never be in the error.
    patient_data: &'static [&'static str],
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        file: "bad/csv_wrong_columns.CSV",
        location: "csv_wrong_columns.CSV, row 2",
        mentions: &["the row has 3 columns, the header 26"],
        patient_data: &["9999999999"],
    },
    Refusal {
        file: "bad/csv_utf8_not_ms932.CSV",
        location: "csv_utf8_not_ms932.CSV, byte 3, line 1",
        mentions: &["UTF-8", "MS932", "refused rather than stored garbled"],
        patient_data: &["架空", "冬美", "9999999996", "19450105", "090-0000-0005"],
    },
    Refusal {
        file: "bad/csv_impossible_date.CSV",
        location: "csv_impossible_date.CSV, row 2, column 退院(所)予定日",
        mentions: &["退院(所)予定日 is 20250231", "not a calendar date"],
        patient_data: &["架空", "花子", "9999999999", "19380315"],
    },
    Refusal {
        file: "bad/admission_info_no_insured_number.json",
        location: "admission_info_no_insured_number.json, $.insured_number",
        mentions: &["insured_number", "被保険者番号", "identified or routed"],
        patient_data: &["模擬", "和子", "1941-02-28", "080-0000-0002"],
    },
];

fn refusal(name: &str) -> &'static Refusal {
    REFUSALS
        .iter()
        .find(|r| r.file == name)
        .unwrap_or_else(|| panic!("{name} is listed in EXPECTED.json but not in REFUSALS"))
}

/// The text of a conformance file as a person would read it.
fn readable(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::SHIFT_JIS.decode(raw).0.into_owned(),
    }
}

#[test]
fn bad_care_files_are_refused_with_the_reason_given_without_patient_data() {
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
        // The patient data we look for really is in the file, so its absence means something.
        let text = readable(&case.raw);
        for data in refusal.patient_data {
            assert!(
                text.contains(data),
                "{}: `{data}` is not in the file",
                case.name
            );
        }
        let by_file = match normalize_file(case) {
            Ok(events) => panic!("{}: accepted as {} events", case.name, events.len()),
            Err(err) => err,
        };
        let by_bytes = match normalize_bytes(case) {
            Ok(event) => panic!("{}: accepted as {}", case.name, event.event_type),
            Err(err) => err,
        };
        assert_eq!(
            by_file.location.as_deref(),
            Some(refusal.location),
            "{}: {by_file}",
            case.name
        );
        // Without the file name, the same place and the same reason.
        let place = refusal
            .location
            .split_once(", ")
            .map(|(_, place)| place)
            .expect("file, place");
        assert_eq!(
            by_bytes.location.as_deref(),
            Some(place),
            "{}: {by_bytes}",
            case.name
        );
        assert_eq!(by_bytes.reason, by_file.reason, "{}", case.name);
        let shown = by_file.to_string();
        assert!(
            shown.starts_with(&format!("{}: ", refusal.location)),
            "{shown}"
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
        assert!(
            !shown.contains('\u{fffd}'),
            "{}: mojibake in the error: {shown}",
            case.name
        );
    }
}

/// The first conformance NYUIN file: name and bytes.
fn nyuin() -> (String, Vec<u8>) {
    let case = cases("csv/NYUIN").into_iter().next().expect("a NYUIN case");
    (case.file_name().to_owned(), case.raw)
}

fn ms932(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

/// The file's header and data row, decoded.
fn header_and_row(raw: &[u8]) -> (String, String) {
    let text = decode_ms932(raw).expect("MS932");
    let (header, row) = text.split_once("\r\n").expect("a header row");
    (header.to_owned(), row.trim_end_matches("\r\n").to_owned())
}

#[test]
fn a_file_of_several_rows_is_one_event_per_row_or_refused_whole() {
    let (name, raw) = nyuin();
    let (header, row) = header_and_row(&raw);
    let good = ms932(&format!("{header}\r\n{row}\r\n{row}\r\n"));
    let events = CareCsvNormalizer::new()
        .normalize_file(&name, &good)
        .expect("two good rows");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.data.origin.message_id.as_str())
        .collect();
    assert_eq!(ids, [format!("{name}#2"), format!("{name}#3")]);
    // The bytes-only normalizer yields one event, so it refuses two rows and says why.
    let err = CareCsvNormalizer::new()
        .normalize(&good)
        .expect_err("two rows");
    assert!(err.reason.contains("normalize_file"), "{err}");

    // Row 3 has an impossible 認定有効期間終了: nothing of the file is accepted.
    let broken = row.replace("20260430", "20260431");
    assert_ne!(broken, row);
    let bad = ms932(&format!("{header}\r\n{row}\r\n{broken}\r\n"));
    let err = CareCsvNormalizer::new()
        .normalize_file(&name, &bad)
        .expect_err("a bad row refuses the file");
    assert_eq!(
        err.location.as_deref(),
        Some(format!("{name}, row 3, column 認定有効期間終了").as_str())
    );
    assert!(err.reason.contains("20260431"), "{err}");
}

#[test]
fn the_file_name_and_its_rows_must_agree() {
    let (name, raw) = nyuin();
    let other_hospital = name.replace("_1319999999_", "_1319999990_");
    assert_ne!(other_hospital, name);
    let err = CareCsvNormalizer::new()
        .normalize_file(&other_hospital, &raw)
        .expect_err("the hospital differs");
    assert_eq!(
        err.location.as_deref(),
        Some(format!("{other_hospital}, row 2, column 医療機関コード").as_str())
    );
    let as_taiin = name.replacen("NYUIN", "TAIIN", 1);
    let err = CareCsvNormalizer::new()
        .normalize_file(&as_taiin, &raw)
        .expect_err("the layout differs");
    assert!(err.reason.contains("header is the NYUIN"), "{err}");
    let malformed = "NYUIN_2025041_1379999999_1319999999_20250410101500.CSV";
    let err = CareCsvNormalizer::new()
        .normalize_file(malformed, &raw)
        .expect_err("a malformed conventional name");
    assert_eq!(err.location.as_deref(), Some(malformed));
    // A name outside the convention leaves the layout to the header.
    let events = CareCsvNormalizer::new()
        .normalize_file("incoming/admission.csv", &raw)
        .expect("any other name");
    assert_eq!(events[0].data.origin.message_id, "admission.csv#2");
}

#[test]
fn a_wrong_header_or_a_missing_required_cell_names_the_column() {
    let (name, raw) = nyuin();
    let (header, row) = header_and_row(&raw);
    let renamed = header.replace("フリガナ", "ふりがな");
    let err = CareCsvNormalizer::new()
        .normalize_file(&name, &ms932(&format!("{renamed}\r\n{row}\r\n")))
        .expect_err("wrong header");
    assert_eq!(
        err.location.as_deref(),
        Some(format!("{name}, row 1, column 5").as_str())
    );
    assert!(err.reason.contains("`フリガナ`"), "{err}");
    // No header at all: the data row is not echoed.
    let err = CareCsvNormalizer::new()
        .normalize(&ms932(&format!("{row}\r\n")))
        .expect_err("no header");
    assert!(!err.to_string().contains("架空"), "{err}");
    let cells: Vec<&str> = row.split(',').collect();
    for (column, header_name) in [
        (2, "被保険者番号"),
        (8, "医療機関コード"),
        (23, "介護支援事業所番号"),
        (7, "入院日"),
    ] {
        let mut emptied = cells.clone();
        emptied[column] = "";
        let text = format!("{header}\r\n{}\r\n", emptied.join(","));
        let err = CareCsvNormalizer::new()
            .normalize(&ms932(&text))
            .expect_err("a required cell is empty");
        assert_eq!(
            err.location.as_deref(),
            Some(format!("row 2, column {header_name}").as_str()),
            "{err}"
        );
        assert!(err.reason.contains("is empty"), "{err}");
    }
    let mut bad_sex = cells.clone();
    bad_sex[6] = "3";
    let err = CareCsvNormalizer::new()
        .normalize(&ms932(&format!("{header}\r\n{}\r\n", bad_sex.join(","))))
        .expect_err("sex 3");
    assert_eq!(err.location.as_deref(), Some("row 2, column 性別"));
}

/// The NYUIN conformance row as the JSON form (same items, ISO dates).
fn nyuin_as_json() -> Value {
    let (_, raw) = nyuin();
    let (header, row) = header_and_row(&raw);
    let keys = [
        ("CSVバージョン", "version"),
        ("保険者番号", "insurer_number"),
        ("被保険者番号", "insured_number"),
        ("利用者氏名", "name"),
        ("フリガナ", "name_kana"),
        ("生年月日", "birth_date"),
        ("性別", "sex"),
        ("入院日", "admission_date"),
        ("医療機関コード", "hospital_code"),
        ("要介護度", "care_level"),
        ("認定有効期間開始", "certification_start"),
        ("認定有効期間終了", "certification_end"),
        ("自己負担割合", "copayment_ratio"),
        ("障害高齢者自立度", "independence_bedridden"),
        ("認知症高齢者自立度", "independence_dementia"),
        ("移動", "mobility"),
        ("食事", "eating"),
        ("排泄", "toileting"),
        ("服薬管理", "medication_management"),
        ("医療処置", "medical_procedures"),
        ("キーパーソン氏名", "key_person_name"),
        ("キーパーソン続柄", "key_person_relationship"),
        ("キーパーソン電話", "key_person_phone"),
        ("介護支援事業所番号", "care_office_code"),
        ("ケアマネジャー氏名", "care_manager_name"),
        ("ケアマネ電話", "care_manager_phone"),
    ];
    let mut form = Map::new();
    form.insert("form".to_owned(), json!("renkei.admission_info"));
    for (h, cell) in header.split(',').zip(row.split(',')) {
        let key = keys
            .iter()
            .find(|(k, _)| *k == h)
            .expect("a NYUIN header")
            .1;
        let value = match NaiveDate::parse_from_str(cell, "%Y%m%d") {
            Ok(date) if key.ends_with("date") || key.starts_with("certification") => {
                date.format("%Y-%m-%d").to_string()
            }
            _ => cell.to_owned(),
        };
        form.insert(key.to_owned(), json!(value));
    }
    Value::Object(form)
}

#[test]
fn json_and_csv_of_the_same_form_make_the_same_event() {
    let (name, raw) = nyuin();
    let csv_event = CareCsvNormalizer::new()
        .normalize_file(&name, &raw)
        .expect("csv")
        .remove(0);
    let mut form = nyuin_as_json();
    // Unknown keys are ignored.
    form["x_vendor_note"] = json!({"anything": [1, 2]});
    let bytes = serde_json::to_vec(&form).expect("json");
    let json_event = AdmissionInfoJsonNormalizer::new()
        .normalize_file(&name.replace(".CSV", ".json"), &bytes)
        .expect("json");
    assert_eq!(json_event.data.patient, csv_event.data.patient);
    assert_eq!(json_event.data.care, csv_event.data.care);
    assert_eq!(json_event.data.facilities, csv_event.data.facilities);
    assert_eq!(json_event.time, csv_event.time);
    assert_eq!(json_event.source, csv_event.source);
    assert_eq!(json_event.data.origin.format.as_str(), "json");

    // Optional items may be null or absent; required ones may not.
    let mut sparse = nyuin_as_json();
    sparse["mobility"] = Value::Null;
    sparse
        .as_object_mut()
        .expect("object")
        .remove("key_person_phone");
    let event = AdmissionInfoJsonNormalizer::new()
        .normalize(&serde_json::to_vec(&sparse).expect("json"))
        .expect("sparse");
    let care = event.data.care.as_ref().expect("care");
    assert!(care["mobility"].is_null() && care["key_person_phone"].is_null());
    for (key, value, location) in [
        ("admission_date", json!("20250410"), "$.admission_date"),
        ("sex", json!(2), "$.sex"),
        ("form", json!("renkei.discharge_info"), "$.form"),
        ("hospital_code", Value::Null, "$.hospital_code"),
    ] {
        let mut wrong = nyuin_as_json();
        wrong[key] = value;
        let err = AdmissionInfoJsonNormalizer::new()
            .normalize(&serde_json::to_vec(&wrong).expect("json"))
            .expect_err(key);
        assert_eq!(err.location.as_deref(), Some(location), "{err}");
    }
    let err = AdmissionInfoJsonNormalizer::new()
        .normalize(b"{\"form\": ")
        .expect_err("cut");
    assert!(err.reason.contains("cut short"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Care-plan CSV (csv/careplan/)

struct CarePlanCase {
    name: String,
    raw: Vec<u8>,
    facts: Map<String, Value>,
}

fn careplan_cases() -> Vec<CarePlanCase> {
    let set = conformance();
    set.careplan
        .iter()
        .map(|(name, facts)| CarePlanCase {
            name: name.clone(),
            raw: std::fs::read(set.dir.join("csv/careplan").join(name))
                .unwrap_or_else(|e| panic!("csv/careplan/EXPECTED.json lists {name}, but {e}")),
            facts: facts.as_object().expect("an entry is an object").clone(),
        })
        .collect()
}

fn parse_careplan(case: &CarePlanCase) -> CarePlanFile {
    CarePlanFile::parse(&case.name, &case.raw)
        .unwrap_or_else(|e| panic!("{}: refused: {e}", case.name))
}

/// `2025-03-25` from the file's facts, or `None` for `null` / `00000000 (not applicable)`.
fn expected_date(value: &Value) -> Option<NaiveDate> {
    value
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
}

/// The item number of an `EXPECTED.json` key such as `認定日(No.18)`.
fn item_no(key: &str) -> usize {
    let start = key.find("No.").expect("an item number") + 3;
    key[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

/// The code before ` (…)` in values such as `21 (継続)`, and the meaning inside.
fn code_and_label(value: &str) -> (&str, Option<&str>) {
    match value.split_once(" (") {
        Some((code, rest)) => (code, rest.strip_suffix(')')),
        None => (value, None),
    }
}

fn as_i64(value: &Value) -> Option<i64> {
    value.as_i64()
}

fn str_of(value: &Value) -> Option<&str> {
    value.as_str()
}

#[test]
fn careplan_files_carry_every_expected_fact() {
    let mut checked = 0usize;
    for case in careplan_cases() {
        let file = parse_careplan(&case);
        let f = &case.facts;
        let name = &case.name;
        assert_eq!(f["encoding"], "cp932", "{name}");
        assert_eq!(f["header_row"], false, "{name}");
        assert_eq!(
            Some(file.csv_version.as_str()),
            str_of(&f["csv_version"]),
            "{name}"
        );
        assert_eq!(
            Some(file.insurer_number.as_str()),
            str_of(&f["insurer_number"]),
            "{name}"
        );
        assert_eq!(
            Some(file.insured_number.as_str()),
            str_of(&f["insured_number"]),
            "{name}"
        );
        assert_eq!(
            Some(file.name.sender_office.as_str()),
            str_of(&f["sender_office"]),
            "{name}"
        );
        assert_eq!(
            file.name.sender_service_kind.as_deref(),
            str_of(&f["sender_service_kind"]),
            "{name}"
        );
        assert_eq!(
            Some(file.name.receiver_office.as_str()),
            str_of(&f["receiver_office"]),
            "{name}"
        );
        assert_eq!(
            file.name.receiver_service_kind.as_deref(),
            str_of(&f["receiver_service_kind"]),
            "{name}"
        );
        assert_eq!(Some(file.name.kind.name()), str_of(&f["kind"]), "{name}");
        let label = str_of(&f["label"]).expect("label");
        assert!(label.starts_with(file.name.kind.label()), "{name}: {label}");
        assert_eq!(
            file.name.target_month.as_deref(),
            str_of(&f["target_ym"]),
            "{name}"
        );
        assert_eq!(
            Some(file.name.file_seq.as_str()),
            str_of(&f["file_seq"]),
            "{name}"
        );
        assert_eq!(
            Some(file.record_count as u64),
            f["record_count"].as_u64(),
            "{name}"
        );
        assert_eq!(
            Some(file.column_count as u64),
            f["column_count"].as_u64(),
            "{name}"
        );
        let link: Vec<&str> = f["link_key"]
            .as_array()
            .expect("link_key")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            link[..2],
            [file.insurer_number.as_str(), file.insured_number.as_str()],
            "{name}"
        );
        checked += 14;
        match &file.content {
            CarePlanContent::PlanTable1(t) => {
                assert_eq!(f["service_lines"], Value::Null);
                assert_eq!(link[2], t.plan_date.format("%Y%m%d").to_string());
                for (key, value) in f["key_dates"].as_object().expect("key_dates") {
                    match item_no(key) {
                        4 => assert_eq!(Some(t.created_on), expected_date(value), "{key}"),
                        14 => assert_eq!(Some(t.plan_date), expected_date(value), "{key}"),
                        15 => assert_eq!(t.first_plan_date, expected_date(value), "{key}"),
                        18 => assert_eq!(t.certified_on, expected_date(value), "{key}"),
                        19 => {
                            assert_eq!(t.certification_period.start, expected_date(&value[0]));
                            assert_eq!(t.certification_period.end, expected_date(&value[1]));
                        }
                        other => panic!("{name}: no mapping for key date No.{other}"),
                    }
                    checked += 1;
                }
                for (key, value) in f["codes"].as_object().expect("codes") {
                    let coded = match item_no(key) {
                        13 => {
                            assert_eq!(t.office_code.as_deref(), str_of(value), "{key}");
                            checked += 1;
                            continue;
                        }
                        16 => &t.plan_category,
                        17 => &t.certification_status,
                        21 => &t.care_level,
                        25 => &t.living_support_reason,
                        other => panic!("{name}: no mapping for code No.{other}"),
                    };
                    match str_of(value) {
                        None => assert!(coded.is_none(), "{key}: {coded:?}"),
                        Some(text) => {
                            let (code, label) = code_and_label(text);
                            let coded = coded.as_ref().expect(key);
                            assert_eq!(coded.code, code, "{key}");
                            let label = label.map(|l| l.replace('２', "2"));
                            assert_eq!(coded.label.map(str::to_owned), label, "{key}");
                        }
                    }
                    checked += 1;
                }
                let wishes = t.user_and_family_wishes.as_deref().expect("No.22");
                assert_eq!(
                    wishes.contains("\r\n"),
                    f["text_checks"]["No.22 contains embedded CRLF inside quotes"] == true
                );
                let policy = t.overall_policy.as_deref().expect("No.24");
                assert!(
                    policy.contains("\"090-0000-0000\"") && policy.contains('、'),
                    "{policy}"
                );
                checked += 2;
            }
            CarePlanContent::PlanTable2(t) => {
                assert_eq!(Some(t.lines.len() as u64), f["service_lines"].as_u64());
                assert_eq!(Some(t.need_count as u64), f["kadai_count"].as_u64());
                assert_eq!(Some(t.goal_count as u64), f["goal_count"].as_u64());
                assert_eq!(link[2], t.plan_date.format("%Y%m%d").to_string());
                for (key, value) in f["key_dates"].as_object().expect("key_dates") {
                    match item_no(key) {
                        4 => assert_eq!(Some(t.created_on), expected_date(value), "{key}"),
                        5 => assert_eq!(Some(t.plan_date), expected_date(value), "{key}"),
                        other => panic!("{name}: no mapping for key date No.{other}"),
                    }
                    checked += 1;
                }
                let lines = f["lines"].as_array().expect("lines");
                assert_eq!(lines.len(), t.lines.len());
                for (want, got) in lines.iter().zip(&t.lines) {
                    assert_eq!(Some(got.need_no), as_i64(&want["課題NO"]));
                    assert_eq!(Some(got.goal_no), as_i64(&want["援助目標NO"]));
                    assert_eq!(Some(got.service_no), as_i64(&want["援助内容NO"]));
                    assert_eq!(got.service.as_deref(), str_of(&want["サービス内容"]));
                    assert_eq!(got.insurance_flag.as_deref(), str_of(&want["保険対象区分"]));
                    assert_eq!(got.service_kind.as_deref(), str_of(&want["サービス種別"]));
                    assert_eq!(got.provider_code.as_deref(), str_of(&want["事業者コード"]));
                    assert_eq!(got.frequency.as_deref(), str_of(&want["頻度"]));
                    checked += 8;
                }
                // Line 2 leaves 課題/目標/期間 blank (print-image rule): inherited from line 1.
                let (first, second) = (&t.lines[0], &t.lines[1]);
                assert!(second.need.is_some());
                assert_eq!(second.need, first.need);
                assert_eq!(second.long_term_goal, first.long_term_goal);
                assert_eq!(second.short_term_goal, first.short_term_goal);
                assert_eq!(second.long_term_period, first.long_term_period);
                assert_eq!(second.short_term_period, first.short_term_period);
                let content = file.content_json().to_string();
                let checks = &f["encoding_checks"];
                if checks.to_string().contains("0x8740") {
                    assert!(case.raw.windows(2).any(|w| w == [0x87, 0x40]));
                    assert!(content.contains('①'), "0x8740 decodes as ①");
                }
                if checks.to_string().contains("0x8160") {
                    assert!(case.raw.windows(2).any(|w| w == [0x81, 0x60]));
                    assert!(content.contains('\u{ff5e}') && !content.contains('\u{301c}'));
                }
                checked += 2;
            }
            CarePlanContent::UserSupplement(s) => {
                let plan_date = s.plan_date.map(|d| d.format("%Y%m%d").to_string());
                if file.name.target_month.is_none() {
                    assert_eq!(plan_date.as_deref(), Some(link[2]));
                } else {
                    assert_eq!(file.name.target_month.as_deref(), Some(link[2]));
                }
                for (key, value) in f["key_dates"].as_object().expect("key_dates") {
                    match item_no(key) {
                        4 => assert_eq!(s.plan_date, expected_date(value), "{key}"),
                        8 => assert_eq!(s.birth_date, expected_date(value), "{key}"),
                        13 => assert_eq!(s.certified_on, expected_date(value), "{key}"),
                        14 => {
                            assert_eq!(s.limit_period.start, expected_date(&value[0]));
                            assert_eq!(s.limit_period.end, expected_date(&value[1]));
                        }
                        other => panic!("{name}: no mapping for key date No.{other}"),
                    }
                    checked += 1;
                }
                let person = &f["person"];
                assert_eq!(s.name.as_deref(), str_of(&person["氏名"]));
                let kana = str_of(&person["フリガナ"]).expect("kana");
                assert_eq!(s.name_kana.as_deref(), Some(code_and_label(kana).0));
                let (sex, _) = code_and_label(str_of(&person["性別"]).expect("sex"));
                assert_eq!(s.sex.as_ref().map(|c| c.code.as_str()), Some(sex));
                let codes = &f["codes"];
                assert_eq!(
                    s.care_level.as_ref().map(|c| c.code.as_str()),
                    str_of(&codes["要介護状態区分(No.18)"])
                );
                assert_eq!(s.limit_units, as_i64(&codes["区分支給限度基準額(No.19)"]));
                assert_eq!(s.target_month.as_deref(), str_of(&codes["対象年月(No.63)"]));
                checked += 6;
            }
            CarePlanContent::UsageTable6(t) => {
                assert_eq!(Some(t.lines.len() as u64), f["service_lines"].as_u64());
                assert_eq!(Some(t.target_month.as_str()), link.get(2).copied());
                assert_eq!(
                    Some(t.created_on),
                    expected_date(&f["key_dates"]["作成年月日(No.4)"])
                );
                assert_eq!(
                    Some(t.records_for_receiver as u64),
                    f["records_for_receiver_office"].as_u64()
                );
                assert_eq!(
                    t.planner_office_code.as_deref(),
                    Some("1379999999"),
                    "No.6 per the note"
                );
                let lines = f["lines"].as_array().expect("lines");
                assert_eq!(lines.len(), t.lines.len());
                for (want, got) in lines.iter().zip(&t.lines) {
                    assert_eq!(
                        Some(got.provider_code.as_str()),
                        str_of(&want["サービス事業者コード"])
                    );
                    assert_eq!(
                        Some(got.service_code.as_str()),
                        str_of(&want["サービスコード"])
                    );
                    assert_eq!(got.units, as_i64(&want["単位数"]));
                    assert_eq!(got.start.as_deref(), str_of(&want["開始"]));
                    assert_eq!(got.end.as_deref(), str_of(&want["終了"]));
                    assert_eq!(Some(got.records as u64), want["records"].as_u64());
                    let dates: Vec<Option<NaiveDate>> = want["dates"]
                        .as_array()
                        .expect("dates")
                        .iter()
                        .map(expected_date)
                        .collect();
                    let got_dates: Vec<Option<NaiveDate>> =
                        got.dates.iter().copied().map(Some).collect();
                    assert_eq!(got_dates, dates);
                    if want.get("TAISコード").is_some() {
                        assert_eq!(got.tais_code.as_deref(), str_of(&want["TAISコード"]));
                        assert_eq!(got.equipment_name.as_deref(), str_of(&want["用具名称"]));
                    }
                    checked += 7;
                }
            }
            CarePlanContent::UsageTable7(t) => {
                assert_eq!(Some(t.lines.len() as u64), f["service_lines"].as_u64());
                assert_eq!(Some(t.lines.len() as u64), f["detail_rows"].as_u64());
                assert_eq!(Some(t.subtotals.len() as u64), f["subtotal_rows"].as_u64());
                assert_eq!(
                    Some(u64::from(t.grand_total.is_some())),
                    f["grand_total_rows"].as_u64()
                );
                assert_eq!(Some(t.target_month.as_str()), link.get(2).copied());
                assert_eq!(
                    Some(t.created_on),
                    expected_date(&f["key_dates"]["作成年月日(No.4)"])
                );
                let lines = f["lines"].as_array().expect("lines");
                assert_eq!(lines.len(), t.lines.len());
                for (want, got) in lines.iter().zip(&t.lines) {
                    assert_eq!(got.office_code.as_deref(), str_of(&want["事業所コード"]));
                    assert_eq!(got.service_code.as_deref(), str_of(&want["サービスコード"]));
                    assert_eq!(got.units, as_i64(&want["単位数"]));
                    assert_eq!(got.count, as_i64(&want["回数"]));
                    assert_eq!(got.service_units, as_i64(&want["サービス単位数"]));
                    assert_eq!(
                        got.area_limit_units,
                        as_i64(&want["区分支給限度基準内単位数"])
                    );
                    assert_eq!(got.unit_price.as_deref(), str_of(&want["単位数単価"]));
                    assert_eq!(got.total_cost, as_i64(&want["費用総額"]));
                    assert_eq!(got.benefit_rate, as_i64(&want["給付率"]));
                    assert_eq!(got.insurance_claim, as_i64(&want["保険請求額"]));
                    assert_eq!(
                        got.user_charge_insured,
                        as_i64(&want["利用者負担(保険対象分)"])
                    );
                    checked += 11;
                }
                let want = &f["grand_total"];
                let total = t.grand_total.as_ref().expect("a grand total");
                assert_eq!(total.office_code.as_deref(), str_of(&want["事業所コード"]));
                assert_eq!(
                    total.service_code.as_deref(),
                    str_of(&want["サービスコード"])
                );
                for (got, key, sum) in [
                    (
                        total.service_units,
                        "サービス単位数",
                        t.lines.iter().filter_map(|l| l.service_units).sum::<i64>(),
                    ),
                    (
                        total.area_limit_units,
                        "区分支給限度基準内単位数",
                        t.lines.iter().filter_map(|l| l.area_limit_units).sum(),
                    ),
                    (
                        total.total_cost,
                        "費用総額",
                        t.lines.iter().filter_map(|l| l.total_cost).sum(),
                    ),
                    (
                        total.insurance_claim,
                        "保険請求額",
                        t.lines.iter().filter_map(|l| l.insurance_claim).sum(),
                    ),
                    (
                        total.user_charge_insured,
                        "利用者負担(保険対象分)",
                        t.lines.iter().filter_map(|l| l.user_charge_insured).sum(),
                    ),
                ] {
                    assert_eq!(got, as_i64(&want[key]), "{key}");
                    // The grand total is not a line: the lines add up to it.
                    assert_eq!(Some(sum), got, "{key}");
                    checked += 1;
                }
            }
            other => panic!("{name}: unexpected content {other:?}"),
        }
    }
    assert!(checked > 100, "only {checked} facts checked");
}

#[test]
fn careplan_transmissions_become_one_event_each_once_complete() {
    let mut cases = careplan_cases();
    // Arrival order is not the name order.
    cases.reverse();
    let mut set = CarePlanSet::new();
    let mut seen_incomplete = false;
    for case in &cases {
        let key = set
            .add_file(&case.name, &case.raw)
            .unwrap_or_else(|e| panic!("{e}"));
        // The same file again changes nothing.
        assert_eq!(set.add_file(&case.name, &case.raw).expect("resend"), key);
        if let Some(TransmissionStatus::Incomplete { missing }) = set.status(&key) {
            assert!(!missing.is_empty());
            seen_incomplete = true;
        }
    }
    assert!(seen_incomplete, "some transmission waited for files");
    assert!(set.pending().is_empty(), "{:?}", set.pending());
    let events = set.take_complete();
    assert_eq!(
        events.len(),
        2,
        "two transmissions: the plan, and the usage of 202505"
    );
    let supplement =
        &conformance().careplan["UPHOSOKU_202505_1379999999_43_1379999998_11_20250425100000.CSV"];
    for (key, event) in events {
        let event = event.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_schema_valid_and_round_trips(&key.to_string(), &event);
        let facts = json!({
            "format": "csv",
            "type": "care.plan",
            "facility": "1379999999",
            "referral_to_facility": "1379999998",
            "care_office_facility": "1379999999",
            "ltc_insurer": supplement["insurer_number"],
            "ltc_insured_number": supplement["insured_number"],
            "care_level": "要介護2",
            "name_kanji": "試験 花子",
            "name_kana": "シケン ハナコ",
            "birth_date": "1940-04-01",
            "sex": "female",
        });
        let (held, problems) = check_case(&event, facts.as_object().expect("facts"));
        assert!(problems.is_empty(), "{key}: {problems:#?}");
        assert_eq!(held, 11);
        let care = event.data.care.as_ref().expect("care");
        let files = care["files"].as_array().expect("files");
        match key.kind {
            TransmissionKind::Plan => {
                assert_eq!(event.time.to_rfc3339(), "2025-04-25T09:30:00+09:00");
                assert_eq!(files.len(), 3);
                assert!(care["plan_table1"].is_object() && care["plan_table2"].is_object());
                assert_eq!(care["user_supplement"]["target_month"], "000000");
                assert_eq!(
                    event.data.origin.message_id,
                    "careplan_plan_1379999999_1379999998_20250425093000"
                );
            }
            TransmissionKind::Usage => {
                assert_eq!(event.time.to_rfc3339(), "2025-04-25T10:00:00+09:00");
                assert_eq!(files.len(), 3);
                assert_eq!(care["target_month"], "202505");
                assert_eq!(care["usage_table7"]["grand_total"]["total_cost"], 28034);
                assert_eq!(
                    event.data.origin.message_id,
                    "careplan_usage_202505_1379999999_1379999998_20250425100000"
                );
            }
            other => panic!("unexpected transmission {other:?}"),
        }
        for file in files {
            assert_eq!(file["raw_sha256"].as_str().map(str::len), Some(64));
        }
    }
}

#[test]
fn an_incomplete_transmission_says_what_is_missing_and_makes_no_event() {
    let mut set = CarePlanSet::new();
    let mut key = None;
    for case in careplan_cases() {
        if case.name.starts_with("UP1KYO") {
            key = Some(set.add_file(&case.name, &case.raw).expect("1表"));
        }
    }
    let key = key.expect("a 第1表");
    assert_eq!(
        set.status(&key),
        Some(TransmissionStatus::Incomplete {
            missing: vec![
                CarePlanFileKind::PlanTable2,
                CarePlanFileKind::UserSupplement
            ]
        })
    );
    assert!(set.take_event(&key).is_none());
    assert!(set.take_complete().is_empty());
    assert_eq!(set.pending().len(), 1);
    // Another 第1表 under the same sequence is refused, not mixed in.
    let case = careplan_cases()
        .into_iter()
        .find(|c| c.name.starts_with("UP1KYO"))
        .expect("1表");
    let mut other = parse_careplan(&case);
    other.raw_sha256 = "0".repeat(64);
    let err = set.add(other).expect_err("a second 第1表");
    assert!(err.reason.contains("one of each kind"), "{err}");
}

#[test]
fn careplan_link_keys_must_agree_across_a_transmission() {
    let mut set = CarePlanSet::new();
    let mut key = None;
    for case in careplan_cases() {
        if !case.name.ends_with("20250425093000.CSV") {
            continue;
        }
        let mut raw = case.raw.clone();
        if case.name.starts_with("UP2KYO") {
            // Move 第2表's 居宅サービス計画作成（変更）日 to another day.
            let text = decode_ms932(&raw)
                .expect("MS932")
                .replace(",20250320,20250325,", ",20250320,20250326,");
            raw = ms932(&text);
        }
        key = Some(set.add_file(&case.name, &raw).expect("add"));
    }
    let key = key.expect("the plan transmission");
    let err = set
        .take_event(&key)
        .expect("complete")
        .expect_err("link keys differ");
    assert!(
        err.reason.contains("居宅サービス計画作成（変更）日"),
        "{err}"
    );
    assert!(
        err.location.as_deref().is_some_and(|l| l.starts_with("UP")),
        "{err:?}"
    );
}

#[test]
fn careplan_files_are_refused_naming_the_file_row_and_item() {
    let cases = careplan_cases();
    let plan = cases
        .iter()
        .find(|c| c.name.starts_with("UPPLAN"))
        .expect("UPPLAN");
    let text = decode_ms932(&plan.raw).expect("MS932");
    for (from, to, location) in [
        (
            ",20250512,",
            ",20250532,",
            "row 4, column No.10 (サービス提供日)",
        ),
        (
            ",20250512,",
            ",20250612,",
            "row 4, column No.10 (サービス提供日)",
        ),
        (
            ",1000,1030,1,111111,",
            ",1000,1090,1,111111,",
            "row 1, column No.13 (終了時刻)",
        ),
    ] {
        let broken = text.replacen(from, to, 1);
        assert_ne!(broken, text);
        let err = CarePlanFile::parse(&plan.name, &ms932(&broken)).expect_err(to);
        assert_eq!(
            err.location.as_deref(),
            Some(format!("{}, {location}", plan.name).as_str()),
            "{err}"
        );
        assert!(!err.to_string().contains("9999999999"), "{err}");
    }
    // One row of another care recipient.
    let other = text.replacen(
        "139999,9999999999,20250425,202505,1379999999,\"架空　一郎\",244,,20250505",
        "139999,9999999990,20250425,202505,1379999999,\"架空　一郎\",244,,20250505",
        1,
    );
    assert_ne!(other, text);
    let err = CarePlanFile::parse(&plan.name, &ms932(&other)).expect_err("two people");
    assert_eq!(
        err.location.as_deref(),
        Some(format!("{}, row 2, column No.3 (被保険者番号)", plan.name).as_str())
    );
    // A row of the wrong width.
    let short = text.replacen(",0,1379999999,\r\n", ",0,1379999999\r\n", 1);
    let err = CarePlanFile::parse(&plan.name, &ms932(&short)).expect_err("24 items");
    assert!(err.reason.contains("the row has 24 items"), "{err}");
    // UTF-8 is refused as UTF-8.
    let err = CarePlanFile::parse(&plan.name, text.as_bytes()).expect_err("UTF-8");
    assert!(err.reason.contains("UTF-8"), "{err}");
    // The month in the name and the content agree.
    let renamed = plan.name.replace("UPPLAN_202505", "UPPLAN_202506");
    let err = CarePlanFile::parse(&renamed, &plan.raw).expect_err("month");
    assert!(
        err.reason.contains("not the month in the file name"),
        "{err}"
    );
}

/// The conformance 第6表 sent back as the service record (実績): same items, the
/// service office sending to the care-manager office.
#[test]
fn a_service_record_and_a_deletion_are_transmissions_of_their_own() {
    let cases = careplan_cases();
    let plan = cases
        .iter()
        .find(|c| c.name.starts_with("UPPLAN"))
        .expect("UPPLAN");
    let actual_name = "UPJSK_202505_1379999998_11_1379999999_43_20250601120000.CSV";
    let mut set = CarePlanSet::new();
    let key = set.add_file(actual_name, &plan.raw).expect("UPJSK");
    assert_eq!(key.kind, TransmissionKind::Actual);
    assert_eq!(set.status(&key), Some(TransmissionStatus::Complete));
    let event = set.take_event(&key).expect("complete").expect("an event");
    assert_schema_valid_and_round_trips(actual_name, &event);
    assert_eq!(event.source, "urn:renkei:facility:1379999998");
    // The care-manager office receives the record.
    assert_eq!(
        check_fact(&event, "care_office_facility", "1379999999"),
        Check::Holds
    );
    assert_eq!(
        check_fact(&event, "referral_to_facility", "1379999999"),
        Check::Holds
    );
    let care = event.data.care.as_ref().expect("care");
    assert_eq!(care["transmission"], "actual");
    assert_eq!(
        care["usage_table6_actual"]["records"]
            .as_array()
            .map(Vec::len),
        Some(10)
    );

    let deletion_name = "DLTPLAN_202505_1379999999_43_1379999998_11_20250602090000.CSV";
    let key = set
        .add_file(deletion_name, b"202407,139999,9999999999,202505\r\n")
        .expect("DLTPLAN");
    let event = set.take_event(&key).expect("complete").expect("an event");
    assert_schema_valid_and_round_trips(deletion_name, &event);
    let care = event.data.care.as_ref().expect("care");
    assert_eq!(care["transmission"], "deletion");
    assert_eq!(care["deletes"], "usage_plan");
    assert_eq!(care["deletion"][0]["key"], "202505");
    assert_eq!(
        event.data.origin.message_id,
        "careplan_dltplan_202505_1379999999_1379999998_20250602090000"
    );
    assert!(set.pending().is_empty());
}

#[test]
fn a_weekly_table_joins_its_plan_transmission_and_must_share_the_plan_date() {
    let cases = careplan_cases();
    let weekly_name = "UP3KYO_1379999999_43_1379999998_11_20250425093000.CSV";
    let weekly = |plan_date: &str| {
        ms932(&format!(
            "202407,139999,9999999999,20250320,{plan_date},\"訪問介護\",1,1000,1030,\"入浴\",,,\r\n"
        ))
    };
    for (plan_date, accepted) in [("20250325", true), ("20250326", false)] {
        let mut set = CarePlanSet::new();
        set.add_file(weekly_name, &weekly(plan_date))
            .expect("UP3KYO");
        for case in &cases {
            if case.name.ends_with("20250425093000.CSV") {
                set.add_file(&case.name, &case.raw).expect("plan files");
            }
        }
        let events = set.take_complete();
        assert_eq!(events.len(), 1);
        match (&events[0].1, accepted) {
            (Ok(event), true) => {
                let care = event.data.care.as_ref().expect("care");
                assert_eq!(care["files"].as_array().map(Vec::len), Some(4));
                assert_eq!(
                    care["plan_table3"]["records"][0]["items"]["No.6"],
                    "訪問介護"
                );
            }
            (Err(e), false) => assert!(e.reason.contains("居宅サービス計画作成（変更）日"), "{e}"),
            (other, _) => panic!("{plan_date}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Corruption

/// Bytes that structure a care CSV (and an MS932 lead byte, a NUL, a digit and a brace).
const DELIMITERS: [u8; 10] = [b',', b'"', b'\r', b'\n', 0x81, 0x00, b'9', b'{', b'-', 0xFF];

/// Every prefix of `raw`, then at each position either a byte replaced by a delimiter
/// (even positions) or a delimiter inserted (odd ones), cycling through [`DELIMITERS`].
fn corruptions(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(raw.len() * 2);
    for end in 0..raw.len() {
        out.push((format!("truncated at {end}"), raw[..end].to_vec()));
    }
    for i in 0..raw.len() {
        let byte = DELIMITERS[i % DELIMITERS.len()];
        let mut mutant = raw.to_vec();
        if i % 2 == 0 {
            mutant[i] = byte;
            out.push((format!("byte {i} set to {byte:#04x}"), mutant));
        } else {
            mutant.insert(i, byte);
            out.push((format!("{byte:#04x} inserted at {i}"), mutant));
        }
    }
    out
}

#[test]
fn corrupted_care_files_never_panic_and_accepted_ones_stay_valid() {
    let mut all = good_cases();
    all.extend(cases("bad/"));
    let mut panics = Vec::new();
    let mut invalid = Vec::new();
    let (mut tried, mut accepted) = (0usize, 0usize);
    for case in &all {
        for (what, mutant) in corruptions(&case.raw) {
            tried += 1;
            let mutated = Case {
                name: case.name.clone(),
                raw: mutant,
                facts: case.facts.clone(),
            };
            match catch_unwind(AssertUnwindSafe(|| {
                (normalize_file(&mutated), normalize_bytes(&mutated))
            })) {
                Err(_) => panics.push(format!("{}: {what}", case.name)),
                Ok((by_file, _)) => {
                    for event in by_file.into_iter().flatten() {
                        accepted += 1;
                        let violations = schema_violations(&event);
                        if !violations.is_empty() {
                            invalid.push(format!("{}: {what}: {violations:?}", case.name));
                        }
                    }
                }
            }
        }
    }
    assert!(
        panics.is_empty(),
        "panicked on {} inputs: {panics:#?}",
        panics.len()
    );
    assert!(
        invalid.is_empty(),
        "accepted but schema-invalid: {invalid:#?}"
    );
    assert!(
        accepted > 0 && accepted < tried,
        "{accepted} of {tried} accepted"
    );
}

#[test]
fn corrupted_careplan_files_never_panic_and_accepted_transmissions_stay_valid() {
    let cases = careplan_cases();
    let mut panics = Vec::new();
    let mut invalid = Vec::new();
    let (mut tried, mut accepted) = (0usize, 0usize);
    for case in &cases {
        let seq = &case.name[case.name.len() - 18..];
        let companions: Vec<&CarePlanCase> = cases
            .iter()
            .filter(|c| c.name != case.name && c.name.ends_with(seq))
            .collect();
        for (what, mutant) in corruptions(&case.raw) {
            tried += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let mut set = CarePlanSet::new();
                set.add_file(&case.name, &mutant).ok()?;
                for other in &companions {
                    set.add_file(&other.name, &other.raw).ok()?;
                }
                Some(set.take_complete())
            }));
            match outcome {
                Err(_) => panics.push(format!("{}: {what}", case.name)),
                Ok(None) => {}
                Ok(Some(events)) => {
                    for (_, event) in events {
                        let Ok(event) = event else { continue };
                        accepted += 1;
                        let violations = schema_violations(&event);
                        if !violations.is_empty() {
                            invalid.push(format!("{}: {what}: {violations:?}", case.name));
                        }
                    }
                }
            }
        }
    }
    assert!(
        panics.is_empty(),
        "panicked on {} inputs: {panics:#?}",
        panics.len()
    );
    assert!(
        invalid.is_empty(),
        "accepted but schema-invalid: {invalid:#?}"
    );
    assert!(
        accepted > 0 && accepted < tried,
        "{accepted} of {tried} accepted"
    );
}
