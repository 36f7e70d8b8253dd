//! Sources: how an adapter becomes a running task of the hub.
//!
//! A source kind (an MLLP listener, a FHIR receiver, a drop folder) implements
//! [`Source`]: a typed configuration, read from one `[sources.<name>]` section of the
//! hub's configuration, and [`Source::build`], which binds what must be bound (a port, a
//! folder) and returns the running task. The task hands every input to the
//! [`IngestSink`] of its [`SourceContext`] and answers its sender only from the
//! [`IngestOutcome`](crate::IngestOutcome) it gets back; it returns when the context's
//! shutdown token is cancelled, after answering what it had in hand.
//!
//! The hub lists the kinds it knows in one plain function returning
//! `Vec<Box<dyn AnySource>>`; [`AnySource`] is [`Source`] with its configuration type
//! erased, implemented for every `Source`, so the hub needs no per-kind code.
//!
//! ```
//! use renkei_sdk::source::{RunningSource, Source, SourceContext, SourceError};
//!
//! /// Settings of `[sources.<name>]` with `type = "heartbeat"`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct HeartbeatConfig {
//!     every_seconds: u64,
//! }
//!
//! struct Heartbeat;
//!
//! #[async_trait::async_trait]
//! impl Source for Heartbeat {
//!     const KIND: &'static str = "heartbeat";
//!     type Config = HeartbeatConfig;
//!
//!     fn check(&self, config: &HeartbeatConfig) -> Result<(), SourceError> {
//!         if config.every_seconds == 0 {
//!             return Err(SourceError::config("every_seconds", "must be at least 1"));
//!         }
//!         Ok(())
//!     }
//!
//!     async fn build(
//!         &self,
//!         config: HeartbeatConfig,
//!         context: SourceContext,
//!     ) -> Result<RunningSource, SourceError> {
//!         Ok(Box::pin(async move {
//!             // A real source reads inputs here and hands each to `context.sink`.
//!             let _ = config.every_seconds;
//!             context.shutdown.cancelled().await;
//!             Ok(())
//!         }))
//!     }
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::adapter::IngestSink;
use crate::plausible::TimeWindow;

/// A source's running task: it ends when shutdown is asked for, or with the error that
/// stopped it (which stops the hub).
pub type RunningSource = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// Why a source cannot be configured, started or kept running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A setting is missing, unknown or out of range.
    #[error("{setting}: {reason}")]
    Config {
        /// The setting at fault, relative to the source's section (e.g. `listen`).
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The source could not start (a port in use, a folder missing).
    #[error("cannot start: {0}")]
    Start(String),
    /// The source stopped with an error while running.
    #[error("stopped: {0}")]
    Failed(String),
}

impl SourceError {
    /// A setting at fault.
    pub fn config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// Where a source keeps what it must remember across restarts (how far it has read a
/// folder or a storage tree), in the hub's database: a value per key, per source name.
/// A source saves after the inputs it covers were accepted, so a restart neither skips
/// nor (beyond the ingest's dedupe) resends.
#[async_trait::async_trait]
pub trait SourceState: Send + Sync + 'static {
    /// The value saved under `key` by the source `source`, if any.
    async fn load(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Saves `value` under `key`, replacing what was there.
    async fn save(&self, source: &str, key: &str, value: &[u8]) -> Result<(), String>;
}

/// A [`SourceState`] in memory, for tests and for sources run without a hub.
#[derive(Default)]
pub struct MemoryState {
    values: std::sync::Mutex<std::collections::BTreeMap<(String, String), Vec<u8>>>,
}

#[async_trait::async_trait]
impl SourceState for MemoryState {
    async fn load(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let values = self.values.lock().map_err(|e| e.to_string())?;
        Ok(values.get(&(source.to_owned(), key.to_owned())).cloned())
    }

