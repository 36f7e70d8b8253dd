//! The source kinds this hub runs, and the sources of a configuration built from them.
//!
//! [`kinds`] is the one list of source kinds: adding a kind is one line here and one
//! crate under `adapters/`. Nothing else in the hub knows a source's format or settings.

use std::sync::Arc;

use renkei_sdk::IngestSink;
use renkei_sdk::source::{AnySource, RunningSource, SourceContext, SourceCredentials, SourceState};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::store::{AdminStore, IngestStore};

/// Every source kind, by its `type`.
pub fn kinds() -> Vec<Box<dyn AnySource>> {
    vec![
        Box::new(renkei_hl7v2::MllpSource),
        Box::new(renkei_fhir::FhirReceiver),
        Box::new(renkei_ssmix2::Ssmix2Source),
        Box::new(renkei_filedrop::FileDropSource::new(
            super::formats::file_formats(),
        )),
    ]
}

fn kind_named(kind: &str) -> anyhow::Result<Box<dyn AnySource>> {
    let all = kinds();
    let known: Vec<&str> = all.iter().map(|k| k.kind()).collect();
    let wanted = all.iter().position(|k| k.kind() == kind).ok_or_else(|| {
        anyhow::anyhow!(
            "`{kind}` is not a source kind (known: {})",
            known.join(", ")
        )
    })?;
    let mut all = all;
    Ok(all.swap_remove(wanted))
}

/// A configured source ready to build: its name, its kind and its settings.
struct Configured {
    name: String,
    kind: Box<dyn AnySource>,
    settings: serde_json::Value,
}

/// The enabled sources of `settings`, each with its kind, after checking every one:
/// a bad section stops the hub before anything starts, naming the section.
fn enabled(settings: &Settings) -> anyhow::Result<Vec<Configured>> {
    let mut sources = Vec::new();
    for (name, section) in &settings.sources {
        if !section.enabled {
            continue;
        }
        let at = |e: &dyn std::fmt::Display| anyhow::anyhow!("sources.{name}: {e}");
        let kind = kind_named(&section.kind).map_err(|e| at(&e))?;
        let values = serde_json::Value::Object(section.settings.clone());
        kind.check(&values).map_err(|e| at(&e))?;
        sources.push(Configured {
            name: name.clone(),
            kind,
            settings: values,
        });
    }
    Ok(sources)
}

/// Checks every enabled source's settings without starting anything.
pub fn check(settings: &Settings) -> anyhow::Result<()> {
    enabled(settings).map(|_| ())
}

/// Builds every enabled source (binding its ports and folders), or fails naming the
/// one that could not start. The returned tasks run until `shutdown`.
pub async fn start(
    settings: &Settings,
    sink: Arc<dyn IngestSink>,
    store: Arc<dyn crate::store::Store>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<(String, RunningSource)>> {
    let mut running = Vec::new();
    for Configured {
        name,
        kind,
        settings: values,
    } in enabled(settings)?
    {
        let context = SourceContext::new(
            name.clone(),
            sink.clone(),
            shutdown.clone(),
            settings.ingest.time_window(),
            Arc::new(StoredState(store.clone())),
            Arc::new(StoredKeys(store.clone())),
        );
        let task = kind
            .build(values, context)
            .await
            .map_err(|e| anyhow::anyhow!("sources.{name}: {e}"))?;
        running.push((name, task));
    }
    Ok(running)
}

/// Sources' progress in the hub's database (`source_state`).
struct StoredState(Arc<dyn IngestStore>);

#[async_trait::async_trait]
impl SourceState for StoredState {
    async fn load(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0
            .load_source_state(source, key)
            .await
            .map_err(|e| e.to_string())
    }

    async fn save(&self, source: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.0
            .save_source_state(source, key, value)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Source keys in the hub's database, by hash.
struct StoredKeys(Arc<dyn AdminStore>);

#[async_trait::async_trait]
impl SourceCredentials for StoredKeys {
    async fn facility_of(&self, key: &str) -> Result<Option<String>, String> {
        self.0
            .find_source_key(&crate::store::api_key_hash(key))
            .await
            .map_err(|e| e.to_string())
    }
}

/// The `listen` address of the first enabled source of `kind`, for commands that talk
/// to it (`renkei send`).
pub fn listen_address(settings: &Settings, kind: &str) -> Option<std::net::SocketAddr> {
    settings
        .sources
        .values()
        .filter(|s| s.enabled && s.kind == kind)
        .find_map(|s| s.settings.get("listen")?.as_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_defaults_check_and_an_unknown_kind_is_named() -> anyhow::Result<()> {
        let mut settings = Settings::load(None)?;
        check(&settings)?;
        assert!(listen_address(&settings, "mllp").is_some());
        if let Some(section) = settings.sources.get_mut("mllp") {
            section.kind = "telex".to_owned();
        }
        let err = check(&settings).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "sources.mllp: `telex` is not a source kind (known: mllp, fhir, ss-mix2, file_drop)"
            )
        );
        Ok(())
    }

    #[test]
    fn a_misspelt_setting_is_refused_naming_the_source() -> anyhow::Result<()> {
        let mut settings = Settings::load(None)?;
        if let Some(section) = settings.sources.get_mut("mllp") {
            section
                .settings
                .insert("max_conections".to_owned(), serde_json::json!(3));
        }
        let err = check(&settings)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("sources.mllp: ") && err.contains("max_conections"),
            "{err}"
        );
        Ok(())
    }
}
