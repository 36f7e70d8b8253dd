//! Strict MS932 decoding.
//!
//! Care offices' files are MS932 (Windows-31J: Shift_JIS with the NEC and IBM
//! extensions, so `①` and `～` decode as the sender meant). `encoding_rs::SHIFT_JIS` is
//! the WHATWG Shift_JIS decoder, which is exactly that table.
//!
//! Decoding is strict: a byte sequence that is not MS932 refuses the whole file with
//! its byte offset, never a replacement character. Bytes that are valid UTF-8 with
//! multi-byte sequences are refused as UTF-8 even where they would partly decode as
//! MS932: a spreadsheet saved "as UTF-8" is the usual mistake, and decoding it as MS932
//! would store mojibake. (Japanese MS932 text is practically never valid UTF-8 as a
//! whole: its lead bytes 0x81–0x9F are UTF-8 continuation bytes.)

use encoding_rs::{DecoderResult, SHIFT_JIS};
use renkei_sdk::NormalizeError;

/// Why bytes cannot be read as MS932.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// The bytes are UTF-8 (a UTF-8 byte-order mark, or valid UTF-8 with multi-byte
    /// characters), not MS932.
    #[error(
        "the bytes are UTF-8, not MS932 (first non-ASCII byte at offset {offset}, line {line}): the layout requires MS932 (Shift_JIS, CP932); save the file as Shift_JIS rather than UTF-8. It was refused rather than stored garbled"
    )]
    Utf8 {
        /// Byte offset of the first non-ASCII byte (or of the byte-order mark).
        offset: usize,
        /// 1-based line (counting LF) of that byte.
        line: usize,
    },
    /// A byte sequence that MS932 does not define.
    #[error(
        "the bytes are not valid MS932 (Shift_JIS, CP932) at offset {offset}, line {line}{}; the layout requires MS932. It was refused rather than stored garbled",
        if *looks_like_utf8 { ": they look like UTF-8 up to there, so save the file as Shift_JIS rather than UTF-8" } else { "" }
    )]
    Malformed {
        /// Byte offset of the first invalid sequence.
        offset: usize,
        /// 1-based line (counting LF) of that sequence.
        line: usize,
        /// The bytes up to and past the invalid sequence are valid UTF-8.
        looks_like_utf8: bool,
    },
    /// A NUL byte, which no text file holds (and no text column could store).
    #[error(
        "the file contains a NUL byte at offset {offset}, line {line}; a text file never does: check that it is a CSV saved as MS932, not a spreadsheet or a UTF-16 file"
    )]
    Nul {
        /// Byte offset of the NUL byte.
        offset: usize,
        /// 1-based line (counting LF).
        line: usize,
    },
}

impl EncodingError {
    /// Where in the bytes the problem is: `byte <offset>, line <line>`.
    pub fn location(&self) -> String {
        let (offset, line) = match *self {
            EncodingError::Utf8 { offset, line }
            | EncodingError::Malformed { offset, line, .. }
            | EncodingError::Nul { offset, line } => (offset, line),
        };
        format!("byte {offset}, line {line}")
    }

    /// Byte offset of the problem in the raw bytes.
    pub fn offset(&self) -> usize {
        match *self {
            EncodingError::Utf8 { offset, .. }
            | EncodingError::Malformed { offset, .. }
            | EncodingError::Nul { offset, .. } => offset,
        }
    }
}

impl From<EncodingError> for NormalizeError {
    fn from(err: EncodingError) -> Self {
        NormalizeError::at(err.location(), err.to_string())
    }
}

