//! The character set of an HL7 v2 message.
//!
//! Japanese HL7 v2 (SS-MIX2 / JAHIS) declares the character set in `MSH-18`, usually
//! `~ISO IR87` (ISO-2022-JP). The bytes of kanji in ISO-2022-JP and Shift_JIS collide
//! with the delimiters `| ^ ~ \ &`, so the message must be decoded to Unicode *before*
//! it is split. `MSH` up to `MSH-18` is ASCII, so [`decode`] reads `MSH-18` straight
//! from the raw bytes (with the field separator byte `MSH-1`), then decodes the whole
//! message strictly: bytes that are not valid in the declared encoding are refused with
//! a [`CharsetError`], never replaced.
//!
//! | `MSH-18` (any repetition, case-insensitive)                         | decoded as  |
//! |----------------------------------------------------------------------|-------------|
//! | `ISO IR87`, `ISO IR159`, `ISO 2022-1994`, `ISO-2022-JP`               | ISO-2022-JP |
//! | `SHIFT_JIS`, `SJIS`, `MS932`, `CP932`, `WINDOWS-31J`, `ISO IR13`      | Shift_JIS (MS932 table) |
//! | empty, `UNICODE UTF-8`, `UTF-8`, `ASCII`, `ISO IR6`, `ISO IR14`       | UTF-8 (a superset of ASCII) |
//!
//! Any other value is refused as unsupported.

use std::borrow::Cow;

use encoding_rs::{DecoderResult, Encoding, ISO_2022_JP, SHIFT_JIS, UTF_8};
use renkei_sdk::NormalizeError;

use crate::parse::{ParseError, scan};

/// A character set the hub decodes HL7 v2 messages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// UTF-8 (also used for ASCII and an empty `MSH-18`).
    Utf8,
    /// ISO-2022-JP (`~ISO IR87`), the SS-MIX2 default.
    Iso2022Jp,
    /// Shift_JIS with the MS932 (Windows-31J) extensions.
    ShiftJis,
}

impl Charset {
    /// The `encoding_rs` encoding.
    pub fn encoding(self) -> &'static Encoding {
        match self {
            Charset::Utf8 => UTF_8,
            Charset::Iso2022Jp => ISO_2022_JP,
            Charset::ShiftJis => SHIFT_JIS,
        }
    }

    /// A human name: `UTF-8`, `ISO-2022-JP`, `Shift_JIS`.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Iso2022Jp => "ISO-2022-JP",
            Charset::ShiftJis => "Shift_JIS",
        }
    }

    /// The `MSH-18` value that declares this character set.
    pub fn msh18(self) -> &'static str {
        match self {
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Iso2022Jp => "~ISO IR87",
            Charset::ShiftJis => "SHIFT_JIS",
        }
    }

    /// The character set an `MSH-18` value declares; `repetition` is the repetition
    /// separator (`MSH-2`, second character), so `~ISO IR87` is read as the two
    /// repetitions `""` and `ISO IR87`.
    pub fn from_msh18(value: &str, repetition: Option<char>) -> Result<Self, CharsetError> {
        let mut saw_2022 = false;
        let mut saw_sjis = false;
        let mut key = [0; KEY_CAPACITY];
        for rep in value.split(|c| Some(c) == repetition) {
            match charset_key(rep, &mut key) {
                Some("" | "ASCII" | "USASCII" | "ISOIR6" | "ISOIR14" | "UNICODEUTF8" | "UTF8") => {}
                Some("ISOIR87" | "ISOIR159" | "ISO20221994" | "ISO2022JP") => saw_2022 = true,
                Some("SHIFTJIS" | "SJIS" | "MS932" | "CP932" | "WINDOWS31J" | "ISOIR13") => {
                    saw_sjis = true;
                }
                _ => {
                    return Err(CharsetError::Unsupported {
                        declared: shown(value),
                    });
                }
            }
        }
        Ok(if saw_2022 {
            Charset::Iso2022Jp
        } else if saw_sjis {
            Charset::ShiftJis
        } else {
            Charset::Utf8
        })
    }

    /// Encodes `text` in this character set. Characters the set cannot represent become
    /// `?` (never an HTML numeric reference, whose `&` would be an HL7 delimiter).
    pub fn encode(self, text: &str) -> Vec<u8> {
        if self == Charset::Utf8 {
            return text.as_bytes().to_vec();
        }
        let mut encoder = self.encoding().new_encoder();
        let mut out = Vec::with_capacity(text.len() + 16);
        let mut rest = text;
        loop {
            let needed = encoder
                .max_buffer_length_from_utf8_without_replacement(rest.len())
                .unwrap_or(rest.len().saturating_mul(4).saturating_add(16));
            out.reserve(needed);
            let (result, read) =
                encoder.encode_from_utf8_to_vec_without_replacement(rest, &mut out, true);
            rest = rest.get(read..).unwrap_or("");
            match result {
                encoding_rs::EncoderResult::InputEmpty => return out,
                encoding_rs::EncoderResult::OutputFull => {}
                encoding_rs::EncoderResult::Unmappable(_) => {
                    out.reserve(8);
                    let _ =
                        encoder.encode_from_utf8_to_vec_without_replacement("?", &mut out, false);
                }
            }
        }
    }
}

