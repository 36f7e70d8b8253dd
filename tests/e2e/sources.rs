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
