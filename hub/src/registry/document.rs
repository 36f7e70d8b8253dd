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

    fn problems(doc: &RegistryDocument) -> Vec<String> {
        doc.validate()
            .err()
            .map(|e| e.problems.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn duplicates_within_a_document_are_refused_naming_both_places() -> Result<(), DocumentError> {
        let mut doc = RegistryDocument::from_toml(SAMPLE)?;
        doc.facilities.push(doc.facilities[0].clone());
        doc.participants.push(doc.participants[0].clone());
        doc.endpoints.push(doc.endpoints[0].clone());
        doc.subscriptions.push(doc.subscriptions[0].clone());
        let mut twin = doc.patients[0].clone();
        twin.id = "P-2".into();
        doc.patients.push(twin);
        doc.patients.push(doc.patients[0].clone());
        doc.consents.push(doc.consents[0].clone());
        let relationship = CareRelationship {
            patient: "P-1".into(),
            participant: "sakura".into(),
            role: "care_manager".into(),
            valid_from: chrono::NaiveDate::MIN,
            valid_until: None,
        };
        doc.care_relationships = vec![relationship.clone(), relationship];
        assert_eq!(
            problems(&doc),
            [
                "facilities[1].code: is declared twice; the first is facilities[0] (remove one)",
                "participants[1].id: is declared twice; the first is participants[0] (remove one)",
                "endpoints[1] (sakura/main).name: is declared twice; the first is endpoints[0] (remove one)",
                "subscriptions[1] (sakura/adt).name: is declared twice; the first is subscriptions[0] (remove one)",
                // The same identifier for another patient, without showing its value.
                "patients[1].identifiers[0]: is declared twice; the first is patients[0].identifiers[0] (remove one)",
                "patients[2].id: is declared twice; the first is patients[0] (remove one)",
                "patients[2].identifiers[0]: is declared twice; the first is patients[0].identifiers[0] (remove one)",
                "care_relationships[1]: is declared twice; the first is care_relationships[0] (remove one)",
                "consents[1] (c-1).id: is declared twice; the first is consents[0] (remove one)",
            ]
        );
        Ok(())
    }

    #[test]
    fn ids_that_would_not_show_as_they_are_are_refused() -> Result<(), DocumentError> {
        let sample = RegistryDocument::from_toml(SAMPLE)?;
        let cases = [
            (
                "sakura\nupdated   participant admin",
                "contains a control character (U+000A)",
            ),
            ("sakura\u{1b}[2K", "contains a control character (U+001B)"),
            ("   ", "must not be only spaces"),
            ("\u{3000}", "must not be only spaces"),
            ("", "must not be empty"),
            (" sakura", "must not begin or end with a space"),
            (
                "sakura\u{202e}arucas",
                "contains a bidirectional control character (U+202E)",
            ),
            (
                "saku\u{200b}ra",
                "contains an invisible (zero-width) character (U+200B)",
            ),
            (
                "sak\u{feff}ura",
                "contains an invisible (zero-width) character (U+FEFF)",
            ),
            (
                "line\u{2028}break",
                "contains a line or paragraph separator (U+2028)",
            ),
            (
                "sakura/main",
                "must not contain `/` (it separates the parts of a key, as in participant/endpoint)",
            ),
            ("saku\0ra", "contains a NUL character"),
        ];
        for (id, problem) in cases {
            let mut doc = sample.clone();
            doc.participants[0].id = id.to_owned();
            assert_eq!(
                problems(&doc),
                [format!("participants[0].id: {problem}")],
                "{id:?}"
            );
        }
        // The same rules for every id and reference, each named; labels escaped.
        let mut doc = sample.clone();
        doc.endpoints[0].name = "ma\nin".into();
        doc.subscriptions[0].endpoint = "ma\nin".into();
        doc.patients[0].id = "P/1".into();
        doc.consents[0].patient = " P-1".into();
        doc.patients[0].identifiers[0].value = "\u{200d}".into();
        assert_eq!(
            problems(&doc),
            [
                "endpoints[0] (sakura/ma\\u{a}in).name: contains a control character (U+000A)",
                "subscriptions[0] (sakura/adt).endpoint: contains a control character (U+000A)",
                "patients[0].id: must not contain `/` (it separates the parts of a key, as in participant/endpoint)",
                "patients[0].identifiers[0].value: contains an invisible (zero-width) character (U+200D)",
                "consents[0] (c-1).patient: must not begin or end with a space",
            ]
        );
        // Japanese text is fine: ids and names are not limited to ASCII.
        let mut doc = sample;
        doc.participants[0].id = "居宅介護支援-さくら".into();
        doc.participants[0].name = "さくら居宅介護支援事業所".into();
        doc.endpoints[0].participant = "居宅介護支援-さくら".into();
        doc.subscriptions[0].participant = "居宅介護支援-さくら".into();
        assert_eq!(problems(&doc), Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn endpoint_urls_need_a_host_a_valid_port_and_no_credentials() -> Result<(), DocumentError> {
        let sample = RegistryDocument::from_toml(SAMPLE)?;
        let cases = [
            ("http://", "has no host"),
            ("https://:443/hook", "has no host"),
            (
                "http://care.example.jp:99999/hook",
                "has an invalid port (give 1 to 65535, or none)",
            ),
            (
                "http://care.example.jp:0/hook",
                "has an invalid port (give 1 to 65535, or none)",
            ),
            (
                "http://care.example.jp:8o/hook",
                "has an invalid port (give 1 to 65535, or none)",
            ),
            (
                "https://renkei:hunter2@care.example.jp/hook",
                "credentials are not allowed in an endpoint URL (the receiver authenticates requests by their signature)",
            ),
            (
                "https://token@care.example.jp/hook",
                "credentials are not allowed in an endpoint URL (the receiver authenticates requests by their signature)",
            ),
            ("ftp://care.example.jp/hook", "must be an http(s):// URL"),
            ("care.example.jp/hook", "must be an absolute http(s):// URL"),
            (
                "https://care example.jp/hook",
                "must not contain spaces (percent-encode them as %20)",
            ),
            (
                "https://care.example.jp/ho\nok",
                "contains a control character (U+000A)",
            ),
            ("https://care.example.jp/\0", "contains a NUL character"),
            ("http://[::1/hook", "has an invalid IP address as its host"),
        ];
        for (url, problem) in cases {
            let mut doc = sample.clone();
            doc.endpoints[0].url = url.to_owned();
            assert_eq!(
                problems(&doc),
                [format!("endpoints[0] (sakura/main).url: {problem}")],
                "{url:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn nul_is_refused_in_every_string_field_naming_it() -> Result<(), DocumentError> {
        let mut doc = RegistryDocument::from_toml(SAMPLE)?;
        doc.facilities[0].name = "Example\0Hospital".into();
        doc.facilities[0].kind = "hospital\0".into();
        doc.participants[0].facility = "137999999\0".into();
        doc.endpoints[0].secrets[0] = "whsec_\0".into();
        doc.subscriptions[0].event_types[0] = "inpatient.admitted\0".into();
        doc.patients[0].identifiers[0].system = Some("urn:\0".into());
        doc.patients[0].identifiers[0].facility = None;
        doc.consents[0].facilities = vec!["\0".into()];
        doc.care_relationships.push(CareRelationship {
            patient: "P-1".into(),
            participant: "sakura".into(),
            role: "care\0manager".into(),
            valid_from: chrono::NaiveDate::MIN,
            valid_until: None,
        });
        let e = doc.validate().err();
        assert_eq!(
            e.as_ref().map(DocumentError::locations),
            Some(vec![
                "facilities[0].name",
                "facilities[0].kind",
                "participants[0].facility",
                "endpoints[0] (sakura/main).secrets[0]",
                "subscriptions[0] (sakura/adt).event_types[0]",
                "patients[0].identifiers[0].system",
                "care_relationships[0].role",
                "consents[0] (c-1).facilities[0]",
            ])
        );
        assert!(
            e.iter()
                .flat_map(|e| &e.problems)
                .all(|p| p.problem == "contains a NUL character"),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn every_problem_is_reported_at_once() -> Result<(), DocumentError> {
        let mut doc = RegistryDocument::from_toml(SAMPLE)?;
        doc.facilities[0].code = "131999999".into();
        doc.endpoints[0].url = "https://u:p@care.example.jp/".into();
        doc.consents[0].id = "c/1".into();
        let shown = doc.validate().err().map(|e| e.to_string());
        assert_eq!(
            shown.as_deref(),
            Some(
                "3 problems in the document:\n\
                 - facilities[0].code: must be 10 digits\n\
                 - endpoints[0] (sakura/main).url: credentials are not allowed in an endpoint URL \
                 (the receiver authenticates requests by their signature)\n\
                 - consents[0] (c/1).id: must not contain `/` (it separates the parts of a key, \
                 as in participant/endpoint)"
            )
        );
        Ok(())
    }

    #[tokio::test]
    async fn endpoints_at_refused_destinations_are_refused_with_the_rest()
    -> Result<(), DocumentError> {
        let mut doc = RegistryDocument::from_toml(SAMPLE)?;
        doc.endpoints[0].url = "http://169.254.169.254/latest/meta-data/".into();
        let mut second = doc.endpoints[0].clone();
        second.name = "local".into();
        second.url = "http://localhost:8080/hook".into();
        doc.endpoints.push(second);
        doc.facilities[0].kind = "spa".into();
        let none = DestinationPolicy::default();
        // The checks without the network do not look at destinations.
        assert_eq!(problems(&doc).len(), 1);
        let e = doc.validate_for(&none).await.err();
        assert_eq!(
            e.as_ref().map(DocumentError::locations),
            Some(vec![
                "facilities[0].kind",
                "endpoints[0] (sakura/main).url",
                "endpoints[1] (sakura/local).url",
            ])
        );
        let problems: Vec<&str> = e
            .iter()
            .flat_map(|e| &e.problems)
            .map(|p| p.problem.as_str())
            .collect();
        assert!(
            problems[1].starts_with("169.254.169.254 is a link-local address"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("`localhost` resolves to "),
            "{problems:?}"
        );
        let loopback = DestinationPolicy::new(
            ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        );
        doc.endpoints[0].url = "http://127.0.0.1:8080/hook".into();
        doc.facilities[0].kind = "hospital".into();
        doc.validate_for(&loopback).await
    }

    #[test]
    fn url_credentials_are_masked_for_display() {
        use crate::registry::masked_url;
        assert_eq!(
            masked_url("https://renkei:hunter2@care.example.jp:8443/hook?x=1"),
            "https://********:********@care.example.jp:8443/hook?x=1"
        );
        assert_eq!(
            masked_url("https://token@care.example.jp/hook"),
            "https://********@care.example.jp/hook"
        );
        assert_eq!(
            masked_url("https://care.example.jp/hook"),
            "https://care.example.jp/hook"
        );
        // Not parseable as a URL, still masked.
        assert_eq!(
            masked_url("https://user:secret@care example.jp:99999/a@b"),
            "https://********@care example.jp:99999/a@b"
        );
        assert!(!masked_url("http://a:hunter2@[::1/").contains("hunter2"));
    }
}
