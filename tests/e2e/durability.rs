//! Nothing accepted is lost: not when the hub is killed right after acknowledging, not
//! when it is killed while a delivery waits for its retry, not when the broker drops
//! its connections.

use std::collections::BTreeSet;

use crate::checks::signed_canonical_event;
use crate::harness::{Backend, Env, Roles};
use crate::mllp::{MllpClient, conformance, send_accepted, send_until_accepted};
use crate::receiver::Receiver;
use crate::registry::single_office;
use crate::spine::acknowledged;

#[tokio::test]
async fn accepted_event_survives_hub_kill() -> anyhow::Result<()> {
    accepted_event_survives_a_kill(Backend::Postgres).await
}

#[tokio::test]
async fn accepted_event_survives_hub_kill_embedded() -> anyhow::Result<()> {
    accepted_event_survives_a_kill(Backend::Embedded).await
}

async fn accepted_event_survives_a_kill(backend: Backend) -> anyhow::Result<()> {
    let env = Env::on(backend, &[]).await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;

    // Only ingest runs: once the ACK says AA, the event exists only on the bus.
    env.start_hub(Roles::MllpOnly).await?;
    let admit = conformance("hl7/a01_admit_iso2022jp.hl7")?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &admit).await?;
    env.kill_hubs();
    drop(mllp);

    let [accepted] = env.uuids("SELECT event_id FROM ingests").await?[..] else {
        anyhow::bail!("one input accepted");
    };
    let routed = env.count("SELECT count(*) FROM events").await?;
    assert_eq!(routed, 0, "nothing was routed before the kill");

    env.start_hub(Roles::All).await?;
    let got = acknowledged(&env, &receiver, 1).await?;
    let event = signed_canonical_event(&got[0], "inpatient.admitted")?;
    assert_eq!(event["id"], accepted.to_string());
    Ok(())
}

#[tokio::test]
async fn waiting_retry_survives_hub_restart() -> anyhow::Result<()> {
    waiting_retry_survives_a_restart(Backend::Postgres).await
}

#[tokio::test]
async fn waiting_retry_survives_hub_restart_embedded() -> anyhow::Result<()> {
    waiting_retry_survives_a_restart(Backend::Embedded).await
}

