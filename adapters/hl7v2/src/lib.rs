//! HL7 v2 for Renkei: decoding, parsing and normalisation of ADT messages to the
//! canonical event v1, and the MLLP transport.
//!
//! - [`charset`]: reads `MSH-18` from the raw bytes and decodes the message (UTF-8,
//!   ISO-2022-JP `~ISO IR87`, Shift_JIS/MS932) *before* any splitting, leniently where
//!   the bytes are unambiguous (the assumption is recorded in `origin.assumed_charset`).
//! - [`parse`]: an allocation-light ER7 parser over the decoded text.
//! - [`normalize`]: [`Hl7Normalizer`], the [`renkei_sdk::Normalizer`] for ADT A01, A02,
//!   A03, A04, A08, A11, A12, A13 and A31.
//! - [`header`]: [`MshHeader`], the `MSH` read leniently so that every message can be
//!   acknowledged, even one that cannot be normalised.
//! - [`mllp`]: [`MllpCodec`] (MLLP framing for `tokio_util::codec`) and [`build_ack`]
//!   (original-mode `ACK` with `AA`, `AE` or `AR`).
//!
//! ```
//! use renkei_hl7v2::Hl7Normalizer;
//! use renkei_sdk::Normalizer;
//!
//! let raw = "MSH|^~\\&|HIS01|1319999999|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|MSG1|P|2.5||||||UNICODE UTF-8\r\
//!            EVN||20250410093000\r\
//!            PID|1||0000482915^^^^PI||架空^花子^^^^^L^I~カクウ^ハナコ^^^^^L^P||19380315|F\r";
//! let event = Hl7Normalizer::new().normalize(raw.as_bytes()).unwrap();
//! assert_eq!(event.event_type.as_str(), "inpatient.admitted");
//! assert_eq!(event.source, "urn:renkei:facility:1319999999");
//! assert_eq!(event.time.to_rfc3339(), "2025-04-10T09:30:00+09:00");
//! ```

pub mod charset;
pub mod client;
mod dtm;
pub mod file;
pub mod header;
pub mod listener;
pub mod mllp;
pub mod normalize;
pub mod parse;
pub mod source;

pub use charset::{Charset, CharsetError, Decoded, decode};
pub use file::Hl7File;
pub use header::{MshHeader, message_control_id};
pub use mllp::{AckCode, AckError, ErrorCode, MllpCodec, MllpError, build_ack};
pub use normalize::{HANDLED_TRIGGERS, Hl7Normalizer};
pub use parse::{Delimiters, Field, Message, ParseError, Segment};
pub use source::{MllpConfig, MllpSource};
