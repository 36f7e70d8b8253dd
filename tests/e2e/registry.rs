//! The region the tests set up, written as the registry document an operator applies
//! with `renkei admin apply -f FILE`: one hospital, care offices with webhook
//! endpoints, one patient known by the hospital's local id, care relationships and
//! the patient's consent.

use std::fmt::Write;

use crate::harness::{Env, Roles, http_client};
use crate::mllp::{MllpClient, conformance, send_accepted};
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

// ---------------------------------------------------------------------------------
// What a registry document may not say, and where webhooks may not go.

/// `delivery.allowed_destinations` empty: loopback is refused like any special range.
const NOTHING_ALLOWED: (&str, &str) = ("RENKEI__DELIVERY__ALLOWED_DESTINATIONS", "");

#[tokio::test]
async fn a_document_with_problems_is_refused_whole_naming_every_one() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let migrated = env.renkei(&["migrate"]).await?;
    assert!(migrated.status.success(), "{migrated}");
    let receiver = Receiver::start().await?;
    let mut office = Office::new("office-a", "1370000001", &receiver, true);
    // An id with a newline once forged a line of the CLI's output.
    office.id = "office-a\\ncreated   participant forged".into();
    let mut doc = Registry::new(vec![office], &["1370000001"]).to_toml();
    doc.push_str(&format!(
        "\n[[participants]]\nid = \"office-b\"\nfacility = \"1370000002\"\nname = \"B\\u0000\"\n\n\
         [[participants]]\nid = \"office-b\"\nfacility = \"1370000002\"\nname = \"B again\"\n\n\
         [[endpoints]]\nparticipant = \"office-b\"\nname = \"creds\"\nurl = \"https://renkei:hunter2@care.example.jp/hook\"\nsecrets = [\"{secret}\"]\n\n\
         [[endpoints]]\nparticipant = \"office-b\"\nname = \"port\"\nurl = \"http://care.example.jp:99999/hook\"\nsecrets = [\"{secret}\"]\n\n\
         [[endpoints]]\nparticipant = \"office-b\"\nname = \"metadata\"\nurl = \"http://169.254.169.254/latest/meta-data/\"\nsecrets = [\"{secret}\"]\n",
        secret = receiver.secret()
    ));
    let path = std::env::temp_dir().join(format!("renkei-e2e-bad-{}.toml", env.prefix));
    std::fs::write(&path, doc)?;
    let path_text = path.to_string_lossy().into_owned();
    let out = env.renkei(&["admin", "apply", "-f", &path_text]).await?;
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "{out}");
    for expected in [
        "participants[0].id: contains a control character (U+000A)",
        "endpoints[0] (office-a\\u{a}created   participant forged/main).participant: contains a control character (U+000A)",
        "participants[1].name: contains a NUL character",
        "participants[2].id: is declared twice; the first is participants[1] (remove one)",
        "endpoints[1] (office-b/creds).url: credentials are not allowed in an endpoint URL",
        "endpoints[2] (office-b/port).url: has an invalid port (give 1 to 65535, or none)",
        "endpoints[3] (office-b/metadata).url: 169.254.169.254 is a link-local address",
    ] {
        assert!(out.stderr.contains(expected), "names `{expected}`: {out}");
    }
    assert!(
        !out.stdout
            .lines()
            .chain(out.stderr.lines())
            .any(|l| l.starts_with("created")),
        "no forged line: {out}"
    );
    let participants: i64 = sqlx::query_scalar("SELECT count(*) FROM participants")
        .fetch_one(&env.db)
        .await?;
    assert_eq!(participants, 0, "nothing was applied");
    Ok(())
}

