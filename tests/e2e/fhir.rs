//! The FHIR receiver with the real binary: a hospital's message Bundle reaches the
//! consented care office; every refusal is the right status with an OperationOutcome.

use crate::harness::{Env, Roles, free_addr, http_client};
use crate::mllp::conformance;
use crate::receiver::Receiver;
use crate::registry::HOSPITAL;

async fn source_key(env: &Env, facility: &str) -> anyhow::Result<String> {
    let made = env
        .renkei(&[
            "admin",
            "create-source-key",
            "--facility",
            facility,
            "--name",
            "his",
        ])
        .await?;
    anyhow::ensure!(made.status.success(), "{made}");
    Ok(made.stdout.trim().to_owned())
}

#[tokio::test]
async fn a_message_bundle_reaches_the_consented_office_and_refusals_are_operation_outcomes()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    let fhir = free_addr()?;
    env.set("RENKEI__SOURCES__FHIR__TYPE", "fhir");
    env.set("RENKEI__SOURCES__FHIR__LISTEN", &fhir.to_string());
    env.set("RENKEI__SOURCES__FHIR__MAX_BODY_BYTES", "65536");
    env.start_hub(Roles::All).await?;
    let key = source_key(&env, HOSPITAL).await?;
    let other = source_key(&env, "1319999998").await?;
    let admin = env.api_key("ops").await?;
    let http = http_client()?;
    let url = format!("http://{fhir}/fhir/$process-message");
    let post = |body: Vec<u8>, key: Option<&str>, content_type: &str| {
        let mut request = http
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let admit = conformance("fhir/admit_message.json")?;

    let accepted = post(admit.clone(), Some(&key), "application/fhir+json").await?;
    assert_eq!(accepted.status(), 200);
    let event_id = accepted
        .headers()
        .get("renkei-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let got = crate::spine::acknowledged(&env, &receiver, 1).await?;
    assert_eq!(got[0].event_type(), "inpatient.admitted");
    assert_eq!(got[0].event_id(), event_id);
    // The same Bundle again: acknowledged, not published twice.
    let again = post(admit.clone(), Some(&key), "application/fhir+json").await?;
    assert_eq!(again.status(), 200);
    let said: serde_json::Value = again.json().await?;
    assert!(
        said["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("already accepted")),
        "{said}"
    );

    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(post(admit.clone(), None, "application/fhir+json").await?),
        401
    );
    assert_eq!(
        status(post(admit.clone(), Some(&admin), "application/fhir+json").await?),
        401,
        "an admin key is no source key"
    );
    assert_eq!(
        status(post(admit.clone(), Some(&key), "text/plain").await?),
        415
    );
    let forbidden = post(admit.clone(), Some(&other), "application/fhir+json").await?;
    assert_eq!(forbidden.status(), 403);
    let large = vec![b' '; 70_000];
    assert_eq!(
        status(post(large, Some(&key), "application/fhir+json").await?),
        413
    );

    for (file, code, path) in [
        ("bad/not_json.json", 400, None),
        ("bad/fhir_bundle_wrong_type.json", 400, Some("Bundle.type")),
        (
            "bad/encounter_without_subject.json",
            422,
            Some("Bundle.entry[1].resource.subject"),
        ),
    ] {
        let refused = post(conformance(file)?, Some(&key), "application/fhir+json").await?;
        assert_eq!(refused.status().as_u16(), code, "{file}");
        let outcome: serde_json::Value = refused.json().await?;
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{file}");
        if let Some(path) = path {
            assert_eq!(outcome["issue"][0]["expression"][0], path, "{file}");
        }
    }
    // A document posted as a message is refused, naming the Bundle's type.
    let document = post(
        conformance("fhir/discharge_summary.json")?,
        Some(&key),
        "application/fhir+json",
    )
    .await?;
    assert_eq!(document.status(), 400);

    // Every refused Bundle is kept (the 403 too), the good one published once.
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rejected_inputs WHERE adapter = 'fhir'")
            .fetch_one(&env.db)
            .await?;
    assert_eq!(kept, 5);
    assert_eq!(receiver.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_document_bundle_is_created_and_resent_unchanged_is_acknowledged() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let fhir = free_addr()?;
    env.set("RENKEI__SOURCES__FHIR__TYPE", "fhir");
    env.set("RENKEI__SOURCES__FHIR__LISTEN", &fhir.to_string());
    env.start_hub(Roles::All).await?;
    let key = source_key(&env, HOSPITAL).await?;
    let http = http_client()?;
    let url = format!("http://{fhir}/fhir/Bundle");
    let summary = conformance("fhir/discharge_summary.json")?;
    let send = || {
        http.post(&url)
            .bearer_auth(&key)
            .header("content-type", "application/fhir+json; charset=utf-8")
            .body(summary.clone())
            .send()
    };
    assert_eq!(send().await?.status(), 201);
    assert_eq!(send().await?.status(), 200);
    let message = http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/fhir+json")
        .body(conformance("fhir/admit_message.json")?)
        .send()
        .await?;
    assert_eq!(message.status(), 400, "a message is not a document");
    Ok(())
}
