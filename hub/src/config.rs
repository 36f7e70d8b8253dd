//! Hub configuration: plain data, layered with the `config` crate — compiled-in
//! defaults (`config/default.toml`), then an optional file, then `RENKEI__SECTION__KEY`
//! environment variables — and validated once at start-up.
//!
//! This module knows nothing of the modules that read it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The defaults shipped in the binary.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// RabbitMQ.
    pub bus: BusSettings,
    /// The sources: `[sources.<name>]` sections (or `[[sources]]` entries with a
    /// `name`), each run by the source kind its `type` names.
    #[serde(default, deserialize_with = "sources")]
    pub sources: std::collections::BTreeMap<String, SourceSection>,
    /// What every source adapter accepts.
    pub ingest: IngestSettings,
    /// Router.
    pub router: RouterSettings,
    /// Webhook delivery.
    pub delivery: DeliverySettings,
    /// Admin HTTP API.
    pub api: ApiSettings,
    /// Logging.
    pub log: LogSettings,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL.
    pub url: String,
    /// Pool size per process.
    pub max_connections: u32,
    /// Wait for a pooled connection at most this long.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

/// RabbitMQ settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// AMQP URL.
    pub url: String,
    /// Prefix of every exchange and queue name.
    pub prefix: String,
    /// Consumer prefetch.
    pub prefetch: u16,
    /// Quorum queue initial group size.
    pub quorum_initial_group_size: u16,
}

/// One source: which kind runs it, whether it runs, and that kind's own settings
/// (which the kind parses and checks; this module does not know them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SourceSection {
    /// The source kind, e.g. `mllp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `false` keeps the section but runs nothing (e.g. to turn off the default MLLP
    /// listener).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Everything else in the section.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

fn enabled() -> bool {
    true
}

/// `[[sources]]` entries name themselves; `[sources.<name>]` sections are named by key.
#[derive(Deserialize)]
#[serde(untagged)]
enum SourcesForm {
    Named(std::collections::BTreeMap<String, SourceSection>),
    Listed(Vec<ListedSource>),
}

#[derive(Deserialize)]
struct ListedSource {
    name: Option<String>,
    #[serde(flatten)]
    section: SourceSection,
}

fn sources<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, SourceSection>, D::Error> {
    match SourcesForm::deserialize(deserializer)? {
        SourcesForm::Named(named) => Ok(named),
        SourcesForm::Listed(listed) => {
            let mut named = std::collections::BTreeMap::new();
            for (i, entry) in listed.into_iter().enumerate() {
                let name = entry.name.unwrap_or_else(|| entry.section.kind.clone());
                if named.insert(name.clone(), entry.section).is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "sources[{i}]: a second source named `{name}`; give each `[[sources]]` \
                         entry its own `name`"
                    )));
                }
            }
            Ok(named)
        }
    }
}

/// What every source adapter accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Event times (and dates of birth) before this day (UTC) are refused.
    pub earliest_event_time: chrono::NaiveDate,
    /// Event times more than this far ahead of the hub's clock are refused.
    #[serde(with = "humantime_serde")]
    pub latest_event_time_ahead: Duration,
}

impl IngestSettings {
    /// The window of times the normalisers accept.
    pub fn time_window(&self) -> renkei_sdk::TimeWindow {
        let earliest = self
            .earliest_event_time
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        renkei_sdk::TimeWindow::ahead_of_now(earliest, self.latest_event_time_ahead)
    }
}

/// Router settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// Events routed concurrently.
    pub concurrency: usize,
}

/// Delivery settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Requests in flight.
    pub concurrency: usize,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Wait before each retry.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Random shortening of each wait, as a fraction.
    pub jitter: f64,
    /// User-Agent of webhook requests.
    pub user_agent: String,
    /// Networks webhooks may reach although they are special-purpose (loopback,
    /// private, link-local…), e.g. `10.20.0.0/16`; a bare address is one host.
    #[serde(default, deserialize_with = "networks")]
    pub allowed_destinations: Vec<ipnet::IpNet>,
}

