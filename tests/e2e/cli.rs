//! `renkei normalize FILE`, as a vendor checks a feed: the canonical event and exit 0,
//! or the field at fault and exit 2. It needs no broker and no database.

use crate::harness::Env;
use crate::mllp::conformance_dir;

#[tokio::test]
async fn normalize_prints_the_event_or_names_the_field_at_fault() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let dir = conformance_dir()?;
    let good = dir.join("hl7/a01_admit_iso2022jp.hl7");
    let out = env.renkei(&["normalize", &good.to_string_lossy()]).await?;
    assert_eq!(out.status.code(), Some(0), "{out}");
    let event: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "inpatient.admitted");
    assert_eq!(event["data"]["patient"]["name"]["kanji"], "架空 花子");

    let bad = dir.join("bad/unknown_event.hl7");
    let out = env.renkei(&["normalize", &bad.to_string_lossy()]).await?;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stdout.is_empty(), "no event for refused input: {out}");
    assert!(out.stderr.contains("MSH-9"), "the field at fault: {out}");

    let missing = dir.join("no/such/file.hl7");
    let out = env
        .renkei(&["normalize", &missing.to_string_lossy()])
        .await?;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("cannot read"), "{out}");
    Ok(())
}
