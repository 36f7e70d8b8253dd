//! The admin API needs a key, and every read of patient data through it needs a
//! reason and leaves an audit row (who, when, which patient, why).

use reqwest::StatusCode;
use sqlx::Row;

use crate::harness::{Env, Roles, http_client};
use crate::mllp::{MllpClient, conformance, send_accepted};
use crate::receiver::Receiver;
use crate::registry::{PATIENT, single_office};
use crate::spine::acknowledged;

#[tokio::test]
async fn admin_api_needs_a_key_and_audits_patient_reads() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    let event_id = acknowledged(&env, &receiver, 1).await?[0].event_id();

    let created = env
        .renkei(&["admin", "create-api-key", "--name", "t"])
        .await?;
    assert!(created.status.success(), "{created}");
    let key = created.stdout.trim().to_owned();
    assert!(
        key.starts_with("rk_") && !key.contains(char::is_whitespace),
        "the key alone on stdout: {created}"
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_sha256 FROM api_keys WHERE name = 't'")
        .fetch_one(&env.db)
        .await?;
    assert_ne!(stored, key.as_bytes(), "only a hash is stored");

    let api = format!("http://{}", env.api);
    let http = http_client()?;
    let anonymous = http.get(format!("{api}/v1/deliveries")).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = http
        .get(format!("{api}/v1/deliveries"))
        .bearer_auth("rk_not-a-key")
        .send()
        .await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let listed = http
        .get(format!("{api}/v1/deliveries"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: serde_json::Value = listed.json().await?;
    assert_eq!(
        listed["deliveries"][0]["event_id"], event_id,
        "the delivery is listed: {listed:#}"
    );

    let reads = || async {
        Ok::<i64, anyhow::Error>(
            sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'read'")
                .fetch_one(&env.db)
                .await?,
        )
    };
    let event_url = format!("{api}/v1/events/{event_id}");
    let with_reason =
        |reason: &str| reqwest::Url::parse_with_params(&event_url, &[("reason", reason)]);
    let anonymous = http.get(with_reason("curious")?).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let no_reason = http.get(&event_url).bearer_auth(&key).send().await?;
    assert_eq!(no_reason.status(), StatusCode::BAD_REQUEST);
    let blank_reason = http
        .get(with_reason("  ")?)
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(blank_reason.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reads().await?, 0, "refused reads are not reads");

    let reason = "discharge conference preparation";
    let read = http
        .get(with_reason(reason)?)
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(read.status(), StatusCode::OK);
    let event: serde_json::Value = read.json().await?;
    assert_eq!(event["id"], event_id);
    assert_eq!(event["subject"], PATIENT);

    let rows = sqlx::query(
        "SELECT actor, outcome, patient_id, event_id::text AS event_id, detail->>'reason' AS reason, at
         FROM audit_log WHERE action = 'read'",
    )
    .fetch_all(&env.db)
    .await?;
    assert_eq!(rows.len(), 1, "one audit row for the one read");
    let key_id: String = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 't'")
        .fetch_one(&env.db)
        .await?;
    let row = &rows[0];
    assert_eq!(
        row.try_get::<String, _>("actor")?,
        format!("admin:{key_id}")
    );
    assert_eq!(
        row.try_get::<Option<String>, _>("patient_id")?.as_deref(),
        Some(PATIENT)
    );
    assert_eq!(
        row.try_get::<Option<String>, _>("event_id")?.as_deref(),
        Some(event_id.as_str())
    );
    assert_eq!(
        row.try_get::<Option<String>, _>("reason")?.as_deref(),
        Some(reason)
    );
    assert_eq!(row.try_get::<String, _>("outcome")?, "event");
    let at: chrono::DateTime<chrono::Utc> = row.try_get("at")?;
    assert!((chrono::Utc::now() - at).num_minutes().abs() < 5, "{at}");

    // Reading the registry (which lists patients) needs a reason too.
    let registry = http
        .get(format!("{api}/v1/registry"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(registry.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn the_binary_applies_its_body_limit_and_answers_refusals_in_json() -> anyhow::Result<()> {
    let env = Env::with_settings(&[("RENKEI__API__MAX_BODY_BYTES", "65536")]).await?;
    env.start_hub(Roles::All).await?;
    let key = env.api_key("t").await?;
    let api = format!("http://{}", env.api);
    let http = http_client()?;

    let description: serde_json::Value = http
        .get(format!("{api}/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    let description = description["info"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("65536 bytes (`api.max_body_bytes`"),
        "{description}"
    );

    let big = format!(
        "{{\"facilities\": [], \"padding\": \"{}\"}}",
        "x".repeat(70_000)
    );
    let refused = http
        .post(format!("{api}/v1/registry/apply"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: serde_json::Value = refused.json().await?;
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("65536 bytes") && e.contains("api.max_body_bytes")),
        "{error}"
    );

    let plain = http
        .post(format!("{api}/v1/registry/apply"))
        .bearer_auth(&key)
        .body("{}")
        .send()
        .await?;
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let error: serde_json::Value = plain.json().await?;
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("application/json")),
        "{error}"
    );

    let unknown = http
        .get(format!("{api}/v1/deliveries?status=AAA"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let error: serde_json::Value = unknown.json().await?;
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("status")),
        "{error}"
    );
    Ok(())
}
