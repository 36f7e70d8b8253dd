//! The declarative registry document applied by `renkei admin apply -f FILE` and by
//! `POST /v1/registry/apply`: TOML (or JSON over the API) listing the resources a
//! region wants to exist. Applying is idempotent: resources are created or updated to
//! match; resources the document does not name are left as they are.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{
    CareRelationship, Consent, Endpoint, Facility, Participant, PatientRecord, Subscription,
};

/// The whole document. Every section is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryDocument {
    /// Facilities.
    #[serde(default)]
    pub facilities: Vec<Facility>,
    /// Participants.
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// Webhook endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Patients and their identifiers.
    #[serde(default)]
    pub patients: Vec<PatientRecord>,
    /// Care relationships.
    #[serde(default)]
    pub care_relationships: Vec<CareRelationship>,
    /// Consents.
    #[serde(default)]
    pub consents: Vec<Consent>,
}

/// A document that cannot be applied. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}")]
pub struct DocumentError {
    /// Where, e.g. `endpoints[0] (sakura/main).secrets[1]`.
    pub location: String,
    /// What is wrong.
    pub problem: String,
}

fn err(location: impl Into<String>, problem: impl Into<String>) -> DocumentError {
    DocumentError {
        location: location.into(),
        problem: problem.into(),
    }
}

fn is_facility_code(code: &str) -> bool {
    code.len() == 10 && code.bytes().all(|b| b.is_ascii_digit())
}

const FACILITY_KINDS: [&str; 7] = [
    "hospital",
    "clinic",
    "visiting_nursing",
    "care_management",
    "care_facility",
    "pharmacy",
    "other",
];

impl RegistryDocument {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, DocumentError> {
        toml::from_str(text).map_err(|e| err("document", e.to_string()))
    }

