//! `renkei demo` on a machine where the configured database and broker point at
//! nothing: it runs on the embedded default in a folder of its own and tells the story
//! the sample region allows.

use crate::harness::{Backend, Env};

#[tokio::test]
async fn the_demo_needs_no_servers_and_tells_the_story_the_region_allows() -> anyhow::Result<()> {
    let env = Env::on(
        Backend::Embedded,
        &[
            (
                "RENKEI__DATABASE__URL",
                "postgres://nobody@127.0.0.1:1/none",
            ),
            ("RENKEI__BUS__URL", "amqp://nobody:nothing@127.0.0.1:1/%2f"),
        ],
    )
    .await?;
    let demo = env.renkei(&["demo"]).await?;
    assert!(demo.status.success(), "{demo}");
    let lines: Vec<&str> = demo.stdout.lines().collect();
    let count = |needle: &[&str]| {
        lines
            .iter()
            .filter(|l| needle.iter().all(|n| l.contains(n)))
            .count()
    };
    for (n, event_type) in [
        "inpatient.admitted",
        "inpatient.transferred",
        "inpatient.discharged",
    ]
    .iter()
    .enumerate()
    {
        let sequence = format!("sequence {}", n + 1);
        assert_eq!(
            count(&[
                "✓",
                "kyotaku-sakura",
                event_type,
                &sequence,
                "signature verified"
            ]),
            1,
            "the care manager gets each event once, signed, in order:\n{demo}"
        );
    }
    assert_eq!(count(&["AA in"]), 3, "{demo}");
    assert_eq!(count(&["✓"]), 3, "nobody else receives anything:\n{demo}");
    assert_eq!(count(&["✗", "houkan-aoba", "consent"]), 3, "{demo}");
    assert_eq!(
        count(&["✗", "kyotaku-himawari", "care relationship"]),
        3,
        "{demo}"
    );
    assert_eq!(count(&["hash chain intact"]), 1, "{demo}");
    assert_eq!(count(&["done in"]), 1, "{demo}");
    Ok(())
}
