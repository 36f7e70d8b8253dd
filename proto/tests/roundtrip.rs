//! A canonical event survives SDK → protobuf → wire bytes → protobuf → SDK unchanged,
//! and a malformed protobuf event is refused with an error naming the field.

// A failed `expect` on a test fixture is a test failure, which is what we want here.
#![allow(clippy::expect_used)]

use prost::Message;
use renkei_proto::ConvertError;
use renkei_proto::adapter::v1::{
    IngestOutcome, IngestRequest, IngestResponse, NormalizeError, ingest_request::Normalized,
};
use renkei_proto::event::v1 as pb;
use renkei_sdk::samples::{full_event, minimal_event};
use renkei_sdk::{
    CanonicalEvent, Document, Encounter, EncounterClass, EventType, Insurance, Location,
    PersonName, Practitioner, Sex, SourceFormat,
};

/// SDK → protobuf → bytes → protobuf → SDK.
fn through_the_wire(event: &CanonicalEvent) -> CanonicalEvent {
    let bytes = pb::CanonicalEvent::from(event).encode_to_vec();
    let decoded = pb::CanonicalEvent::decode(bytes.as_slice()).expect("decode");
    CanonicalEvent::try_from(decoded).expect("convert back")
}

/// A valid protobuf event, to break one field of.
fn pb_event() -> pb::CanonicalEvent {
    pb::CanonicalEvent::from(&full_event())
}

fn convert(event: pb::CanonicalEvent) -> Result<CanonicalEvent, ConvertError> {
    CanonicalEvent::try_from(event)
}

fn data(event: &mut pb::CanonicalEvent) -> &mut pb::EventData {
    event.data.as_mut().expect("data")
}

#[test]
fn full_event_round_trips_through_protobuf_bytes() {
    let event = full_event();
    let back = through_the_wire(&event);
    assert_eq!(back, event);
    assert_eq!(back.time.offset().local_minus_utc(), 9 * 3600);
    let encounter = back.data.encounter.expect("encounter");
    assert_eq!(
        encounter
            .discharged_at
            .map(|t| t.offset().local_minus_utc()),
        Some(0)
    );
}

#[test]
fn minimal_event_round_trips_through_protobuf_bytes() {
    let event = minimal_event();
    assert_eq!(through_the_wire(&event), event);
}

#[test]
fn every_enum_value_round_trips() {
    for event_type in EventType::ALL {
        let mut event = minimal_event();
        event.event_type = event_type;
        event.data.cancels = Some(event_type);
        assert_eq!(through_the_wire(&event), event);
    }
    for sex in [Sex::Female, Sex::Male, Sex::Other, Sex::Unknown] {
        let mut event = minimal_event();
        event.data.patient.sex = Some(sex);
        assert_eq!(through_the_wire(&event), event);
    }
    for class in [
        EncounterClass::Inpatient,
        EncounterClass::Outpatient,
        EncounterClass::Emergency,
    ] {
        let mut event = minimal_event();
        event.data.encounter = Some(Encounter {
            class: Some(class),
            ..Encounter::default()
        });
        assert_eq!(through_the_wire(&event), event);
    }
    for format in [
        SourceFormat::Hl7v2,
        SourceFormat::Fhir,
        SourceFormat::Csv,
        SourceFormat::Grpc,
    ] {
        let mut event = minimal_event();
        event.data.origin.format = format;
        assert_eq!(through_the_wire(&event), event);
    }
}

#[test]
fn empty_nested_messages_stay_present() {
    let mut event = minimal_event();
    event.data.patient.name = Some(PersonName::default());
    event.data.patient.insurance = Some(Insurance::default());
    event.data.encounter = Some(Encounter {
        location: Some(Location::default()),
        attending: Some(Practitioner::default()),
        ..Encounter::default()
    });
    event.data.document = Some(Document::default());
    assert_eq!(through_the_wire(&event), event);
}

#[test]
fn protobuf_event_type_names_follow_the_json_names() {
    for event_type in EventType::ALL {
        let expected = format!(
            "EVENT_TYPE_{}",
            event_type.as_str().replace('.', "_").to_uppercase()
        );
        assert_eq!(pb::EventType::from(event_type).as_str_name(), expected);
    }
}

