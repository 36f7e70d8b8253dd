//! The character set of an HL7 v2 message.
//!
//! Japanese HL7 v2 (SS-MIX2 / JAHIS) declares the character set in `MSH-18`, usually
//! `~ISO IR87` (ISO-2022-JP). The bytes of kanji in ISO-2022-JP and Shift_JIS collide
//! with the delimiters `| ^ ~ \ &`, so the message must be decoded to Unicode *before*
//! it is split. `MSH` up to `MSH-18` is ASCII, so [`decode`] reads `MSH-18` straight
//! from the raw bytes (with the field separator byte `MSH-1`), then decodes the whole
//! message strictly: bytes that are not valid in the character set they are read as
//! are refused with a [`CharsetError`], never replaced.
//!
//! | `MSH-18` (any repetition, case-insensitive)                         | decoded as  |
//! |----------------------------------------------------------------------|-------------|
//! | `ISO IR87`, `ISO IR159`, `ISO 2022-1994`, `ISO-2022-JP`               | ISO-2022-JP |
//! | `SHIFT_JIS`, `SJIS`, `MS932`, `CP932`, `WINDOWS-31J`, `ISO IR13`      | Shift_JIS (MS932 table) |
//! | `UNICODE UTF-8`, `UTF-8`                                              | UTF-8       |
//! | empty, `ASCII`, `US-ASCII`, `ISO IR6`, `ISO IR14`                     | ASCII, read as UTF-8 (a superset) |
//!
//! # When `MSH-18` is missing or wrong
//!
//! Real feeds omit or mislabel `MSH-18`. Where the bytes themselves leave no doubt, the
//! message is decoded as what they are and [`Decoded::assumed`] (which becomes
//! `origin.assumed_charset`) records what was assumed and what `MSH-18` said; what the
//! bytes cannot decide is refused. The first rule that applies decides:
//!
//! 1. **7-bit bytes with ISO-2022-JP escape sequences** (`ESC $ B`, `ESC $ @`,
//!    `ESC ( B`, `ESC ( J`, also `ESC ( I` and `ESC $ ( D`) are ISO-2022-JP whatever
//!    `MSH-18` says: `ISO-2022-JP (MSH-18 UNICODE UTF-8)`, `ISO-2022-JP (MSH-18 empty)`.
//!    Not valid ISO-2022-JP (a JIS X 0212 character, a broken sequence): refused.
//! 2. **Escape sequences among 8-bit bytes** fit no one character set: refused.
//! 3. **A UTF-8 byte-order mark before valid UTF-8** means UTF-8 (the mark is dropped):
//!    `UTF-8 (BOM)`, unless `MSH-18` declares UTF-8.
//! 4. **Plain ASCII** is read as declared, nothing assumed (an empty `MSH-18` is HL7's
//!    default, ASCII). Under a value the hub does not know (`8859/1`, `EUC-JP`) plain
//!    ASCII without `ESC`, `SO` or `SI` (which would switch some other 7-bit code) is
//!    still unambiguous: `ASCII (MSH-18 8859/1)`.
//! 5. **Valid UTF-8 with non-ASCII characters**: declared UTF-8, nothing assumed;
//!    `MSH-18` empty, `UTF-8 (undeclared)`; declared ASCII, ISO-2022-JP, Shift_JIS or a
//!    value the hub does not know, still UTF-8: `UTF-8 (MSH-18 ~ISO IR87)`. Japanese
//!    text in Shift_JIS is almost never valid UTF-8 (its common lead bytes 0x81–0x9F
//!    are UTF-8 continuation bytes), and the collisions that do occur (a half-width kana
//!    before a kanji) decode to C1 control characters, which real text never holds. So
//!    against a declaration of ISO-2022-JP, Shift_JIS or an unknown value, valid UTF-8
//!    holding a C1 control is not taken as UTF-8: it is read as declared (Shift_JIS) or
//!    refused.
//! 6. **8-bit bytes that are not valid UTF-8** are only decoded in the character set
//!    `MSH-18` declares: Shift_JIS, EUC-JP and their variants cannot be told apart from
//!    the bytes alone, so Shift_JIS bytes declared `UNICODE UTF-8` (or nothing) are
//!    refused, with a hint naming the set the bytes are valid in.
//!
//! Errors name `MSH-18` and quote its value, never the message text.

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
        Declared::read(value, repetition)
            .charset()
            .ok_or_else(|| CharsetError::Unsupported {
                declared: shown(value),
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

/// What `MSH-18` declares, before the bytes are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// Empty (or only empty repetitions): HL7's default, ASCII.
    Nothing,
    /// `ASCII`, `US-ASCII`, `ISO IR6`, `ISO IR14`.
    Ascii,
    /// `UNICODE UTF-8`, `UTF-8`.
    Utf8,
    /// `ISO IR87` and its kin (wins over every other repetition).
    Iso2022Jp,
    /// `SHIFT_JIS` and its kin.
    ShiftJis,
    /// A value the hub does not know.
    Unsupported,
}

impl Declared {
    /// Reads `MSH-18` (see [`Charset::from_msh18`]).
    fn read(value: &str, repetition: Option<char>) -> Self {
        let mut declared = Declared::Nothing;
        let mut key = [0; KEY_CAPACITY];
        for rep in value.split(|c| Some(c) == repetition) {
            let this = match charset_key(rep, &mut key) {
                Some("") => Declared::Nothing,
                Some("ASCII" | "USASCII" | "ISOIR6" | "ISOIR14") => Declared::Ascii,
                Some("UNICODEUTF8" | "UTF8") => Declared::Utf8,
                Some("ISOIR87" | "ISOIR159" | "ISO20221994" | "ISO2022JP") => Declared::Iso2022Jp,
                Some("SHIFTJIS" | "SJIS" | "MS932" | "CP932" | "WINDOWS31J" | "ISOIR13") => {
                    Declared::ShiftJis
                }
                _ => return Declared::Unsupported,
            };
            declared = declared.max(this);
        }
        declared
    }

    /// Which of two repetitions decides: ISO-2022-JP over Shift_JIS over UTF-8 over
    /// ASCII over nothing.
    fn max(self, other: Self) -> Self {
        let rank = |d: Self| match d {
            Declared::Nothing => 0,
            Declared::Ascii => 1,
            Declared::Utf8 => 2,
            Declared::ShiftJis => 3,
            Declared::Iso2022Jp => 4,
            Declared::Unsupported => 5,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// The character set the declaration names, when the hub decodes it.
    fn charset(self) -> Option<Charset> {
        match self {
            Declared::Nothing | Declared::Ascii | Declared::Utf8 => Some(Charset::Utf8),
            Declared::Iso2022Jp => Some(Charset::Iso2022Jp),
            Declared::ShiftJis => Some(Charset::ShiftJis),
            Declared::Unsupported => None,
        }
    }
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
    /// The bytes hold ISO-2022-JP escape sequences and 8-bit bytes: no one character
    /// set explains both.
    #[error(
        "MSH-18 declares {declared} but the bytes mix ISO-2022-JP escape sequences with 8-bit bytes, so their character set cannot be decided: send the whole message in one character set (ISO-2022-JP declared `~ISO IR87`, or UTF-8 declared `UNICODE UTF-8`); the message was refused rather than stored garbled"
    )]
    MixedEncodings {
        /// The declared value, quoted for display.
        declared: String,
    },
    /// `MSH-18` declares another character set, the bytes show which one they are meant
    /// to be, but they are not valid in it either.
    #[error(
        "MSH-18 declares {declared}; the bytes hold {assumed} escape sequences but are not valid {assumed} (first invalid byte at offset {offset}): send JIS X 0208 characters only (others as UTF-8), and declare the character set the message is really sent in (`{}`); the message was refused rather than stored garbled",
        assumed.msh18()
    )]
    MalformedAssumed {
        /// The declared value, quoted for display.
        declared: String,
        /// The character set the bytes show.
        assumed: Charset,
        /// Byte offset of the first invalid sequence in the raw message.
        offset: usize,
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

    /// What `MSH-18` declares.
    fn declared(&self) -> Declared {
        Declared::read(&self.charset_field(), self.repetition())
    }
}

