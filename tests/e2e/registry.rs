//! The region the tests set up, written as the registry document an operator applies
//! with `renkei admin apply -f FILE`: one hospital, care offices with webhook
//! endpoints, one patient known by the hospital's local id, care relationships and
//! the patient's consent.

use std::fmt::Write;

use crate::harness::Env;
use crate::receiver::Receiver;

/// The hospital whose ADT feed the conformance messages are.
pub const HOSPITAL: &str = "1319999999";
/// The patient's id at the hospital (PID-3 of the conformance messages).
pub const LOCAL_PATIENT_ID: &str = "0000482915";
/// The hub's id for that patient (the events' `subject`).
pub const PATIENT: &str = "P-0000482915";
/// The consent's id.
pub const CONSENT: &str = "consent-482915";

/// Every ADT event type a care office subscribes to here.
const EVENT_TYPES: &[&str] = &[
    "inpatient.admitted",
    "inpatient.transferred",
    "inpatient.discharged",
    "inpatient.cancelled",
    "patient.updated",
    "outpatient.registered",
];

/// A care-manager office with one webhook endpoint, subscribed to the hospital's ADT
/// events.
pub struct Office {
    /// Participant id.
    pub id: String,
    /// Its facility code.
    pub facility: String,
    /// Webhook URL.
    pub url: String,
    /// Webhook secret.
    pub secret: String,
    /// Whether it has a care relationship with the patient.
    pub cares_for_patient: bool,
}

impl Office {
    /// An office receiving at `receiver`.
    pub fn new(id: &str, facility: &str, receiver: &Receiver, cares_for_patient: bool) -> Self {
        Self {
            id: id.to_owned(),
            facility: facility.to_owned(),
            url: receiver.url(),
            secret: receiver.secret().to_owned(),
            cares_for_patient,
        }
    }
}

/// The patient's per-facility consent.
pub struct ConsentSpec {
    /// The facilities it covers.
    pub covers: Vec<String>,
    /// When the patient withdrew it (RFC 3339), if they did.
    pub withdrawn_at: Option<String>,
}

/// The whole document.
pub struct Registry {
    /// Care offices.
    pub offices: Vec<Office>,
    /// The patient's consent.
    pub consent: ConsentSpec,
}

impl Registry {
    /// Offices, with a consent covering the hospital and the offices listed in `covered`.
    pub fn new(offices: Vec<Office>, covered: &[&str]) -> Self {
        let mut covers = vec![HOSPITAL.to_owned()];
        covers.extend(covered.iter().map(|f| (*f).to_owned()));
        Self {
            offices,
            consent: ConsentSpec {
                covers,
                withdrawn_at: None,
            },
        }
    }

    /// The TOML document.
    pub fn to_toml(&self) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut doc = String::new();
        let _ = writeln!(
            doc,
            "[[facilities]]\ncode = \"{HOSPITAL}\"\nname = \"Kakuu General Hospital\"\nkind = \"hospital\"\n"
        );
        for o in &self.offices {
            let _ = writeln!(
                doc,
                "[[facilities]]\ncode = \"{}\"\nname = \"Care office {}\"\nkind = \"care_management\"\n",
                o.facility, o.id
            );
        }
        for o in &self.offices {
            let _ = writeln!(
                doc,
                "[[participants]]\nid = \"{id}\"\nfacility = \"{facility}\"\nname = \"Care managers of {id}\"\n\n\
                 [[endpoints]]\nparticipant = \"{id}\"\nname = \"main\"\nurl = \"{url}\"\nsecrets = [\"{secret}\"]\n\n\
                 [[subscriptions]]\nparticipant = \"{id}\"\nname = \"adt\"\nendpoint = \"main\"\n\
                 event_types = [{types}]\nsource_facilities = [\"{HOSPITAL}\"]\n",
                id = o.id,
                facility = o.facility,
                url = o.url,
                secret = o.secret,
                types = list(
                    &EVENT_TYPES
                        .iter()
                        .map(|t| (*t).to_owned())
                        .collect::<Vec<_>>()
                ),
            );
        }
        let _ = writeln!(
            doc,
            "[[patients]]\nid = \"{PATIENT}\"\nidentifiers = [{{ facility = \"{HOSPITAL}\", value = \"{LOCAL_PATIENT_ID}\" }}]\n"
        );
        for o in self.offices.iter().filter(|o| o.cares_for_patient) {
            let _ = writeln!(
                doc,
                "[[care_relationships]]\npatient = \"{PATIENT}\"\nparticipant = \"{}\"\nrole = \"care_manager\"\nvalid_from = \"2025-01-01\"\n",
                o.id
            );
        }
        let _ = writeln!(
            doc,
            "[[consents]]\nid = \"{CONSENT}\"\npatient = \"{PATIENT}\"\nscope = \"facilities\"\nfacilities = [{}]\nbasis = \"written\"\nvalid_from = \"2025-01-01T00:00:00Z\"",
            list(&self.consent.covers)
        );
        if let Some(at) = &self.consent.withdrawn_at {
            let _ = writeln!(doc, "withdrawn_at = \"{at}\"");
        }
        doc
    }
}

/// The facility of the single consented office [`single_office`] sets up.
pub const OFFICE_FACILITY: &str = "1370000001";
/// Its participant id.
pub const OFFICE: &str = "office-a";

/// Applies a region with one office, in a care relationship with the patient and
/// covered by the consent, receiving at `receiver`.
pub async fn single_office(env: &Env, receiver: &Receiver) -> anyhow::Result<Registry> {
    let registry = Registry::new(
        vec![Office::new(OFFICE, OFFICE_FACILITY, receiver, true)],
        &[OFFICE_FACILITY],
    );
    env.apply(&registry).await?;
    Ok(registry)
}
