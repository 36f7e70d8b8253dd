//! Sources come from the configuration: every `[sources.<name>]` section runs the kind
//! its `type` names, and a section that cannot work stops the hub before it starts.

use sqlx::Row;

use crate::harness::{Env, Roles, free_addr};
use crate::mllp::{MllpClient, conformance, send_until_accepted};

const ADMIT: &str = "hl7/a01_admit_iso2022jp.hl7";

#[tokio::test]
async fn a_misconfigured_source_stops_the_hub_at_start_naming_it() -> anyhow::Result<()> {
    let env = Env::new().await?;
    env.set("RENKEI__SOURCES__MLLP__MAX_CONECTIONS", "3");
    let out = env.renkei(&["up"]).await?;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("sources.mllp") && out.stderr.contains("max_conections"),
        "the section and the setting are named: {out}"
    );

    let env = Env::new().await?;
    env.set("RENKEI__SOURCES__FAX__TYPE", "fax");
    let out = env.renkei(&["up"]).await?;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("sources.fax: `fax` is not a source kind (known: mllp"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_named_source_runs_beside_the_default_and_records_its_name() -> anyhow::Result<()>
{
    let env = Env::new().await?;
    let ward = free_addr()?;
    env.set("RENKEI__SOURCES__WARD_B__TYPE", "mllp");
    env.set("RENKEI__SOURCES__WARD_B__LISTEN", &ward.to_string());
    env.start_hub(Roles::All).await?;

    // Both listeners take messages.
    send_until_accepted(env.mllp, &conformance(ADMIT)?).await?;
    send_until_accepted(ward, &conformance("hl7/a02_transfer_utf8.hl7")?).await?;
    // A refusal through the second is kept under its name.
    let mut client = MllpClient::connect(ward).await?;
    let refused = client.send(&conformance("bad/unknown_event.hl7")?).await?;
    assert_eq!(refused.code, "AE", "{refused}");
    let adapters: Vec<String> = sqlx::query("SELECT adapter FROM rejected_inputs")
        .fetch_all(&env.db)
        .await?
        .iter()
        .map(|row| row.try_get("adapter"))
        .collect::<Result<_, _>>()?;
    assert_eq!(adapters, ["ward_b"]);
    Ok(())
}

#[tokio::test]
async fn a_file_dropped_in_a_facility_folder_reaches_the_consented_office_and_a_bad_one_is_kept_aside()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = crate::receiver::Receiver::start().await?;
    crate::registry::single_office(&env, &receiver).await?;
    let folder = tempfile::tempdir()?;
    let drop = folder.path().to_string_lossy().into_owned();
    env.set("RENKEI__SOURCES__WARD_DROP__TYPE", "file_drop");
    env.set("RENKEI__SOURCES__WARD_DROP__FOLDER", &drop);
    env.set(
        "RENKEI__SOURCES__WARD_DROP__FACILITY",
        crate::registry::HOSPITAL,
    );
    env.set("RENKEI__SOURCES__WARD_DROP__POLL_INTERVAL", "50ms");
    env.set("RENKEI__SOURCES__WARD_DROP__SETTLE", "100ms");
    env.start_hub(Roles::All).await?;

    // Written under an upload name, then renamed into place, as SFTP clients do.
    let part = folder.path().join("admit.hl7.part");
    std::fs::write(&part, conformance(ADMIT)?)?;
    std::fs::rename(&part, folder.path().join("admit.hl7"))?;
    std::fs::write(
        folder.path().join("unknown.hl7"),
        conformance("bad/unknown_event.hl7")?,
    )?;

    let got = crate::spine::acknowledged(&env, &receiver, 1).await?;
    assert_eq!(got[0].event_type(), "inpatient.admitted");
    env.eventually("the admission archived", || async {
        Ok(folder
            .path()
            .join("archive/admit.hl7")
            .is_file()
            .then_some(()))
    })
    .await?;
    let reason = env
        .eventually("the refusal kept aside", || async {
            Ok(std::fs::read_to_string(folder.path().join("rejected/unknown.hl7.reason.txt")).ok())
        })
        .await?;
    assert!(reason.contains("MSH-9"), "{reason}");
    let kept = sqlx::query("SELECT adapter, peer, raw FROM rejected_inputs")
        .fetch_all(&env.db)
        .await?;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].try_get::<String, _>("adapter")?, "ward_drop");
    assert_eq!(kept[0].try_get::<String, _>("peer")?, "unknown.hl7");
    assert_eq!(
        kept[0].try_get::<Vec<u8>, _>("raw")?,
        conformance("bad/unknown_event.hl7")?
    );
    Ok(())
}