/// A message decoded to Unicode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The character set the bytes were decoded from: the one `MSH-18` declares, unless
    /// [`Decoded::assumed`] says otherwise.
    pub charset: Charset,
    /// The message text, starting at `MSH` (borrowed from the input for UTF-8 and ASCII).
    pub text: Cow<'a, str>,
    /// What the hub assumed because `MSH-18` is empty or wrong and the bytes decided,
    /// with what `MSH-18` said: `ISO-2022-JP (MSH-18 UNICODE UTF-8)`, `UTF-8 (BOM)`,
    /// `UTF-8 (undeclared)`… (see the [module documentation](self)). `None` when the
    /// bytes were read as declared.
    pub assumed: Option<String>,
}

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads `MSH-18` from the raw bytes and decodes the whole message strictly.
///
/// Fails when the message does not start with `MSH`, holds a NUL byte, or when its
/// bytes are neither valid in the character set `MSH-18` declares nor unambiguously in
/// another one (the rules are in the [module documentation](self)).
pub fn decode(raw: &[u8]) -> Result<Decoded<'_>, CharsetError> {
    let msh = RawMsh::locate(raw)?;
    let body = raw.get(msh.start..).unwrap_or_default();
    // 0x00 is NUL in every supported charset, so one look at the bytes covers them all.
    if let Some(at) = scan::find(body, 0) {
        return Err(CharsetError::NulByte {
            offset: msh.start + at,
        });
    }
    let reading = Reading {
        msh,
        declared: msh.declared(),
        bom: raw.starts_with(UTF8_BOM),
        body,
    };
    match std::str::from_utf8(body) {
        Ok(text) if text.is_ascii() => reading.seven_bit(text),
        Ok(text) => reading.valid_utf8(text),
        Err(e) => reading.not_utf8(e.valid_up_to()),
    }
}

