//! Nothing accepted is lost: not when the hub is killed right after acknowledging, not
//! when it is killed while a delivery waits for its retry, not when the broker drops
//! its connections.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::checks::signed_canonical_event;
use crate::harness::{Env, Roles};
use crate::mllp::{MllpClient, conformance, send_accepted, send_until_accepted};
use crate::receiver::Receiver;
use crate::registry::single_office;
use crate::spine::acknowledged;

#[tokio::test]
async fn accepted_event_survives_hub_kill() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;

    // Only ingest runs: once the ACK says AA, the event exists only on the bus.
    env.start_hub(Roles::MllpOnly).await?;
    let admit = conformance("hl7/a01_admit_iso2022jp.hl7")?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &admit).await?;
    env.kill_hubs();
    drop(mllp);

    let accepted: Uuid = sqlx::query_scalar("SELECT event_id FROM ingests")
        .fetch_one(&env.db)
        .await?;
    let routed: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&env.db)
        .await?;
    assert_eq!(routed, 0, "nothing was routed before the kill");

    env.start_hub(Roles::All).await?;
    let got = acknowledged(&env, &receiver, 1).await?;
    let event = signed_canonical_event(&got[0], "inpatient.admitted")?;
    assert_eq!(event["id"], accepted.to_string());
    Ok(())
}

#[tokio::test]
async fn waiting_retry_survives_hub_restart() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    receiver.answer_with(503);
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    env.eventually("the first failed attempt recorded", || async {
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM delivery_attempts WHERE status_code = 503 AND outcome = 'retry'",
        )
        .fetch_one(&env.db)
        .await?;
        Ok((failed >= 1).then_some(()))
    })
    .await?;
    // The delivery now waits on the broker for its retry; the hub dies.
    env.kill_hubs();
    drop(mllp);
    receiver.answer_with(200);
    env.start_hub(Roles::All).await?;

    let got = acknowledged(&env, &receiver, 1).await?;
    signed_canonical_event(&got[0], "inpatient.admitted")?;
    let requests = receiver.requests();
    assert_eq!(requests[0].answered, 503, "the first attempt was refused");
    assert!(
        requests.iter().all(|r| r.event_id() == got[0].event_id()),
        "every attempt carries the same event id"
    );
    let (status, attempts): (String, i64) = env
        .eventually("the delivery recorded as delivered", || async {
            let row: (String, i64) = sqlx::query_as(
                "SELECT d.status, (SELECT count(*) FROM delivery_attempts a WHERE a.delivery_id = d.id)
                 FROM deliveries d",
            )
            .fetch_one(&env.db)
            .await?;
            Ok((row.0 == "delivered").then_some(row))
        })
        .await?;
    assert_eq!(status, "delivered");
    assert!(attempts >= 2, "attempts recorded: {attempts}");
    Ok(())
}

/// `rabbitmqctl` (or `$RENKEI_TEST_RABBITMQCTL`) with `args`; fails loudly if it cannot run.
async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let program = std::env::var("RENKEI_TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let output = tokio::process::Command::new(&program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run {program} (set RENKEI_TEST_RABBITMQCTL): {e}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The broker's ids of the connections whose client properties name `prefix` (the hub
/// names its connections `renkei <prefix> pid <pid>`), as `close_connection` takes them.
async fn connections_of(prefix: &str) -> anyhow::Result<BTreeSet<String>> {
    // One line per connection: `<rabbit@host.1.2.3>\t[{"product","lapin"},…]`.
    let listed = rabbitmqctl(&["list_connections", "pid", "client_properties", "--quiet"]).await?;
    Ok(listed
        .lines()
        .filter(|line| line.contains(prefix))
        .filter_map(|line| line.split('\t').next())
        .filter(|pid| pid.starts_with('<'))
        .map(str::to_owned)
        .collect())
}

#[tokio::test]
async fn hub_reconnects_after_broker_connection_loss() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    // Traffic first, so publisher and consumers are all in use.
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    acknowledged(&env, &receiver, 1).await?;

    let before = connections_of(&env.prefix).await?;
    assert!(
        !before.is_empty(),
        "no broker connection is named after the prefix {}",
        env.prefix
    );
    for pid in &before {
        rabbitmqctl(&["close_connection", pid, "e2e: broker connection lost"]).await?;
    }

    // The EHR keeps sending, resending while told AR.
    send_until_accepted(env.mllp, &conformance("hl7/a02_transfer_utf8.hl7")?).await?;
    let got = acknowledged(&env, &receiver, 2).await?;
    signed_canonical_event(&got[1], "inpatient.transferred")?;

    let after = connections_of(&env.prefix).await?;
    assert!(
        !after.is_empty() && after.is_disjoint(&before),
        "the hub should be on new connections: before {before:?}, after {after:?}"
    );
    Ok(())
}
