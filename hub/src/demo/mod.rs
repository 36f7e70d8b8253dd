//! `renkei demo`: the whole flow on a fresh machine with nothing installed.
//!
//! In a temporary folder it starts the hub on the embedded default (one SQLite file,
//! the in-process queue) with every role, ignoring whatever database and broker the
//! configuration names; applies a sample region ([`REGION`]); plays a hospital's ADT
//! story (admission, transfer, discharge: the conformance samples) from a simulated EHR
//! over real MLLP; receives the webhooks at three simulated care offices that verify
//! every Standard Webhooks signature; and prints what happened — who received what,
//! who was refused and why, and the audit log's verdict. With `--keep` the hub keeps
//! running afterwards for the CLI and the admin API.

mod office;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::{self, EMBEDDED_BUS, Role};
use crate::config::Settings;
use crate::delivery::destination::DestinationPolicy;
use crate::registry::document::RegistryDocument;
use crate::store::Store;
use office::{Office, Received};

/// Prints one line of the story; a closed stdout (`renkei demo | head`) only stops
/// the printing, not the demo.
macro_rules! say {
    ($($line:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($line)*);
    }};
}

/// The sample region (see the comments in the file).
pub const REGION: &str = include_str!("region.toml");

/// The story the simulated EHR sends: file name, what it says, the event type.
const STORY: [(&str, &[u8], &str, &str); 3] = [
    (
        "a01_admit_iso2022jp.hl7",
        include_bytes!("story/a01_admit_iso2022jp.hl7"),
        "ADT^A01 admission (入院)",
        "inpatient.admitted",
    ),
    (
        "a02_transfer_utf8.hl7",
        include_bytes!("story/a02_transfer_utf8.hl7"),
        "ADT^A02 transfer (転棟)",
        "inpatient.transferred",
    ),
    (
        "a03_discharge_iso2022jp.hl7",
        include_bytes!("story/a03_discharge_iso2022jp.hl7"),
        "ADT^A03 discharge (退院)",
        "inpatient.discharged",
    ),
];

/// The simulated care offices: participant id, display name, placeholder in
/// [`REGION`].
const OFFICES: [(&str, &str, &str); 3] = [
    ("kyotaku-sakura", "さくら居宅介護支援事業所", "SAKURA"),
    ("houkan-aoba", "あおば訪問看護ステーション", "AOBA"),
    ("kyotaku-himawari", "ひまわり居宅介護支援事業所", "HIMAWARI"),
];

/// How long any one step may take before the demo gives up and says which.
const STEP_DEADLINE: Duration = Duration::from_secs(10);

/// What `renkei demo` was asked for.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Leave the hub running (and the folder in place) until interrupted.
    pub keep: bool,
    /// Use this folder instead of a new temporary one.
    pub dir: Option<PathBuf>,
}

/// A free loopback port, found by binding and letting go.
fn free_loopback() -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Where the demo's simulated EHR sends: the MLLP source [`demo_settings`] made.
fn ehr_address(settings: &Settings) -> std::net::SocketAddr {
    crate::ingest::sources::listen_address(settings, renkei_hl7v2::listener::ADAPTER)
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 2575)))
}

/// The demo's settings: the given ones, with the embedded default in `dir`, loopback
/// listeners and webhooks allowed to loopback.
fn demo_settings(mut settings: Settings, dir: &std::path::Path) -> anyhow::Result<Settings> {
    settings.database.url = format!("sqlite://{}", dir.join("renkei.db").display());
    settings.bus.url = EMBEDDED_BUS.to_owned();
    // The demo's own MLLP listener only, whatever sources the configuration names.
    let mut mllp = serde_json::Map::new();
    mllp.insert(
        "listen".to_owned(),
        serde_json::Value::String(free_loopback()?.to_string()),
    );
    settings.sources = std::collections::BTreeMap::from([(
        renkei_hl7v2::listener::ADAPTER.to_owned(),
        crate::config::SourceSection {
            kind: renkei_hl7v2::listener::ADAPTER.to_owned(),
            enabled: true,
            settings: mllp,
        },
    )]);
    settings.api.listen = free_loopback()?;
    settings.delivery.allowed_destinations = vec!["127.0.0.0/8".parse()?];
    Ok(settings)
}