    async fn save(&self, source: &str, key: &str, value: &[u8]) -> Result<(), String> {
        let mut values = self.values.lock().map_err(|e| e.to_string())?;
        values.insert((source.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }
}

/// Who a sender is: the facility a source key lets it publish as. Sources that take
/// inputs over HTTP ask this for every request's key; the hub keeps only key hashes.
#[async_trait::async_trait]
pub trait SourceCredentials: Send + Sync + 'static {
    /// The facility `key` publishes as, or `None` for an unknown or revoked key.
    async fn facility_of(&self, key: &str) -> Result<Option<String>, String>;
}

/// What the hub gives a source it builds.
#[non_exhaustive]
pub struct SourceContext {
    /// The source's name: the key of its `[sources.<name>]` section. Sources should use
    /// it as the `adapter` of every [`InputSource`](crate::InputSource) they report.
    pub name: String,
    /// Where every input goes.
    pub sink: Arc<dyn IngestSink>,
    /// Cancelled when the hub stops: finish answering what is in hand, then return.
    pub shutdown: CancellationToken,
    /// Times the normalisers accept (`ingest.*` settings).
    pub time_window: TimeWindow,
    /// Where the source keeps its progress.
    pub state: Arc<dyn SourceState>,
    /// Whose keys senders present.
    pub credentials: Arc<dyn SourceCredentials>,
}

impl SourceContext {
    /// A context for the source named `name`.
    pub fn new(
        name: impl Into<String>,
        sink: Arc<dyn IngestSink>,
        shutdown: CancellationToken,
        time_window: TimeWindow,
        state: Arc<dyn SourceState>,
        credentials: Arc<dyn SourceCredentials>,
    ) -> Self {
        Self {
            name: name.into(),
            sink,
            shutdown,
            time_window,
            state,
            credentials,
        }
    }
}

/// A kind of source, with its typed configuration.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// The `type` of its configuration sections, e.g. `mllp`.
    const KIND: &'static str;
    /// Its settings: the section minus `type` and `enabled`. Deny unknown fields, so a
    /// misspelt setting is an error rather than silently ignored.
    type Config: DeserializeOwned + Send + 'static;

    /// Checks settings that parse but cannot work (a zero limit, two limits that
    /// contradict). Called before anything starts, so one bad source stops the hub at
    /// start-up rather than halfway.
    fn check(&self, _config: &Self::Config) -> Result<(), SourceError> {
        Ok(())
    }

    /// Binds what the source needs and returns its running task.
    async fn build(
        &self,
        config: Self::Config,
        context: SourceContext,
    ) -> Result<RunningSource, SourceError>;
}

/// A [`Source`] with its configuration type erased: what the hub's registry holds.
#[async_trait::async_trait]
pub trait AnySource: Send + Sync {
    /// The `type` it is configured by.
    fn kind(&self) -> &'static str;
    /// Parses and checks a section's settings.
    fn check(&self, settings: &serde_json::Value) -> Result<(), SourceError>;
    /// Parses the settings and builds the running task.
    async fn build(
        &self,
        settings: serde_json::Value,
        context: SourceContext,
    ) -> Result<RunningSource, SourceError>;
}

/// Deserialises a 10-digit facility code from a string, or from the number an
/// environment variable becomes when the configuration parses it (`0112345678` would be
/// read as 112345678): numbers are written back with their leading zeros. Use it as
/// `#[serde(deserialize_with = "renkei_sdk::source::facility_code")]`.
pub fn facility_code<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Code {
        Text(String),
        Number(u64),
    }
    match <Code as serde::Deserialize>::deserialize(deserializer)? {
        Code::Text(text) => Ok(text),
        Code::Number(n) => Ok(format!("{n:010}")),
    }
}

fn parse<C: DeserializeOwned>(settings: serde_json::Value) -> Result<C, SourceError> {
    serde_json::from_value(settings).map_err(|e| {
        // serde names the field in its message ("unknown field `lisen`, expected …").
        SourceError::config("settings", e.to_string())
    })
}

#[async_trait::async_trait]
impl<S: Source> AnySource for S {
    fn kind(&self) -> &'static str {
        S::KIND
    }

    fn check(&self, settings: &serde_json::Value) -> Result<(), SourceError> {
        let config: S::Config = parse(settings.clone())?;
        Source::check(self, &config)
    }

    async fn build(
        &self,
        settings: serde_json::Value,
        context: SourceContext,
    ) -> Result<RunningSource, SourceError> {
        let config: S::Config = parse(settings)?;
        Source::check(self, &config)?;
        Source::build(self, config, context).await
    }
}
