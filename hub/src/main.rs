//! `renkei`: the Renkei integration hub.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use renkei_hub::app::{self, Role};
use renkei_hub::config::{LogFormat, Settings};
use renkei_hub::delivery::destination::DestinationPolicy;
use renkei_hub::registry::document::{ChangeAction, RegistryDocument};
use renkei_hub::store::DeliveryFilter;
use tokio_util::sync::CancellationToken;

/// Renkei: medical–long-term-care data linkage hub.
///
/// Hospitals' ADT feeds (HL7 v2 over MLLP) come in; canonical events go out as signed
/// webhooks to the care offices that look after each patient and are covered by the
/// patient's consent. Every decision is written to a hash-chained audit log.
#[derive(Parser)]
#[command(name = "renkei", version, propagate_version = true)]
struct Cli {
    /// Configuration file layered over the built-in defaults (see config/default.toml);
    /// RENKEI__SECTION__KEY environment variables override both.
    #[arg(long, short, global = true, env = "RENKEI_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// See the whole flow on this machine, with nothing installed: start the hub on the
    /// embedded default in a temporary folder (whatever database and broker the
    /// configuration names), apply a sample region, send a hospital's admission,
    /// transfer and discharge over MLLP, receive them at simulated care offices that
    /// verify every signature, and print who received what, who was refused and why,
    /// and the audit log's verdict. Exit 0 when everything went as the region says.
    Demo {
        /// Leave the hub running afterwards (until Ctrl-C), with an admin API key
        /// printed, to explore with the CLI and the API; the folder is kept.
        #[arg(long)]
        keep: bool,
        /// Use this folder (kept afterwards) instead of a new temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the hub: every role in one process, or only those given with --roles.
    Up {
        /// Roles to run, comma-separated. Several processes with different roles can
        /// share one broker and one database (RabbitMQ and PostgreSQL; the embedded
        /// default serves one process).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ingest,router,delivery,api"
        )]
        roles: Vec<Role>,
    },
    /// Print the canonical event for a source file (exit 0), or the error with the
    /// place at fault (exit 2). The format is recognised from the file's name and first
    /// bytes, or given with --format. Needs no broker or database.
    Normalize {
        /// The file: an HL7 v2 message (MLLP framing bytes are accepted), a FHIR Bundle,
        /// a care office's CSV or JSON form.
        #[arg(required_unless_present = "report")]
        file: Option<PathBuf>,
        /// The file's format instead of recognising it (see the error for the names).
        #[arg(long)]
        format: Option<String>,
        /// For a folder of sample exports (read recursively): every file's format and
        /// event, and which of the items a receiving office needs it carries and which
        /// are missing. Exit 0 when every file was read, 2 when one was refused.
        #[arg(long, value_name = "DIR", conflicts_with = "file")]
        report: Option<PathBuf>,
    },
    /// Send HL7 v2 message files to an MLLP listener, one after another on one
    /// connection, and print each acknowledgement. Exit 0 when every message got AA, 1
    /// otherwise. Lets hospital IT try a feed against the hub.
    Send {
        /// Message files (MLLP framing bytes and LF/CRLF segment ends are accepted).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The listener; default: the `listen` of the first MLLP source of the configuration.
        #[arg(long)]
        to: Option<std::net::SocketAddr>,
        /// How long to wait for each acknowledgement.
        #[arg(long, default_value = "30s", value_parser = humantime_serde::re::humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Apply the embedded database migrations and exit.
    Migrate,
    /// Registry and API-key administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Delivery log and replay of dead deliveries.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Inputs the hub refused (kept with their bytes and reason): list, show, replay.
    Rejected {
        #[command(subcommand)]
        command: RejectedCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum RejectedCommand {
    /// Refused inputs, newest first: id, time, source, sender, where and why.
    List {
        /// Only those of this source (its name, e.g. `mllp`).
        #[arg(long)]
        source: Option<String>,
        /// Only those received at or after this time (RFC 3339, e.g. 2025-04-10T00:00:00+09:00).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Only those replayed (`yes`) or not yet replayed (`no`).
        #[arg(long)]
        replayed: Option<YesNo>,
        /// At most this many (1–1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One refused input: its details, or with --raw its bytes exactly as received
    /// (to fix and replay; they hold patient data, and the read is audited).
    Show {
        /// Its id.
        id: uuid::Uuid,
        /// Write the bytes to standard output instead of the details.
        #[arg(long)]
        raw: bool,
    },
    /// Send a refused input through the normal path again, as kept or fixed (--file):
    /// once accepted it is marked replayed and is not replayed twice. Refused again,
    /// it is kept as a new refused input with the new reason (exit 2).
    Replay {
        /// Its id.
        id: uuid::Uuid,
        /// The fixed input to send in its place.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum YesNo {
    Yes,
    No,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Apply a registry document (TOML): facilities, participants, endpoints,
    /// subscriptions, patients, care relationships, consents. Idempotent; prints what
    /// changed. Secrets may be written `env:VAR` to read them from the environment.
    /// A document with problems is refused whole, listing every problem; endpoint URLs
    /// at loopback, private or other special-purpose addresses are refused unless
    /// delivery.allowed_destinations allows them.
    Apply {
        /// The document.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Validate the document (formats, ids, duplicates, references inside it, env:
        /// secrets, endpoint destinations) and print what it declares, without touching
        /// the database.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create an admin API key; it is printed once and only its hash is stored.
    CreateApiKey {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
    },
    /// Create a source key for a sending facility (the FHIR receiver, HTTP uploads): it
    /// may publish as that facility only, and opens nothing of the admin API. Printed
    /// once; only its hash is stored.
    CreateSourceKey {
        /// The facility's 10-digit code.
        #[arg(long)]
        facility: String,
        /// Who or what the key is for (e.g. the sending system).
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        /// Only this event.
        #[arg(long)]
        event: Option<uuid::Uuid>,
        /// Only this participant.
        #[arg(long)]
        participant: Option<String>,
        /// Only this status (pending, retrying, delivered, dead, cancelled).
        #[arg(long)]
        status: Option<renkei_hub::store::DeliveryStatus>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Move dead deliveries back to the queue.
    Replay {
        /// Delivery ids.
        #[arg(required = true)]
        ids: Vec<uuid::Uuid>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 1 and name every altered or removed row if broken.
    Verify,
    /// When a region moves to another database (from the embedded SQLite file to
    /// PostgreSQL, say): verify the old database's audit chain and record its head (row
    /// count, last seq and hash) as an entry of this database's chain, so the archived
    /// old log stays tied to the new one. Refuses a broken old chain (exit 1).
    Anchor {
        /// The old database's URL (`sqlite://…` or `postgres://…`).
        #[arg(long)]
        from: String,
    },
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    // Colour only on a terminal: escapes in a log file or a collector are noise. NO_COLOR
    // (https://no-color.org/) still turns them off on a terminal.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Normalize {
        file,
        format,
        report,
    } = &cli.command
    {
        // No servers: the configuration only sets what the normaliser accepts.
        let window = settings.ingest.time_window();
        return match (file, report) {
            (_, Some(dir)) => normalize_report(dir, format.as_deref(), &window),
            (Some(file), None) => normalize(file, format.as_deref(), &window),
            (None, None) => ExitCode::from(2),
        };
    }
    if matches!(cli.command, Command::Demo { .. }) {
        // The story is the output: the hub's own logs only when something is wrong.
        settings.log.level = "warn".into();
    }
    init_logging(&settings);
    // One TLS stack: rustls with ring, for the webhook client and amqps.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn normalize(file: &PathBuf, format: Option<&str>, window: &renkei_sdk::TimeWindow) -> ExitCode {
    use renkei_hub::ingest::formats;
    let raw = match std::fs::read(file) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let all = formats::file_formats();
    let chosen = match format {
        Some(wanted) => all.iter().find(|f| f.name() == wanted).map(AsRef::as_ref),
        None => renkei_sdk::file::sniff(&all, &name, &raw),
    };
    let Some(chosen) = chosen else {
        let known = formats::names().join(", ");
        match format {
            Some(wanted) => eprintln!("error: `{wanted}` is not a format (known: {known})"),
            None => eprintln!(
                "error: {}: not a format the hub reads (known: {known}); give --format if it is one",
                file.display()
            ),
        }
        return ExitCode::from(2);
    };
    let events = match chosen.read(&name, &raw, window) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("error: {} ({}): {e}", file.display(), chosen.name());
            return ExitCode::from(2);
        }
    };
    let printed = match events.as_slice() {
        [] => {
            eprintln!(
                "{}: no event ({} file with nothing to publish)",
                file.display(),
                chosen.name()
            );
            return ExitCode::SUCCESS;
        }
        [event] => serde_json::to_string_pretty(event),
        several => serde_json::to_string_pretty(several),
    };
    match printed {
        Ok(json) => {
            let _ = writeln!(std::io::stdout(), "{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot print the event: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every file under `dir`, sorted, skipping hidden names.
fn files_under(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            files_under(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn normalize_report(
    dir: &std::path::Path,
    format: Option<&str>,
    window: &renkei_sdk::TimeWindow,
) -> ExitCode {
    use renkei_hub::ingest::formats;
    use renkei_sdk::conformance::receiver_items;
    let mut files = Vec::new();
    if let Err(e) = files_under(dir, &mut files) {
        eprintln!("error: cannot read the folder {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let all = formats::file_formats();
    let mut refused = 0;
    let mut out = std::io::stdout().lock();
    for path in &files {
        let shown = path.strip_prefix(dir).unwrap_or(path).display();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let raw = match std::fs::read(path) {
            Ok(raw) => raw,
            Err(e) => {
                refused += 1;
                let _ = writeln!(out, "{shown}\n  refused: cannot read it: {e}\n");
                continue;
            }
        };
        let chosen = match format {
            Some(wanted) => all.iter().find(|f| f.name() == wanted).map(AsRef::as_ref),
            None => renkei_sdk::file::sniff(&all, &name, &raw),
        };
        let Some(chosen) = chosen else {
            refused += 1;
            let _ = writeln!(
                out,
                "{shown}\n  refused: not a format the hub reads (known: {})\n",
                formats::names().join(", ")
            );
            continue;
        };
        match chosen.read(&name, &raw, window) {
            Err(e) => {
                refused += 1;
                let _ = writeln!(out, "{shown} ({})\n  refused: {e}\n", chosen.name());
            }
            Ok(events) if events.is_empty() => {
                let _ = writeln!(out, "{shown} ({})\n  no event\n", chosen.name());
            }
            Ok(events) => {
                for (n, event) in events.iter().enumerate() {
                    let items = receiver_items(event);
                    let carried = items.iter().filter(|i| i.present).count();
                    let row = if events.len() > 1 {
                        format!(", event {} of {}", n + 1, events.len())
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "{shown} ({}{row})\n  {}: carries {carried} of {} items",
                        chosen.name(),
                        event.event_type,
                        items.len()
                    );
                    let missing: Vec<&str> = items
                        .iter()
                        .filter(|i| !i.present)
                        .map(|i| i.name.as_str())
                        .collect();
                    if !missing.is_empty() {
                        let _ = writeln!(out, "  missing: {}", missing.join(", "));
                    }
                    let _ = writeln!(out);
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} file(s), {} read, {refused} refused",
        files.len(),
        files.len() - refused
    );
    if refused > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

async fn send(
    files: &[PathBuf],
    to: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    use renkei_hl7v2::client::{MllpClient, message_from_file};
    let mut client = MllpClient::connect(to, timeout)
        .await
        .with_context(|| format!("cannot connect to the MLLP listener at {to}"))?;
    let mut all_accepted = true;
    for file in files {
        let raw = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let ack = client
            .send(&message_from_file(&raw))
            .await
            .with_context(|| format!("{}: no acknowledgement", file.display()))?;
        all_accepted &= ack.accepted();
        match &ack.text {
            Some(text) => println!(
                "{}: {} {} — {text}",
                file.display(),
                ack.code,
                ack.control_id
            ),
            None => println!("{}: {} {}", file.display(), ack.code, ack.control_id),
        }
    }
    Ok(if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Normalize { .. } => unreachable!("handled before the runtime starts"),
        Command::Demo { keep, dir } => {
            let options = renkei_hub::demo::DemoOptions { keep, dir };
            let ok = renkei_hub::demo::run(settings, options).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Up { roles } => {
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down");
                signal.cancel();
            });
            app::run(
                settings,
                roles.into_iter().collect::<BTreeSet<_>>(),
                shutdown,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send { files, to, timeout } => {
            let to = to
                .or_else(|| renkei_hub::ingest::sources::listen_address(&settings, "mllp"))
                .context("no MLLP source is configured: give --to HOST:PORT")?;
            send(&files, to, timeout).await
        }
        Command::Migrate => {
            app::connect_store(&settings).await?;
            println!("database is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { command } => admin(command, &settings).await,
        Command::Deliveries { command } => deliveries(command, &settings).await,
        Command::Rejected { command } => rejected(command, &settings).await,
        Command::Audit {
            command: AuditCommand::Anchor { from },
        } => anchor(&settings, &from).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            existing_database(&settings.database.url)?;
            let store = app::connect_store(&settings).await?;
            let (rows, breaks) = renkei_hub::api::verify_chain(store.as_ref()).await?;
            if breaks.is_empty() {
                println!(
                    "audit log intact: {rows} row{} verified",
                    if rows == 1 { "" } else { "s" }
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for b in &breaks {
                    println!("BROKEN: {b}");
                }
                println!(
                    "audit log NOT intact: {} problem(s) in {rows} rows",
                    breaks.len()
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn admin(command: AdminCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Apply { file, dry_run } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut doc = RegistryDocument::from_toml(&text)
                .with_context(|| format!("{}", file.display()))?;
            let destinations =
                DestinationPolicy::new(settings.delivery.allowed_destinations.clone());
            let checked = match doc.resolve_secrets(|var| std::env::var(var).ok()) {
                Ok(()) => doc.validate_for(&destinations).await,
                Err(e) => Err(e),
            };
            checked.with_context(|| {
                format!("{} cannot be applied; nothing was changed", file.display())
            })?;
            if dry_run {
                println!("{} is valid: {}", file.display(), declared(&doc));
                return Ok(ExitCode::SUCCESS);
            }
            let store = app::connect_store(settings).await?;
            let changes = store.apply_registry(&doc, "cli").await.with_context(|| {
                format!("{} cannot be applied; nothing was changed", file.display())
            })?;
            for change in &changes {
                println!("{change}");
            }
            let changed = changes
                .iter()
                .filter(|c| c.action != ChangeAction::Unchanged)
                .count();
            println!("{changed} changed, {} unchanged", changes.len() - changed);
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::CreateApiKey { name } => {
            let store = app::connect_store(settings).await?;
            let key = renkei_hub::api::new_api_key();
            let id = store
                .create_api_key(&name, &renkei_hub::api::api_key_hash(&key))
                .await?;
            eprintln!("created API key {id} for {name}; it is shown once, store it now:");
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::CreateSourceKey { facility, name } => {
            if facility.len() != 10 || !facility.bytes().all(|b| b.is_ascii_digit()) {
                eprintln!("error: --facility must be a 10-digit facility code");
                return Ok(ExitCode::from(2));
            }
            let store = app::connect_store(settings).await?;
            let key = renkei_hub::api::new_api_key();
            let id = store
                .create_source_key(&name, &facility, &renkei_hub::api::api_key_hash(&key))
                .await?;
            eprintln!(
                "created source key {id} for {name}, publishing as facility {facility}; it is shown once, store it now:"
            );
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What a document declares, counted per resource kind in the order they are applied:
/// `3 facilities, 2 participants, 1 endpoint, …`.
fn declared(doc: &RegistryDocument) -> String {
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    [
        count(doc.facilities.len(), "facility", "facilities"),
        count(doc.participants.len(), "participant", "participants"),
        count(doc.endpoints.len(), "endpoint", "endpoints"),
        count(doc.subscriptions.len(), "subscription", "subscriptions"),
        count(doc.patients.len(), "patient", "patients"),
        count(
            doc.care_relationships.len(),
            "care relationship",
            "care relationships",
        ),
        count(doc.consents.len(), "consent", "consents"),
    ]
    .join(", ")
}

/// Refuses a SQLite database file that does not exist (a mistyped path would
/// otherwise be created, and verify as an empty log).
fn existing_database(url: &str) -> anyhow::Result<()> {
    if url.starts_with("sqlite:") {
        let path = renkei_hub::store::sqlite::database_path(url)?;
        anyhow::ensure!(
            path.is_file(),
            "there is no database at {} ({url})",
            path.display()
        );
    }
    Ok(())
}

/// Whether two database URLs name the same database (SQLite: the same file).
fn same_database(a: &str, b: &str) -> bool {
    let file = |url: &str| {
        renkei_hub::store::sqlite::database_path(url)
            .ok()
            .and_then(|p| std::fs::canonicalize(p).ok())
    };
    a == b
        || (a.starts_with("sqlite:")
            && b.starts_with("sqlite:")
            && file(a).is_some()
            && file(a) == file(b))
}

/// `renkei audit anchor --from URL`.
async fn anchor(settings: &Settings, from: &str) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !same_database(from, &settings.database.url),
        "--from names the database this hub is configured with; give the old one"
    );
    existing_database(from)?;
    let shown = renkei_hub::registry::masked_url(from);
    let old_settings = renkei_hub::config::DatabaseSettings {
        url: from.to_owned(),
        ..settings.database.clone()
    };
    let old = renkei_hub::store::open(&old_settings)
        .await
        .with_context(|| format!("cannot open the old database {shown}"))?;
    let (rows, breaks) = renkei_hub::api::verify_chain(old.as_ref()).await?;
    if !breaks.is_empty() {
        for b in &breaks {
            println!("BROKEN: {b}");
        }
        println!("not anchored: the audit log of {shown} is not intact");
        return Ok(ExitCode::FAILURE);
    }
    let (seq, hash) = old.audit_head().await?;
    let hash = hex::encode(hash);
    let store = app::connect_store(settings).await?;
    store
        .audit(vec![
            renkei_hub::audit::AuditEntry::new("cli", "audit.anchor", "anchored").detail(
                serde_json::json!({
                    "previous_database": shown,
                    "previous_rows": rows,
                    "previous_head_seq": seq,
                    "previous_head_hash": hash,
                }),
            ),
        ])
        .await?;
    println!(
        "anchored: this database's audit log now records the chain of {shown} ({rows} rows, head seq {seq}, hash {hash})"
    );
    Ok(ExitCode::SUCCESS)
}

async fn rejected(command: RejectedCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    use renkei_hub::ingest::replay::{ReplayOutcome, replay_rejected};
    use renkei_hub::store::RejectedFilter;
    match command {
        RejectedCommand::List {
            source,
            since,
            replayed,
            limit,
            json,
        } => {
            let store = app::connect_store(settings).await?;
            let filter = RejectedFilter {
                source,
                since: since.map(|t| t.to_utc()),
                replayed: replayed.map(|r| matches!(r, YesNo::Yes)),
                limit: Some(limit),
            };
            let found = store.list_rejected(&filter).await?;
            if json {
                for r in &found {
                    println!("{}", serde_json::to_string(r)?);
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:36}  {:20}  {:12}  {:24}  {:8}  where: why",
                "id", "received", "source", "sender", "replayed"
            );
            for r in found {
                println!(
                    "{}  {:20}  {:12}  {:24}  {:8}  {}{}",
                    r.id,
                    r.received_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    r.source,
                    r.peer,
                    if r.replayed_at.is_some() { "yes" } else { "no" },
                    r.location.map(|l| format!("{l}: ")).unwrap_or_default(),
                    r.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RejectedCommand::Show { id, raw } => {
            let store = app::connect_store(settings).await?;
            let Some(kept) = store.rejected_input(id).await? else {
                eprintln!("error: no refused input has the id {id}");
                return Ok(ExitCode::from(2));
            };
            if raw {
                store
                    .audit(vec![
                        renkei_hub::audit::AuditEntry::new("cli", "rejected.read", "shown")
                            .detail(serde_json::json!({ "rejected_input": id })),
                    ])
                    .await?;
                std::io::stdout().write_all(&kept.raw)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{}", serde_json::to_string_pretty(&kept.summary)?);
            Ok(ExitCode::SUCCESS)
        }
        RejectedCommand::Replay { id, file } => {
            let fixed = match &file {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let (store, bus) = connect_beside_a_hub(
                settings,
                "replay through its admin API (POST /v1/rejected/{id}/replay), or stop it first",
            )
            .await?;
            let ingestor = renkei_hub::ingest::Ingestor::new(
                store.clone(),
                bus,
                settings.database.acquire_timeout,
            );
            let window = settings.ingest.time_window();
            let outcome =
                replay_rejected(store.as_ref(), &ingestor, id, fixed, &window, "cli").await?;
            renkei_hub::store::seal_all(store.as_ref()).await?;
            store.close().await;
            match outcome {
                ReplayOutcome::Accepted { events } => {
                    for event in events {
                        println!("accepted as event {event}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                ReplayOutcome::AlreadyReplayed { event } => {
                    eprintln!(
                        "error: {id} was replayed before{}",
                        event.map(|e| format!(", as event {e}")).unwrap_or_default()
                    );
                    Ok(ExitCode::from(2))
                }
                ReplayOutcome::NotFound => {
                    eprintln!("error: no refused input has the id {id}");
                    Ok(ExitCode::from(2))
                }
                ReplayOutcome::Refused(error) => {
                    eprintln!("refused again (kept with the new reason): {error}");
                    Ok(ExitCode::from(2))
                }
                ReplayOutcome::Unavailable(why) => {
                    eprintln!("error: the hub cannot take it now ({why}); try again");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// The store and the bus for a one-shot command that publishes; when a running hub
/// holds the embedded bus, the error says what to do instead (`instead`).
async fn connect_beside_a_hub(
    settings: &Settings,
    instead: &str,
) -> anyhow::Result<(
    std::sync::Arc<dyn renkei_hub::store::Store>,
    std::sync::Arc<dyn renkei_hub::bus::Bus>,
)> {
    app::connect(settings).await.map_err(|e| {
        if matches!(
            e.downcast_ref::<renkei_hub::bus::BusError>(),
            Some(renkei_hub::bus::BusError::InUse { .. })
        ) {
            e.context(format!(
                "with the embedded bus, a running hub holds the queue: {instead}"
            ))
        } else {
            e
        }
    })
}

async fn deliveries(command: DeliveriesCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        DeliveriesCommand::List {
            event,
            participant,
            status,
            limit,
        } => {
            let store = app::connect_store(settings).await?;
            let filter = DeliveryFilter {
                event_id: event,
                participant_id: participant,
                status,
                limit: Some(limit),
            };
            println!(
                "{:36}  {:36}  {:20}  {:>5}  {:9}  {:>3}  last error",
                "delivery", "event", "participant", "seq", "status", "try"
            );
            for d in store.list_deliveries(&filter).await? {
                println!(
                    "{}  {}  {:20}  {:>5}  {:9}  {:>3}  {}",
                    d.id,
                    d.event_id,
                    d.participant_id,
                    d.sequence,
                    d.status,
                    d.attempts,
                    d.last_error.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeliveriesCommand::Replay { ids } => {
            let (store, bus) = connect_beside_a_hub(
                settings,
                "replay through its admin API (POST /v1/deliveries/replay), or stop it first",
            )
            .await?;
            let replayed =
                renkei_hub::delivery::replay(store.as_ref(), bus.as_ref(), &ids, "cli").await?;
            for id in &replayed {
                println!("replayed {id}");
            }
            let skipped = ids.len() - replayed.len();
            if skipped > 0 {
                println!("{skipped} id(s) skipped: not dead deliveries");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_counts_every_resource_kind_of_the_example() -> anyhow::Result<()> {
        let doc = RegistryDocument::from_toml(include_str!("../../config/registry.example.toml"))?;
        assert_eq!(
            declared(&doc),
            "3 facilities, 2 participants, 2 endpoints, 2 subscriptions, 1 patient, \
             2 care relationships, 1 consent"
        );
        Ok(())
    }
}
