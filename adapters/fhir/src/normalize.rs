//! [`FhirNormalizer`]: the [`Normalizer`] for FHIR R4 JSON Bundles.

use renkei_sdk::{CanonicalEvent, NormalizeError, Normalizer, SourceFormat, TimeWindow};

use crate::bundle::{Bundle, BundleKind};
use crate::{document, json, message};

/// Normalises FHIR R4 JSON message and document Bundles to canonical events.
/// Stateless and cheap to share.
#[derive(Debug, Clone, Copy, Default)]
pub struct FhirNormalizer {
    window: TimeWindow,
}

impl FhirNormalizer {
    /// A normaliser accepting times in the default [`TimeWindow`] (1900 to a year ahead
    /// of the clock).
    pub fn new() -> Self {
        Self::default()
    }

    /// A normaliser accepting times in `window` only.
    pub fn with_time_window(window: TimeWindow) -> Self {
        Self { window }
    }
}

impl Normalizer for FhirNormalizer {
    fn format(&self) -> SourceFormat {
        SourceFormat::Fhir
    }

    fn normalize(&self, raw: &[u8]) -> Result<CanonicalEvent, NormalizeError> {
        let value = json::parse(raw)?;
        let (mut event, is_document) = {
            let bundle = Bundle::read(&value)?;
            match bundle.kind {
                BundleKind::Message => (message::normalize(&bundle, raw, &self.window)?, false),
                BundleKind::Document => (document::normalize(&bundle, raw, &self.window)?, true),
            }
        };
        // The document as sent travels with the event; the borrow of it has ended.
        if is_document && let Some(document) = event.data.document.as_mut() {
            document.content = Some(value);
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use renkei_sdk::{EventType, FacilityRole};
    use serde_json::{Value, json};

    const LOCAL: &str = "urn:oid:1.2.392.100495.20.3.51.11319999999";
    const HOSPITAL: &str = "1319999999";

    fn org(code: &str) -> Value {
        json!({"resourceType": "Organization", "name": "架空総合病院",
            "identifier": [{"system": crate::MEDICAL_INSTITUTION_SYSTEM, "value": code}]})
    }

    fn patient() -> Value {
        json!({"resourceType": "Patient",
            "identifier": [{"system": LOCAL, "value": "0000482915"}],
            "name": [{"extension": [{"url": crate::NAME_REPRESENTATION, "valueCode": "IDE"}],
                      "family": "架空", "given": ["花子"]}],
            "gender": "female", "birthDate": "1938-03-15"})
    }

    /// A message Bundle: the MessageHeader with `code`, then `entries` (fullUrl, resource).
    fn message(code: &str, focus: &str, entries: Vec<(&str, Value)>) -> Value {
        let mut all = vec![json!({"fullUrl": "urn:uuid:h", "resource": {
            "resourceType": "MessageHeader",
            "eventCoding": {"system": crate::message::EVENT_SYSTEM, "code": code},
            "source": {"name": "HIS01", "endpoint": format!("urn:renkei:facility:{HOSPITAL}")},
            "focus": [{"reference": focus}]}})];
        for (url, resource) in entries {
            let mut entry = json!({ "resource": resource });
            if !url.is_empty() {
                entry["fullUrl"] = json!(url);
            }
            all.push(entry);
        }
        json!({"resourceType": "Bundle", "id": "msg-1", "type": "message",
            "timestamp": "2025-04-10T09:30:15+09:00", "entry": all})
    }

    fn admission() -> Value {
        message(
            "A01",
            "urn:uuid:e",
            vec![
                ("urn:uuid:p", patient()),
                (
                    "urn:uuid:e",
                    json!({"resourceType": "Encounter", "status": "in-progress",
                    "class": {"code": "IMP"}, "subject": {"reference": "urn:uuid:p"},
                    "period": {"start": "2025-04-10T09:00:00+09:00"}}),
                ),
            ],
        )
    }

    fn normalize(value: &Value) -> Result<CanonicalEvent, NormalizeError> {
        FhirNormalizer::new().normalize(value.to_string().as_bytes())
    }

    fn ok(value: &Value) -> CanonicalEvent {
        normalize(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(value: &Value) -> NormalizeError {
        match normalize(value) {
            Ok(event) => panic!("accepted as {}", event.event_type),
            Err(e) => e,
        }
    }

    #[test]
    fn references_resolve_by_full_url_and_by_type_and_id() {
        let by_url = ok(&admission());
        assert_eq!(by_url.event_type, EventType::InpatientAdmitted);
        assert_eq!(by_url.data.patient.identifiers[0].value, "0000482915");
        // The same message with relative references to resources that have ids, and an
        // absolute fullUrl whose tail names the Patient.
        let by_id = message(
            "A01",
            "Encounter/e1",
            vec![
                ("http://ehr.example.jp/fhir/Patient/p1", patient()),
                (
                    "",
                    json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress",
                    "subject": {"reference": "Patient/p1"},
                    "period": {"start": "2025-04-10T09:00:00+09:00"}}),
                ),
            ],
        );
        let by_id = ok(&by_id);
        assert_eq!(by_id.data.patient, by_url.data.patient);
        assert_eq!(by_id.time, by_url.time);
        // A reference to nothing in the Bundle is refused without repeating it (a
        // reference may hold a patient id).
        let mut dangling = admission();
        dangling["entry"][2]["resource"]["subject"]["reference"] = json!("Patient/0000482915");
        let e = err(&dangling);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[2].resource.subject")
        );
        assert!(e.reason.contains("does not resolve to a Patient"), "{e}");
        assert!(!e.reason.contains("0000482915"), "{e}");
    }

    #[test]
    fn a_utc_instant_keeps_its_instant_and_is_written_in_japan_time() {
        let mut utc = admission();
        utc["entry"][2]["resource"]["period"]["start"] = json!("2025-05-19T23:40:00Z");
        let event = ok(&utc);
        assert_eq!(event.time.to_rfc3339(), "2025-05-20T08:40:00+09:00");
        let sent = chrono::DateTime::parse_from_rfc3339("2025-05-19T23:40:00Z")
            .map(|t| t.timestamp())
            .ok();
        assert_eq!(Some(event.time.timestamp()), sent);
        let admitted = event.data.encounter.and_then(|e| e.admitted_at);
        assert_eq!(admitted, Some(event.time));
    }

    #[test]
    fn an_unknown_event_code_is_refused_naming_message_header_event_coding() {
        let mut unknown = admission();
        unknown["entry"][0]["resource"]["eventCoding"]["code"] = json!("Z99");
        let e = err(&unknown);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[0].resource.eventCoding.code")
        );
        assert!(
            e.reason
                .starts_with("MessageHeader.eventCoding `Z99` is not an event the hub handles"),
            "{e}"
        );
        assert_eq!(crate::classify(&e), crate::FhirErrorKind::Unprocessable);
        let mut other_system = admission();
        other_system["entry"][0]["resource"]["eventCoding"]["system"] = json!("urn:x");
        let e = err(&other_system);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[0].resource.eventCoding.system")
        );
        let mut missing = admission();
        if let Some(header) = missing["entry"][0]["resource"].as_object_mut() {
            header.remove("eventCoding");
        }
        assert_eq!(
            err(&missing).location.as_deref(),
            Some("Bundle.entry[0].resource.eventCoding")
        );
    }

    #[test]
    fn event_types_and_times_follow_the_trigger() {
        for (code, ty, cancels) in [
            ("A03", EventType::InpatientDischarged, None),
            ("A04", EventType::OutpatientRegistered, None),
            ("A08", EventType::PatientUpdated, None),
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
        ] {
            let mut value = admission();
            value["entry"][0]["resource"]["eventCoding"]["code"] = json!(code);
            let event = ok(&value);
            assert_eq!(
                (event.event_type, event.data.cancels),
                (ty, cancels),
                "{code}"
            );
            // None of these has its own time here: Bundle.timestamp.
            assert_eq!(
                event.time.to_rfc3339(),
                "2025-04-10T09:30:15+09:00",
                "{code}"
            );
        }
        // A discharge at period.end, with its disposition and destination.
        let mut discharge = admission();
        discharge["entry"][0]["resource"]["eventCoding"]["code"] = json!("A03");
        discharge["entry"][2]["resource"]["period"]["end"] = json!("2025-04-24T10:00:00+09:00");
        discharge["entry"][2]["resource"]["hospitalization"] = json!({
            "dischargeDisposition": {"coding": [{"code": "1"}]},
            "destination": {"display": "自宅"}});
        let event = ok(&discharge);
        assert_eq!(event.time.to_rfc3339(), "2025-04-24T10:00:00+09:00");
        let encounter = event.data.encounter.unwrap_or_default();
        assert_eq!(encounter.discharge_disposition.as_deref(), Some("1"));
        assert_eq!(encounter.discharge_destination.as_deref(), Some("自宅"));
        // A patient update may focus on the Patient alone; an admission may not.
        let update = message("A08", "urn:uuid:p", vec![("urn:uuid:p", patient())]);
        assert_eq!(ok(&update).event_type, EventType::PatientUpdated);
        let admit = message("A01", "urn:uuid:p", vec![("urn:uuid:p", patient())]);
        assert_eq!(
            err(&admit).location.as_deref(),
            Some("Bundle.entry[0].resource.focus")
        );
    }

    #[test]
    fn a_transfer_is_where_the_latest_active_locations_are() {
        let location = |code: &str, kind: &str| {
            json!({"resourceType": "Location", "identifier": [{"value": code}],
                "physicalType": {"coding": [{"code": kind}]}})
        };
        let at = |url: &str, status: &str, start: &str| json!({"location": {"reference": url}, "status": status, "period": {"start": start}});
        let value = message(
            "A02",
            "urn:uuid:e",
            vec![
                ("urn:uuid:p", patient()),
                (
                    "urn:uuid:e",
                    json!({"resourceType": "Encounter", "subject": {"reference": "urn:uuid:p"},
                    "period": {"start": "2025-04-10T09:00:00+09:00"},
                    "location": [
                        at("urn:uuid:w1", "completed", "2025-04-10T09:00:00+09:00"),
                        at("urn:uuid:w2", "active", "2025-04-12T10:00:00+09:00"),
                        at("urn:uuid:w3", "active", "2025-04-15T13:30:00+09:00"),
                        at("urn:uuid:r3", "active", "2025-04-15T13:30:00+09:00"),
                    ]}),
                ),
                ("urn:uuid:w1", location("03", "wa")),
                ("urn:uuid:w2", location("05", "wa")),
                ("urn:uuid:w3", location("07", "wa")),
                ("urn:uuid:r3", location("701", "ro")),
            ],
        );
        let event = ok(&value);
        assert_eq!(event.time.to_rfc3339(), "2025-04-15T13:30:00+09:00");
        let place = event
            .data
            .encounter
            .and_then(|e| e.location)
            .unwrap_or_default();
        assert_eq!(
            (
                place.ward.as_deref(),
                place.room.as_deref(),
                place.bed.as_deref()
            ),
            (Some("07"), Some("701"), None)
        );
    }

    #[test]
    fn the_facility_must_be_one_and_the_patient_its_own() {
        let mut two = admission();
        two["entry"][2]["resource"]["serviceProvider"] = json!({"reference": "urn:uuid:o"});
        if let Some(entries) = two["entry"].as_array_mut() {
            entries.push(json!({"fullUrl": "urn:uuid:o", "resource": org("1319999998")}));
        }
        let e = err(&two);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[0].resource.source.endpoint")
        );
        assert!(
            e.reason.contains("1319999998") && e.reason.contains(HOSPITAL),
            "{e}"
        );
        // The patient's local id is another facility's.
        let mut elsewhere = admission();
        elsewhere["entry"][1]["resource"]["identifier"][0]["system"] =
            json!("urn:oid:1.2.392.100495.20.3.51.11319999997");
        let e = err(&elsewhere);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[1].resource.identifier")
        );
        assert!(!e.reason.contains("0000482915"), "{e}");
        // With no header facility at all, the local-id system names it.
        let mut implied = admission();
        implied["entry"][0]["resource"]["source"] = json!({"name": "HIS01"});
        assert_eq!(ok(&implied).source_facility(), Some(HOSPITAL));
    }

    #[test]
    fn errors_name_the_element_and_never_echo_patient_data() {
        let mut birth = admission();
        birth["entry"][1]["resource"]["birthDate"] = json!("1938-13-15");
        let e = err(&birth);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[1].resource.birthDate")
        );
        assert!(!e.to_string().contains("1938"), "{e}");
        let mut no_id = admission();
        no_id["entry"][1]["resource"]["identifier"] = json!([{"system": LOCAL}]);
        assert_eq!(
            err(&no_id).location.as_deref(),
            Some("Bundle.entry[1].resource.identifier")
        );
        let mut bad_time = admission();
        bad_time["entry"][2]["resource"]["period"]["start"] = json!("2025-04-10 09:00");
        let e = err(&bad_time);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[2].resource.period.start")
        );
        let mut no_message_id = admission();
        if let Some(bundle) = no_message_id.as_object_mut() {
            bundle.remove("id");
        }
        assert_eq!(err(&no_message_id).location.as_deref(), Some("Bundle.id"));
        let mut first = admission();
        if let Some(entries) = first["entry"].as_array_mut() {
            entries.swap(0, 1);
        }
        let e = err(&first);
        assert_eq!(e.location.as_deref(), Some("Bundle.entry[0].resource"));
        assert!(
            e.reason.contains("bdl-12") && e.reason.contains("`Patient`"),
            "{e}"
        );
        // Bytes that are not UTF-8, and a byte-order mark that is fine.
        let e = FhirNormalizer::new()
            .normalize(b"{\"a\": \"\x89\xcb\"}")
            .err();
        assert_eq!(e.and_then(|e| e.location).as_deref(), Some("byte 7"));
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(admission().to_string().as_bytes());
        assert!(FhirNormalizer::new().normalize(&bom).is_ok());
    }

    #[test]
    fn the_time_window_is_the_normalisers() {
        let narrow = TimeWindow::between(
            chrono::DateTime::parse_from_rfc3339("2025-04-11T00:00:00Z")
                .map(|t| t.to_utc())
                .unwrap_or_default(),
            chrono::Utc::now(),
        );
        let raw = admission().to_string();
        assert!(FhirNormalizer::new().normalize(raw.as_bytes()).is_ok());
        let refused = FhirNormalizer::with_time_window(narrow).normalize(raw.as_bytes());
        assert_eq!(
            refused.err().and_then(|e| e.location).as_deref(),
            Some("Bundle.timestamp")
        );
    }

    /// A nursing summary with `sections`, each (codings, title, narrative, entry urls).
    fn nursing_summary(sections: Vec<Value>, extra: Vec<(&str, Value)>) -> Value {
        let mut entries = vec![
            json!({"fullUrl": "urn:uuid:c", "resource": {"resourceType": "Composition",
                "status": "final", "type": {"coding": [{"system": "http://loinc.org", "code": "34745-0"}]},
                "subject": {"reference": "urn:uuid:p"}, "date": "2025-06-25T00:40:00Z",
                "custodian": {"reference": "urn:uuid:o"}, "title": "看護サマリー",
                "event": [{"period": {"start": "2025-06-11", "end": "2025-06-25"}}],
                "section": sections}}),
            json!({"fullUrl": "urn:uuid:p", "resource": patient()}),
            json!({"fullUrl": "urn:uuid:o", "resource": org(HOSPITAL)}),
        ];
        for (url, resource) in extra {
            entries.push(json!({"fullUrl": url, "resource": resource}));
        }
        json!({"resourceType": "Bundle", "type": "document",
            "identifier": {"system": "urn:x", "value": "1319999999^2025^N1"},
            "timestamp": "2025-06-25T09:41:30+09:00", "entry": entries})
    }

    fn section(codings: Value, title: &str, text: &str, entries: &[&str]) -> Value {
        let refs: Vec<Value> = entries.iter().map(|r| json!({"reference": r})).collect();
        json!({"title": title, "code": {"coding": codings},
            "text": {"status": "additional", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{text}</p></div>")},
            "entry": refs})
    }

    #[test]
    fn nursing_summary_sections_are_mapped_by_code_never_by_order_or_title() {
        let own =
            |code: &str| json!([{"system": crate::document::NURSING_SECTION_SYSTEM, "code": code}]);
        let loinc = |code: &str| json!([{"system": "http://loinc.org", "code": code}]);
        // Out of order, with misleading titles; ADL coded by LOINC only.
        let sections = vec![
            section(own("medication"), "ADL", "一包化", &["urn:uuid:m"]),
            section(loinc("47420-5"), "服薬", "歩行器", &["urn:uuid:obs"]),
            section(
                own("basic"),
                "継続課題",
                "要介護3",
                &["urn:uuid:k", "urn:uuid:cm"],
            ),
        ];
        let extra = vec![
            (
                "urn:uuid:m",
                json!({"resourceType": "MedicationStatement",
                "medicationCodeableConcept": {"text": "フロセミド錠20mg"}, "dosage": [{"text": "1日1回"}]}),
            ),
            (
                "urn:uuid:obs",
                json!({"resourceType": "Observation", "code": {"text": "移動"},
                "valueString": "歩行器で見守り"}),
            ),
            (
                "urn:uuid:k",
                json!({"resourceType": "RelatedPerson", "relationship": [{"text": "妻"}],
                "name": [{"family": "架空", "given": ["花江"]}]}),
            ),
            (
                "urn:uuid:cm",
                json!({"resourceType": "Organization", "name": "架空居宅介護支援事業所",
                "identifier": [{"system": crate::LTC_OFFICE_SYSTEM, "value": "1379999995"}]}),
            ),
        ];
        let event = ok(&nursing_summary(sections, extra));
        assert_eq!(event.event_type, EventType::DocumentNursingSummary);
        assert_eq!(event.time.to_rfc3339(), "2025-06-25T09:40:00+09:00");
        let document = event.data.document.clone().unwrap_or_default();
        let by_code = |code: &str| {
            document
                .sections
                .iter()
                .find(|s| s.code == code)
                .map(|s| s.items.clone())
                .unwrap_or_default()
        };
        assert_eq!(by_code("medication"), ["一包化", "フロセミド錠20mg 1日1回"]);
        assert_eq!(by_code("adl"), ["歩行器", "移動：歩行器で見守り"]);
        assert_eq!(by_code("basic")[0], "要介護3");
        let key_person = event.data.patient.key_person.clone().unwrap_or_default();
        assert_eq!(key_person.name.as_deref(), Some("架空 花江"));
        assert_eq!(key_person.relationship.as_deref(), Some("妻"));
        assert!(
            event
                .data
                .facilities
                .iter()
                .any(|f| f.role == FacilityRole::CareOffice && f.code == "1379999995")
        );
        // The stay from Composition.event.period, as days in Japan.
        let encounter = event.data.encounter.clone().unwrap_or_default();
        assert_eq!(
            encounter.admitted_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2025-06-11T00:00:00+09:00")
        );
        // The document as sent travels whole.
        assert_eq!(
            document
                .content
                .as_ref()
                .and_then(|c| c["identifier"]["value"].as_str()),
            Some("1319999999^2025^N1")
        );
    }

    #[test]
    fn a_referral_names_its_recipient_and_documents_need_their_parts() {
        let referral = {
            let mut value = nursing_summary(
                vec![section(
                    json!([{"system": "http://jpfhir.jp/fhir/clins/CodeSystem/document-section", "code": "910"}]),
                    "紹介先情報",
                    "架空内科クリニック",
                    &["urn:uuid:to"],
                )],
                vec![("urn:uuid:to", org("1319999997"))],
            );
            value["entry"][0]["resource"]["type"] = json!({"coding": [{"system": crate::document::JP_DOCUMENT_TYPE_SYSTEM, "code": "57133-1"}]});
            value
        };
        let event = ok(&referral);
        assert_eq!(event.event_type, EventType::DocumentReferral);
        assert_eq!(event.source_facility(), Some(HOSPITAL));
        let recipients: Vec<&str> = event
            .data
            .facilities
            .iter()
            .filter(|f| f.role == FacilityRole::Recipient)
            .map(|f| f.code.as_str())
            .collect();
        assert_eq!(recipients, ["1319999997"]);
        // A referral's event.period is when it was written, not a stay.
        assert_eq!(event.data.encounter, None);

        let mut unknown = referral.clone();
        unknown["entry"][0]["resource"]["type"] =
            json!({"coding": [{"system": "http://loinc.org", "code": "11488-4"}]});
        let e = err(&unknown);
        assert_eq!(e.location.as_deref(), Some("Bundle.entry[0].resource.type"));
        assert!(e.reason.contains("`11488-4`"), "{e}");
        let mut no_identifier = referral.clone();
        if let Some(bundle) = no_identifier.as_object_mut() {
            bundle.remove("identifier");
        }
        assert_eq!(
            err(&no_identifier).location.as_deref(),
            Some("Bundle.identifier")
        );
        let mut no_subject = referral.clone();
        if let Some(composition) = no_subject["entry"][0]["resource"].as_object_mut() {
            composition.remove("subject");
        }
        let e = err(&no_subject);
        assert_eq!(
            e.location.as_deref(),
            Some("Bundle.entry[0].resource.subject")
        );
        assert!(e.reason.contains("names no patient"), "{e}");
        let mut no_date = referral;
        if let Some(composition) = no_date["entry"][0]["resource"].as_object_mut() {
            composition.remove("date");
        }
        assert_eq!(
            err(&no_date).location.as_deref(),
            Some("Bundle.entry[0].resource.date")
        );
    }
}
