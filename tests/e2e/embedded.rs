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