#[tokio::test]
async fn a_destination_refused_at_apply_through_the_cli_and_the_api() -> anyhow::Result<()> {
    let env = Env::with_settings(&[NOTHING_ALLOWED]).await?;
    let receiver = Receiver::start().await?;
    let mut office = Office::new(OFFICE, OFFICE_FACILITY, &receiver, true);
    office.url = office.url.replace("127.0.0.1", "localhost");
    let registry = Registry::new(vec![office], &[OFFICE_FACILITY]);
    let path = std::env::temp_dir().join(format!("renkei-e2e-dest-{}.toml", env.prefix));
    std::fs::write(&path, registry.to_toml())?;
    let path_text = path.to_string_lossy().into_owned();
    let out = env.renkei(&["admin", "apply", "-f", &path_text]).await?;
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("endpoints[0] (office-a/main).url: `localhost` resolves to ")
            && out.stderr.contains("a loopback address"),
        "{out}"
    );

    env.start_hub(Roles::All).await?;
    let key = env.api_key("t").await?;
    let http = http_client()?;
    let apply = |doc: serde_json::Value| {
        http.post(format!("http://{}/v1/registry/apply", env.api))
            .bearer_auth(&key)
            .json(&doc)
            .send()
    };
    let endpoint = |url: &str| {
        serde_json::json!({
            "participants": [{ "id": OFFICE, "facility": OFFICE_FACILITY, "name": "A" }],
            "facilities": [{ "code": OFFICE_FACILITY, "name": "A", "kind": "care_management" }],
            "endpoints": [{ "participant": OFFICE, "name": "main", "url": url,
                            "secrets": [receiver.secret()] }],
        })
    };
    let refused = apply(endpoint(&receiver.url().replace("127.0.0.1", "localhost"))).await?;
    assert_eq!(refused.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = refused.json().await?;
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("endpoints[0] (office-a/main).url: `localhost` resolves to "),
        "{body}"
    );
    let mut nul = endpoint("https://care.example.jp/hook");
    nul["participants"][0]["name"] = "A\u{0}".into();
    let refused = apply(nul).await?;
    assert_eq!(refused.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(
        body["error"], "participants[0].name: contains a NUL character",
        "not PostgreSQL's words"
    );
    let endpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM endpoints")
        .fetch_one(&env.db)
        .await?;
    assert_eq!(endpoints, 0, "nothing was applied");

    // A public destination is fine; one stored with credentials (before they were
    // refused) is never shown with them.
    let applied = apply(endpoint("https://care.example.jp/hook")).await?;
    assert_eq!(
        applied.status(),
        reqwest::StatusCode::OK,
        "{}",
        applied.text().await?
    );
    sqlx::query("UPDATE endpoints SET url = 'https://renkei:hunter2@care.example.jp/hook'")
        .execute(&env.db)
        .await?;
    let exported = http
        .get(format!("http://{}/v1/registry?reason=review", env.api))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(exported.status(), reqwest::StatusCode::OK);
    let exported = exported.text().await?;
    assert!(!exported.contains("hunter2"), "{exported}");
    assert!(
        exported.contains("https://********:********@care.example.jp/hook"),
        "{exported}"
    );
    Ok(())
}

#[tokio::test]
async fn a_name_resolving_to_a_refused_address_fails_the_attempt() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    let mut office = Office::new(OFFICE, OFFICE_FACILITY, &receiver, true);
    office.url = office.url.replace("127.0.0.1", "localhost");
    // Applied while loopback is allowed (as when DNS pointed elsewhere then)…
    env.apply(&Registry::new(vec![office], &[OFFICE_FACILITY]))
        .await?;
    // …delivered by a hub that does not allow it.
    env.set(NOTHING_ALLOWED.0, NOTHING_ALLOWED.1);
    env.start_hub(Roles::All).await?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    let reason = env
        .eventually("the delivery dead with the refusal", || async {
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT status, last_error FROM deliveries")
                    .fetch_optional(&env.db)
                    .await?;
            Ok(row.and_then(|(status, error)| (status == "dead").then_some(error)))
        })
        .await?;
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with("destination refused, nothing was sent: `localhost` resolves to ")
            && reason.contains("a loopback address"),
        "{reason}"
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the receiver"
    );
    Ok(())
}