    /// Resolves `env:NAME` secrets from the environment, so secrets need not sit in
    /// the file.
    pub fn resolve_secrets(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), DocumentError> {
        for (i, endpoint) in self.endpoints.iter_mut().enumerate() {
            for (j, secret) in endpoint.secrets.iter_mut().enumerate() {
                if let Some(var) = secret.strip_prefix("env:") {
                    *secret = lookup(var).ok_or_else(|| {
                        err(
                            format!("endpoints[{i}].secrets[{j}]"),
                            format!("environment variable {var} is not set"),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Checks everything that can be checked without the database: formats, and that
    /// references inside the document point at something (references to resources
    /// already in the database are checked by the store when applying).
    pub fn validate(&self) -> Result<(), DocumentError> {
        for (i, f) in self.facilities.iter().enumerate() {
            if !is_facility_code(&f.code) {
                return Err(err(format!("facilities[{i}].code"), "must be 10 digits"));
            }
            if !FACILITY_KINDS.contains(&f.kind.as_str()) {
                return Err(err(
                    format!("facilities[{i}].kind"),
                    format!("`{}` is not one of {}", f.kind, FACILITY_KINDS.join(", ")),
                ));
            }
        }
        for (i, p) in self.participants.iter().enumerate() {
            if p.id.is_empty() {
                return Err(err(format!("participants[{i}].id"), "must not be empty"));
            }
            if !is_facility_code(&p.facility) {
                return Err(err(
                    format!("participants[{i}].facility"),
                    "must be 10 digits",
                ));
            }
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}] ({}/{})", e.participant, e.name);
            if !(e.url.starts_with("https://") || e.url.starts_with("http://")) {
                return Err(err(format!("{at}.url"), "must be an http(s):// URL"));
            }
            if e.secrets.is_empty() {
                return Err(err(
                    format!("{at}.secrets"),
                    "needs at least one whsec_ secret",
                ));
            }
            for (j, s) in e.secrets.iter().enumerate() {
                if let Err(problem) = crate::delivery::signing::WebhookSecret::parse(s) {
                    return Err(err(format!("{at}.secrets[{j}]"), problem.to_string()));
                }
            }
        }
        let endpoints: HashSet<(&str, &str)> = self
            .endpoints
            .iter()
            .map(|e| (e.participant.as_str(), e.name.as_str()))
            .collect();
        for (i, s) in self.subscriptions.iter().enumerate() {
            let at = format!("subscriptions[{i}] ({}/{})", s.participant, s.name);
            if s.event_types.is_empty() {
                return Err(err(
                    format!("{at}.event_types"),
                    "must name at least one event type",
                ));
            }
            for (j, t) in s.event_types.iter().enumerate() {
                if let Err(e) = t.parse::<renkei_sdk::EventType>() {
                    return Err(err(format!("{at}.event_types[{j}]"), e.to_string()));
                }
            }
            for (j, f) in s.source_facilities.iter().enumerate() {
                if !is_facility_code(f) {
                    return Err(err(
                        format!("{at}.source_facilities[{j}]"),
                        "must be 10 digits",
                    ));
                }
            }
            if !self.endpoints.is_empty()
                && self
                    .endpoints
                    .iter()
                    .any(|e| e.participant == s.participant)
                && !endpoints.contains(&(s.participant.as_str(), s.endpoint.as_str()))
            {
                return Err(err(
                    format!("{at}.endpoint"),
                    format!(
                        "participant {} declares no endpoint `{}`",
                        s.participant, s.endpoint
                    ),
                ));
            }
        }
        for (i, p) in self.patients.iter().enumerate() {
            if p.id.is_empty() {
                return Err(err(format!("patients[{i}].id"), "must not be empty"));
            }
            if p.identifiers.is_empty() {
                return Err(err(
                    format!("patients[{i}].identifiers"),
                    "needs at least one identifier",
                ));
            }
            for (j, id) in p.identifiers.iter().enumerate() {
                if id.resolved_system().is_none() {
                    return Err(err(
                        format!("patients[{i}].identifiers[{j}]"),
                        "give exactly one of `system` or `facility`",
                    ));
                }
                if id.facility.as_deref().is_some_and(|f| !is_facility_code(f)) {
                    return Err(err(
                        format!("patients[{i}].identifiers[{j}].facility"),
                        "must be 10 digits",
                    ));
                }
                if id.value.is_empty() {
                    return Err(err(
                        format!("patients[{i}].identifiers[{j}].value"),
                        "must not be empty",
                    ));
                }
            }
        }
        for (i, r) in self.care_relationships.iter().enumerate() {
            if r.valid_until.is_some_and(|until| until < r.valid_from) {
                return Err(err(
                    format!("care_relationships[{i}].valid_until"),
                    "is before valid_from",
                ));
            }
        }
        for (i, c) in self.consents.iter().enumerate() {
            if c.valid_until.is_some_and(|until| until <= c.valid_from) {
                return Err(err(
                    format!("consents[{i}] ({}).valid_until", c.id),
                    "is not after valid_from",
                ));
            }
            if c.scope == super::ConsentScope::Facilities && c.facilities.is_empty() {
                return Err(err(
                    format!("consents[{i}] ({}).facilities", c.id),
                    "a per-facility consent must list the facilities it covers",
                ));
            }
            for (j, f) in c.facilities.iter().enumerate() {
                if !is_facility_code(f) {
                    return Err(err(
                        format!("consents[{i}] ({}).facilities[{j}]", c.id),
                        "must be 10 digits",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What applying did to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `facility`, `participant`, `endpoint`, `subscription`, `patient`,
    /// `care_relationship` or `consent`.
    pub kind: &'static str,
    /// The resource's key, e.g. `sakura-care/main`.
    pub key: String,
    /// `created`, `updated` or `unchanged`.
    pub action: ChangeAction,
}

/// The effect of applying one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    /// It did not exist.
    Created,
    /// It existed and differed.
    Updated,
    /// It already matched.
    Unchanged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            ChangeAction::Created => "created",
            ChangeAction::Updated => "updated",
            ChangeAction::Unchanged => "unchanged",
        };
        write!(f, "{action:9} {} {}", self.kind, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[[facilities]]
code = "1319999999"
name = "Example Hospital"
kind = "hospital"

[[participants]]
id = "sakura"
facility = "1379999999"
name = "Sakura care office"

[[endpoints]]
participant = "sakura"
name = "main"
url = "http://127.0.0.1:9/hook"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[subscriptions]]
participant = "sakura"
name = "adt"
endpoint = "main"
event_types = ["inpatient.admitted"]

[[patients]]
id = "P-1"
identifiers = [{ facility = "1319999999", value = "0000482915" }]

[[consents]]
id = "c-1"
patient = "P-1"
scope = "blanket"
basis = "written"
valid_from = "2025-01-01T00:00:00Z"
"#;

    #[test]
    fn sample_document_parses_and_validates() -> Result<(), DocumentError> {
        let doc = RegistryDocument::from_toml(SAMPLE)?;
        doc.validate()?;
        assert_eq!(
            doc.patients[0].identifiers[0].resolved_system().as_deref(),
            Some("urn:oid:1.2.392.100495.20.3.51.11319999999")
        );
        Ok(())
    }

    #[test]
    fn unknown_event_type_is_named_with_its_place() -> Result<(), DocumentError> {
        let mut doc = RegistryDocument::from_toml(SAMPLE)?;
        doc.subscriptions[0]
            .event_types
            .push("inpatient.admited".into());
        let e = doc.validate().err().map(|e| e.location);
        assert_eq!(
            e.as_deref(),
            Some("subscriptions[0] (sakura/adt).event_types[1]")
        );
        Ok(())
    }

    #[test]
    fn env_secrets_are_resolved_or_named() -> Result<(), DocumentError> {
        let mut doc = RegistryDocument::from_toml(SAMPLE)?;
        doc.endpoints[0].secrets = vec!["env:SAKURA_SECRET".into()];
        let missing = doc
            .clone()
            .resolve_secrets(|_| None)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            missing.as_deref(),
            Some("endpoints[0].secrets[0]: environment variable SAKURA_SECRET is not set")
        );
        doc.resolve_secrets(|_| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()))?;
        doc.validate()
    }
}
