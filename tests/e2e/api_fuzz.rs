//! Schemathesis over the whole admin API of the real binary, every check on: the
//! answers are the ones the OpenAPI document promises (statuses, content types,
//! schemas), data the document allows is accepted and data it forbids is refused,
//! routes refuse a missing key and unknown methods.
//!
//! Needs schemathesis, so it is ignored in the ordinary run: `deploy/dev/api-fuzz.sh`
//! installs it (pinned, in a venv under the target directory) and runs this test.
//! The hub runs on a database and bus prefix of its own, removed when the test ends,
//! so what the fuzzer writes (registry documents, replays) is left nowhere.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Env, Roles, workspace_dir};

/// Examples per operation and phase: bounds the run to a few minutes on two cores.
const DEFAULT_EXAMPLES: &str = "100";

#[tokio::test]
#[ignore = "needs schemathesis: run by deploy/dev/api-fuzz.sh"]
async fn schemathesis_finds_no_failure_in_the_admin_api() -> anyhow::Result<()> {
    let schemathesis = std::env::var_os("RENKEI_SCHEMATHESIS").ok_or_else(|| {
        anyhow::anyhow!(
            "set RENKEI_SCHEMATHESIS to the schemathesis executable (deploy/dev/api-fuzz.sh does)"
        )
    })?;
    let examples =
        std::env::var("RENKEI_FUZZ_EXAMPLES").unwrap_or_else(|_| DEFAULT_EXAMPLES.to_owned());
    let env = Env::new().await?;
    env.start_hub(Roles::All).await?;
    let key = env.api_key("schemathesis").await?;

    let config = workspace_dir().join("deploy/dev/schemathesis.toml");
    let report = std::env::temp_dir().join(format!("renkei-schemathesis-{}", env.prefix));
    let mut run = tokio::process::Command::new(&schemathesis);
    run.arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("http://{}/openapi.json", env.api))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "all"])
        .args(["--max-examples", &examples])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        .arg("--report-dir")
        .arg(&report)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(600), run.status())
        .await
        .map_err(|_| anyhow::anyhow!("schemathesis did not finish within 10 minutes"))??;
    let _ = std::fs::remove_dir_all(&report);
    assert!(
        status.success(),
        "schemathesis found failures ({status}); its output above names each, with a curl \
         command to reproduce it (the hub's log follows)"
    );
    Ok(())
}
