//! The embedded default (one SQLite file, the in-process bus) keeps its file to one hub
//! process, and says why when a second one tries; a configuration that mixes the
//! embedded bus with PostgreSQL is refused before anything starts.

use crate::harness::{Backend, Env, Roles};

#[tokio::test]
async fn a_second_hub_on_the_same_file_is_refused_with_the_reason() -> anyhow::Result<()> {
    let env = Env::on(Backend::Embedded, &[]).await?;
    env.start_hub(Roles::All).await?;

    let second = env.renkei(&["up"]).await?;
    assert!(!second.status.success(), "{second}");
    assert!(
        second.stderr.contains("already uses") && second.stderr.contains("amqp://"),
        "the refusal says which file, that another process holds it, and what to use instead: {second}"
    );

    // A replay from the command line needs the queue the running hub holds: it is
    // pointed at the admin API instead.
    let replay = env
        .renkei(&[
            "deliveries",
            "replay",
            "0190f5d2-0000-7000-8000-000000000000",
        ])
        .await?;
    assert!(!replay.status.success(), "{replay}");
    assert!(replay.stderr.contains("/v1/deliveries/replay"), "{replay}");

    // The first hub is unharmed.
    let verify = env.renkei(&["audit", "verify"]).await?;
    assert!(verify.status.success(), "{verify}");
    Ok(())
}

#[tokio::test]
async fn the_embedded_bus_with_postgresql_is_refused_naming_the_keys() -> anyhow::Result<()> {
    let env = Env::on(
        Backend::Embedded,
        &[(
            "RENKEI__DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )],
    )
    .await?;
    let up = env.renkei(&["up"]).await?;
    assert!(!up.status.success(), "{up}");
    assert!(
        up.stderr.contains("bus.url") && up.stderr.contains("sqlite://"),
        "{up}"
    );
    Ok(())
}

#[tokio::test]
async fn moving_to_postgresql_anchors_the_old_audit_chain_and_refuses_a_broken_one()
-> anyhow::Result<()> {
    use sqlx::Connection as _;
    use sqlx::Executor as _;
    // The region's old home: the demo's file, kept in a folder of the test's.
    let env = Env::new().await?;
    let old_dir = tempfile::tempdir()?;
    let old_dir = old_dir.path().join("old");
    let old_dir_text = old_dir.to_string_lossy().into_owned();
    let demo = env.renkei(&["demo", "--dir", &old_dir_text]).await?;
    assert!(demo.status.success(), "{demo}");
    let old = format!("sqlite://{}", old_dir.join("renkei.db").display());

    // Its chain is anchored in the new PostgreSQL database's own chain.
    let anchored = env.renkei(&["audit", "anchor", "--from", &old]).await?;
    assert!(anchored.status.success(), "{anchored}");
    let mut file = sqlx::SqliteConnection::connect(&old).await?;
    let (seq, hash): (i64, Vec<u8>) = sqlx::query_as("SELECT seq, hash FROM audit_head")
        .fetch_one(&mut file)
        .await?;
    let recorded: (i64, String) = sqlx::query_as(
        "SELECT (detail->>'previous_head_seq')::bigint, detail->>'previous_head_hash'
         FROM audit_log WHERE action = 'audit.anchor'",
    )
    .fetch_one(&env.db)
    .await?;
    assert_eq!(recorded, (seq, hex::encode(&hash)));
    let verify = env.renkei(&["audit", "verify"]).await?;
    assert!(verify.status.success(), "{verify}");

    // An old log someone altered is not anchored.
    file.execute("DROP TRIGGER audit_log_no_update").await?;
    file.execute("UPDATE audit_log SET outcome = 'delivered' WHERE outcome = 'denied_by_consent'")
        .await?;
    let refused = env.renkei(&["audit", "anchor", "--from", &old]).await?;
    assert!(!refused.status.success(), "{refused}");
    assert!(
        refused.stdout.contains("BROKEN") && refused.stdout.contains("not anchored"),
        "{refused}"
    );
    Ok(())
}