/// A care office's region: the office exports files; the hospital's discharge-support
/// ward receives them; the patient is known by their long-term-care insurance number.
const CARE_OFFICE: &str = "1379999999";

fn care_region(receiver: &crate::receiver::Receiver) -> String {
    let hospital = crate::registry::HOSPITAL;
    format!(
        r#"
[[facilities]]
code = "{hospital}"
name = "Kakuu General Hospital"
kind = "hospital"

[[facilities]]
code = "{CARE_OFFICE}"
name = "Kakuu care office"
kind = "care_management"

[[participants]]
id = "ward"
facility = "{hospital}"
name = "Discharge support"

[[endpoints]]
participant = "ward"
name = "main"
url = "{url}"
secrets = ["{secret}"]

[[subscriptions]]
participant = "ward"
name = "care-files"
endpoint = "main"
event_types = ["care.admission_info", "care.discharge_info"]
source_facilities = ["{CARE_OFFICE}"]

[[patients]]
id = "P-1"
identifiers = [{{ system = "urn:renkei:ltc-insured:139999", value = "9999999999" }}]

[[care_relationships]]
patient = "P-1"
participant = "ward"
role = "hospital_ward"
valid_from = "2025-01-01"

[[consents]]
id = "c-1"
patient = "P-1"
scope = "facilities"
facilities = ["{hospital}", "{CARE_OFFICE}"]
basis = "written"
valid_from = "2025-01-01T00:00:00Z"
"#,
        url = receiver.url(),
        secret = receiver.secret(),
    )
}

#[tokio::test]
async fn care_office_csv_files_dropped_in_its_folder_reach_the_hospital_ward_and_a_bad_row_refuses_only_its_file()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = crate::receiver::Receiver::start().await?;
    let region = tempfile::tempdir()?;
    let document = region.path().join("region.toml");
    std::fs::write(&document, care_region(&receiver))?;
    let applied = env
        .renkei(&["admin", "apply", "-f", &document.to_string_lossy()])
        .await?;
    assert!(applied.status.success(), "{applied}");
    let folder = tempfile::tempdir()?;
    env.set("RENKEI__SOURCES__OFFICE_DROP__TYPE", "file_drop");
    env.set(
        "RENKEI__SOURCES__OFFICE_DROP__FOLDER",
        &folder.path().to_string_lossy(),
    );
    env.set("RENKEI__SOURCES__OFFICE_DROP__FACILITY", CARE_OFFICE);
    env.set("RENKEI__SOURCES__OFFICE_DROP__POLL_INTERVAL", "50ms");
    env.set("RENKEI__SOURCES__OFFICE_DROP__SETTLE", "100ms");
    env.start_hub(Roles::All).await?;

    let admission = "NYUIN_20250410_1379999999_1319999999_20250410101500.CSV";
    let discharge = "TAIIN_20250421_1379999999_1319999999_20250421160000.CSV";
    for name in [admission, discharge] {
        std::fs::write(
            folder.path().join(name),
            conformance(&format!("csv/{name}"))?,
        )?;
    }
    std::fs::write(
        folder.path().join("broken_discharge.CSV"),
        conformance("bad/csv_impossible_date.CSV")?,
    )?;

    let got = crate::spine::acknowledged(&env, &receiver, 2).await?;
    let mut types: Vec<String> = got.iter().map(|r| r.event_type()).collect();
    types.sort();
    assert_eq!(types, ["care.admission_info", "care.discharge_info"]);
    let admitted = got
        .iter()
        .find(|r| r.event_type() == "care.admission_info")
        .map(|r| r.json())
        .unwrap_or_default();
    assert_eq!(admitted["subject"], "P-1");
    assert_eq!(
        admitted["data"]["patient"]["insurance"]["ltc"]["care_level"],
        "要介護2"
    );
    let reason = env
        .eventually("the broken file kept aside", || async {
            Ok(std::fs::read_to_string(
                folder
                    .path()
                    .join("rejected/broken_discharge.CSV.reason.txt"),
            )
            .ok())
        })
        .await?;
    assert!(
        reason.contains("row 2") && reason.contains("退院(所)予定日"),
        "{reason}"
    );
    for name in [admission, discharge] {
        assert!(folder.path().join("archive").join(name).is_file(), "{name}");
    }
    Ok(())
}