fn networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| t.trim())
        // An empty value (RENKEI__DELIVERY__ALLOWED_DESTINATIONS="") allows nothing.
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{t}` is not a network (e.g. 10.20.0.0/16, fd00::/8) or an address"
                    ))
                })
        })
        .collect()
}

fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| {
            humantime_serde::re::humantime::parse_duration(t.trim())
                .map_err(|e| serde::de::Error::custom(format!("`{t}` is not a duration: {e}")))
        })
        .collect()
}

/// Admin API settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest body of `POST /v1/registry/apply`, in bytes.
    pub max_body_bytes: usize,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Default filter directive.
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or parsing a layer failed.
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// The dotted key, e.g. `delivery.jitter`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl Settings {
    /// Loads defaults, then `file` (if given), then `RENKEI__…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("RENKEI")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("delivery.retry_schedule")
                    .with_list_parse_key("delivery.allowed_destinations")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| ConfigError::Invalid {
            key: key.to_owned(),
            problem: problem.to_owned(),
        };
        let scheme = |url: &str| url.split_once(':').map_or("", |(s, _)| s).to_owned();
        let database = scheme(&self.database.url);
        if !matches!(database.as_str(), "sqlite" | "postgres" | "postgresql") {
            return Err(invalid(
                "database.url",
                "must be `sqlite://<file>` (the embedded default) or `postgres://…`",
            ));
        }
        let embedded_bus = self.bus.url == "embedded";
        if !embedded_bus && !matches!(scheme(&self.bus.url).as_str(), "amqp" | "amqps") {
            return Err(invalid(
                "bus.url",
                "must be `embedded` (the in-process queue) or `amqp://…` / `amqps://…`",
            ));
        }
        // The embedded bus with PostgreSQL is refused when the bus is opened
        // (`app::connect`), not here: commands that use only the database
        // (`admin apply`, `audit verify`…) need not name a bus.
        if !(0.0..=0.5).contains(&self.delivery.jitter) {
            return Err(invalid("delivery.jitter", "must be between 0.0 and 0.5"));
        }
        if self.delivery.retry_schedule.iter().any(Duration::is_zero) {
            return Err(invalid("delivery.retry_schedule", "must not contain 0s"));
        }
        if self.delivery.concurrency == 0 {
            return Err(invalid("delivery.concurrency", "must be at least 1"));
        }
        if self.router.concurrency == 0 {
            return Err(invalid("router.concurrency", "must be at least 1"));
        }
        if self.bus.prefetch == 0 {
            return Err(invalid("bus.prefetch", "must be at least 1"));
        }
        for (name, section) in &self.sources {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c));
            if !valid {
                return Err(invalid(
                    &format!("sources.{name}"),
                    "must be named with lower-case ASCII letters, digits, '-' or '_' \
                     (the name is what `RENKEI__SOURCES__<NAME>__…` reaches)",
                ));
            }
            if section.kind.is_empty() {
                return Err(invalid(
                    &format!("sources.{name}.type"),
                    "must name a source kind, e.g. `mllp`",
                ));
            }
        }
        if self.api.max_body_bytes < 64 * 1024 {
            return Err(invalid(
                "api.max_body_bytes",
                "must be at least 65536 (64 KiB); the default is 67108864 (64 MiB)",
            ));
        }
        if self.ingest.earliest_event_time >= chrono::Utc::now().date_naive() {
            return Err(invalid(
                "ingest.earliest_event_time",
                "must be a day in the past, e.g. 1900-01-01",
            ));
        }
        if self.bus.prefix.is_empty()
            || !self
                .bus
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "bus.prefix",
                "must be non-empty ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_load_and_validate() -> Result<(), ConfigError> {
        let settings = Settings::load(None)?;
        assert_eq!(settings.bus.prefix, "renkei");
        assert_eq!(settings.delivery.retry_schedule[0], Duration::from_secs(5));
        assert_eq!(settings.log.format, LogFormat::Text);
        assert_eq!(
            settings.ingest.earliest_event_time.to_string(),
            "1900-01-01"
        );
        Ok(())
    }

    #[test]
    fn the_embedded_default_is_what_nothing_configured_means() -> Result<(), ConfigError> {
        let settings = Settings::load(None)?;
        assert_eq!(settings.database.url, "sqlite://renkei.db");
        assert_eq!(settings.bus.url, "embedded");
        Ok(())
    }

    #[test]
    fn database_and_bus_urls_of_no_known_kind_are_refused_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("renkei-cfg-urls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        for (file, text, key) in [
            (
                "db.toml",
                "[database]\nurl = \"mysql://x/y\"\n",
                "database.url",
            ),
            ("bus.toml", "[bus]\nurl = \"nats://x\"\n", "bus.url"),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).ok();
            let err = Settings::load(Some(&path)).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(key)),
                "{key}: {err:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_body_limit_too_small_for_any_document_is_refused() {
        let dir = std::env::temp_dir().join(format!("renkei-cfg-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("small.toml");
        std::fs::write(&path, "[api]\nmax_body_bytes = 1000\n").ok();
        let err = Settings::load(Some(&path)).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("`api.max_body_bytes` must be at least 65536")),
            "{err:?}"
        );
        let defaults = Settings::load(None).map(|s| s.api.max_body_bytes).ok();
        assert_eq!(defaults, Some(64 * 1024 * 1024));
    }

    #[test]
    fn sources_are_named_sections_or_listed_entries() -> Result<(), ConfigError> {
        let defaults = Settings::load(None)?;
        let mllp = defaults
            .sources
            .get("mllp")
            .map(|s| (s.kind.as_str(), s.enabled));
        assert_eq!(mllp, Some(("mllp", true)));
        let dir = std::env::temp_dir().join(format!("renkei-cfg-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("sources.toml");
        std::fs::write(
            &path,
            "[sources.mllp]\nenabled = false\n[sources.ward-b]\ntype = \"mllp\"\nlisten = \"127.0.0.1:2576\"\n",
        )
        .ok();
        let named = Settings::load(Some(&path))?.sources;
        assert_eq!(named.get("mllp").map(|s| s.enabled), Some(false));
        assert_eq!(
            named.get("ward-b").and_then(|s| s.settings.get("listen")),
            Some(&serde_json::json!("127.0.0.1:2576"))
        );
        std::fs::write(
            &path,
            "[[sources]]\nname = \"ehr\"\ntype = \"mllp\"\nlisten = \"127.0.0.1:2577\"\n",
        )
        .ok();
        let listed = Settings::load(Some(&path))?.sources;
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["ehr"]);
        std::fs::write(&path, "[sources.Bad]\ntype = \"mllp\"\n").ok();
        let err = Settings::load(Some(&path)).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("`sources.bad`") || e.contains("`sources.Bad`")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let dir = std::env::temp_dir().join(format!("renkei-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[delivery]\njitter = 0.9\n").ok();
        let err = Settings::load(Some(&path)).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid configuration: `delivery.jitter` must be between 0.0 and 0.5")
        );
    }

    #[test]
    fn allowed_destinations_are_networks_or_addresses() -> Result<(), ConfigError> {
        assert!(
            Settings::load(None)?
                .delivery
                .allowed_destinations
                .is_empty()
        );
        let dir = std::env::temp_dir().join(format!("renkei-cfg-nets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("nets.toml");
        std::fs::write(
            &path,
            "[delivery]\nallowed_destinations = [\"127.0.0.1/8\", \"::1\", \" 10.20.0.0/16 \"]\n",
        )
        .ok();
        let nets: Vec<String> = Settings::load(Some(&path))?
            .delivery
            .allowed_destinations
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["127.0.0.0/8", "::1/128", "10.20.0.0/16"]);
        std::fs::write(
            &path,
            "[delivery]\nallowed_destinations = [\"10.0.0.0/33\"]\n",
        )
        .ok();
        let err = Settings::load(Some(&path)).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(
                "`10.0.0.0/33` is not a network (e.g. 10.20.0.0/16, fd00::/8) or an address"
            )),
            "{err:?}"
        );
        Ok(())
    }
}
