//! Resources shared by messages and documents: the Patient (JP Core names in kanji and
//! kana, identifiers, birth date, address, phone), Organizations (their 10-digit
//! codes), people (key person, practitioners) and coded values.

use renkei_sdk::{
    Address, FACILITY_URN_PREFIX, Identifier, LOCAL_PATIENT_ID_SYSTEM_PREFIX, NormalizeError,
    Patient, PersonName, Practitioner, RelatedPerson, Sex, TimeWindow, local_patient_id_system,
};
use serde_json::Value;

use crate::bundle::{Bundle, Entry, Object, array, string};
use crate::text::shown_code;

/// The identifier system of a medical institution's 10-digit code (医療機関コード).
pub const MEDICAL_INSTITUTION_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no";
/// The identifier system of a long-term-care office's 10-digit number (介護保険事業所番号).
pub const LTC_OFFICE_SYSTEM: &str = "urn:renkei:ltc-office";
/// The extension that says whether a HumanName is ideographic (kanji) or syllabic (kana).
pub const NAME_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

/// JP Core extensions whose codes, put together, make an institution's 10-digit code:
/// prefecture (2) + point-table category (1) + institution number (7).
const PREFECTURE_EXTENSION: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_PrefectureNo";
const CATEGORY_EXTENSION: &str = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationCategory";
const INSTITUTION_NO_EXTENSION: &str = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationNo";

/// Whether `value` is a 10-digit facility code.
pub(crate) fn is_facility_code(value: &str) -> bool {
    value.len() == 10 && value.bytes().all(|b| b.is_ascii_digit())
}

/// What kind of facility a code names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FacilityKind {
    /// A hospital or clinic (医療機関コード).
    Medical,
    /// A long-term-care office (介護保険事業所番号).
    CareOffice,
}

/// A facility an Organization stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facility {
    pub code: String,
    pub kind: FacilityKind,
    pub name: Option<String>,
}

/// The facility of an identifier (an object with `system` and `value`), if its system
/// names one; an identifier in such a system that is not a 10-digit code is refused.
fn identifier_facility(
    identifier: &Value,
    path: impl FnOnce() -> String,
) -> Result<Option<(String, FacilityKind)>, NormalizeError> {
    let kind = match string(identifier.get("system")) {
        Some(MEDICAL_INSTITUTION_SYSTEM) => FacilityKind::Medical,
        Some(LTC_OFFICE_SYSTEM) => FacilityKind::CareOffice,
        _ => return Ok(None),
    };
    match string(identifier.get("value")) {
        Some(code) if is_facility_code(code) => Ok(Some((code.to_owned(), kind))),
        other => {
            let path = path();
            Err(NormalizeError::at(
                format!("{path}.value"),
                format!(
                    "{} is not a 10-digit facility code (医療機関コード or 介護保険事業所番号); send the code without separators",
                    other.map_or_else(
                        || "the identifier has no value and".to_owned(),
                        |v| format!("the identifier {}", shown_code(v))
                    )
                ),
            ))
        }
    }
}

/// The code of one JP Core extension of an Organization.
fn extension_code<'a>(org: &'a Object, url: &str) -> Option<&'a str> {
    let extension = array(org.get("extension"))
        .iter()
        .find(|e| string(e.get("url")) == Some(url))?;
    string(extension.get("valueCoding").and_then(|c| c.get("code"))).or_else(|| {
        string(
            extension
                .get("valueIdentifier")
                .and_then(|i| i.get("value")),
        )
    })
}

/// The facility an Organization entry stands for: its identifier in
/// [`MEDICAL_INSTITUTION_SYSTEM`] or [`LTC_OFFICE_SYSTEM`], else the code the JP Core
/// prefecture, category and institution-number extensions make together.
pub(crate) fn organization_facility(org: Entry<'_>) -> Result<Option<Facility>, NormalizeError> {
    let name = org.str("name").map(str::to_owned);
    for (i, identifier) in array(org.get("identifier")).iter().enumerate() {
        if let Some((code, kind)) =
            identifier_facility(identifier, || org.path_to(&format!("identifier[{i}]")))?
        {
            return Ok(Some(Facility { code, kind, name }));
        }
    }
    let parts = [
        extension_code(org.resource, PREFECTURE_EXTENSION),
        extension_code(org.resource, CATEGORY_EXTENSION),
        extension_code(org.resource, INSTITUTION_NO_EXTENSION),
    ];
    if let [Some(prefecture), Some(category), Some(number)] = parts {
        let code = format!("{prefecture}{category}{number}");
        if is_facility_code(&code) {
            return Ok(Some(Facility {
                code,
                kind: FacilityKind::Medical,
                name,
            }));
        }
    }
    Ok(None)
}