/// Longer than every character set name the hub knows, once normalised.
const KEY_CAPACITY: usize = 16;

/// An `MSH-18` repetition normalised for comparison (upper case, without spaces, `-`
/// and `_`), written into `buffer`; `None` when it cannot be a name the hub knows (not
/// ASCII, or too long).
fn charset_key<'b>(rep: &str, buffer: &'b mut [u8; KEY_CAPACITY]) -> Option<&'b str> {
    let mut len = 0;
    for c in rep.chars().filter(|c| !matches!(c, ' ' | '-' | '_')) {
        let byte = u8::try_from(c).ok().filter(u8::is_ascii)?;
        *buffer.get_mut(len)? = byte.to_ascii_uppercase();
        len += 1;
    }
    std::str::from_utf8(buffer.get(..len)?).ok()
}

impl std::fmt::Display for Charset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the bytes of a message cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    /// The message structure around `MSH-18` cannot be read.
    #[error(transparent)]
    Structure(#[from] ParseError),
    /// `MSH-18` names a character set the hub does not decode.
    #[error(
        "MSH-18 declares the character set {declared}, which the hub does not support (use UNICODE UTF-8, ~ISO IR87 for ISO-2022-JP, or SHIFT_JIS)"
    )]
    Unsupported {
        /// The declared value, quoted for display.
        declared: String,
    },
    /// The bytes are not valid in the declared character set.
    #[error(
        "MSH-18 declares {declared} ({charset}) but the bytes are not valid {charset} (first invalid byte at offset {offset}){}; the message was refused rather than stored garbled",
        hint(*looks_like, *charset)
    )]
    Malformed {
        /// The declared value, quoted for display.
        declared: String,
        /// The declared character set.
        charset: Charset,
        /// Byte offset of the first invalid sequence in the raw message.
        offset: usize,
        /// Another supported character set the bytes are valid in, if any.
        looks_like: Option<Charset>,
    },
    /// The bytes are valid, but clearly in another character set than declared.
    #[error(
        "MSH-18 declares {declared} ({charset}) but the bytes are {actual}: declare the character set the message is really sent in; the message was refused rather than stored garbled"
    )]
    Mismatch {
        /// The declared value, quoted for display.
        declared: String,
        /// The declared character set.
        charset: Charset,
        /// What the bytes really are.
        actual: Charset,
    },
    /// The message holds a NUL byte, which HL7 v2 text never does (and which the store
    /// could not keep inside a text value).
    #[error(
        "the message contains a NUL byte at offset {offset}; HL7 v2 text never does: check the sender's framing and encoding"
    )]
    NulByte {
        /// Byte offset in the raw message.
        offset: usize,
    },
}

fn hint(looks_like: Option<Charset>, declared: Charset) -> String {
    match looks_like {
        Some(c) => format!(
            "; they are valid {c}: the sender most likely sends {c}, so declare `{}` in MSH-18 or send {declared}",
            c.msh18(),
        ),
        None => String::new(),
    }
}

impl CharsetError {
    /// The HL7 location the error is about.
    pub fn location(&self) -> &'static str {
        match self {
            CharsetError::Structure(e) => e.location(),
            _ => "MSH-18",
        }
    }
}

impl From<CharsetError> for NormalizeError {
    fn from(err: CharsetError) -> Self {
        NormalizeError::at(err.location(), err.to_string())
    }
}

/// A declared value, quoted and shortened for an error message.
pub(crate) fn shown(value: &str) -> String {
    let mut s: String = value
        .chars()
        .take(40)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > 40 {
        s.push('…');
    }
    if s.is_empty() {
        "an empty value".to_owned()
    } else {
        format!("`{s}`")
    }
}

/// The `MSH` segment located in raw bytes, before any decoding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawMsh<'a> {
    /// Offset of `MSH` in the raw bytes (after leading whitespace or a UTF-8 BOM).
    pub start: usize,
    /// The `MSH` segment, up to (not including) its terminator.
    pub line: &'a [u8],
    /// `MSH-1`.
    pub field_separator: u8,
    /// `MSH-2`.
    pub encoding_characters: &'a [u8],
}