#[test]
fn empty_fixed_attributes_read_as_v1() {
    let original = full_event();
    let mut event = pb::CanonicalEvent::from(&original);
    event.specversion.clear();
    event.datacontenttype.clear();
    event.dataschema.clear();
    assert_eq!(convert(event), Ok(original));
}

#[test]
fn bad_id_is_refused() {
    let mut event = pb_event();
    event.id = "not-a-uuid".to_owned();
    assert_eq!(
        convert(event),
        Err(ConvertError::InvalidUuid {
            field: "id".to_owned(),
            value: "not-a-uuid".to_owned()
        })
    );

    let v4 = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
    let mut event = pb_event();
    event.id = v4.to_owned();
    assert_eq!(
        convert(event),
        Err(ConvertError::InvalidUuid {
            field: "id".to_owned(),
            value: v4.to_owned()
        })
    );

    let mut event = pb_event();
    event.id.clear();
    assert_eq!(
        convert(event),
        Err(ConvertError::Missing {
            field: "id".to_owned()
        })
    );
}

#[test]
fn bad_time_is_refused() {
    let mut event = pb_event();
    event.time = "2025-04-10T09:00:00".to_owned();
    assert_eq!(
        convert(event),
        Err(ConvertError::InvalidTime {
            field: "time".to_owned(),
            value: "2025-04-10T09:00:00".to_owned()
        })
    );

    let mut event = pb_event();
    data(&mut event)
        .encounter
        .as_mut()
        .expect("encounter")
        .admitted_at = Some("20250410090000".to_owned());
    assert_eq!(
        convert(event),
        Err(ConvertError::InvalidTime {
            field: "data.encounter.admitted_at".to_owned(),
            value: "20250410090000".to_owned()
        })
    );

    let mut event = pb_event();
    data(&mut event)
        .document
        .as_mut()
        .expect("document")
        .created_at = Some(String::new());
    assert!(matches!(
        convert(event),
        Err(ConvertError::InvalidTime { field, .. }) if field == "data.document.created_at"
    ));
}

#[test]
fn bad_birth_date_is_refused() {
    let mut event = pb_event();
    data(&mut event)
        .patient
        .as_mut()
        .expect("patient")
        .birth_date = Some("1938/03/15".to_owned());
    assert_eq!(
        convert(event),
        Err(ConvertError::InvalidDate {
            field: "data.patient.birth_date".to_owned(),
            value: "1938/03/15".to_owned()
        })
    );
}

#[test]
fn unspecified_enums_are_refused() {
    let mut event = pb_event();
    event.event_type = pb::EventType::Unspecified.into();
    assert_eq!(convert(event), Err(unspecified("event_type")));

    let mut event = pb_event();
    data(&mut event).cancels = Some(pb::EventType::Unspecified.into());
    assert_eq!(convert(event), Err(unspecified("data.cancels")));

    let mut event = pb_event();
    data(&mut event).patient.as_mut().expect("patient").sex = Some(pb::Sex::Unspecified.into());
    assert_eq!(convert(event), Err(unspecified("data.patient.sex")));

    let mut event = pb_event();
    data(&mut event)
        .encounter
        .as_mut()
        .expect("encounter")
        .class = Some(pb::EncounterClass::Unspecified.into());
    assert_eq!(convert(event), Err(unspecified("data.encounter.class")));

    let mut event = pb_event();
    data(&mut event).origin.as_mut().expect("origin").format = pb::SourceFormat::Unspecified.into();
    assert_eq!(convert(event), Err(unspecified("data.origin.format")));
}

fn unspecified(field: &str) -> ConvertError {
    ConvertError::UnspecifiedEnum {
        field: field.to_owned(),
    }
}

#[test]
fn unknown_enum_numbers_are_refused() {
    let mut event = pb_event();
    event.event_type = 99;
    assert_eq!(
        convert(event),
        Err(ConvertError::UnknownEnum {
            field: "event_type".to_owned(),
            value: 99
        })
    );

    let mut event = pb_event();
    data(&mut event).patient.as_mut().expect("patient").sex = Some(-1);
    assert_eq!(
        convert(event),
        Err(ConvertError::UnknownEnum {
            field: "data.patient.sex".to_owned(),
            value: -1
        })
    );
}