/// The facility a Reference names: the Organization it resolves to (directly, or
/// through a PractitionerRole's organization), else its own `identifier`.
pub(crate) fn reference_facility(
    bundle: &Bundle<'_>,
    reference: Option<&Value>,
    path: impl Fn() -> String,
) -> Result<Option<Facility>, NormalizeError> {
    let Some(reference) = reference else {
        return Ok(None);
    };
    let target = match bundle.resolve(Some(reference)) {
        Some(role) if role.resource_type == "PractitionerRole" => {
            bundle.resolve_as(role.get("organization"), "Organization")
        }
        Some(org) if org.resource_type == "Organization" => Some(org),
        _ => None,
    };
    if let Some(org) = target
        && let Some(facility) = organization_facility(org)?
    {
        return Ok(Some(facility));
    }
    if let Some(identifier) = reference.get("identifier")
        && let Some((code, kind)) =
            identifier_facility(identifier, || format!("{}.identifier", path()))?
    {
        return Ok(Some(Facility {
            code,
            kind,
            name: string(reference.get("display")).map(str::to_owned),
        }));
    }
    Ok(None)
}

/// The facility of `urn:renkei:facility:<code>` (MessageHeader.source.endpoint).
pub(crate) fn endpoint_facility(endpoint: Option<&str>) -> Option<&str> {
    endpoint?
        .strip_prefix(FACILITY_URN_PREFIX)
        .filter(|code| is_facility_code(code))
}

/// The facilities named by the systems of a Patient's local ids
/// (`urn:oid:1.2.392.100495.20.3.51.1<facility code>`), in order, without repeats.
pub(crate) fn local_id_facilities<'a>(patient: Entry<'a>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for identifier in array(patient.get("identifier")) {
        let code = string(identifier.get("system"))
            .and_then(|s| s.strip_prefix(LOCAL_PATIENT_ID_SYSTEM_PREFIX))
            .filter(|code| is_facility_code(code));
        if let Some(code) = code
            && !out.contains(&code)
        {
            out.push(code);
        }
    }
    out
}

/// The text of a CodeableConcept: its `text`, else a coding's display, else its code.
pub(crate) fn concept_text(concept: Option<&Value>) -> Option<&str> {
    let concept = concept?;
    string(concept.get("text"))
        .or_else(|| {
            array(concept.get("coding"))
                .iter()
                .find_map(|c| string(c.get("display")))
        })
        .or_else(|| {
            array(concept.get("coding"))
                .iter()
                .find_map(|c| string(c.get("code")))
        })
}

/// The code of a CodeableConcept's first coding that has one (else its text).
pub(crate) fn concept_code(concept: Option<&Value>) -> Option<&str> {
    let concept = concept?;
    array(concept.get("coding"))
        .iter()
        .find_map(|c| string(c.get("code")))
        .or_else(|| string(concept.get("text")))
}

/// The codes of a CodeableConcept with their systems.
pub(crate) fn codings(concept: Option<&Value>) -> impl Iterator<Item = (Option<&str>, &str)> {
    array(concept.and_then(|c| c.get("coding")))
        .iter()
        .filter_map(|c| Some((string(c.get("system")), string(c.get("code"))?)))
}

/// A HumanName as "family given" (its `text` when it has no parts).
fn name_text(name: &Value) -> Option<String> {
    let family = string(name.get("family"));
    let given: Vec<&str> = array(name.get("given"))
        .iter()
        .filter_map(|g| string(Some(g)))
        .collect();
    if family.is_none() && given.is_empty() {
        return string(name.get("text")).map(str::to_owned);
    }
    let mut out = String::new();
    for part in family.into_iter().chain(given) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    Some(out)
}

/// Whether every letter of `text` is kana (a name written in katakana or hiragana).
fn is_kana(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\u{3041}'..='\u{309F}' | '\u{30A0}'..='\u{30FF}' | '\u{FF66}'..='\u{FF9F}')
            || c.is_whitespace()
    })
}