impl<'a> RawMsh<'a> {
    /// Finds the `MSH` segment at the start of `raw`.
    pub fn locate(raw: &'a [u8]) -> Result<Self, ParseError> {
        let mut start = 0;
        if raw.starts_with(b"\xEF\xBB\xBF") {
            start = 3;
        }
        while raw.get(start).is_some_and(u8::is_ascii_whitespace) {
            start += 1;
        }
        let body = raw.get(start..).unwrap_or_default();
        if !body.starts_with(b"MSH") {
            return Err(ParseError::NoMsh);
        }
        let end = scan::find_line_end(body).unwrap_or(body.len());
        let line = &body[..end];
        let field_separator = *line.get(3).ok_or(ParseError::BadFieldSeparator)?;
        if !field_separator.is_ascii_punctuation() {
            return Err(ParseError::BadFieldSeparator);
        }
        let after = line.get(4..).unwrap_or_default();
        let enc_len = after
            .iter()
            .position(|&b| b == field_separator)
            .unwrap_or(after.len());
        let encoding_characters = &after[..enc_len];
        if encoding_characters.is_empty() {
            return Err(ParseError::BadEncodingCharacters);
        }
        Ok(RawMsh {
            start,
            line,
            field_separator,
            encoding_characters,
        })
    }

    /// The raw bytes of `MSH-n` (`n >= 2`), or empty.
    pub fn field(&self, n: usize) -> &'a [u8] {
        match n.checked_sub(1) {
            Some(index) if n >= 2 => scan::piece(self.line, self.field_separator, index)
                .and_then(|range| self.line.get(range))
                .unwrap_or_default(),
            _ => &[],
        }
    }

    /// The repetition separator, when `MSH-2` declares an ASCII one.
    pub fn repetition(&self) -> Option<char> {
        self.encoding_characters
            .get(1)
            .filter(|b| b.is_ascii())
            .map(|&b| char::from(b))
    }

    /// `MSH-18` as text (lossy: it should be ASCII).
    pub fn charset_field(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.field(18))
    }

    /// The declared character set.
    pub fn charset(&self) -> Result<Charset, CharsetError> {
        Charset::from_msh18(&self.charset_field(), self.repetition())
    }
}

/// A message decoded to Unicode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The character set `MSH-18` declared and the bytes were decoded from.
    pub charset: Charset,
    /// The message text, starting at `MSH` (borrowed from the input for UTF-8).
    pub text: Cow<'a, str>,
}

/// Reads `MSH-18` from the raw bytes and decodes the whole message strictly.
///
/// Fails when the message does not start with `MSH`, when `MSH-18` names an unsupported
/// character set, or when the bytes are not valid in the declared one (or plainly in
/// another one, such as ISO-2022-JP escape sequences in a message declared UTF-8).
pub fn decode(raw: &[u8]) -> Result<Decoded<'_>, CharsetError> {
    let msh = RawMsh::locate(raw)?;
    let charset = msh.charset()?;
    let body = raw.get(msh.start..).unwrap_or_default();
    let declared = || shown(&msh.charset_field());
    // 0x00 is NUL in every supported charset, so one look at the bytes covers them all.
    if let Some(at) = body.iter().position(|&b| b == 0) {
        return Err(CharsetError::NulByte {
            offset: msh.start + at,
        });
    }
    let text = match charset {
        Charset::Utf8 => match std::str::from_utf8(body) {
            Ok(text) => {
                // The ESC test first: it spares two substring searches in the usual case.
                if text.as_bytes().contains(&0x1b)
                    && (text.contains("\u{1b}$B") || text.contains("\u{1b}$@"))
                {
                    return Err(CharsetError::Mismatch {
                        declared: declared(),
                        charset,
                        actual: Charset::Iso2022Jp,
                    });
                }
                Cow::Borrowed(text)
            }
            Err(e) => {
                let looks_like = [Charset::ShiftJis, Charset::Iso2022Jp]
                    .into_iter()
                    .find(|c| is_valid(*c, body));
                return Err(CharsetError::Malformed {
                    declared: declared(),
                    charset,
                    offset: msh.start + e.valid_up_to(),
                    looks_like,
                });
            }
        },
        Charset::ShiftJis | Charset::Iso2022Jp => {
            if !body.is_ascii() && std::str::from_utf8(body).is_ok() {
                return Err(CharsetError::Mismatch {
                    declared: declared(),
                    charset,
                    actual: Charset::Utf8,
                });
            }
            match charset
                .encoding()
                .decode_without_bom_handling_and_without_replacement(body)
            {
                Some(text) => text,
                None => {
                    let looks_like = [Charset::ShiftJis, Charset::Iso2022Jp]
                        .into_iter()
                        .filter(|c| *c != charset)
                        .find(|c| is_valid(*c, body));
                    return Err(CharsetError::Malformed {
                        declared: declared(),
                        charset,
                        offset: msh.start + first_invalid_offset(charset.encoding(), body),
                        looks_like,
                    });
                }
            }
        }
    };
    Ok(Decoded { charset, text })
}

