//! The adapter contract: a [`Normalizer`] turns raw bytes into a [`CanonicalEvent`];
//! a source hands what it received to an [`IngestSink`] and only acknowledges its
//! sender according to the [`IngestOutcome`] it gets back.

use crate::event::{CanonicalEvent, SourceFormat};

/// Why an input can never become a canonical event. The sender must fix it; retrying
/// the same bytes will fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", location.as_deref().map(|l| format!("{l}: ")).unwrap_or_default())]
pub struct NormalizeError {
    /// Where in the input the problem is, e.g. `PID-3`, `MSH-18`, `line 2`, `$.entry[0]`.
    pub location: Option<String>,
    /// What is wrong, in words a sender's engineer can act on.
    pub reason: String,
}

impl NormalizeError {
    /// An error at a known place in the input.
    pub fn at(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            location: Some(location.into()),
            reason: reason.into(),
        }
    }

    /// An error about the input as a whole.
    pub fn whole(reason: impl Into<String>) -> Self {
        Self {
            location: None,
            reason: reason.into(),
        }
    }
}

/// Turns one raw input into one canonical event. Pure: no I/O, no clock other than the
/// fresh event id, so it can be fuzzed and benchmarked alone.
pub trait Normalizer: Send + Sync {
    /// The input format this normaliser reads.
    fn format(&self) -> SourceFormat;

    /// Decodes, validates and maps `raw`. An `Err` means the input will never be accepted.
    fn normalize(&self, raw: &[u8]) -> Result<CanonicalEvent, NormalizeError>;
}

/// Who sent an input, as the source adapter knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSource {
    /// The adapter that received it, e.g. `mllp`.
    pub adapter: String,
    /// The peer (address, file name, storage path, client id) for the operator's eyes:
    /// kept with refused inputs and in the audit log, never written to a log (an SS-MIX2
    /// storage path holds the patient id; sources log a digest of it instead).
    pub peer: String,
}

/// A received input on its way into the hub.
#[derive(Debug, Clone)]
pub struct ReceivedInput {
    /// Who sent it.
    pub source: InputSource,
    /// The bytes exactly as received (kept on rejection so an operator can fix and
    /// replay). Shared, not copied: a source hands over the buffer it read into.
    pub raw: bytes::Bytes,
    /// The normaliser's verdict.
    pub normalized: Result<CanonicalEvent, NormalizeError>,
}

/// What became of an input: the adapter answers its sender from this and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The event is durable on the bus; `duplicate` when the same source message was
    /// accepted before (the sender is acknowledged, nothing is published twice).
    Accepted {
        /// The canonical event id (the first one, for a duplicate).
        event_id: uuid::Uuid,
        /// The same source message was already accepted.
        duplicate: bool,
    },
    /// The input will never be accepted; it was kept with this reason.
    Rejected(NormalizeError),
    /// The hub cannot take it right now (bus or store unreachable): the sender should retry.
    Unavailable(String),
}

/// Where sources hand their inputs. Implemented by the hub, and handed to every source
/// as `Arc<dyn IngestSink>`.
#[async_trait::async_trait]
pub trait IngestSink: Send + Sync + 'static {
    /// Keeps a refused input with its reason, or dedupes, persists and publishes an
    /// accepted one with a confirm; then reports the outcome. The source answers its
    /// sender from that outcome only.
    async fn ingest(&self, input: ReceivedInput) -> IngestOutcome;
}
