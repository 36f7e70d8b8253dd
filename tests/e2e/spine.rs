//! The main path: an ADT feed over MLLP reaches exactly the care offices that are in a
//! care relationship with the patient and covered by the patient's consent, as signed
//! webhooks; refused input is answered and kept; resends are published once.

use sqlx::Row;

use crate::checks::signed_canonical_event;
use crate::harness::{Backend, Env, Roles};
use crate::mllp::{MllpClient, conformance, control_id, send_accepted, with_control_id};
use crate::receiver::{Received, Receiver};
use crate::registry::{HOSPITAL, LOCAL_PATIENT_ID, OFFICE, Office, PATIENT, Registry};

const ADMIT: &str = "hl7/a01_admit_iso2022jp.hl7";
const TRANSFER: &str = "hl7/a02_transfer_utf8.hl7";
const DISCHARGE: &str = "hl7/a03_discharge_iso2022jp.hl7";

/// Waits until `receiver` acknowledged at least `n` requests; returns them.
pub async fn acknowledged(
    env: &Env,
    receiver: &Receiver,
    n: usize,
) -> anyhow::Result<Vec<Received>> {
    env.eventually(&format!("{n} webhook(s) acknowledged"), || async {
        let got = receiver.acknowledged();
        Ok((got.len() >= n).then_some(got))
    })
    .await
}

/// A hub (every role) for one care office, already through one admission: the
/// publisher and the consumers are all in use. Returns the office's receiver and the
/// MLLP connection.
pub async fn one_office_after_an_admission(env: &Env) -> anyhow::Result<(Receiver, MllpClient)> {
    let receiver = Receiver::start().await?;
    crate::registry::single_office(env, &receiver).await?;
    env.start_hub(Roles::All).await?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance(ADMIT)?).await?;
    acknowledged(env, &receiver, 1).await?;
    Ok((receiver, mllp))
}

#[tokio::test]
async fn adt_feed_reaches_consented_care_office_as_signed_webhooks() -> anyhow::Result<()> {
    adt_feed_reaches_consented_care_office(Backend::Postgres).await
}

#[tokio::test]
async fn adt_feed_reaches_consented_care_office_as_signed_webhooks_embedded() -> anyhow::Result<()>
{
    adt_feed_reaches_consented_care_office(Backend::Embedded).await
}

async fn adt_feed_reaches_consented_care_office(backend: Backend) -> anyhow::Result<()> {
    // One event routed and one webhook sent at a time, so that the feed's order is the
    // order of the per-participant sequence and of arrival (with concurrency the hub
    // promises sequence numbers, not arrival order).
    let env = Env::on(
        backend,
        &[
            ("RENKEI__ROUTER__CONCURRENCY", "1"),
            ("RENKEI__DELIVERY__CONCURRENCY", "1"),
        ],
    )
    .await?;
    let (a, b, c) = (
        Receiver::start().await?,
        Receiver::start().await?,
        Receiver::start().await?,
    );
    // A: cares for the patient, covered by the consent. B: cares for the patient, but
    // the per-facility consent does not list B's facility. C: subscribed only.
    let registry = Registry::new(
        vec![
            Office::new("office-a", "1370000001", &a, true),
            Office::new("office-b", "1370000002", &b, true),
            Office::new("office-c", "1370000003", &c, false),
        ],
        &["1370000001"],
    );

    let applied = env.apply(&registry).await?;
    for expected in [
        format!("created   facility {HOSPITAL}"),
        "created   participant office-a".into(),
        "created   endpoint office-b/main".into(),
        "created   subscription office-c/adt".into(),
        format!("created   patient {PATIENT}"),
        format!("created   care_relationship {PATIENT}/office-b"),
        "created   consent consent-482915".into(),
        "17 changed, 0 unchanged".into(),
    ] {
        assert!(
            applied.stdout.lines().any(|l| l == expected),
            "`{expected}` missing from the apply output:\n{applied}"
        );
    }
    let again = env.apply(&registry).await?;
    assert!(
        again
            .stdout
            .lines()
            .all(|l| !l.starts_with("created") && !l.starts_with("updated")),
        "applying the same document again changed something:\n{again}"
    );
    assert!(
        again.stdout.lines().any(|l| l == "0 changed, 17 unchanged"),
        "{again}"
    );

    env.start_hub(Roles::All).await?;
    let feed = [
        (ADMIT, "inpatient.admitted"),
        (TRANSFER, "inpatient.transferred"),
        (DISCHARGE, "inpatient.discharged"),
    ];
    let mut mllp = MllpClient::connect(env.mllp).await?;
    for (file, _) in feed {
        let raw = conformance(file)?;
        send_accepted(&mut mllp, &raw)
            .await
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    }

    acknowledged(&env, &a, 3).await?;
    // Wait until every decision about the three events is committed: three route
    // decisions each (A, B, C) and A's three deliveries finished.
    env.eventually("all routing decisions and A's deliveries recorded", || async {
        let decided = env
            .count("SELECT count(*) FROM audit_log WHERE action = 'route'")
            .await?;
        let delivered = env
            .count("SELECT count(*) FROM deliveries WHERE participant_id = 'office-a' AND status = 'delivered'")
            .await?;
        Ok((decided >= 9 && delivered == 3).then_some(()))
    })
    .await?;

    let got = a.requests();
    assert_eq!(got.len(), 3, "A must get each event exactly once: {got:#?}");
    for (i, (request, (file, event_type))) in got.iter().zip(feed).enumerate() {
        let event = signed_canonical_event(request, event_type)
            .map_err(|e| anyhow::anyhow!("webhook {i} ({file}): {e}"))?;
        assert_eq!(
            request.header("renkei-sequence"),
            (i + 1).to_string(),
            "per-participant sequence"
        );
        assert_eq!(event["source"], format!("urn:renkei:facility:{HOSPITAL}"));
        assert_eq!(
            event["subject"], PATIENT,
            "the hub patient id is the subject"
        );
        assert_eq!(
            event["data"]["origin"]["message_id"],
            control_id(&conformance(file)?)?
        );
        assert!(
            event["data"]["patient"]["identifiers"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| id["value"] == LOCAL_PATIENT_ID)),
            "{event:#}"
        );
    }
    assert_eq!(
        got[0].json()["data"]["patient"]["name"]["kanji"],
        "架空 花子",
        "ISO-2022-JP names arrive as Unicode"
    );
    assert!(b.requests().is_empty(), "B is not covered by consent");
    assert!(c.requests().is_empty(), "C has no care relationship");

    let decisions = env
        .strings(&format!(
            "SELECT participant_id || ' ' || outcome || ' ' || count(*) FROM audit_log
             WHERE action = 'route' AND patient_id = '{PATIENT}'
             GROUP BY participant_id, outcome ORDER BY participant_id, outcome"
        ))
        .await?;
    assert_eq!(
        decisions,
        [
            "office-a delivered 3",
            "office-b denied_by_consent 3",
            "office-c no_care_relationship 3",
        ]
    );
    let recipients = env
        .strings("SELECT DISTINCT participant_id FROM deliveries")
        .await?;
    assert_eq!(recipients, ["office-a"]);

    let verify = env.renkei(&["audit", "verify"]).await?;
    assert!(verify.status.success(), "audit verify: {verify}");
    assert!(verify.stdout.contains("audit log intact"), "{verify}");
    Ok(())
}