/// JP Core names: the kanji (`IDE`) and kana (`SYL`) representations, each
/// "family given". A name without the representation extension is kana when it is
/// written in kana only, else kanji; former names (`use` old) are left out.
pub(crate) fn person_name(names: Option<&Value>) -> Option<PersonName> {
    let mut kanji = None;
    let mut kana = None;
    let mut unmarked_kanji = None;
    let mut unmarked_kana = None;
    for name in array(names) {
        if string(name.get("use")) == Some("old") {
            continue;
        }
        let representation = array(name.get("extension"))
            .iter()
            .find(|e| string(e.get("url")) == Some(NAME_REPRESENTATION))
            .and_then(|e| string(e.get("valueCode")));
        let slot = match representation {
            Some("IDE") => &mut kanji,
            Some("SYL") => &mut kana,
            Some(_) => continue,
            None => {
                let Some(text) = name_text(name) else {
                    continue;
                };
                let slot = if is_kana(&text) {
                    &mut unmarked_kana
                } else {
                    &mut unmarked_kanji
                };
                slot.get_or_insert(text);
                continue;
            }
        };
        if slot.is_none() {
            *slot = name_text(name);
        }
    }
    let kanji = kanji.or(unmarked_kanji);
    let kana = kana.or(unmarked_kana);
    (kanji.is_some() || kana.is_some()).then_some(PersonName { kanji, kana })
}

/// The first phone number of a `telecom` list (former numbers left out).
fn phone(telecom: Option<&Value>) -> Option<String> {
    array(telecom)
        .iter()
        .filter(|t| string(t.get("system")) == Some("phone") && string(t.get("use")) != Some("old"))
        .find_map(|t| string(t.get("value")))
        .map(str::to_owned)
}

/// The home address (else the first current one), prefecture first.
fn address(addresses: Option<&Value>) -> Option<Address> {
    let all = array(addresses);
    let current = |a: &&Value| string(a.get("use")) != Some("old");
    let chosen = all
        .iter()
        .filter(current)
        .find(|a| string(a.get("use")) == Some("home"))
        .or_else(|| all.iter().find(current))?;
    let text = string(chosen.get("text")).map(str::to_owned).or_else(|| {
        let mut parts: Vec<&str> = ["state", "city", "district"]
            .iter()
            .filter_map(|key| string(chosen.get(*key)))
            .collect();
        parts.extend(
            array(chosen.get("line"))
                .iter()
                .filter_map(|l| string(Some(l))),
        );
        (!parts.is_empty()).then(|| parts.concat())
    });
    let address = Address {
        postal_code: string(chosen.get("postalCode")).map(str::to_owned),
        text,
    };
    (address != Address::default()).then_some(address)
}

/// A person close to the patient, from a RelatedPerson or a Patient.contact.
pub(crate) fn related_person(person: &Object) -> Option<RelatedPerson> {
    let name = person_name(person.get("name"))
        .and_then(|n| n.kanji.or(n.kana))
        .or_else(|| person.get("name").and_then(name_text));
    let relationship = array(person.get("relationship"))
        .iter()
        .find_map(|r| concept_text(Some(r)))
        .map(str::to_owned);
    let related = RelatedPerson {
        name,
        relationship,
        phone: phone(person.get("telecom")),
    };
    (related != RelatedPerson::default()).then_some(related)
}

/// A Practitioner (or the practitioner of a PractitionerRole): its first identifier
/// and its name (kanji when given).
pub(crate) fn practitioner(bundle: &Bundle<'_>, entry: Entry<'_>) -> Option<Practitioner> {
    let entry = match entry.resource_type {
        "PractitionerRole" => bundle.resolve_as(entry.get("practitioner"), "Practitioner")?,
        "Practitioner" => entry,
        _ => return None,
    };
    let id = array(entry.get("identifier"))
        .iter()
        .find_map(|i| string(i.get("value")))
        .map(str::to_owned);
    let name = person_name(entry.get("name")).and_then(|n| n.kanji.or(n.kana));
    (id.is_some() || name.is_some()).then_some(Practitioner { id, name })
}

/// Maps a Patient entry. Identifiers without a system are the local ids of `facility`.
pub(crate) fn patient(
    entry: Entry<'_>,
    facility: &str,
    window: &TimeWindow,
) -> Result<Patient, NormalizeError> {
    let mut identifiers: Vec<Identifier> = Vec::new();
    for identifier in array(entry.get("identifier")) {
        let Some(value) = string(identifier.get("value")) else {
            continue;
        };
        let system = string(identifier.get("system"))
            .map_or_else(|| local_patient_id_system(facility), str::to_owned);
        let identifier = Identifier {
            system,
            value: value.to_owned(),
        };
        if !identifiers.contains(&identifier) {
            identifiers.push(identifier);
        }
    }
    if identifiers.is_empty() {
        return Err(NormalizeError::at(
            entry.path_to("identifier"),
            format!(
                "the Patient has no identifier with a value: there is no patient to route for; send the facility's patient id in the system {LOCAL_PATIENT_ID_SYSTEM_PREFIX}<facility code>"
            ),
        ));
    }
    let sex = match entry.str("gender") {
        Some("female") => Some(Sex::Female),
        Some("male") => Some(Sex::Male),
        Some("other") => Some(Sex::Other),
        Some("unknown") => Some(Sex::Unknown),
        _ => None,
    };
    let key_person = array(entry.get("contact"))
        .iter()
        .filter_map(Value::as_object)
        .find_map(related_person);
    Ok(Patient {
        identifiers,
        name: person_name(entry.get("name")),
        birth_date: birth_date(entry, window)?,
        sex,
        insurance: None,
        address: address(entry.get("address")),
        phone: phone(entry.get("telecom")),
        key_person,
    })
}

