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

/// Every case of the conformance set through `renkei normalize` with nothing but the
/// file: its format is recognised, a good file gives its event type, a bad one exits 2
/// naming the place at fault.
#[tokio::test]
async fn normalize_reads_every_format_of_the_conformance_set_by_sniffing() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let dir = conformance_dir()?;
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("EXPECTED.json"))?)?;
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, facts) in &expected {
        if facts["format"] == "ss-mix2" {
            continue; // a storage tree, read by its own source (see the ssmix2 tests)
        }
        let path = dir.join(name).to_string_lossy().into_owned();
        let out = env.renkei(&["normalize", &path]).await?;
        match (facts.get("error"), facts.get("type")) {
            (Some(_), _) => {
                if out.status.code() != Some(2) || !out.stdout.is_empty() {
                    failures.push(format!("{name}: expected a refusal, got {out}"));
                } else if !out.stderr.contains(": ") {
                    failures.push(format!("{name}: the refusal names no place: {out}"));
                }
            }
            (None, Some(kind)) => {
                let event: serde_json::Value = match serde_json::from_str(&out.stdout) {
                    Ok(event) => event,
                    Err(e) => {
                        failures.push(format!("{name}: no event ({e}): {out}"));
                        continue;
                    }
                };
                if event["type"] != *kind || event["data"]["origin"]["format"] != facts["format"] {
                    failures.push(format!("{name}: expected {kind}, got {}", event["type"]));
                }
            }
            (None, None) => continue,
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 20, "only {checked} cases checked");
    Ok(())
}

/// A vendor's folder of sample exports: each file's event and the items a receiving
/// office needs that it lacks; a refused file makes the exit status 2.
#[tokio::test]
async fn normalize_report_lists_each_files_items_and_what_is_missing() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let dir = conformance_dir()?;
    let out = env
        .renkei(&["normalize", "--report", &dir.join("fhir").to_string_lossy()])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("admit_message.json (fhir)\n  inpatient.admitted: carries"),
        "{out}"
    );
    assert!(out.stdout.contains("missing: patient.address"), "{out}");
    assert!(out.stdout.contains("7 file(s), 7 read, 0 refused"), "{out}");

    let out = env
        .renkei(&["normalize", "--report", &dir.join("bad").to_string_lossy()])
        .await?;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stdout
            .contains("csv_impossible_date.CSV (care-csv)\n  refused: "),
        "{out}"
    );
    Ok(())
}