#[tokio::test]
async fn refused_input_gets_ae_and_is_kept_without_harming_the_next() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    let bad = conformance("bad/unknown_event.hl7")?;
    let good = conformance(ADMIT)?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    let refused = mllp.send(&bad).await?;
    assert_eq!(refused.code, "AE", "{refused}");
    assert_eq!(refused.control_id, control_id(&bad)?, "{refused}");
    let err = refused
        .err
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("AE without ERR:\n{refused}"))?;
    assert!(err.contains("Z99"), "ERR must name the trigger: {err}");
    assert!(err.contains("MSH^1^9"), "ERR must locate MSH-9: {err}");
    // The same connection still works.
    send_accepted(&mut mllp, &good).await?;

    let rows = sqlx::query("SELECT adapter, location, reason, raw FROM rejected_inputs")
        .fetch_all(&env.db)
        .await?;
    assert_eq!(rows.len(), 1, "exactly the refused input is kept");
    let raw: Vec<u8> = rows[0].try_get("raw")?;
    let reason: String = rows[0].try_get("reason")?;
    let location: Option<String> = rows[0].try_get("location")?;
    assert_eq!(raw, bad, "the raw bytes are kept as received");
    assert!(reason.contains("Z99"), "{reason}");
    assert_eq!(location.as_deref(), Some("MSH-9"));
    assert_eq!(rows[0].try_get::<String, _>("adapter")?, "mllp");
    // Audit entries are chained by the hub's sealer a few milliseconds after commit.
    env.eventually("the refusal in the audit log", || async {
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE action = 'ingest' AND outcome = 'rejected'",
        )
        .fetch_one(&env.db)
        .await?;
        Ok((audited == 1).then_some(()))
    })
    .await?;

    let got = acknowledged(&env, &receiver, 1).await?;
    signed_canonical_event(&got[0], "inpatient.admitted")?;
    Ok(())
}

