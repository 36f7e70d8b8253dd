//! Original-mode acknowledgements (`ACK`), encoded in the character set of the message
//! they answer.

use chrono::{DateTime, FixedOffset};
use renkei_sdk::NormalizeError;

use crate::header::MshHeader;
use crate::parse::Delimiters;

/// The acknowledgement code (`MSA-1`, HL7 table 0008, original mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// `AA`: the message is accepted (the event is durable).
    Accept,
    /// `AE`: the message will never be accepted as sent; the sender must fix it.
    Error,
    /// `AR`: the hub cannot accept the message now; the sender should send it again.
    Reject,
}

impl AckCode {
    /// `AA`, `AE` or `AR`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// HL7 error codes (`ERR-3`, HL7 table 0357).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: segment sequence error (e.g. no `MSH` first, no `PID`).
    SegmentSequenceError,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error (a value that is not what the field holds).
    DataTypeError,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 207: application internal error.
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The table's text for the code.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }

    /// The code that best describes a normalisation error, from its location (`MSH-9`,
    /// `PID-3`…) and wording: a location without a field is a segment sequence error;
    /// `MSH-9` is an unsupported message type or event code; an empty, missing or cut
    /// short value is a missing required field; any other value is a data type error;
    /// an error without a location is an application error.
    pub fn for_error(err: &NormalizeError) -> Self {
        let Some(location) = err.location.as_deref() else {
            return ErrorCode::ApplicationInternalError;
        };
        let Some((segment, field)) = location.split_once('-') else {
            return ErrorCode::SegmentSequenceError;
        };
        let reason = err.reason.to_lowercase();
        let missing = ["empty", "missing", "cut short"]
            .iter()
            .any(|w| reason.contains(w));
        match (segment, field) {
            _ if missing => ErrorCode::RequiredFieldMissing,
            ("MSH", "9") if reason.contains("trigger") => ErrorCode::UnsupportedEventCode,
            ("MSH", "9") => ErrorCode::UnsupportedMessageType,
            ("MSH", "11") => ErrorCode::UnsupportedProcessingId,
            ("MSH", "12") => ErrorCode::UnsupportedVersionId,
            _ => ErrorCode::DataTypeError,
        }
    }
}

/// What the `ERR` segment of an `AE`/`AR` acknowledgement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// `ERR-3`.
    pub code: ErrorCode,
    /// Where the error is, e.g. `PID-3` (written to `ERR-2` as `PID^1^3`).
    pub location: Option<String>,
    /// The explanation for the sender's engineer (`ERR-7`). Never patient data.
    pub text: String,
}

impl AckError {
    /// An error with a code and an explanation, about the message as a whole.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        AckError {
            code,
            location: None,
            text: text.into(),
        }
    }

    /// The same error, located at `location` (e.g. `PID-3`).
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }
}

impl From<&NormalizeError> for AckError {
    fn from(err: &NormalizeError) -> Self {
        AckError {
            code: ErrorCode::for_error(err),
            location: err.location.clone(),
            text: err.to_string(),
        }
    }
}

/// `PID-3` → `PID^1^3` (HL7 v2.5 ERL: segment, sequence, field).
fn error_location(location: &str) -> String {
    let (segment, field) = match location.split_once('-') {
        Some((s, f)) => (s, Some(f)),
        None => (location, None),
    };
    let valid_segment = segment.len() == 3
        && segment
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !valid_segment {
        return String::new();
    }
    let field: String = field
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if field.is_empty() {
        format!("{segment}^1")
    } else {
        format!("{segment}^1^{field}")
    }
}

/// Escapes `text` for the standard delimiters; control characters become `\Xhh\`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            c if c.is_control() && c.is_ascii() => {
                out.push_str(&format!("\\X{:02X}\\", u32::from(c)));
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Re-writes a value sent with the delimiters `from` (separators and escape sequences
/// kept) for the standard delimiters.
fn translate(raw: &str, from: &Delimiters) -> String {
    if *from == Delimiters::STANDARD && !raw.chars().any(|c| c.is_control()) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if Some(c) == from.component() {
            out.push('^');
        } else if Some(c) == from.repetition() {
            out.push('~');
        } else if Some(c) == from.escape() {
            out.push('\\');
        } else if Some(c) == from.subcomponent() {
            out.push('&');
        } else {
            out.push_str(&escape(c.encode_utf8(&mut [0; 4])));
        }
    }
    out
}