/// Patient.birthDate; a value less precise than a day (`1938`, `1938-03`) is left out.
fn birth_date(
    entry: Entry<'_>,
    window: &TimeWindow,
) -> Result<Option<chrono::NaiveDate>, NormalizeError> {
    let Some(value) = entry.get("birthDate") else {
        return Ok(None);
    };
    let path = entry.path_to("birthDate");
    // The value itself is patient data: errors name the element and the rule only.
    match value.as_str().and_then(crate::time::parse) {
        Some(crate::time::FhirTime::Date(date)) => match window.check_past_date(&path, date) {
            Ok(()) => Ok(Some(date)),
            Err(problem) => Err(NormalizeError::at(
                path,
                format!(
                    "the date of birth: {problem} (the value is patient data and is not repeated here)"
                ),
            )),
        },
        Some(crate::time::FhirTime::Partial) => Ok(None),
        _ => Err(NormalizeError::at(
            path,
            "the date of birth (Patient.birthDate) is not a FHIR date YYYY-MM-DD (the value is patient data and is not repeated here)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_read_by_representation_then_by_script() {
        let marked = json!([
            {"extension": [{"url": NAME_REPRESENTATION, "valueCode": "SYL"}], "family": "カクウ", "given": ["ハナコ"]},
            {"extension": [{"url": NAME_REPRESENTATION, "valueCode": "IDE"}], "text": "架空 花子"},
        ]);
        let name = person_name(Some(&marked)).unwrap_or_default();
        assert_eq!(name.kanji.as_deref(), Some("架空 花子"));
        assert_eq!(name.kana.as_deref(), Some("カクウ ハナコ"));
        let unmarked = json!([
            {"use": "old", "family": "旧姓"},
            {"family": "カクウ", "given": ["ハナコ"]},
            {"family": "架空", "given": ["花子"]},
        ]);
        let name = person_name(Some(&unmarked)).unwrap_or_default();
        assert_eq!(name.kanji.as_deref(), Some("架空 花子"));
        assert_eq!(name.kana.as_deref(), Some("カクウ ハナコ"));
        assert_eq!(person_name(Some(&json!([{"use": "official"}]))), None);
    }

    #[test]
    fn the_institution_code_comes_from_the_identifier_or_the_jp_core_extensions() {
        let bundle_of = |org: Value| json!({"resourceType": "Bundle", "type": "message", "entry": [{"resource": org}]});
        let code_of = |value: &Value| {
            let bundle = Bundle::read(value).map_err(|e| e.to_string())?;
            let entry = bundle.first().ok_or("no entry")?;
            organization_facility(entry)
                .map(|f| f.map(|f| f.code))
                .map_err(|e| e.to_string())
        };
        let by_identifier = bundle_of(json!({"resourceType": "Organization",
            "identifier": [{"system": "urn:x", "value": "1"}, {"system": MEDICAL_INSTITUTION_SYSTEM, "value": "1319999998"}]}));
        assert_eq!(code_of(&by_identifier), Ok(Some("1319999998".to_owned())));
        let by_extensions = bundle_of(json!({"resourceType": "Organization", "extension": [
            {"url": PREFECTURE_EXTENSION, "valueCoding": {"code": "13"}},
            {"url": CATEGORY_EXTENSION, "valueCoding": {"code": "1"}},
            {"url": INSTITUTION_NO_EXTENSION, "valueIdentifier": {"value": "9999998"}},
        ]}));
        assert_eq!(code_of(&by_extensions), Ok(Some("1319999998".to_owned())));
        let bad = bundle_of(json!({"resourceType": "Organization",
            "identifier": [{"system": MEDICAL_INSTITUTION_SYSTEM, "value": "13-1-9999998"}]}));
        let refused = code_of(&bad);
        assert!(
            refused.as_ref().is_err_and(|e| e.starts_with(
                "Bundle.entry[0].resource.identifier[0].value: the identifier `13-1-9999998` is not a 10-digit"
            )),
            "{refused:?}"
        );
    }
}
