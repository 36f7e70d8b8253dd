//! An `AA` is a promise: the acknowledged content reaches its recipients. A sender that
//! then reuses the control id for other content (a counter reset, two interfaces
//! sharing one id range) is told `AE`, and that content is kept as a rejected input —
//! back to back, and across a SIGKILL right after the `AA`, when nothing but the
//! database remembers what was answered.

use std::collections::BTreeSet;

use crate::harness::{Env, Roles};
use crate::mllp::{MllpClient, conformance, send_accepted, with_control_id};
use crate::receiver::Receiver;
use crate::registry::single_office;

const ADMIT: &str = "hl7/a01_admit_iso2022jp.hl7";
const DISCHARGE: &str = "hl7/a03_discharge_iso2022jp.hl7";

/// An admission and a discharge under one control id: the same sender, other content.
fn pair(control_id: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    Ok((
        with_control_id(&conformance(ADMIT)?, control_id)?,
        with_control_id(&conformance(DISCHARGE)?, control_id)?,
    ))
}

/// Sends the reuse and insists on `AE` naming MSH-10.
async fn refused_as_reused(mllp: &mut MllpClient, reused: &[u8]) -> anyhow::Result<()> {
    let ack = mllp.send(reused).await?;
    anyhow::ensure!(
        ack.code == "AE" && ack.err.as_deref().unwrap_or_default().contains("MSH^1^10"),
        "content reusing an acknowledged control id must be refused naming MSH-10, got:\n{ack}"
    );
    Ok(())
}

/// Every acknowledged admission reached the office (by control id), and every reuse
/// was kept byte for byte.
async fn everything_accounted_for(
    env: &Env,
    receiver: &Receiver,
    acknowledged_ids: &BTreeSet<String>,
    reused: &BTreeSet<Vec<u8>>,
) -> anyhow::Result<()> {
    env.eventually("every acknowledged admission delivered", || async {
        let delivered: BTreeSet<String> = receiver
            .acknowledged()
            .iter()
            .map(|r| {
                r.json()["data"]["origin"]["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        Ok(acknowledged_ids.is_subset(&delivered).then_some(()))
    })
    .await?;
    let discharges = receiver
        .requests()
        .iter()
        .filter(|r| r.event_type() == "inpatient.discharged")
        .count();
    assert_eq!(discharges, 0, "no refused content was delivered");
    let kept: BTreeSet<Vec<u8>> = sqlx::query_scalar("SELECT raw FROM rejected_inputs")
        .fetch_all(&env.db)
        .await?
        .into_iter()
        .collect();
    assert_eq!(&kept, reused, "every refused reuse kept byte for byte");
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'message_id' FROM audit_log WHERE action = 'ingest' AND outcome = 'accepted'
         UNION ALL
         SELECT detail->>'message_id' FROM audit_pending WHERE action = 'ingest' AND outcome = 'accepted'
         ORDER BY 1",
    )
    .fetch_all(&env.db)
    .await?;
    assert!(
        acknowledged_ids
            .iter()
            .all(|id| audited.iter().filter(|a| *a == id).count() == 1),
        "each acknowledged message audited as accepted once: {audited:?}"
    );
    Ok(())
}

#[tokio::test]
async fn content_reusing_an_acknowledged_control_id_back_to_back_is_refused_and_kept()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;
    let mut mllp = MllpClient::connect(env.mllp).await?;

    let (mut acknowledged_ids, mut reused) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..40 {
        let id = format!("PAIR-{i}");
        let (admission, discharge) = pair(&id)?;
        send_accepted(&mut mllp, &admission).await?;
        acknowledged_ids.insert(id);
        // At once, before anything else the hub does for the admission.
        refused_as_reused(&mut mllp, &discharge).await?;
        reused.insert(discharge);
    }
    everything_accounted_for(&env, &receiver, &acknowledged_ids, &reused).await
}

#[tokio::test]
async fn content_reusing_a_control_id_acknowledged_just_before_a_hub_kill_is_refused_and_kept()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;

    let (mut acknowledged_ids, mut reused) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..3 {
        env.start_hub(Roles::All).await?;
        let id = format!("KILLED-{i}");
        let (admission, discharge) = pair(&id)?;
        let mut mllp = MllpClient::connect(env.mllp).await?;
        send_accepted(&mut mllp, &admission).await?;
        // SIGKILL right after the AA: whatever the hub had not written is gone.
        env.kill_hubs();
        drop(mllp);
        acknowledged_ids.insert(id);

        env.start_hub(Roles::All).await?;
        let mut mllp = MllpClient::connect(env.mllp).await?;
        refused_as_reused(&mut mllp, &discharge).await?;
        reused.insert(discharge);
        env.kill_hubs();
    }
    env.start_hub(Roles::All).await?;
    everything_accounted_for(&env, &receiver, &acknowledged_ids, &reused).await
}