/// Builds an original-mode acknowledgement of the message whose header is `header`:
///
/// ```text
/// MSH|^~\&|<MSH-5>|<MSH-6>|<MSH-3>|<MSH-4>|<now>||ACK^<trigger>^ACK|<control_id>|<MSH-11>|<MSH-12>||||||<MSH-18>
/// MSA|<code>|<MSH-10 of the message>
/// ERR||<location>|<error code>^<text>^HL70357|E|||<explanation>      (AE and AR only)
/// ```
///
/// `control_id` is the new acknowledgement's own `MSH-10`. `error` is written to `ERR`
/// for `AE` and `AR` (a generic explanation is used when it is `None`) and ignored for
/// `AA`. Every echoed or explained value is escaped. The acknowledgement is encoded
/// in the character set of the message (`MSH-18` is echoed), so an ISO-2022-JP sender
/// gets an ISO-2022-JP answer; when that character set is not supported, the
/// acknowledgement is plain ASCII (other characters become `?`) with `MSH-18` empty.
/// Segments are terminated by CR; the result is ready for [`MllpCodec`](super::MllpCodec).
pub fn build_ack(
    header: &MshHeader,
    code: AckCode,
    control_id: &str,
    error: Option<&AckError>,
    now: DateTime<FixedOffset>,
) -> Vec<u8> {
    let from = &header.delimiters;
    let or = |value: &str, default: &str| {
        if value.is_empty() {
            default.to_owned()
        } else {
            value.to_owned()
        }
    };
    let trigger = escape(&header.trigger_event);
    let message_type = if trigger.is_empty() {
        "ACK".to_owned()
    } else {
        format!("ACK^{trigger}^ACK")
    };
    let charset_field = match header.charset {
        Some(_) => translate(&header.charset_field, from),
        None => String::new(),
    };
    let mut ack = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||{}|{}|{}|{}||||||{}\rMSA|{}|{}\r",
        translate(&header.receiving_application, from),
        translate(&header.receiving_facility, from),
        translate(&header.sending_application, from),
        translate(&header.sending_facility, from),
        now.format("%Y%m%d%H%M%S%z"),
        message_type,
        escape(control_id),
        or(&translate(&header.processing_id, from), "P"),
        or(&escape(&header.version), "2.5"),
        charset_field,
        code.as_str(),
        escape(&header.control_id),
    );
    if code != AckCode::Accept {
        let fallback;
        let error = match error {
            Some(error) => error,
            None => {
                fallback = match code {
                    AckCode::Reject => AckError::new(
                        ErrorCode::ApplicationInternalError,
                        "the hub cannot accept messages right now: send the message again later",
                    ),
                    _ => AckError::new(
                        ErrorCode::ApplicationInternalError,
                        "the message was not accepted",
                    ),
                };
                &fallback
            }
        };
        ack.push_str(&format!(
            "ERR||{}|{}^{}^HL70357|E|||{}\r",
            error
                .location
                .as_deref()
                .map(error_location)
                .unwrap_or_default(),
            error.code.code(),
            error.code.description(),
            escape(&error.text),
        ));
    }
    match header.charset {
        Some(charset) => charset.encode(&ack),
        None => ack
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect::<String>()
            .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charset::{self, Charset};
    use crate::parse::Message;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2025-04-10T09:30:15+09:00").unwrap_or_else(|e| panic!("{e}"))
    }

    fn header(raw: &[u8]) -> MshHeader {
        MshHeader::parse(raw).unwrap_or_else(|| panic!("no header"))
    }

    const MSG: &[u8] = b"MSH|^~\\&|HIS01|1319999999|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|MSG0001|P|2.5||||||UNICODE UTF-8\rEVN||20250410\r";

    fn text(ack: &[u8]) -> String {
        String::from_utf8(ack.to_vec()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn accept() {
        let ack = text(&build_ack(
            &header(MSG),
            AckCode::Accept,
            "ACK0001",
            None,
            now(),
        ));
        assert_eq!(
            ack,
            "MSH|^~\\&|RENKEI|HUB|HIS01|1319999999|20250410093015+0900||ACK^A01^ACK|ACK0001|P|2.5||||||UNICODE UTF-8\r\
             MSA|AA|MSG0001\r"
        );
    }

    #[test]
    fn error_with_err_segment() {
        let err = NormalizeError::at("PID-3", "PID-3 is empty: there is no patient to route for");
        let ack = text(&build_ack(
            &header(MSG),
            AckCode::Error,
            "ACK0002",
            Some(&AckError::from(&err)),
            now(),
        ));
        let lines: Vec<&str> = ack.split('\r').collect();
        assert_eq!(lines[1], "MSA|AE|MSG0001");
        assert_eq!(
            lines[2],
            "ERR||PID^1^3|101^Required field missing^HL70357|E|||PID-3: PID-3 is empty: there is no patient to route for"
        );
        assert_eq!(lines[3], "");
        // The ACK parses back, and the text survives escaping.
        let err = AckError::new(ErrorCode::DataTypeError, "a|b^c~d\\e&f\r\ng").at("EVN-2");
        let ack = text(&build_ack(
            &header(MSG),
            AckCode::Error,
            "X",
            Some(&err),
            now(),
        ));
        let message = Message::parse(&ack).unwrap_or_else(|e| panic!("{e}"));
        let err_segment = message.segment("ERR").unwrap_or_else(|| panic!("no ERR"));
        assert_eq!(err_segment.field(2).raw(), "EVN^1^2");
        assert_eq!(err_segment.field(3).component(1).value(), "102");
        assert_eq!(err_segment.field(3).component(3).value(), "HL70357");
        assert_eq!(err_segment.field(4).value(), "E");
        assert_eq!(err_segment.field(7).value(), "a|b^c~d\\e&f\r\ng");
    }

    #[test]
    fn reject_has_a_default_err() {
        let ack = text(&build_ack(
            &header(MSG),
            AckCode::Reject,
            "ACK3",
            None,
            now(),
        ));
        assert!(ack.contains("\rMSA|AR|MSG0001\r"), "{ack}");
        assert!(
            ack.contains(
                "\rERR|||207^Application internal error^HL70357|E|||the hub cannot accept"
            ),
            "{ack}"
        );
    }

    #[test]
    fn error_codes_for_normalize_errors() {
        let code = |l: Option<&str>, r: &str| {
            ErrorCode::for_error(&NormalizeError {
                location: l.map(str::to_owned),
                reason: r.to_owned(),
            })
            .code()
        };
        assert_eq!(
            code(
                Some("MSH"),
                "the message does not start with an MSH segment"
            ),
            100
        );
        assert_eq!(code(Some("MSH-9"), "MSH is cut short after MSH-3"), 101);
        assert_eq!(
            code(Some("MSH-9"), "message type `ORU^R01` is not handled"),
            200
        );
        assert_eq!(
            code(Some("MSH-9"), "ADT trigger event `Z99` is not an event"),
            201
        );
        assert_eq!(code(Some("PID-3"), "PID-3 is empty"), 101);
        assert_eq!(
            code(Some("EVN-2"), "EVN-2 `x` is not an HL7 timestamp"),
            102
        );
        assert_eq!(code(None, "boom"), 207);
    }

    #[test]
    fn header_with_other_delimiters_is_translated() {
        let raw = b"MSH#$*!@#HIS$1.2.3$ISO#F!F!1#R#H#2025##ADT$A08#ID!S!1#P#2.5\r";
        let ack = text(&build_ack(&header(raw), AckCode::Accept, "A", None, now()));
        assert!(
            ack.starts_with("MSH|^~\\&|R|H|HIS^1.2.3^ISO|F\\F\\1|"),
            "{ack}"
        );
        assert!(ack.contains("\rMSA|AA|ID$1\r"), "{ack}");
    }

    #[test]
    fn iso_2022_jp_round_trip() {
        let raw = charset::Charset::Iso2022Jp.encode(
            "MSH|^~\\&|HIS01|1319999999|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|MSG0009|P|2.5||||||~ISO IR87||ISO 2022-1994\rPID|1||1||架空^花子\r",
        );
        let h = header(&raw);
        assert_eq!(h.charset, Some(Charset::Iso2022Jp));
        let err = AckError::new(ErrorCode::DataTypeError, "氏名が不正です").at("PID-5");
        let ack = build_ack(&h, AckCode::Error, "ACK9", Some(&err), now());
        assert!(ack.is_ascii(), "ISO-2022-JP is 7-bit");
        assert!(
            ack.windows(3).any(|w| w == b"\x1b$B"),
            "kanji are JIS-encoded"
        );
        let decoded = charset::decode(&ack).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.charset, Charset::Iso2022Jp);
        let message = Message::parse(&decoded.text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(message.msh().field(18).raw(), "~ISO IR87");
        let err_segment = message.segment("ERR").unwrap_or_else(|| panic!("no ERR"));
        assert_eq!(err_segment.field(7).value(), "氏名が不正です");
        assert_eq!(err_segment.field(2).raw(), "PID^1^5");
        assert_eq!(
            message
                .segment("MSA")
                .map(|s| s.field(2).value().into_owned())
                .as_deref(),
            Some("MSG0009")
        );
    }

    #[test]
    fn unsupported_charset_gives_an_ascii_ack() {
        let raw = b"MSH|^~\\&|A|B|C|D|2025||ADT^A01|M1|P|2.5||||||KOI8-R\r";
        let err = AckError::new(ErrorCode::DataTypeError, "文字コード");
        let ack = build_ack(&header(raw), AckCode::Error, "X", Some(&err), now());
        assert!(ack.is_ascii());
        let ack = text(&ack);
        assert!(ack.contains("|2.5||||||\r"), "{ack}");
        assert!(ack.contains("|||?????\r"), "{ack}");
    }
}
