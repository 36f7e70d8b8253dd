//! The declarative registry document applied by `renkei admin apply -f FILE` and by
//! `POST /v1/registry/apply`: TOML (or JSON over the API) listing the resources a
//! region wants to exist. Applying is idempotent: resources are created or updated to
//! match; resources the document does not name are left as they are.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate;
use super::{
    CareRelationship, Consent, Endpoint, Facility, Participant, PatientRecord, Subscription,
};
use crate::delivery::destination::{DestinationPolicy, DestinationRefused};

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

/// A document that cannot be applied, with every problem found. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DocumentError {
    /// The problems, in document order per section.
    pub problems: Vec<Problem>,
}

/// One problem of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `endpoints[0] (sakura/main).secrets[1]`.
    pub location: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.problem)
    }
}

impl std::fmt::Display for DocumentError {
    /// One problem: `location: problem`; several: a count, then one per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "{one}"),
            problems => {
                write!(f, "{} problems in the document:", problems.len())?;
                for problem in problems {
                    write!(f, "\n- {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl DocumentError {
    /// The places named, in order.
    pub fn locations(&self) -> Vec<&str> {
        self.problems.iter().map(|p| p.location.as_str()).collect()
    }
}

fn err(location: impl Into<String>, problem: impl Into<String>) -> DocumentError {
    DocumentError {
        problems: vec![Problem {
            location: location.into(),
            problem: problem.into(),
        }],
    }
}

/// How long applying waits for a name in an endpoint URL to resolve for the
/// destination check; a name still unresolved is checked at each attempt instead.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);
/// Endpoint names resolved at once when applying.
const RESOLVE_CONCURRENCY: usize = 16;

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
        let mut problems = Vec::new();
        for (i, endpoint) in self.endpoints.iter_mut().enumerate() {
            for (j, secret) in endpoint.secrets.iter_mut().enumerate() {
                if let Some(var) = secret.strip_prefix("env:") {
                    match lookup(var) {
                        Some(value) => *secret = value,
                        None => problems.push(Problem {
                            location: format!("endpoints[{i}].secrets[{j}]"),
                            problem: format!(
                                "environment variable {} is not set",
                                validate::shown(var)
                            ),
                        }),
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DocumentError { problems })
        }
    }

    /// Checks everything that can be checked without the database or the network:
    /// formats, ids, duplicates, and that references inside the document point at
    /// something (references to resources already in the database are checked by the
    /// store when applying). Every problem is reported, not only the first.
    pub fn validate(&self) -> Result<(), DocumentError> {
        let (problems, _) = validate::check(self);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(DocumentError {
                problems: problems.0,
            })
        }
    }

    /// [`validate`](Self::validate), and that no endpoint URL points at a destination
    /// `destinations` refuses: a literal address, or a name that resolves now to a
    /// refused address (a name that does not resolve is accepted: every attempt checks
    /// again). All problems are reported together.
    pub async fn validate_for(
        &self,
        destinations: &DestinationPolicy,
    ) -> Result<(), DocumentError> {
        use futures_util::StreamExt;
        let (mut problems, urls) = validate::check(self);
        let refusals: Vec<(usize, Result<(), DestinationRefused>)> = futures_util::stream::iter(
            urls,
        )
        .map(|(i, url)| async move { (i, destinations.check_url(&url, RESOLVE_WITHIN).await) })
        .buffered(RESOLVE_CONCURRENCY)
        .collect()
        .await;
        for (i, refusal) in refusals {
            if let Err(refused) = refusal
                && let Some(e) = self.endpoints.get(i)
            {
                problems.0.push(Problem {
                    location: format!(
                        "endpoints[{i}] ({}/{}).url",
                        validate::shown(&e.participant),
                        validate::shown(&e.name)
                    ),
                    problem: refused.to_string(),
                });
            }
        }
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(DocumentError {
                problems: problems.0,
            })
        }
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
        let e = doc.validate().err();
        assert_eq!(
            e.as_ref().map(DocumentError::locations),
            Some(vec!["subscriptions[0] (sakura/adt).event_types[1]"])
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