/// One message being decoded: what `MSH-18` declares and the bytes from `MSH` on.
struct Reading<'a> {
    msh: RawMsh<'a>,
    declared: Declared,
    /// Whether a UTF-8 byte-order mark came before `MSH` (it is not in `body`).
    bom: bool,
    body: &'a [u8],
}

impl<'a> Reading<'a> {
    /// `MSH-18` quoted for an error.
    fn declared_shown(&self) -> String {
        shown(&self.msh.charset_field())
    }

    /// What `MSH-18` said, for [`Decoded::assumed`]: `MSH-18 UNICODE UTF-8`,
    /// `MSH-18 empty`.
    fn said(&self) -> String {
        let field = self.msh.charset_field();
        let value = field.trim();
        if self.declared == Declared::Nothing || value.is_empty() {
            return "MSH-18 empty".to_owned();
        }
        let mut said: String = "MSH-18 "
            .chars()
            .chain(value.chars().take(40).flat_map(char::escape_debug))
            .collect();
        if value.chars().count() > 40 {
            said.push('…');
        }
        said
    }

    fn as_declared(charset: Charset, text: Cow<'a, str>) -> Decoded<'a> {
        Decoded {
            charset,
            text,
            assumed: None,
        }
    }

    fn assumed(charset: Charset, text: Cow<'a, str>, assumed: String) -> Decoded<'a> {
        Decoded {
            charset,
            text,
            assumed: Some(assumed),
        }
    }

    fn unsupported(&self) -> CharsetError {
        CharsetError::Unsupported {
            declared: self.declared_shown(),
        }
    }

    /// Bytes below 0x80 only: ASCII, or ISO-2022-JP when they hold its escape sequences.
    fn seven_bit(self, text: &'a str) -> Result<Decoded<'a>, CharsetError> {
        let escapes = has_iso2022jp_escape(self.body);
        if escapes || (self.declared == Declared::Iso2022Jp && !self.bom) {
            return self.iso2022jp(escapes);
        }
        let text = Cow::Borrowed(text);
        Ok(match self.declared {
            Declared::Utf8 => Self::as_declared(Charset::Utf8, text),
            _ if self.bom => Self::assumed(Charset::Utf8, text, "UTF-8 (BOM)".to_owned()),
            Declared::Nothing | Declared::Ascii => Self::as_declared(Charset::Utf8, text),
            // ASCII reads the same in Shift_JIS (encoding_rs maps 0x5C to a backslash, not ¥).
            Declared::ShiftJis => Self::as_declared(Charset::ShiftJis, text),
            Declared::Iso2022Jp => Self::as_declared(Charset::Iso2022Jp, text),
            Declared::Unsupported => {
                // ESC, SO and SI would switch some other 7-bit code (ISO-2022-KR, -CN…).
                if self.body.iter().any(|b| matches!(b, 0x1b | 0x0e | 0x0f)) {
                    return Err(self.unsupported());
                }
                let assumed = format!("ASCII ({})", self.said());
                Self::assumed(Charset::Utf8, text, assumed)
            }
        })
    }

    /// Decodes the 7-bit body as ISO-2022-JP; `escapes` whether it holds escape
    /// sequences (when it does not, `MSH-18` declared ISO-2022-JP).
    fn iso2022jp(self, escapes: bool) -> Result<Decoded<'a>, CharsetError> {
        let charset = Charset::Iso2022Jp;
        let declared = self.declared == Declared::Iso2022Jp;
        match charset
            .encoding()
            .decode_without_bom_handling_and_without_replacement(self.body)
        {
            Some(text) if declared => Ok(Self::as_declared(charset, text)),
            Some(text) => {
                let assumed = format!("ISO-2022-JP ({})", self.said());
                Ok(Self::assumed(charset, text, assumed))
            }
            None => {
                let offset = self.msh.start + first_invalid_offset(charset.encoding(), self.body);
                Err(if declared || !escapes {
                    CharsetError::Malformed {
                        declared: self.declared_shown(),
                        charset,
                        offset,
                        looks_like: None,
                    }
                } else {
                    CharsetError::MalformedAssumed {
                        declared: self.declared_shown(),
                        assumed: charset,
                        offset,
                    }
                })
            }
        }
    }

    /// Valid UTF-8 holding non-ASCII characters.
    fn valid_utf8(self, text: &'a str) -> Result<Decoded<'a>, CharsetError> {
        if has_iso2022jp_escape(self.body) {
            return Err(match self.declared {
                Declared::Unsupported => self.unsupported(),
                _ => CharsetError::MixedEncodings {
                    declared: self.declared_shown(),
                },
            });
        }
        let utf8 = Charset::Utf8;
        let text = Cow::Borrowed(text);
        Ok(match self.declared {
            Declared::Utf8 => Self::as_declared(utf8, text),
            _ if self.bom => Self::assumed(utf8, text, "UTF-8 (BOM)".to_owned()),
            Declared::Nothing => Self::assumed(utf8, text, "UTF-8 (undeclared)".to_owned()),
            Declared::Ascii => Self::assumed(utf8, text, format!("UTF-8 ({})", self.said())),
            Declared::Iso2022Jp | Declared::ShiftJis | Declared::Unsupported
                if !has_c1_control(self.body) =>
            {
                Self::assumed(utf8, text, format!("UTF-8 ({})", self.said()))
            }
            // A C1 control: the bytes are more likely Shift_JIS that happens to be
            // valid UTF-8 (a half-width kana before a kanji). Read as declared.
            Declared::ShiftJis | Declared::Iso2022Jp => return self.not_utf8(0),
            Declared::Unsupported => return Err(self.unsupported()),
        })
    }

    /// Bytes that are not valid UTF-8 (the first invalid one at `valid_up_to`), or
    /// that are not to be read as UTF-8: only the declared character set may decode
    /// them.
    fn not_utf8(self, valid_up_to: usize) -> Result<Decoded<'a>, CharsetError> {
        let charset = match self.declared {
            Declared::Unsupported => return Err(self.unsupported()),
            Declared::Nothing | Declared::Ascii | Declared::Utf8 => {
                return Err(CharsetError::Malformed {
                    declared: self.declared_shown(),
                    charset: Charset::Utf8,
                    offset: self.msh.start + valid_up_to,
                    looks_like: [Charset::ShiftJis, Charset::Iso2022Jp]
                        .into_iter()
                        .find(|c| is_valid(*c, self.body)),
                });
            }
            Declared::ShiftJis => Charset::ShiftJis,
            Declared::Iso2022Jp => Charset::Iso2022Jp,
        };
        if charset == Charset::ShiftJis && has_iso2022jp_escape(self.body) {
            return Err(CharsetError::MixedEncodings {
                declared: self.declared_shown(),
            });
        }
        match charset
            .encoding()
            .decode_without_bom_handling_and_without_replacement(self.body)
        {
            Some(text) => Ok(Self::as_declared(charset, text)),
            None => Err(CharsetError::Malformed {
                declared: self.declared_shown(),
                charset,
                offset: self.msh.start + first_invalid_offset(charset.encoding(), self.body),
                looks_like: [Charset::ShiftJis, Charset::Iso2022Jp]
                    .into_iter()
                    .filter(|c| *c != charset)
                    .find(|c| is_valid(*c, self.body)),
            }),
        }
    }
}

/// Whether `bytes` hold an ISO-2022-JP designation: `ESC $ @`, `ESC $ B`, `ESC $ ( D`
/// (two-byte sets), `ESC ( B`, `ESC ( J`, `ESC ( I` (one-byte sets).
fn has_iso2022jp_escape(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = scan::find(rest, 0x1b) {
        rest = rest.get(at + 1..).unwrap_or_default();
        if matches!(
            rest,
            [b'$', b'@' | b'B', ..] | [b'$', b'(', b'D', ..] | [b'(', b'B' | b'J' | b'I', ..]
        ) {
            return true;
        }
    }
    false
}

/// Whether valid UTF-8 `bytes` encode a C1 control character (U+0080 to U+009F, the
/// bytes `C2 80` to `C2 9F`), which text never holds.
fn has_c1_control(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = scan::find(rest, 0xc2) {
        rest = rest.get(at + 1..).unwrap_or_default();
        if rest.first().is_some_and(|b| (0x80..=0x9f).contains(b)) {
            return true;
        }
    }
    false
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
            assert_eq!(
                (decoded.charset, decoded.assumed.as_deref()),
                (charset, None)
            );
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

    /// The decoded message, owned (so the raw bytes may be a temporary).
    fn decoded(raw: &[u8]) -> Decoded<'static> {
        let d = decode(raw).unwrap_or_else(|e| panic!("refused: {e}"));
        Decoded {
            text: Cow::Owned(d.text.into_owned()),
            ..d
        }
    }

    fn with_bom(raw: &[u8]) -> Vec<u8> {
        let mut v = UTF8_BOM.to_vec();
        v.extend_from_slice(raw);
        v
    }

    #[test]
    fn plain_ascii_is_read_as_declared_with_nothing_assumed() {
        for (msh18, charset) in [
            ("", Charset::Utf8),
            ("ASCII", Charset::Utf8),
            ("UNICODE UTF-8", Charset::Utf8),
            ("~ISO IR87", Charset::Iso2022Jp),
            ("SHIFT_JIS", Charset::ShiftJis),
        ] {
            let raw = msg(msh18, b"0000482915^^^^PI\\F\\x");
            let d = decoded(&raw);
            assert_eq!(
                (d.charset, d.assumed.as_deref()),
                (charset, None),
                "{msh18}"
            );
            assert!(d.text.ends_with("PID|1||0000482915^^^^PI\\F\\x"), "{msh18}");
        }
    }

    #[test]
    fn iso2022jp_escapes_decide_when_msh18_is_empty_or_wrong() {
        let jis = Charset::Iso2022Jp.encode("架空^花子");
        for (msh18, assumed) in [
            ("", Some("ISO-2022-JP (MSH-18 empty)")),
            ("~", Some("ISO-2022-JP (MSH-18 empty)")),
            ("UNICODE UTF-8", Some("ISO-2022-JP (MSH-18 UNICODE UTF-8)")),
            ("ASCII", Some("ISO-2022-JP (MSH-18 ASCII)")),
            ("SHIFT_JIS", Some("ISO-2022-JP (MSH-18 SHIFT_JIS)")),
            ("8859/1", Some("ISO-2022-JP (MSH-18 8859/1)")),
            ("~ISO IR87", None),
        ] {
            let raw = msg(msh18, &jis);
            let d = decoded(&raw);
            assert_eq!(d.charset, Charset::Iso2022Jp, "{msh18}");
            assert_eq!(d.assumed.as_deref(), assumed, "{msh18}");
            assert!(d.text.ends_with("PID|1||架空^花子"), "{msh18}: {}", d.text);
        }
        // Only the designation back to ASCII is there: still ISO-2022-JP, not ESC text.
        let d = decoded(&msg("", b"A\x1b(BB"));
        assert_eq!(d.charset, Charset::Iso2022Jp);
        assert!(d.text.ends_with("PID|1||AB"), "{}", d.text);
    }

    #[test]
    fn escape_sequences_that_are_not_valid_iso2022jp_are_refused() {
        // JIS X 0212 (ESC $ ( D) is not decodable.
        let raw = msg("", b"\x1b$(D0!\x1b(B");
        let err = decode(&raw).err();
        assert!(
            matches!(
                err,
                Some(CharsetError::MalformedAssumed {
                    assumed: Charset::Iso2022Jp,
                    ..
                })
            ),
            "{err:?}"
        );
        let shown = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            shown.contains("an empty value") && shown.contains("~ISO IR87"),
            "{shown}"
        );
        let err = decode(&msg("~ISO IR87", b"\x1b$(D0!\x1b(B")).err();
        assert!(
            matches!(err, Some(CharsetError::Malformed { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn escapes_among_eight_bit_bytes_are_refused() {
        let mut mixed = Charset::Iso2022Jp.encode("架空");
        mixed.extend_from_slice("花子".as_bytes());
        for msh18 in ["", "UNICODE UTF-8", "~ISO IR87"] {
            let err = decode(&msg(msh18, &mixed)).err();
            assert!(
                matches!(err, Some(CharsetError::MixedEncodings { .. })),
                "{msh18}: {err:?}"
            );
        }
        let mut mixed = Charset::Iso2022Jp.encode("架空");
        mixed.extend_from_slice(&Charset::ShiftJis.encode("花子"));
        let err = decode(&msg("SHIFT_JIS", &mixed)).err();
        assert!(
            matches!(err, Some(CharsetError::MixedEncodings { .. })),
            "{err:?}"
        );
        let err = decode(&msg("UNICODE UTF-8", &mixed)).err();
        assert!(
            matches!(
                err,
                Some(CharsetError::Malformed {
                    charset: Charset::Utf8,
                    ..
                })
            ),
            "{err:?}"
        );
        let err = decode(&msg("8859/1", &mixed)).err();
        assert!(
            matches!(err, Some(CharsetError::Unsupported { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_byte_order_mark_before_valid_utf8_means_utf8() {
        let utf8 = "架空^花子".as_bytes();
        for (msh18, assumed) in [
            ("", Some("UTF-8 (BOM)")),
            ("ASCII", Some("UTF-8 (BOM)")),
            ("~ISO IR87", Some("UTF-8 (BOM)")),
            ("SHIFT_JIS", Some("UTF-8 (BOM)")),
            ("8859/1", Some("UTF-8 (BOM)")),
            ("UNICODE UTF-8", None),
        ] {
            let raw = with_bom(&msg(msh18, utf8));
            let d = decoded(&raw);
            assert_eq!(
                (d.charset, d.assumed.as_deref()),
                (Charset::Utf8, assumed),
                "{msh18}"
            );
            assert!(d.text.starts_with("MSH|"), "{msh18}: the mark is dropped");
            assert!(d.text.ends_with("PID|1||架空^花子"), "{msh18}");
        }
        // A mark before plain ASCII declared otherwise: UTF-8 too, and said so.
        let d = decoded(&with_bom(&msg("~ISO IR87", b"42")));
        assert_eq!(
            (d.charset, d.assumed.as_deref()),
            (Charset::Utf8, Some("UTF-8 (BOM)"))
        );
        // Escape sequences outweigh the mark; bytes that are not UTF-8 ignore it.
        let jis = Charset::Iso2022Jp.encode("架空");
        let d = decoded(&with_bom(&msg("~ISO IR87", &jis)));
        assert_eq!(
            (d.charset, d.assumed.as_deref()),
            (Charset::Iso2022Jp, None)
        );
        let sjis = Charset::ShiftJis.encode("架空");
        let d = decoded(&with_bom(&msg("SHIFT_JIS", &sjis)));
        assert_eq!((d.charset, d.assumed.as_deref()), (Charset::ShiftJis, None));
        assert!(d.text.ends_with("PID|1||架空"));
    }

    #[test]
    fn valid_utf8_is_utf8_whatever_the_label_says() {
        let utf8 = "架空^花子".as_bytes();
        for (msh18, assumed) in [
            ("UNICODE UTF-8", None),
            ("", Some("UTF-8 (undeclared)")),
            ("ASCII", Some("UTF-8 (MSH-18 ASCII)")),
            ("~ISO IR87", Some("UTF-8 (MSH-18 ~ISO IR87)")),
            ("SHIFT_JIS", Some("UTF-8 (MSH-18 SHIFT_JIS)")),
            ("UNICODE", Some("UTF-8 (MSH-18 UNICODE)")),
        ] {
            let raw = msg(msh18, utf8);
            let d = decoded(&raw);
            assert_eq!(
                (d.charset, d.assumed.as_deref()),
                (Charset::Utf8, assumed),
                "{msh18}"
            );
            assert!(d.text.ends_with("PID|1||架空^花子"), "{msh18}");
        }
    }

    #[test]
    fn utf8_that_decodes_to_c1_controls_is_not_taken_against_the_label() {
        // ﾂア in Shift_JIS is C2 83 41, which is also UTF-8: U+0083 then `A`.
        let sjis = Charset::ShiftJis.encode("ﾂア");
        assert_eq!(sjis, b"\xc2\x83\x41");
        let d = decoded(&msg("SHIFT_JIS", &sjis));
        assert_eq!((d.charset, d.assumed.as_deref()), (Charset::ShiftJis, None));
        assert!(d.text.ends_with("PID|1||ﾂア"), "{}", d.text);
        let err = decode(&msg("~ISO IR87", &sjis)).err();
        assert!(
            matches!(
                err,
                Some(CharsetError::Malformed {
                    charset: Charset::Iso2022Jp,
                    looks_like: Some(Charset::ShiftJis),
                    ..
                })
            ),
            "{err:?}"
        );
        let err = decode(&msg("8859/1", &sjis)).err();
        assert!(
            matches!(err, Some(CharsetError::Unsupported { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn eight_bit_bytes_that_are_not_utf8_are_only_read_as_declared() {
        let sjis = Charset::ShiftJis.encode("架空");
        for msh18 in ["UNICODE UTF-8", "", "ASCII"] {
            let err = decode(&msg(msh18, &sjis)).err();
            assert!(
                matches!(
                    err,
                    Some(CharsetError::Malformed {
                        charset: Charset::Utf8,
                        looks_like: Some(Charset::ShiftJis),
                        ..
                    })
                ),
                "{msh18}: {err:?}"
            );
        }
        let err = decode(&msg("~ISO IR87", &sjis)).err();
        assert!(
            matches!(
                err,
                Some(CharsetError::Malformed {
                    charset: Charset::Iso2022Jp,
                    looks_like: Some(Charset::ShiftJis),
                    ..
                })
            ),
            "{err:?}"
        );
        let err = decode(&msg("EUC-JP", &sjis)).err();
        assert!(
            matches!(err, Some(CharsetError::Unsupported { ref declared }) if declared == "`EUC-JP`"),
            "{err:?}"
        );
    }

    #[test]
    fn an_unknown_label_over_plain_ascii_is_read_as_ascii() {
        let d = decoded(&msg("8859/1", b"42"));
        assert_eq!(
            (d.charset, d.assumed.as_deref()),
            (Charset::Utf8, Some("ASCII (MSH-18 8859/1)"))
        );
        // ESC, SO and SI belong to some other 7-bit code: that cannot be decided.
        let err = decode(&msg("ISO-2022-KR", b"\x1b$)C\x0e!!\x0f")).err();
        assert!(
            matches!(err, Some(CharsetError::Unsupported { .. })),
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
