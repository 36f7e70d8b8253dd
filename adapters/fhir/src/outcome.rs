//! What an HTTP receiver answers for a refused Bundle: the status class of the error
//! ([`classify`]) and the FHIR `OperationOutcome` that explains it
//! ([`operation_outcome`]).
//!
//! Every [`NormalizeError`] of this crate says where the problem is in its `location`:
//! a position in the body (`byte 17`, `line 3 column 5`) when the bytes are not UTF-8
//! JSON, otherwise a FHIRPath into the posted resource (`Bundle.type`,
//! `Bundle.entry[1].resource.subject`). The classification follows from it, so it works
//! on any error the normaliser returned, however it travelled.

use renkei_sdk::NormalizeError;
use serde_json::{Value, json};

/// How an HTTP receiver should answer a refused FHIR body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FhirErrorKind {
    /// The bytes are not UTF-8 JSON (truncated, malformed, another character set):
    /// `400 Bad Request`, issue code `structure`.
    Malformed,
    /// JSON that breaks FHIR's own rules for what was posted: not a resource, not a
    /// Bundle, a Bundle that is neither a message nor a document, a message whose first
    /// entry is no MessageHeader, a document whose first entry is no Composition (bdl-11):
    /// `400 Bad Request`, issue code `invalid`.
    Invalid,
    /// A well-formed Bundle the hub cannot turn into an event (an event code it does not
    /// handle, no patient, no facility, a reference that resolves to nothing, a time
    /// outside the accepted window): `422 Unprocessable Entity`, issue code `processing`.
    Unprocessable,
}

impl FhirErrorKind {
    /// The HTTP status code to answer with.
    pub fn http_status(self) -> u16 {
        match self {
            FhirErrorKind::Malformed | FhirErrorKind::Invalid => 400,
            FhirErrorKind::Unprocessable => 422,
        }
    }

    /// The `OperationOutcome.issue.code` (FHIR value set `issue-type`).
    pub fn issue_code(self) -> &'static str {
        match self {
            FhirErrorKind::Malformed => "structure",
            FhirErrorKind::Invalid => "invalid",
            FhirErrorKind::Unprocessable => "processing",
        }
    }
}

/// The locations of the structural rules of a Bundle (see [`FhirErrorKind::Invalid`]).
pub(crate) const ROOT: &str = "Resource";
pub(crate) const ROOT_TYPE: &str = "Resource.resourceType";
pub(crate) const BUNDLE_TYPE: &str = "Bundle.type";
pub(crate) const BUNDLE_ENTRY: &str = "Bundle.entry";
pub(crate) const FIRST_RESOURCE: &str = "Bundle.entry[0].resource";

/// Whether `location` is a position in the body rather than a FHIRPath.
fn is_body_position(location: &str) -> bool {
    location.starts_with("line ") || location.starts_with("byte ")
}

/// The kind of a refusal of this crate's normaliser, from where it is.
pub fn classify(error: &NormalizeError) -> FhirErrorKind {
    let Some(location) = error.location.as_deref() else {
        return FhirErrorKind::Malformed;
    };
    if is_body_position(location) {
        return FhirErrorKind::Malformed;
    }
    let structural = [ROOT, ROOT_TYPE, BUNDLE_TYPE, BUNDLE_ENTRY, FIRST_RESOURCE];
    // A resource of another type is refused at its root (`Patient`), with no dot.
    if structural.contains(&location) || !location.contains(['.', '[']) {
        FhirErrorKind::Invalid
    } else {
        FhirErrorKind::Unprocessable
    }
}

/// The FHIR R4 `OperationOutcome` that explains `error` to the sender: one issue of
/// severity `error` with the [`FhirErrorKind::issue_code`], the reason as `diagnostics`
/// and, when the location is a FHIRPath, that path as its `expression`. A position in
/// the body (there is no element to point at) leads the diagnostics instead.
pub fn operation_outcome(error: &NormalizeError) -> Value {
    let kind = classify(error);
    let mut issue = json!({
        "severity": "error",
        "code": kind.issue_code(),
    });
    match error.location.as_deref() {
        Some(location) if !is_body_position(location) => {
            issue["diagnostics"] = Value::String(error.reason.clone());
            issue["expression"] = json!([location]);
        }
        _ => issue["diagnostics"] = Value::String(error.to_string()),
    }
    json!({
        "resourceType": "OperationOutcome",
        "issue": [issue],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_decide_the_kind() {
        let kind = |location: &str| classify(&NormalizeError::at(location, "x"));
        assert_eq!(kind("line 1 column 46"), FhirErrorKind::Malformed);
        assert_eq!(kind("byte 12"), FhirErrorKind::Malformed);
        assert_eq!(
            classify(&NormalizeError::whole("x")),
            FhirErrorKind::Malformed
        );
        assert_eq!(kind("Bundle.type"), FhirErrorKind::Invalid);
        assert_eq!(kind("Bundle.entry[0].resource"), FhirErrorKind::Invalid);
        assert_eq!(kind("Patient"), FhirErrorKind::Invalid);
        assert_eq!(
            kind("Bundle.entry[1].resource.subject"),
            FhirErrorKind::Unprocessable
        );
        assert_eq!(
            kind("Bundle.entry[0].resource.eventCoding"),
            FhirErrorKind::Unprocessable
        );
        assert_eq!(FhirErrorKind::Invalid.http_status(), 400);
        assert_eq!(FhirErrorKind::Unprocessable.http_status(), 422);
    }

    #[test]
    fn the_outcome_points_at_the_element() {
        let outcome = operation_outcome(&NormalizeError::at(
            "Bundle.entry[1].resource.subject",
            "the Encounter names no patient",
        ));
        assert_eq!(
            outcome,
            json!({
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "error",
                    "code": "processing",
                    "diagnostics": "the Encounter names no patient",
                    "expression": ["Bundle.entry[1].resource.subject"],
                }],
            })
        );
        let outcome = operation_outcome(&NormalizeError::at("line 1 column 46", "truncated"));
        assert_eq!(outcome["issue"][0]["code"], "structure");
        assert_eq!(
            outcome["issue"][0]["diagnostics"],
            "line 1 column 46: truncated"
        );
        assert!(outcome["issue"][0].get("expression").is_none());
    }
}
