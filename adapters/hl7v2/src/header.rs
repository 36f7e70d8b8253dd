//! The `MSH` header read leniently, so that a listener can acknowledge a message even
//! when it cannot be normalised (unsupported event, bad character set, missing PID…).

use std::borrow::Cow;

use crate::charset::{Charset, RawMsh};
use crate::parse::{Delimiters, Message, unescape};

/// What an acknowledgement needs from the `MSH` of the message it answers.
///
/// Fields that are echoed as composites (`MSH-3` to `MSH-6`, `MSH-11`) are kept exactly
/// as sent, in the message's own delimiters ([`MshHeader::delimiters`]); the others are
/// unescaped values.
///
/// [`MshHeader::default`] is the header of a message without a usable `MSH` (standard
/// delimiters, every field empty, no known character set): a listener can still answer
/// such input with an `AE` whose `MSA-2` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MshHeader {
    /// The delimiters the message declared in `MSH-1`/`MSH-2`.
    pub delimiters: Delimiters,
    /// `MSH-3` sending application, as sent.
    pub sending_application: String,
    /// `MSH-4` sending facility, as sent.
    pub sending_facility: String,
    /// `MSH-5` receiving application, as sent.
    pub receiving_application: String,
    /// `MSH-6` receiving facility, as sent.
    pub receiving_facility: String,
    /// `MSH-9.1` message code, e.g. `ADT`.
    pub message_type: String,
    /// `MSH-9.2` trigger event, e.g. `A01`.
    pub trigger_event: String,
    /// `MSH-10` message control id.
    pub control_id: String,
    /// `MSH-11` processing id (e.g. `P`), as sent.
    pub processing_id: String,
    /// `MSH-12.1` version id, e.g. `2.5`.
    pub version: String,
    /// `MSH-18` character set, as sent (e.g. `~ISO IR87`).
    pub charset_field: String,
    /// The character set `MSH-18` declares, when the hub supports it.
    pub charset: Option<Charset>,
}

impl MshHeader {
    /// Reads the `MSH` segment at the start of `raw`, before and independently of any
    /// normalisation. Lenient: absent fields are empty, and an `MSH` line that is not
    /// valid in its declared character set is read as lossy UTF-8. `None` only when
    /// there is no `MSH` segment with usable delimiters (see [`MshHeader::default`]).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let msh = RawMsh::locate(raw).ok()?;
        let charset = msh.charset().ok();
        let line: Cow<'_, str> = charset
            .and_then(|c| {
                c.encoding()
                    .decode_without_bom_handling_and_without_replacement(msh.line)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(msh.line));
        let message = Message::parse(&line).ok()?;
        let segment = message.msh();
        let delimiters = message.delimiters();
        let raw_field = |n: usize| segment.field(n).raw().to_owned();
        Some(MshHeader {
            delimiters,
            sending_application: raw_field(3),
            sending_facility: raw_field(4),
            receiving_application: raw_field(5),
            receiving_facility: raw_field(6),
            message_type: segment.field(9).component(1).value().trim().to_owned(),
            trigger_event: segment.field(9).component(2).value().trim().to_owned(),
            control_id: unescape(segment.field(10).raw(), &delimiters).into_owned(),
            processing_id: raw_field(11),
            version: segment.field(12).component(1).value().trim().to_owned(),
            charset_field: raw_field(18),
            charset,
        })
    }
}

/// The message control id (`MSH-10`) of a raw message, when it has a non-empty one.
pub fn message_control_id(raw: &[u8]) -> Option<String> {
    MshHeader::parse(raw)
        .map(|h| h.control_id)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_header_of_a_message_it_could_not_normalise() {
        let raw = b"MSH|^~\\&|HIS01^1.2.3^ISO|1319999999|RENKEI|HUB|20250410||ADT^Z99^ADT_A01|C\\F\\1|P|2.5.1||||||~ISO IR87\rPID|";
        let h = MshHeader::parse(raw).unwrap_or_else(|| panic!("no header"));
        assert_eq!(h.sending_application, "HIS01^1.2.3^ISO");
        assert_eq!(h.sending_facility, "1319999999");
        assert_eq!(h.receiving_application, "RENKEI");
        assert_eq!(h.receiving_facility, "HUB");
        assert_eq!(h.message_type, "ADT");
        assert_eq!(h.trigger_event, "Z99");
        assert_eq!(h.control_id, "C|1");
        assert_eq!(h.processing_id, "P");
        assert_eq!(h.version, "2.5.1");
        assert_eq!(h.charset_field, "~ISO IR87");
        assert_eq!(h.charset, Some(Charset::Iso2022Jp));
        assert_eq!(message_control_id(raw).as_deref(), Some("C|1"));
    }

    #[test]
    fn lenient_on_short_or_broken_headers() {
        let h = MshHeader::parse(b"MSH|^~\\&|HIS01").unwrap_or_else(|| panic!("no header"));
        assert_eq!(h.sending_application, "HIS01");
        assert_eq!(h.control_id, "");
        assert_eq!(message_control_id(b"MSH|^~\\&|HIS01"), None);
        let h = MshHeader::parse(b"MSH|^~\\&|A|B|C|D|E||ADT^A01|42|P|2.5||||||KOI8-R\r")
            .unwrap_or_else(|| panic!("no header"));
        assert_eq!(h.charset, None);
        assert_eq!(h.control_id, "42");
        let h = MshHeader::parse(b"MSH|^~\\&|\x82\xa0|B|C|D|E||ADT^A01|43|P|2.5\r")
            .unwrap_or_else(|| panic!("no header"));
        assert_eq!(h.control_id, "43");
        assert!(MshHeader::parse(b"EVN||x").is_none());
        assert!(MshHeader::parse(b"").is_none());
    }
}
