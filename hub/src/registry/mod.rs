//! The regional registry: facilities, participants and their endpoints and
//! subscriptions, patients with their per-facility identifiers, care relationships and
//! consents — and the declarative document (`renkei admin apply -f FILE`) that sets it.

pub mod document;
mod validate;
mod when;

pub use validate::masked_url;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// A participating facility, identified by its 10-digit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facility {
    /// 10-digit medical institution / care provider code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// `hospital`, `clinic`, `visiting_nursing`, `care_management`, `care_facility`,
    /// `pharmacy` or `other`.
    pub kind: String,
}

/// A receiving party (a care office, a ward, a nursing station) at a facility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// Stable id chosen by the region, e.g. `kyotaku-sakura`.
    pub id: String,
    /// The facility it belongs to.
    pub facility: String,
    /// Display name.
    pub name: String,
}

/// A webhook endpoint of a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Owner.
    pub participant: String,
    /// Name, unique per participant.
    pub name: String,
    /// `https://…` or `http://…`. Both are accepted; use `https://` for any receiver
    /// off this machine, as `http://` sends patient data unencrypted.
    pub url: String,
    /// Signing secrets `whsec_<base64>`; all of them sign each request (rotation).
    pub secrets: Vec<String>,
    /// Disabled endpoints receive nothing: their deliveries are still routed and
    /// recorded, and go dead with the reason, to replay once enabled again.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Which events a participant wants, at which endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Owner.
    pub participant: String,
    /// Name, unique per participant.
    pub name: String,
    /// Endpoint name.
    pub endpoint: String,
    /// Canonical event types.
    pub event_types: Vec<String>,
    /// Only events from these facilities (empty: any).
    #[serde(default)]
    pub source_facilities: Vec<String>,
}

/// A patient known to the hub, with the identifiers each facility uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientRecord {
    /// Hub patient id (the canonical event's `subject`).
    pub id: String,
    /// Identifiers, each unique within its system.
    pub identifiers: Vec<PatientIdentifier>,
}

/// A patient identifier: either an explicit `system`, or a `facility` whose local id
/// system (`urn:oid:1.2.392.100495.20.3.51.1<code>`) is implied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientIdentifier {
    /// Identifier system URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The facility whose local patient id this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    /// The id.
    pub value: String,
}

impl PatientIdentifier {
    /// The identifier system this stands for.
    pub fn resolved_system(&self) -> Option<String> {
        match (&self.system, &self.facility) {
            (Some(system), None) => Some(system.clone()),
            (None, Some(facility)) => Some(renkei_sdk::local_patient_id_system(facility)),
            _ => None,
        }
    }
}

/// A participant looks after a patient (care manager, visiting nurse…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareRelationship {
    /// Patient.
    pub patient: String,
    /// Participant.
    pub participant: String,
    /// e.g. `care_manager`, `visiting_nurse`, `home_doctor`.
    pub role: String,
    /// First day.
    #[serde(deserialize_with = "when::date")]
    pub valid_from: NaiveDate,
    /// Last day, if it ends.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "when::opt_date"
    )]
    pub valid_until: Option<NaiveDate>,
}

/// How a consent covers recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentScope {
    /// Every participating facility except those listed.
    Blanket,
    /// Only the facilities listed.
    Facilities,
}

impl ConsentScope {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentScope::Blanket => "blanket",
            ConsentScope::Facilities => "facilities",
        }
    }
}

/// How the consent was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentBasis {
    /// Signed consent form.
    Written,
    /// Oral consent, recorded (who, when) in the facility's records.
    OralRecorded,
}

impl ConsentBasis {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentBasis::Written => "written",
            ConsentBasis::OralRecorded => "oral_recorded",
        }
    }
}

/// A patient's consent to share their information with participating facilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Region-assigned id (e.g. the consent form number).
    pub id: String,
    /// Patient.
    pub patient: String,
    /// Blanket (with exclusions) or per-facility.
    pub scope: ConsentScope,
    /// Exclusions for a blanket consent; the covered facilities otherwise.
    #[serde(default)]
    pub facilities: Vec<String>,
    /// How it was obtained.
    pub basis: ConsentBasis,
    /// Start of validity.
    #[serde(deserialize_with = "when::instant")]
    pub valid_from: DateTime<Utc>,
    /// End of validity, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "when::opt_instant"
    )]
    pub valid_until: Option<DateTime<Utc>>,
    /// When the patient withdrew it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "when::opt_instant"
    )]
    pub withdrawn_at: Option<DateTime<Utc>>,
}

