//! The JSON Schema of canonical event v1 describes exactly what the serde model
//! serialises, and the model round-trips through its own JSON.

// A failed `expect` on a test fixture is a test failure, which is what we want here.
#![allow(clippy::expect_used)]

use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset};
use jsonschema::Validator;
use renkei_sdk::samples::{full_event, minimal_event};
use renkei_sdk::{CanonicalEvent, EVENT_SCHEMA_V1, EventType, Origin, SourceFormat};
use serde_json::{Value, json};

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

/// Every violation, as `<instance path>: <message>`.
fn validate(instance: &Value) -> Result<(), Vec<String>> {
    let errors: Vec<String> = validator()
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn assert_valid(instance: &Value) {
    if let Err(errors) = validate(instance) {
        panic!("expected valid, got {errors:#?}\n{instance:#}");
    }
}

fn assert_invalid(instance: &Value, why: &str) {
    assert!(
        validate(instance).is_err(),
        "expected invalid ({why}):\n{instance:#}"
    );
}

fn jst(rfc3339: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(rfc3339).expect("test timestamp")
}

fn to_json(event: &CanonicalEvent) -> Value {
    serde_json::to_value(event).expect("serialise")
}

/// Sets the member a JSON pointer names (adding it if absent), e.g. `/data/origin/facility`.
fn with(mut instance: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    instance
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .insert(key.to_owned(), value);
    instance
}

/// Removes the member a JSON pointer names.
fn without(mut instance: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    instance
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .remove(key)
        .expect("member present");
    instance
}

#[test]
fn schema_compiles_against_the_2020_12_metaschema() {
    let schema: Value = serde_json::from_str(EVENT_SCHEMA_V1).expect("the schema is not JSON");
    assert!(jsonschema::draft202012::meta::is_valid(&schema));
    assert_eq!(schema["$id"], renkei_sdk::DATA_SCHEMA_V1);
    let _ = validator();
}

#[test]
fn fully_populated_event_validates() {
    let instance = to_json(&full_event());
    // Every optional member is really there, so the schema saw all of them.
    for pointer in [
        "/subject",
        "/data/patient/name/kana",
        "/data/patient/insurance/ltc/care_level",
        "/data/encounter/attending/name",
        "/data/encounter/discharge_destination",
        "/data/document/content",
        "/data/cancels",
        "/data/care",
        "/data/origin/facility",
    ] {
        assert!(instance.pointer(pointer).is_some(), "{pointer} missing");
    }
    assert_valid(&instance);
}

#[test]
fn minimal_event_validates() {
    let instance = to_json(&minimal_event());
    assert_eq!(
        instance.as_object().map(|o| o.len()),
        Some(8),
        "only the required attributes: {instance:#}"
    );
    assert_valid(&instance);
}

#[test]
fn every_event_type_validates() {
    for event_type in EventType::ALL {
        let mut event = minimal_event();
        event.event_type = event_type;
        if event_type == EventType::InpatientCancelled {
            event.data.cancels = Some(EventType::InpatientAdmitted);
        }
        assert_valid(&to_json(&event));
    }
}

#[test]
fn adapter_urn_source_validates() {
    assert_valid(&with(
        to_json(&minimal_event()),
        "/source",
        json!("urn:renkei:adapter:vendor-x"),
    ));
}

#[test]
fn utc_time_validates() {
    let mut event = minimal_event();
    event.time = jst("2025-05-01T00:00:00+00:00");
    assert_valid(&to_json(&event));
    assert_valid(&with(
        to_json(&minimal_event()),
        "/time",
        json!("2025-05-01T00:00:00Z"),
    ));
}

#[test]
fn time_without_offset_is_invalid() {
    let base = to_json(&minimal_event());
    assert_invalid(
        &with(base.clone(), "/time", json!("2025-05-01T08:55:00")),
        "time without offset",
    );
    assert_invalid(
        &with(
            base,
            "/data/encounter",
            json!({"admitted_at": "2025-04-10T09:00:00.5"}),
        ),
        "admitted_at without offset",
    );
}

#[test]
fn unknown_event_type_is_invalid() {
    let base = to_json(&minimal_event());
    assert_invalid(
        &with(base.clone(), "/type", json!("inpatient.deleted")),
        "unknown type",
    );
    assert_invalid(
        &with(base, "/data/cancels", json!("ADT^A01")),
        "unknown cancels",
    );
}

#[test]
fn bad_source_is_invalid() {
    let base = to_json(&minimal_event());
    for source in [
        "urn:renkei:facility:131999999",
        "urn:renkei:facility:13199999990",
        "urn:renkei:facility:ABCDEFGHIJ",
        "https://hospital.example/",
        "1319999999",
        "",
    ] {
        assert_invalid(&with(base.clone(), "/source", json!(source)), source);
    }
}

#[test]
fn non_v7_id_is_invalid() {
    let base = to_json(&minimal_event());
    for id in [
        "6ba7b810-9dad-41d1-80b4-00c04fd430c8",
        "not-a-uuid",
        "0196A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",
    ] {
        assert_invalid(&with(base.clone(), "/id", json!(id)), id);
    }
}

#[test]
fn extra_property_is_invalid() {
    let base = to_json(&full_event());
    for pointer in [
        "",
        "/data",
        "/data/patient",
        "/data/patient/identifiers/0",
        "/data/patient/name",
        "/data/patient/insurance",
        "/data/patient/insurance/medical",
        "/data/patient/insurance/ltc",
        "/data/encounter",
        "/data/encounter/location",
        "/data/encounter/attending",
        "/data/document",
        "/data/origin",
    ] {
        let mut instance = base.clone();
        instance
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .expect("object")
            .insert("unexpected".to_owned(), json!("x"));
        assert_invalid(&instance, &format!("extra property in `{pointer}`"));
    }
}

#[test]
fn free_form_care_and_document_content_accept_anything() {
    let base = to_json(&full_event());
    let instance = with(base, "/data/care/anything", json!({"nested": [1, 2]}));
    assert_valid(&with(instance, "/data/document/content", json!("<xml/>")));
}

#[test]
fn uppercase_hash_is_invalid() {
    let base = to_json(&minimal_event());
    let hash = Origin::sha256_hex(b"MSH|^~\\&|").to_uppercase();
    assert_invalid(
        &with(base.clone(), "/data/origin/raw_sha256", json!(hash)),
        "uppercase hash",
    );
    assert_invalid(
        &with(base, "/data/origin/raw_sha256", json!("abc")),
        "short hash",
    );
}

#[test]
fn cancelled_without_cancels_is_invalid() {
    let mut event = full_event();
    event.data.cancels = None;
    assert_invalid(&to_json(&event), "inpatient.cancelled without data.cancels");
}

#[test]
fn missing_required_member_is_invalid() {
    let base = to_json(&minimal_event());
    for pointer in [
        "/specversion",
        "/id",
        "/source",
        "/type",
        "/time",
        "/datacontenttype",
        "/dataschema",
        "/data",
        "/data/patient",
        "/data/origin",
        "/data/origin/format",
        "/data/origin/message_id",
        "/data/origin/raw_sha256",
        "/data/patient/identifiers",
    ] {
        assert_invalid(&without(base.clone(), pointer), pointer);
    }
    assert_invalid(
        &with(base, "/data/patient/identifiers", json!([])),
        "no identifier",
    );
}

#[test]
fn wrong_constants_and_enums_are_invalid() {
    let base = to_json(&full_event());
    for (pointer, value) in [
        ("/specversion", json!("0.3")),
        ("/datacontenttype", json!("text/plain")),
        ("/dataschema", json!("urn:renkei:schema:event:v2")),
        ("/data/patient/sex", json!("F")),
        ("/data/patient/birth_date", json!("1938/03/15")),
        ("/data/encounter/class", json!("IMP")),
        ("/data/origin/format", json!("hl7")),
        ("/data/origin/facility", json!("131999999")),
        ("/data/care", json!(["not", "an", "object"])),
    ] {
        assert_invalid(&with(base.clone(), pointer, value), pointer);
    }
}

#[test]
fn full_event_round_trips_through_json() {
    let event = full_event();
    let text = serde_json::to_string(&event).expect("serialise");
    let back: CanonicalEvent = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(back, event);
    // The offset survives, not just the instant.
    assert_eq!(back.time.offset().local_minus_utc(), 9 * 3600);
}

#[test]
fn minimal_event_round_trips_through_json() {
    let event = minimal_event();
    let back: CanonicalEvent = serde_json::from_value(to_json(&event)).expect("deserialise");
    assert_eq!(back, event);
}

#[test]
fn event_type_names_match_serde_and_from_str() {
    let mut names = Vec::new();
    for event_type in EventType::ALL {
        let name = event_type.as_str();
        assert_eq!(to_json_value(event_type), json!(name));
        assert_eq!(
            serde_json::from_value::<EventType>(json!(name)).expect("serde name"),
            event_type
        );
        assert_eq!(EventType::from_str(name), Ok(event_type));
        assert_eq!(event_type.to_string(), name);
        names.push(name);
    }
    // The schema's enum lists exactly these names, in the same order.
    let schema: Value = serde_json::from_str(EVENT_SCHEMA_V1).expect("schema");
    assert_eq!(schema["$defs"]["eventType"]["enum"], json!(names));
    assert!(EventType::from_str("inpatient.deleted").is_err());
}

#[test]
fn source_format_names_match_serde() {
    for format in SourceFormat::ALL {
        assert_eq!(to_json_value(format), json!(format.as_str()));
    }
}

fn to_json_value(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("serialise")
}
