//! The SS-MIX2 source with the real binary: a hospital's standardized storage is
//! polled, its ADT records reach the consented care office, the prescription beside
//! them and the record deleted before it was seen publish nothing, and a restart
//! neither resends nor skips.

use std::path::Path;

use crate::harness::{Env, Roles};
use crate::mllp::conformance_dir;
use crate::receiver::Receiver;

const HOSPITAL: &str = "1319999995";

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn region(receiver: &Receiver) -> String {
    format!(
        r#"
[[facilities]]
code = "{HOSPITAL}"
name = "Mihon Hospital"
kind = "hospital"

[[facilities]]
code = "1370000005"
name = "Mihon care office"
kind = "care_management"

[[participants]]
id = "office"
facility = "1370000005"
name = "Care managers"

[[endpoints]]
participant = "office"
name = "main"
url = "{url}"
secrets = ["{secret}"]

[[subscriptions]]
participant = "office"
name = "adt"
endpoint = "main"
event_types = ["inpatient.admitted", "inpatient.transferred", "inpatient.discharged", "inpatient.cancelled", "patient.updated"]
source_facilities = ["{HOSPITAL}"]

[[patients]]
id = "P-S1"
identifiers = [{{ facility = "{HOSPITAL}", value = "0000512001" }}]

[[patients]]
id = "P-S2"
identifiers = [{{ facility = "{HOSPITAL}", value = "7770012" }}]

[[care_relationships]]
patient = "P-S1"
participant = "office"
role = "care_manager"
valid_from = "2025-01-01"

[[care_relationships]]
patient = "P-S2"
participant = "office"
role = "care_manager"
valid_from = "2025-01-01"

[[consents]]
id = "c-s1"
patient = "P-S1"
scope = "facilities"
facilities = ["{HOSPITAL}", "1370000005"]
basis = "written"
valid_from = "2025-01-01T00:00:00Z"

[[consents]]
id = "c-s2"
patient = "P-S2"
scope = "facilities"
facilities = ["{HOSPITAL}", "1370000005"]
basis = "written"
valid_from = "2025-01-01T00:00:00Z"
"#,
        url = receiver.url(),
        secret = receiver.secret(),
    )
}

#[tokio::test]
async fn a_storage_trees_adt_records_reach_the_office_once_across_a_restart() -> anyhow::Result<()>
{
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    let folder = tempfile::tempdir()?;
    let document = folder.path().join("region.toml");
    std::fs::write(&document, region(&receiver))?;
    let applied = env
        .renkei(&["admin", "apply", "-f", &document.to_string_lossy()])
        .await?;
    assert!(applied.status.success(), "{applied}");
    let root = folder.path().join("storage");
    copy_tree(&conformance_dir()?.join("ss-mix2"), &root)?;
    env.set("RENKEI__SOURCES__STORAGE__TYPE", "ss-mix2");
    env.set("RENKEI__SOURCES__STORAGE__ROOT", &root.to_string_lossy());
    env.set("RENKEI__SOURCES__STORAGE__FACILITY", HOSPITAL);
    env.set("RENKEI__SOURCES__STORAGE__POLL_INTERVAL", "100ms");
    env.set("RENKEI__SOURCES__STORAGE__SETTLE_TIME", "0s");
    env.start_hub(Roles::All).await?;

    // ADT-00 A08, ADT-22 A01, ADT-42 A02, ADT-52 A03 of one patient, and the A11 of the
    // other; not the OMP-01 prescription, not the admission deleted before it was seen.
    let got = crate::spine::acknowledged(&env, &receiver, 5).await?;
    let mut types: Vec<String> = got.iter().map(|r| r.event_type()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "inpatient.admitted",
            "inpatient.cancelled",
            "inpatient.discharged",
            "inpatient.transferred",
            "patient.updated"
        ]
    );
    assert!(
        got.iter()
            .all(|r| r.json()["data"]["origin"]["format"] == "ss-mix2")
    );

    // Restarted, it resends nothing; a record stored while it was down comes through.
    env.kill_hubs();
    let fresh = root.join("000/051/0000512001/20250527/ADT-00");
    std::fs::create_dir_all(&fresh)?;
    let a08 = std::fs::read(root.join(
        "000/051/0000512001/-/ADT-00/0000512001_-_ADT-00_999999999999999_20250512083015123_-_1",
    ))?;
    std::fs::write(
        fresh.join("0000512001_20250527_ADT-00_999999999999999_20250527090000000_-_1"),
        crate::mllp::with_control_id(&a08, "20250527000105")?,
    )?;
    env.start_hub(Roles::All).await?;
    let got = crate::spine::acknowledged(&env, &receiver, 6).await?;
    assert_eq!(got.len(), 6, "one more, nothing resent");
    Ok(())
}