#[tokio::test]
async fn resent_message_is_acknowledged_but_published_once() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    let admit = conformance(ADMIT)?;
    let mut first = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut first, &admit).await?;
    let got = acknowledged(&env, &receiver, 1).await?;
    let event_id = got[0].event_id();
    // The EHR did not see the ACK and resends: on the same connection, and after
    // reconnecting.
    send_accepted(&mut first, &admit).await?;
    let mut second = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut second, &admit).await?;

    // Barrier: a later event from the same feed arrives, so anything published before
    // it would have been routed by now.
    send_accepted(&mut second, &conformance(TRANSFER)?).await?;
    env.eventually("the transfer delivered", || async {
        Ok(receiver
            .acknowledged()
            .iter()
            .any(|r| r.event_type() == "inpatient.transferred")
            .then_some(()))
    })
    .await?;

    let admissions: Vec<Received> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.event_type() == "inpatient.admitted")
        .collect();
    assert_eq!(admissions.len(), 1, "one webhook for the resent message");
    assert_eq!(admissions[0].event_id(), event_id);
    let ingested: i64 = sqlx::query_scalar("SELECT count(*) FROM ingests WHERE message_id = $1")
        .bind(control_id(&admit)?)
        .fetch_one(&env.db)
        .await?;
    assert_eq!(ingested, 1);
    let deliveries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE e.event_type = 'inpatient.admitted' AND d.participant_id = $1",
    )
    .bind(OFFICE)
    .fetch_one(&env.db)
    .await?;
    assert_eq!(deliveries, 1);
    Ok(())
}

#[tokio::test]
async fn reused_control_id_and_nul_bytes_are_refused_and_kept_without_harming_the_next()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;
    let mut mllp = MllpClient::connect(env.mllp).await?;

    let admit = conformance(ADMIT)?;
    send_accepted(&mut mllp, &admit).await?;
    env.eventually("the admission's publish recorded", || async {
        let published: bool = sqlx::query_scalar(
            "SELECT published_at IS NOT NULL FROM ingests WHERE message_id = $1",
        )
        .bind(control_id(&admit)?)
        .fetch_one(&env.db)
        .await?;
        Ok(published.then_some(()))
    })
    .await?;
    // Another message under the admission's control id (an EHR whose counter was
    // reset): answered AE, never silently taken for a resend.
    let reused = with_control_id(&conformance(DISCHARGE)?, &control_id(&admit)?)?;
    let ack = mllp.send(&reused).await?;
    assert_eq!(ack.code, "AE", "{ack}");
    let err = ack.err.as_deref().unwrap_or_default();
    assert!(err.contains("MSH^1^10"), "ERR must locate MSH-10: {ack}");
    assert!(err.contains("already used"), "{ack}");
    // A NUL byte (broken framing or encoding on the sender's side).
    let mut nul = with_control_id(&conformance(TRANSFER)?, "NUL-1")?;
    let pid = nul
        .windows(4)
        .position(|w| w == b"PID|")
        .ok_or_else(|| anyhow::anyhow!("no PID"))?;
    nul.insert(pid + 4, 0);
    let ack = mllp.send(&nul).await?;
    assert_eq!(ack.code, "AE", "{ack}");
    assert!(ack.text.contains("NUL byte"), "{ack}");
    // The same connection goes on.
    send_accepted(&mut mllp, &conformance(TRANSFER)?).await?;

    let got = acknowledged(&env, &receiver, 2).await?;
    let types: Vec<String> = got.iter().map(Received::event_type).collect();
    assert_eq!(types, ["inpatient.admitted", "inpatient.transferred"]);
    let kept: Vec<Vec<u8>> = sqlx::query_scalar("SELECT raw FROM rejected_inputs ORDER BY id")
        .fetch_all(&env.db)
        .await?;
    assert_eq!(
        kept,
        vec![reused, nul],
        "both refused inputs kept byte for byte"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_patient_is_audited_and_delivered_to_nobody() -> anyhow::Result<()> {
    let env = Env::with_settings(&[("RENKEI__ROUTER__CONCURRENCY", "1")]).await?;
    let receiver = Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    let text = String::from_utf8(conformance(TRANSFER)?)?;
    anyhow::ensure!(
        text.contains(LOCAL_PATIENT_ID),
        "the sample names the patient"
    );
    let stranger = with_control_id(
        text.replace(LOCAL_PATIENT_ID, "0000000001").as_bytes(),
        "STRANGER-1",
    )?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &stranger).await?;
    // Barrier: the registered patient's event is routed after the stranger's.
    send_accepted(&mut mllp, &conformance(ADMIT)?).await?;
    let got = acknowledged(&env, &receiver, 1).await?;
    assert_eq!(got[0].event_type(), "inpatient.admitted");

    let unknown: Vec<(Option<String>, serde_json::Value)> = env
        .eventually("the patient_unknown decision in the audit log", || async {
            let rows: Vec<(Option<String>, serde_json::Value)> = sqlx::query_as(
                "SELECT patient_id, detail FROM audit_log
                 WHERE action = 'route' AND outcome = 'patient_unknown'",
            )
            .fetch_all(&env.db)
            .await?;
            Ok((!rows.is_empty()).then_some(rows))
        })
        .await?;
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].0, None, "no hub patient id to name");
    assert!(
        !unknown[0].1.to_string().contains("0000000001"),
        "the audit detail must not echo the local id: {}",
        unknown[0].1
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "nobody got the stranger's event"
    );
    let deliveries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries d JOIN ingests i ON i.event_id = d.event_id
         WHERE i.message_id = 'STRANGER-1'",
    )
    .fetch_one(&env.db)
    .await?;
    assert_eq!(deliveries, 0);
    Ok(())
}