/// Runs the demo; `Ok(true)` when the story went as the region says it should.
pub async fn run(settings: Settings, options: DemoOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let (dir, temporary) = match &options.dir {
        Some(dir) => {
            // The story's messages would be resends there: acknowledged, not routed.
            anyhow::ensure!(
                !dir.join("renkei.db").exists(),
                "{} holds an earlier demo's database; give a new or empty folder",
                dir.display()
            );
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("renkei-demo-")
                .tempdir()
                .context("cannot create a temporary folder")?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let settings = demo_settings(settings, &dir)?;
    say!("Renkei demo: one region on the embedded default, nothing else installed");
    say!(
        "  folder    {}{}",
        dir.display(),
        if options.keep || options.dir.is_some() {
            ""
        } else {
            " (removed afterwards)"
        }
    );
    say!(
        "  hub       MLLP {} · admin API http://{} · database {}",
        ehr_address(&settings),
        settings.api.listen,
        settings.database.url
    );

    // The care offices listen first, so the region can name their addresses.
    let mut offices = Vec::with_capacity(OFFICES.len());
    for (id, name, placeholder) in OFFICES {
        offices.push(Office::start(id, name, placeholder).await?);
    }

    let shutdown = CancellationToken::new();
    let roles = [Role::Ingest, Role::Router, Role::Delivery, Role::Api]
        .into_iter()
        .collect();
    let mut hub = tokio::spawn(app::run(settings.clone(), roles, shutdown.clone()));
    let outcome = story(&settings, &mut offices, &mut hub, started).await;
    let outcome = match outcome {
        Ok((store, ok)) if options.keep => {
            keep_running(&settings, store.as_ref(), &dir).await?;
            Ok(ok)
        }
        other => other.map(|(_, ok)| ok),
    };
    shutdown.cancel();
    match tokio::time::timeout(STEP_DEADLINE, &mut hub).await {
        Ok(Ok(Err(e))) if outcome.is_ok() => return Err(e.context("the hub stopped with an error")),
        Ok(_) => {}
        Err(_) => hub.abort(),
    }
    match temporary {
        Some(temporary) if options.keep => {
            let _ = temporary.keep();
        }
        // Removed here, with everything in it.
        _ => {}
    }
    if options.keep || options.dir.is_some() {
        say!("the folder stays: {}", dir.display());
    }
    outcome
}

/// Waits until the hub serves MLLP, or says why it stopped.
async fn wait_until_up(
    settings: &Settings,
    hub: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if hub.is_finished() {
            return match hub.await {
                Ok(Err(e)) => Err(e.context("the hub did not start")),
                _ => Err(anyhow::anyhow!("the hub stopped before it served")),
            };
        }
        if tokio::net::TcpStream::connect(ehr_address(settings))
            .await
            .is_ok()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the hub did not listen on {} within {STEP_DEADLINE:?}",
            ehr_address(settings)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything between the hub starting and the audit verdict.
async fn story(
    settings: &Settings,
    offices: &mut [Office],
    hub: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
    started: Instant,
) -> anyhow::Result<(Arc<dyn Store>, bool)> {
    wait_until_up(settings, hub).await?;
    // A second handle on the same file, for the demo's own reads and the registry.
    let store = crate::store::open(&settings.database).await?;

    let doc = region(offices)?;
    doc.validate_for(&DestinationPolicy::new(
        settings.delivery.allowed_destinations.clone(),
    ))
    .await?;
    let changes = store
        .apply_registry(&doc, "demo")
        .await
        .context("the sample region cannot be applied")?;
    say!(
        "  region    {} facilities (2 hospitals, 3 care offices), {} patients, {} care relationships, {} consents: {} changes, applied and audited",
        doc.facilities.len(),
        doc.patients.len(),
        doc.care_relationships.len(),
        doc.consents.len(),
        changes
            .iter()
            .filter(|c| c.action != crate::registry::document::ChangeAction::Unchanged)
            .count()
    );
    say!(
        "            P-0001's consent excludes あおば訪問看護ステーション; ひまわり居宅 looks after P-0002 only"
    );
    say!();

    let mut ehr = renkei_hl7v2::client::MllpClient::connect(ehr_address(settings), STEP_DEADLINE)
        .await
        .context("the simulated EHR cannot connect to the MLLP listener")?;
    let mut audit_cursor = 0;
    let mut as_expected = true;
    for (n, (file, raw, what, event_type)) in STORY.iter().enumerate() {
        let sent = Instant::now();
        let ack = ehr
            .send(&renkei_hl7v2::client::message_from_file(raw))
            .await
            .with_context(|| format!("{file}: no acknowledgement"))?;
        say!(
            "[{}/{}] 架空総合病院 EHR → hub   {what}   MSH-10 {}   {} in {} ms",
            n + 1,
            STORY.len(),
            ack.control_id,
            ack.code,
            sent.elapsed().as_millis()
        );
        anyhow::ensure!(
            ack.accepted(),
            "{file} was not accepted: {}",
            ack.text.as_deref().unwrap_or("no reason given")
        );
        let decisions = route_decisions(store.as_ref(), &mut audit_cursor, OFFICES.len()).await?;
        for (participant, outcome, reason) in decisions {
            let office = offices
                .iter_mut()
                .find(|o| o.id == participant)
                .with_context(|| {
                    format!("a decision about an unknown participant {participant}")
                })?;
            if outcome == "delivered" {
                let got = office.next(STEP_DEADLINE).await?;
                as_expected &= got.verified && got.event_type == *event_type;
                print_received(office, &got, sent);
            } else {
                say!(
                    "      ✗ {} ({}): not sent — {reason}",
                    office.name,
                    office.id
                );
            }
            as_expected &= expected(&participant, &outcome);
        }
    }
    say!();
    // The webhooks arrived; their outcomes are recorded a moment later.
    finished(store.as_ref(), STORY.len()).await?;
    let (rows, breaks) = crate::api::verify_chain(store.as_ref()).await?;
    if breaks.is_empty() {
        say!(
            "audit     {rows} rows, hash chain intact (every decision above is one of them; `renkei audit verify` checks the same)"
        );
    } else {
        as_expected = false;
        for b in &breaks {
            say!("audit     BROKEN: {b}");
        }
    }
    let took = started.elapsed().as_secs_f64();
    if as_expected {
        say!("done in {took:.1} s: every office heard exactly what the region allows");
    } else {
        say!("FAILED after {took:.1} s: the story did not go as the region says");
    }
    Ok((store, as_expected))
}

/// The sample region with the offices' addresses and this run's secrets.
fn region(offices: &[Office]) -> anyhow::Result<RegistryDocument> {
    let mut text = REGION.to_owned();
    for office in offices {
        text = text.replace(
            &format!("@{}@", office.placeholder),
            &office.addr.to_string(),
        );
    }
    let mut doc = RegistryDocument::from_toml(&text)?;
    doc.resolve_secrets(|name| {
        offices
            .iter()
            .find(|o| o.placeholder == name)
            .map(|o| o.secret_text.clone())
    })?;
    Ok(doc)
}

/// What the region says should happen to each office.
fn expected(participant: &str, outcome: &str) -> bool {
    match participant {
        "kyotaku-sakura" => outcome == "delivered",
        "houkan-aoba" => outcome == "denied_by_consent",
        "kyotaku-himawari" => outcome == "no_care_relationship",
        _ => false,
    }
}

fn print_received(office: &Office, got: &Received, sent: Instant) {
    say!(
        "      ✓ {} ({}): {} · sequence {} · signature {} · {} ms after the EHR sent it",
        office.name,
        office.id,
        got.event_type,
        got.sequence,
        if got.verified { "verified" } else { "INVALID" },
        got.at.saturating_duration_since(sent).as_millis()
    );
}

/// Waits for the next `n` routing decisions in the audit log (one per candidate
/// office): participant, outcome and the recorded reason.
async fn route_decisions(
    store: &dyn Store,
    cursor: &mut i64,
    n: usize,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let deadline = Instant::now() + STEP_DEADLINE;
    let mut decisions = Vec::with_capacity(n);
    loop {
        for row in store.audit_rows(*cursor, 100).await? {
            *cursor = row.seq;
            let entry = row.entry;
            if entry.action == "route" {
                let reason = entry.detail["reason"].as_str().unwrap_or("").to_owned();
                decisions.push((
                    entry.participant_id.unwrap_or_default(),
                    entry.outcome,
                    reason,
                ));
            }
        }
        if decisions.len() >= n {
            decisions.sort_by_key(|(participant, ..)| {
                OFFICES.iter().position(|(id, ..)| id == participant)
            });
            return Ok(decisions);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the router decided about {} of {n} offices within {STEP_DEADLINE:?}",
            decisions.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `n` deliveries are recorded as delivered.
async fn finished(store: &dyn Store, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_DEADLINE;
    let filter = crate::store::DeliveryFilter {
        status: Some(crate::store::DeliveryStatus::Delivered),
        ..crate::store::DeliveryFilter::default()
    };
    while store.list_deliveries(&filter).await?.len() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the deliveries were not recorded within {STEP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot wait for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

/// `--keep`: an admin key, what to try, and the hub running until interrupted.
async fn keep_running(
    settings: &Settings,
    store: &dyn Store,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let key = crate::api::new_api_key();
    store
        .create_api_key("demo", &crate::api::api_key_hash(&key))
        .await?;
    let db = &settings.database.url;
    let renkei = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "renkei".into());
    say!();
    say!("The hub keeps running (Ctrl-C stops it). Try, in another terminal:");
    say!("  RENKEI__DATABASE__URL={db} {renkei} deliveries list");
    say!("  RENKEI__DATABASE__URL={db} {renkei} audit verify");
    say!(
        "  curl -H 'Authorization: Bearer {key}' http://{}/v1/deliveries",
        settings.api.listen
    );
    say!(
        "  {renkei} send --to {} hub/src/demo/story/a01_admit_iso2022jp.hl7",
        ehr_address(settings)
    );
    say!(
        "(the admin API key above was made for this demo; everything is in {})",
        dir.display()
    );
    interrupted().await
}
