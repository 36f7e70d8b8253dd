//! Consent is checked again at every delivery attempt: a withdrawal stops deliveries
//! still waiting.

use chrono::{SecondsFormat, Utc};
use sqlx::Row;

use crate::harness::{Env, Roles};
use crate::mllp::{MllpClient, conformance, send_accepted};
use crate::receiver::Receiver;
use crate::registry::{CONSENT, OFFICE, PATIENT, single_office};

#[tokio::test]
async fn withdrawn_consent_stops_pending_delivery() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    receiver.answer_with(503);
    let mut registry = single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    env.eventually(
        "a failed attempt, the delivery waiting to retry",
        || async {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM deliveries WHERE attempts >= 1")
                    .fetch_optional(&env.db)
                    .await?;
            Ok((status.as_deref() == Some("retrying")).then_some(()))
        },
    )
    .await?;

    // The patient withdraws consent; the receiver comes back.
    let withdrawn_at =
        (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    registry.consent.withdrawn_at = Some(withdrawn_at);
    let applied = env.apply(&registry).await?;
    assert!(
        applied
            .stdout
            .lines()
            .any(|l| l == format!("updated   consent {CONSENT}")),
        "{applied}"
    );
    receiver.answer_with(200);

    let row = env
        .eventually("the waiting delivery cancelled", || async {
            let row = sqlx::query("SELECT status, last_error FROM deliveries")
                .fetch_one(&env.db)
                .await?;
            let status: String = row.try_get("status")?;
            anyhow::ensure!(
                status != "delivered",
                "delivered after the consent was withdrawn"
            );
            Ok((status == "cancelled").then_some(row))
        })
        .await?;
    let reason: Option<String> = row.try_get("last_error")?;
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("consent")),
        "{reason:?}"
    );
    assert!(
        receiver.acknowledged().is_empty(),
        "nothing reaches the office once consent is withdrawn"
    );
    // Audit entries are chained by the hub's sealer a few milliseconds after commit.
    env.eventually("the cancellation in the audit log", || async {
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log
             WHERE action = 'deliver' AND outcome = 'cancelled_by_consent'
               AND participant_id = $1 AND patient_id = $2",
        )
        .bind(OFFICE)
        .bind(PATIENT)
        .fetch_one(&env.db)
        .await?;
        Ok((audited == 1).then_some(()))
    })
    .await?;
    Ok(())
}