async fn waiting_retry_survives_a_restart(backend: Backend) -> anyhow::Result<()> {
    let env = Env::on(backend, &[]).await?;
    let receiver = Receiver::start().await?;
    receiver.answer_with(503);
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    env.eventually("the first failed attempt recorded", || async {
        let failed = env
            .count("SELECT count(*) FROM delivery_attempts WHERE status_code = 503 AND outcome = 'retry'")
            .await?;
        Ok((failed >= 1).then_some(()))
    })
    .await?;
    // The delivery now waits on the bus for its retry; the hub dies.
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
    let attempts = env
        .eventually("the delivery recorded as delivered", || async {
            let delivered = env
                .count("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                .await?;
            let attempts = env.count("SELECT count(*) FROM delivery_attempts").await?;
            Ok((delivered == 1).then_some(attempts))
        })
        .await?;
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
    let (receiver, _mllp) = crate::spine::one_office_after_an_admission(&env).await?;

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

/// Messages in the prefix's poison queue (where the broker puts messages bounced more
/// often than the queue's delivery limit).
async fn dead_lettered(env: &Env) -> anyhow::Result<u32> {
    let conn = lapin::Connection::connect(
        &crate::harness::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = conn.create_channel().await?;
    let queue = channel
        .queue_declare(
            env.topology().dead_queue().as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..lapin::options::QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(queue.message_count())
}

/// How often the hub has logged `needle`.
fn logged(env: &Env, needle: &str) -> usize {
    env.hub_logs().matches(needle).count()
}

const RETRIED_IN_PLACE: &str = "retrying it in place";

#[tokio::test]
async fn accepted_event_survives_a_database_failure_while_routing() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    // Routing cannot be committed while the table is away; ingest still can.
    sqlx::query("ALTER TABLE deliveries RENAME TO deliveries_away")
        .execute(&env.db)
        .await?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;

    // Long enough for far more than the queue's delivery limit of bounces, had the
    // router bounced the message through the queue instead of waiting with it.
    env.eventually("the router retrying in place four times", || async {
        Ok((logged(&env, RETRIED_IN_PLACE) >= 4).then_some(()))
    })
    .await?;
    assert_eq!(dead_lettered(&env).await?, 0, "nothing dead-lettered");

    sqlx::query("ALTER TABLE deliveries_away RENAME TO deliveries")
        .execute(&env.db)
        .await?;
    let got = acknowledged(&env, &receiver, 1).await?;
    signed_canonical_event(&got[0], "inpatient.admitted")?;
    assert_eq!(dead_lettered(&env).await?, 0, "nothing dead-lettered");
    Ok(())
}

#[tokio::test]
async fn a_retry_that_cannot_be_parked_still_waits_its_turn() -> anyhow::Result<()> {
    use lapin::options::QueueBindOptions;
    use lapin::types::FieldTable;
    use renkei_hub::bus::topology::Topology;

    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    receiver.answer_with(503);
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    // Retries cannot be parked on the broker: no retry queue is reachable.
    let topology = env.topology();
    let conn = lapin::Connection::connect(
        &crate::harness::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = conn.create_channel().await?;
    for delay in crate::harness::RETRY_SCHEDULE {
        channel
            .queue_unbind(
                topology.retry_queue(delay).as_str().into(),
                topology.retry_exchange().as_str().into(),
                Topology::retry_key(delay).as_str().into(),
                FieldTable::default(),
            )
            .await?;
    }

    let mut mllp = MllpClient::connect(env.mllp).await?;
    send_accepted(&mut mllp, &conformance("hl7/a01_admit_iso2022jp.hl7")?).await?;
    let attempts_so_far = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts")
            .fetch_one(&env.db)
            .await?;
        anyhow::Ok(n)
    };
    env.eventually("three refused attempts", || async {
        Ok((attempts_so_far().await? >= 3).then_some(()))
    })
    .await?;
    assert!(logged(&env, RETRIED_IN_PLACE) >= 1, "{}", env.hub_logs());

    receiver.answer_with(200);
    for delay in crate::harness::RETRY_SCHEDULE {
        channel
            .queue_bind(
                topology.retry_queue(delay).as_str().into(),
                topology.retry_exchange().as_str().into(),
                Topology::retry_key(delay).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = conn.close(200, "bye".into()).await;
    acknowledged(&env, &receiver, 1).await?;
    let status: String = env
        .eventually("the delivery recorded as delivered", || async {
            let status: String = sqlx::query_scalar("SELECT status FROM deliveries")
                .fetch_one(&env.db)
                .await?;
            Ok((status == "delivered").then_some(status))
        })
        .await?;
    assert_eq!(status, "delivered");

    // Each attempt waited at least its turn in the schedule (less the jitter, which
    // only shortens a wait by up to a fifth, and less the 100 ms early a retry may
    // arrive and still be attempted), although no retry could be parked.
    let started: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT started_at FROM delivery_attempts ORDER BY attempt")
            .fetch_all(&env.db)
            .await?;
    assert_eq!(
        started.len(),
        4,
        "three refused attempts, then the delivery"
    );
    for (k, pair) in started.windows(2).enumerate() {
        let gap = (pair[1] - pair[0]).to_std()?;
        let due = crate::harness::RETRY_SCHEDULE[k]
            .mul_f64(0.8)
            .saturating_sub(std::time::Duration::from_millis(100));
        assert!(
            gap >= due,
            "attempt {} came {gap:?} after the one before; due after {due:?}",
            k + 2
        );
    }
    Ok(())
}
