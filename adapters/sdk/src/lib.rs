//! The Renkei adapter SDK.
//!
//! - [`event`]: the canonical event v1 model every adapter produces.
//! - [`adapter`]: the contract between a source adapter and the hub.
//! - [`source`]: the [`source::Source`] trait every source kind implements.
//! - [`file`]: [`file::FileFormat`], a kind of file inputs arrive as.
//! - [`conformance`]: checks an event against the facts of a conformance case.
//!
//! The JSON Schema of the canonical event is [`EVENT_SCHEMA_V1`].

pub mod adapter;
pub mod conformance;
pub mod event;
pub mod file;
pub mod plausible;
pub mod samples;
pub mod source;

pub use adapter::{
    IngestOutcome, IngestSink, InputSource, NormalizeError, Normalizer, ReceivedInput,
};
pub use event::*;
pub use plausible::TimeWindow;

/// The JSON Schema (draft 2020-12) of canonical event v1.
pub const EVENT_SCHEMA_V1: &str = include_str!("../schema/event-v1.schema.json");
