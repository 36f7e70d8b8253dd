//! The broker goes away while the hub runs: the EHR is told `AR` (try again) — never
//! `AA` for a message that is not durable — and once the broker is back, the same
//! message is accepted and delivered.
//!
//! The same for the database: whether it is down or hangs, the EHR hears `AR` within
//! `database.acquire_timeout`, never silence.
//!
//! The hub reaches RabbitMQ or PostgreSQL through a TCP relay owned by the test
//! ([`Relay`]), so the test can cut or freeze the server without touching the servers
//! the other tests share.

use crate::checks::signed_canonical_event;
use crate::harness::Env;
use crate::mllp::{MllpClient, conformance};
use crate::relay::Relay;
use crate::spine::acknowledged;

#[tokio::test]
async fn broker_outage_is_answered_ar_and_the_resend_is_delivered() -> anyhow::Result<()> {
    let (relay, relayed_url) = Relay::for_url(&crate::harness::amqp_url()).await?;
    let env = Env::with_settings(&[("RENKEI__BUS__URL", &relayed_url)]).await?;
    let (receiver, mut mllp) = crate::spine::one_office_after_an_admission(&env).await?;

    relay.cut();
    let transfer = conformance("hl7/a02_transfer_utf8.hl7")?;
    let refused = mllp.send(&transfer).await?;
    assert_eq!(
        refused.code, "AR",
        "with the broker unreachable the hub must say AR, not accept:\n{refused}"
    );
    let published: Option<bool> =
        sqlx::query_scalar("SELECT published_at IS NOT NULL FROM ingests WHERE message_id = $1")
            .bind(crate::mllp::control_id(&transfer)?)
            .fetch_optional(&env.db)
            .await?;
    assert_ne!(published, Some(true), "nothing was confirmed by the broker");

    relay.restore().await?;
    // The EHR resends until accepted, as told by AR.
    crate::mllp::send_until_accepted(env.mllp, &transfer).await?;
    let got = acknowledged(&env, &receiver, 2).await?;
    signed_canonical_event(&got[1], "inpatient.transferred")?;
    let transfers = receiver
        .requests()
        .iter()
        .filter(|r| r.event_type() == "inpatient.transferred")
        .count();
    assert_eq!(transfers, 1, "the refused-then-resent message arrives once");
    relay.cut();
    Ok(())
}

/// The database is down (`cut`) or hangs (`freeze`): either way the EHR gets `AR`, not
/// silence, and the message is accepted and delivered once the database is back.
async fn database_fault_is_answered_ar(fault: fn(&Relay)) -> anyhow::Result<()> {
    let env = Env::with_settings(&[("RENKEI__DATABASE__ACQUIRE_TIMEOUT", "1s")]).await?;
    let (relay, relayed_url) = Relay::for_url(&env.db_url).await?;
    env.set("RENKEI__DATABASE__URL", &relayed_url);
    let (receiver, _) = crate::spine::one_office_after_an_admission(&env).await?;

    fault(&relay);
    let transfer = conformance("hl7/a02_transfer_utf8.hl7")?;
    // A fresh connection, as an EHR that connects per message: the answer must come
    // while the database is still out (the client gives up after its deadline).
    let mut mllp = MllpClient::connect(env.mllp).await?;
    let refused = mllp.send(&transfer).await?;
    assert_eq!(
        refused.code, "AR",
        "with the database out the hub must say AR:\n{refused}"
    );
    // And again, with the first attempt's work still queued ahead of it.
    let refused = mllp.send(&transfer).await?;
    assert_eq!(refused.code, "AR", "{refused}");

    relay.restore().await?;
    crate::mllp::send_until_accepted(env.mllp, &transfer).await?;
    let got = acknowledged(&env, &receiver, 2).await?;
    signed_canonical_event(&got[1], "inpatient.transferred")?;
    Ok(())
}

#[tokio::test]
async fn database_down_is_answered_ar_within_the_acquire_timeout() -> anyhow::Result<()> {
    database_fault_is_answered_ar(Relay::cut).await
}

#[tokio::test]
async fn database_that_hangs_is_answered_ar_within_the_acquire_timeout() -> anyhow::Result<()> {
    database_fault_is_answered_ar(Relay::freeze).await
}