#[test]
fn missing_required_fields_are_refused() {
    let missing = |field: &str| {
        Err(ConvertError::Missing {
            field: field.to_owned(),
        })
    };

    let mut event = pb_event();
    event.data = None;
    assert_eq!(convert(event), missing("data"));

    let mut event = pb_event();
    data(&mut event).patient = None;
    assert_eq!(convert(event), missing("data.patient"));

    let mut event = pb_event();
    data(&mut event).origin = None;
    assert_eq!(convert(event), missing("data.origin"));

    let mut event = pb_event();
    event.source.clear();
    assert_eq!(convert(event), missing("source"));

    let mut event = pb_event();
    event.time.clear();
    assert_eq!(convert(event), missing("time"));

    let mut event = pb_event();
    data(&mut event)
        .origin
        .as_mut()
        .expect("origin")
        .message_id
        .clear();
    assert_eq!(convert(event), missing("data.origin.message_id"));

    let mut event = pb_event();
    data(&mut event)
        .origin
        .as_mut()
        .expect("origin")
        .raw_sha256
        .clear();
    assert_eq!(convert(event), missing("data.origin.raw_sha256"));

    let mut event = pb_event();
    data(&mut event)
        .patient
        .as_mut()
        .expect("patient")
        .identifiers[1]
        .value
        .clear();
    assert_eq!(convert(event), missing("data.patient.identifiers[1].value"));
}

#[test]
fn bad_json_text_is_refused() {
    let mut event = pb_event();
    data(&mut event).care = Some("{not json".to_owned());
    assert!(matches!(
        convert(event),
        Err(ConvertError::InvalidJson { field, .. }) if field == "data.care"
    ));

    let mut event = pb_event();
    data(&mut event)
        .document
        .as_mut()
        .expect("document")
        .content = Some(String::new());
    assert!(matches!(
        convert(event),
        Err(ConvertError::InvalidJson { field, .. }) if field == "data.document.content"
    ));
}

#[test]
fn wrong_fixed_attributes_are_refused() {
    let mut event = pb_event();
    event.specversion = "0.3".to_owned();
    assert_eq!(
        convert(event),
        Err(ConvertError::UnexpectedValue {
            field: "specversion".to_owned(),
            expected: "1.0",
            value: "0.3".to_owned()
        })
    );

    let mut event = pb_event();
    event.dataschema = "urn:renkei:schema:event:v2".to_owned();
    assert!(matches!(
        convert(event),
        Err(ConvertError::UnexpectedValue { field, .. }) if field == "dataschema"
    ));
}

#[test]
fn errors_name_the_field_for_the_sender() {
    let error = ConvertError::InvalidTime {
        field: "data.encounter.admitted_at".to_owned(),
        value: "20250410".to_owned(),
    };
    let message = error.to_string();
    assert!(message.contains("data.encounter.admitted_at"), "{message}");
    assert!(message.contains("+09:00"), "{message}");
}

#[test]
fn ingest_messages_round_trip_through_bytes() {
    let event = full_event();
    let request = IngestRequest {
        adapter: "vendor-x-csv".to_owned(),
        peer: "10.0.0.7:50211".to_owned(),
        raw: vec![0x1b, b'$', b'B', 0x00, 0xff],
        normalized: Some(Normalized::Event(Box::new(pb::CanonicalEvent::from(
            &event,
        )))),
    };
    let decoded =
        IngestRequest::decode(request.encode_to_vec().as_slice()).expect("decode request");
    assert_eq!(decoded, request);
    let Some(Normalized::Event(carried)) = decoded.normalized else {
        panic!("the event did not survive");
    };
    assert_eq!(CanonicalEvent::try_from(*carried), Ok(event.clone()));

    let rejected = IngestRequest {
        normalized: Some(Normalized::Error(NormalizeError {
            location: Some("PID-3".to_owned()),
            reason: "no patient id".to_owned(),
        })),
        ..request
    };
    assert_eq!(
        IngestRequest::decode(rejected.encode_to_vec().as_slice()).expect("decode"),
        rejected
    );

    let response = IngestResponse {
        outcome: IngestOutcome::Duplicate.into(),
        event_id: event.id.to_string(),
        reason: String::new(),
    };
    let decoded =
        IngestResponse::decode(response.encode_to_vec().as_slice()).expect("decode response");
    assert_eq!(decoded.outcome(), IngestOutcome::Duplicate);
    assert_eq!(decoded, response);
}