fn is_valid(charset: Charset, bytes: &[u8]) -> bool {
    charset
        .encoding()
        .decode_without_bom_handling_and_without_replacement(bytes)
        .is_some()
}

/// The offset of the first malformed sequence (slow path, only used for errors).
fn first_invalid_offset(encoding: &'static Encoding, bytes: &[u8]) -> usize {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let Some(capacity) = decoder.max_utf8_buffer_length_without_replacement(bytes.len()) else {
        return 0;
    };
    let mut out = String::with_capacity(capacity);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
    match result {
        DecoderResult::Malformed(bad, after) => read
            .saturating_sub(usize::from(after))
            .saturating_sub(usize::from(bad)),
        DecoderResult::InputEmpty | DecoderResult::OutputFull => read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(msh18: &str, body: &[u8]) -> Vec<u8> {
        let mut v =
            format!("MSH|^~\\&|A|1319999999|R|F|20250410||ADT^A01|1|P|2.5||||||{msh18}\rPID|1||")
                .into_bytes();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn msh18_values() {
        let rep = Some('~');
        for (v, c) in [
            ("", Charset::Utf8),
            ("~ISO IR87", Charset::Iso2022Jp),
            ("ISO IR87", Charset::Iso2022Jp),
            ("ISO 2022-1994", Charset::Iso2022Jp),
            ("ISO IR6~ISO IR87", Charset::Iso2022Jp),
            ("UNICODE UTF-8", Charset::Utf8),
            ("ascii", Charset::Utf8),
            ("SHIFT_JIS", Charset::ShiftJis),
            ("sjis", Charset::ShiftJis),
            ("MS932", Charset::ShiftJis),
            ("ISO IR13", Charset::ShiftJis),
        ] {
            assert_eq!(Charset::from_msh18(v, rep), Ok(c), "{v}");
        }
        let err = Charset::from_msh18("8859/1", rep).err();
        assert!(
            matches!(&err, Some(CharsetError::Unsupported { declared }) if declared == "`8859/1`"),
            "{err:?}"
        );
    }

    #[test]
    fn decodes_each_charset() {
        let name = "架空^花子";
        for charset in [Charset::Utf8, Charset::Iso2022Jp, Charset::ShiftJis] {
            let raw = msg(charset.msh18(), &charset.encode(name));
            let decoded = decode(&raw).unwrap_or_else(|e| panic!("{charset}: {e}"));
            assert_eq!(decoded.charset, charset);
            assert!(
                decoded.text.ends_with("PID|1||架空^花子"),
                "{charset}: {}",
                decoded.text
            );
        }
    }

    #[test]
    fn refuses_a_nul_byte_with_its_offset() {
        let raw = msg("UNICODE UTF-8", b"A\0B");
        let at = raw.iter().position(|&b| b == 0).unwrap_or_default();
        let err = decode(&raw).err();
        assert!(
            matches!(err, Some(CharsetError::NulByte { offset }) if offset == at),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_bytes_of_another_charset() {
        let sjis = Charset::ShiftJis.encode("架空");
        let err = decode(&msg("UNICODE UTF-8", &sjis)).err();
        assert!(
            matches!(
                err,
                Some(CharsetError::Malformed {
                    charset: Charset::Utf8,
                    looks_like: Some(Charset::ShiftJis),
                    ..
                })
            ),
            "{err:?}"
        );
        let utf8 = "架空".as_bytes();
        let err = decode(&msg("SHIFT_JIS", utf8)).err();
        assert!(
            matches!(
                err,
                Some(CharsetError::Mismatch {
                    actual: Charset::Utf8,
                    ..
                })
            ),
            "{err:?}"
        );
        let err = decode(&msg("~ISO IR87", &sjis)).err();
        assert!(
            matches!(err, Some(CharsetError::Malformed { .. })),
            "{err:?}"
        );
        let jis = Charset::Iso2022Jp.encode("架空");
        let err = decode(&msg("", &jis)).err();
        assert!(
            matches!(
                err,
                Some(CharsetError::Mismatch {
                    actual: Charset::Iso2022Jp,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_offset_points_at_the_bad_byte() {
        let raw = msg("~ISO IR87", b"\x1b$B2M\xff");
        let offset = raw.len() - 1;
        match decode(&raw) {
            Err(CharsetError::Malformed { offset: o, .. }) => {
                assert!(o <= offset && o + 4 >= offset, "{o} vs {offset}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encode_replaces_unmappable_characters() {
        let bytes = Charset::Iso2022Jp.encode("a😀b");
        assert_eq!(bytes, b"a?b");
        let bytes = Charset::ShiftJis.encode("架😀");
        let back = Charset::ShiftJis
            .encoding()
            .decode_without_bom_handling_and_without_replacement(&bytes);
        assert_eq!(back.as_deref(), Some("架?"));
    }
}
