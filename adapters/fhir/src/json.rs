//! Reading the body: UTF-8 (a byte-order mark is accepted), then JSON.
//!
//! Errors here are about bytes and syntax, before anything is known of FHIR: their
//! location is a position in the body (`byte 17`, `line 3 column 5`), which is how
//! [`crate::classify`] tells them apart from errors about a FHIR element.

use renkei_sdk::NormalizeError;
use serde_json::Value;
use serde_json::error::Category;

/// The UTF-8 byte-order mark, which some Windows senders put before the JSON.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses the body (UTF-8, a leading byte-order mark allowed) into a JSON value.
pub(crate) fn parse(raw: &[u8]) -> Result<Value, NormalizeError> {
    let body = raw.strip_prefix(BOM).unwrap_or(raw);
    // One check of the whole body is cheaper than serde_json's check of each string
    // (most of a Japanese document is multi-byte text), and says where the bad byte is.
    let text = std::str::from_utf8(body)
        .map_err(|bad| not_utf8(raw.len() - body.len(), body, bad.valid_up_to()))?;
    serde_json::from_str(text).map_err(|e| malformed(&e))
}

/// The refusal of a body that is not UTF-8 at byte `at` (after a mark of `skipped`).
fn not_utf8(skipped: usize, body: &[u8], at: usize) -> NormalizeError {
    let (line, column) = position(body, at);
    NormalizeError::at(
        format!("byte {}", skipped + at),
        format!(
            "the body is not UTF-8 (an invalid byte sequence at line {line} column {column}): \
             FHIR JSON must be sent in UTF-8; check the sender's character set (Shift_JIS \
             and ISO-2022-JP are not accepted for FHIR)"
        ),
    )
}

/// The refusal of a body that is not JSON.
fn malformed(e: &serde_json::Error) -> NormalizeError {
    let location = format!("line {} column {}", e.line(), e.column());
    // serde_json's message names what it expected, never the input itself; its own
    // " at line L column C" suffix repeats the location, so it is cut.
    let message = e.to_string();
    let what = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at]);
    let reason = match e.classify() {
        Category::Eof => format!(
            "the JSON is truncated: the body ends before the value is complete ({what}); \
             check that the sender writes, and the transport delivers, the whole Bundle"
        ),
        Category::Io | Category::Syntax | Category::Data => {
            format!("the body is malformed JSON ({what}); send one FHIR resource as a JSON object")
        }
    };
    NormalizeError::at(location, reason)
}

/// The 1-based line and column (in characters) of byte `offset` of `bytes`.
fn position(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let column = 1 + String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count();
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let raw = b"\xEF\xBB\xBF{\"resourceType\":\"Bundle\"}";
        assert_eq!(
            parse(raw).ok(),
            Some(serde_json::json!({"resourceType": "Bundle"}))
        );
    }

    #[test]
    fn shift_jis_bytes_are_refused_with_their_position() {
        // 架空 in Shift_JIS, inside a JSON string on line 2.
        let raw = b"{\n \"name\": \"\x89\xcb\x8b\xf3\"}";
        let e = parse(raw).err();
        let e = e
            .as_ref()
            .map(|e| (e.location.as_deref(), e.reason.as_str()));
        assert!(
            matches!(e, Some((Some("byte 12"), reason)) if reason.contains("line 2 column 11") && reason.contains("not UTF-8")),
            "{e:?}"
        );
    }

    #[test]
    fn truncated_and_malformed_json_are_told_apart() {
        let truncated = parse(b"{\"resourceType\": \"Bundle\", \"type\": \"message\", ").err();
        assert!(
            truncated
                .as_ref()
                .is_some_and(|e| e.reason.contains("truncated")
                    && e.location.as_deref() == Some("line 1 column 46")),
            "{truncated:?}"
        );
        let malformed = parse(b"{\n  \"resourceType\": Bundle}").err();
        assert!(
            malformed
                .as_ref()
                .is_some_and(|e| e.reason.contains("malformed JSON")
                    && e.location.as_deref() == Some("line 2 column 19")
                    && !e.reason.contains(" at line ")),
            "{malformed:?}"
        );
    }
}
