//! `renkei rejected list|show|replay`: a refused input is found, read back exactly,
//! fixed and replayed through the normal path once.

use crate::harness::{Env, Roles};
use crate::mllp::{MllpClient, conformance};
use crate::receiver::Receiver;

#[tokio::test]
async fn a_refused_input_is_listed_shown_and_replayed_fixed_exactly_once() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    let bad = conformance("bad/unknown_event.hl7")?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    assert_eq!(mllp.send(&bad).await?.code, "AE");

    let listed = env.renkei(&["rejected", "list", "--json"]).await?;
    assert!(listed.status.success(), "{listed}");
    let rows: Vec<serde_json::Value> = listed
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["source"], "mllp");
    assert_eq!(rows[0]["location"], "MSH-9");
    assert_eq!(rows[0]["replayed_at"], serde_json::Value::Null);
    let id = rows[0]["id"].as_str().unwrap_or_default().to_owned();
    // Bad filter values are refused, naming what is accepted.
    let refused = env
        .renkei(&["rejected", "list", "--replayed", "maybe"])
        .await?;
    assert_eq!(refused.status.code(), Some(2), "{refused}");
    assert!(refused.stderr.contains("yes, no"), "{refused}");

    let shown = env.renkei(&["rejected", "show", &id, "--raw"]).await?;
    assert!(shown.status.success(), "{shown}");
    assert_eq!(
        shown.stdout.as_bytes(),
        bad.as_slice(),
        "the bytes as received"
    );

    // The sender's fix: the message as it should have been.
    let folder = tempfile::tempdir()?;
    let fixed = folder.path().join("fixed.hl7");
    std::fs::write(&fixed, conformance("hl7/a01_admit_iso2022jp.hl7")?)?;
    let fixed = fixed.to_string_lossy().into_owned();
    let replayed = env
        .renkei(&["rejected", "replay", &id, "--file", &fixed])
        .await?;
    assert!(replayed.status.success(), "{replayed}");
    assert!(replayed.stdout.contains("accepted as event"), "{replayed}");
    let got = crate::spine::acknowledged(&env, &receiver, 1).await?;
    assert_eq!(got[0].event_type(), "inpatient.admitted");

    let again = env
        .renkei(&["rejected", "replay", &id, "--file", &fixed])
        .await?;
    assert_eq!(again.status.code(), Some(2), "{again}");
    assert!(again.stderr.contains("replayed before"), "{again}");
    let listed = env
        .renkei(&["rejected", "list", "--replayed", "yes", "--json"])
        .await?;
    assert_eq!(listed.stdout.lines().count(), 1, "{listed}");

    // Replayed as kept, an input that is still wrong is refused again and kept anew.
    assert_eq!(mllp.send(&bad).await?.code, "AE");
    let open = env
        .renkei(&["rejected", "list", "--replayed", "no", "--json"])
        .await?;
    let second: serde_json::Value =
        serde_json::from_str(open.stdout.lines().next().unwrap_or("{}"))?;
    let second = second["id"].as_str().unwrap_or_default().to_owned();
    let as_kept = env.renkei(&["rejected", "replay", &second]).await?;
    assert_eq!(as_kept.status.code(), Some(2), "{as_kept}");
    assert!(as_kept.stderr.contains("refused again"), "{as_kept}");
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'rejected.replay'")
            .fetch_one(&env.db)
            .await?;
    assert_eq!(audited, 1);
    Ok(())
}

#[tokio::test]
async fn the_admin_api_lists_reads_with_a_reason_and_replays_a_refused_input() -> anyhow::Result<()>
{
    use base64::Engine;
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;
    let key = env.api_key("ops").await?;
    let http = crate::harness::http_client()?;
    let api = format!("http://{}", env.api);

    let bad = conformance("bad/unknown_event.hl7")?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    assert_eq!(mllp.send(&bad).await?.code, "AE");

    let listed: serde_json::Value = http
        .get(format!("{api}/v1/rejected?source=mllp&replayed=false"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let id = listed["rejected"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(listed["rejected"][0]["location"], "MSH-9", "{listed}");

    let unexplained = http
        .get(format!("{api}/v1/rejected/{id}"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(unexplained.status(), 400, "patient data needs a reason");
    let read: serde_json::Value = http
        .get(format!("{api}/v1/rejected/{id}?reason=fixing%20the%20feed"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(read["raw_base64"].as_str().unwrap_or_default())?;
    assert_eq!(raw, bad);

    let replay = |body: Vec<u8>| {
        http.post(format!("{api}/v1/rejected/{id}/replay"))
            .bearer_auth(&key)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    assert_eq!(
        replay(Vec::new()).await?.status(),
        422,
        "still wrong as kept"
    );
    let fixed = replay(conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    assert_eq!(fixed.status(), 200);
    crate::spine::acknowledged(&env, &receiver, 1).await?;
    assert_eq!(
        replay(conformance("hl7/a01_admit_iso2022jp.hl7")?)
            .await?
            .status(),
        409
    );
    let unknown = http
        .post(format!("{api}/v1/rejected/{}/replay", uuid::Uuid::now_v7()))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    Ok(())
}