/// The 1-based line (counting LF; CR and LF are single bytes in MS932 and never part
/// of a double-byte character) of `offset`.
fn line_of(raw: &[u8], offset: usize) -> usize {
    raw.get(..offset)
        .unwrap_or(raw)
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Decodes `raw` as MS932, strictly (see the module docs).
pub fn decode_ms932(raw: &[u8]) -> Result<String, EncodingError> {
    if let Some(offset) = raw.iter().position(|&b| b == 0) {
        return Err(EncodingError::Nul {
            offset,
            line: line_of(raw, offset),
        });
    }
    if raw.starts_with(b"\xEF\xBB\xBF") {
        return Err(EncodingError::Utf8 { offset: 0, line: 1 });
    }
    if raw.is_ascii() {
        // ASCII is the same in MS932 and UTF-8.
        return Ok(String::from_utf8_lossy(raw).into_owned());
    }
    if std::str::from_utf8(raw).is_ok() {
        let offset = raw.iter().position(|b| !b.is_ascii()).unwrap_or(0);
        return Err(EncodingError::Utf8 {
            offset,
            line: line_of(raw, offset),
        });
    }
    let mut decoder = SHIFT_JIS.new_decoder_without_bom_handling();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(raw.len())
        .unwrap_or_else(|| raw.len().saturating_mul(3));
    let mut text = String::with_capacity(capacity);
    let mut consumed = 0;
    loop {
        let rest = raw.get(consumed..).unwrap_or_default();
        let (result, read) = decoder.decode_to_string_without_replacement(rest, &mut text, true);
        consumed += read;
        match result {
            DecoderResult::InputEmpty => return Ok(text),
            DecoderResult::OutputFull => {
                let more = decoder
                    .max_utf8_buffer_length_without_replacement(raw.len() - consumed)
                    .unwrap_or(64);
                text.reserve(more.max(64));
            }
            DecoderResult::Malformed(bad, after) => {
                let offset = consumed
                    .saturating_sub(usize::from(after))
                    .saturating_sub(usize::from(bad));
                let looks_like_utf8 = match std::str::from_utf8(raw) {
                    Ok(_) => true,
                    // Valid UTF-8 past the MS932 failure (a UTF-8 file cut short).
                    Err(e) => e.valid_up_to() > offset,
                };
                return Err(EncodingError::Malformed {
                    offset,
                    line: line_of(raw, offset),
                    looks_like_utf8,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms932(text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = SHIFT_JIS.encode(text);
        assert!(!unmappable, "{text} is not MS932");
        bytes.into_owned()
    }

    #[test]
    fn nec_and_ibm_extensions_decode_as_the_sender_meant() {
        // 0x8740 is ① (NEC row 13); 0x8160 is ～ (FULLWIDTH TILDE) in MS932.
        assert_eq!(decode_ms932(&[0x87, 0x40]).as_deref(), Ok("①"));
        assert_eq!(decode_ms932(&[0x81, 0x60]).as_deref(), Ok("～"));
        assert_eq!(
            decode_ms932(&ms932("架空 花子")).as_deref(),
            Ok("架空 花子")
        );
    }

    #[test]
    fn utf8_japanese_is_refused_as_utf8() {
        let err = decode_ms932("CSV,架空\r\n".as_bytes()).err();
        assert_eq!(err, Some(EncodingError::Utf8 { offset: 4, line: 1 }));
        let err = decode_ms932(b"\xEF\xBB\xBFabc").err();
        assert_eq!(err, Some(EncodingError::Utf8 { offset: 0, line: 1 }));
    }

    #[test]
    fn an_invalid_byte_is_refused_with_its_offset_and_line() {
        let mut raw = ms932("ア,イ\r\nウ");
        raw.push(0x81); // a lead byte with no trail byte
        let err = decode_ms932(&raw).err();
        assert!(
            matches!(
                err,
                Some(EncodingError::Malformed {
                    offset: 9,
                    line: 2,
                    looks_like_utf8: false
                })
            ),
            "{err:?}"
        );
        let shown = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(shown.contains("offset 9"), "{shown}");
    }

    #[test]
    fn a_nul_byte_is_refused() {
        let err = decode_ms932(b"a,b\r\nc\0").err();
        assert_eq!(err, Some(EncodingError::Nul { offset: 6, line: 2 }));
    }
}
