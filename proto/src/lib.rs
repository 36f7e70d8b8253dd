//! Renkei's protobuf contracts and their generated Rust types.
//!
//! - [`event::v1`]: canonical event v1 (`renkei.event.v1`), the protobuf twin of
//!   [`renkei_sdk::CanonicalEvent`]; [`convert`] maps between the two.
//! - [`adapter::v1`]: the out-of-process adapter contract (`renkei.adapter.v1`): the
//!   messages of the `AdapterIngest` service. Only the messages are generated for now.
//!
//! The `.proto` sources are in `proto/proto/` and are compiled by protox at build time,
//! so no `protoc` is needed.

pub mod convert;

pub use convert::ConvertError;

/// Canonical event messages (`renkei.event.v1`).
pub mod event {
    /// Version 1 (`renkei.event.v1`).
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/renkei.event.v1.rs"));
    }
}

/// Out-of-process adapter messages (`renkei.adapter.v1`).
pub mod adapter {
    /// Version 1 (`renkei.adapter.v1`).
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/renkei.adapter.v1.rs"));
    }
}