/// Why a recipient may or may not receive a patient's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    /// A consent in force covers the recipient's facility.
    Covered,
    /// The patient has no consent in force (none, expired, not yet valid, withdrawn).
    NoConsentInForce,
    /// Consents are in force but none covers the recipient's facility.
    FacilityNotCovered,
}

impl Consent {
    /// In force at `at`: started, not ended, not withdrawn.
    pub fn in_force(&self, at: DateTime<Utc>) -> bool {
        self.valid_from <= at
            && self.valid_until.is_none_or(|until| at < until)
            && self.withdrawn_at.is_none_or(|withdrawn| at < withdrawn)
    }

    /// Covers a recipient at `facility` (ignoring validity).
    pub fn covers(&self, facility: &str) -> bool {
        let listed = self.facilities.iter().any(|f| f == facility);
        match self.scope {
            ConsentScope::Blanket => !listed,
            ConsentScope::Facilities => listed,
        }
    }
}

/// Whether the patient's consents let a recipient at `recipient_facility` receive
/// their data at `at`.
pub fn consent_decision(
    consents: &[Consent],
    recipient_facility: &str,
    at: DateTime<Utc>,
) -> ConsentDecision {
    let mut in_force = consents.iter().filter(|c| c.in_force(at)).peekable();
    if in_force.peek().is_none() {
        return ConsentDecision::NoConsentInForce;
    }
    if in_force.any(|c| c.covers(recipient_facility)) {
        ConsentDecision::Covered
    } else {
        ConsentDecision::FacilityNotCovered
    }
}

impl CareRelationship {
    /// Active on `day`.
    pub fn active_on(&self, day: NaiveDate) -> bool {
        self.valid_from <= day && self.valid_until.is_none_or(|until| day <= until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn consent(scope: ConsentScope, facilities: &[&str]) -> Consent {
        Consent {
            id: "c1".into(),
            patient: "P-1".into(),
            scope,
            facilities: facilities.iter().map(|s| s.to_string()).collect(),
            basis: ConsentBasis::Written,
            valid_from: at(2025, 1, 1),
            valid_until: Some(at(2026, 1, 1)),
            withdrawn_at: None,
        }
    }

    #[test]
    fn blanket_consent_covers_all_but_exclusions() {
        let c = [consent(ConsentScope::Blanket, &["1370000002"])];
        let now = at(2025, 6, 1);
        assert_eq!(
            consent_decision(&c, "1370000001", now),
            ConsentDecision::Covered
        );
        assert_eq!(
            consent_decision(&c, "1370000002", now),
            ConsentDecision::FacilityNotCovered
        );
    }

    #[test]
    fn per_facility_consent_covers_only_listed() {
        let c = [consent(ConsentScope::Facilities, &["1370000001"])];
        let now = at(2025, 6, 1);
        assert_eq!(
            consent_decision(&c, "1370000001", now),
            ConsentDecision::Covered
        );
        assert_eq!(
            consent_decision(&c, "1370000003", now),
            ConsentDecision::FacilityNotCovered
        );
    }

    #[test]
    fn consent_outside_validity_or_withdrawn_covers_nobody() {
        let mut c = consent(ConsentScope::Blanket, &[]);
        assert_eq!(
            consent_decision(std::slice::from_ref(&c), "1370000001", at(2024, 12, 31)),
            ConsentDecision::NoConsentInForce
        );
        assert_eq!(
            consent_decision(std::slice::from_ref(&c), "1370000001", at(2026, 1, 1)),
            ConsentDecision::NoConsentInForce
        );
        c.withdrawn_at = Some(at(2025, 3, 1));
        assert_eq!(
            consent_decision(&[c], "1370000001", at(2025, 3, 1)),
            ConsentDecision::NoConsentInForce
        );
        assert_eq!(
            consent_decision(&[], "1370000001", at(2025, 3, 1)),
            ConsentDecision::NoConsentInForce
        );
    }

    #[test]
    fn care_relationship_period_is_inclusive() {
        let rel = CareRelationship {
            patient: "P-1".into(),
            participant: "x".into(),
            role: "care_manager".into(),
            valid_from: at(2025, 1, 1).date_naive(),
            valid_until: Some(at(2025, 1, 31).date_naive()),
        };
        assert!(rel.active_on(at(2025, 1, 31).date_naive()));
        assert!(!rel.active_on(at(2025, 2, 1).date_naive()));
        assert!(!rel.active_on(at(2024, 12, 31).date_naive()));
    }
}
