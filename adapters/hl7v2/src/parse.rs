//! An allocation-light ER7 (pipe-delimited) HL7 v2 parser over already-decoded text.
//!
//! [`Message::parse`] makes one allocation (the list of segments, grown only past 16);
//! every field, repetition, component and subcomponent is a borrowed slice of the
//! input, found on demand by counting separators eight bytes at a time
//! ([`Segment::fields`] finds all the fields of a segment in one pass, for readers of
//! many fields). Escape sequences are only resolved when a value is read
//! ([`Subcomponent::value`] and friends), and only allocate when the value holds the
//! escape character.
//!
//! Field numbering follows HL7: `MSH-1` is the field separator itself and `MSH-2` the
//! encoding characters, so `MSH-9` is the message type; in every other segment field
//! `n` is the `n`-th value after the segment name. All positions are 1-based; position
//! 0 or a position past the end reads as empty.

use std::borrow::Cow;

/// Why a text cannot be read as an HL7 v2 message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first segment is not `MSH`.
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    /// `MSH` is not followed by a usable field separator.
    #[error(
        "MSH-1 (the field separator) is missing or invalid: it must be one ASCII punctuation character right after `MSH`"
    )]
    BadFieldSeparator,
    /// `MSH-2` is missing, too long, or its characters are not distinct punctuation.
    #[error(
        "MSH-2 (the encoding characters) is missing or invalid: expected up to 5 distinct ASCII punctuation characters such as `^~\\&`, different from the field separator"
    )]
    BadEncodingCharacters,
}

impl ParseError {
    /// The HL7 location the error is about (`MSH`, `MSH-1`, `MSH-2`).
    pub fn location(&self) -> &'static str {
        match self {
            ParseError::NoMsh => "MSH",
            ParseError::BadFieldSeparator => "MSH-1",
            ParseError::BadEncodingCharacters => "MSH-2",
        }
    }
}

impl From<ParseError> for renkei_sdk::NormalizeError {
    fn from(err: ParseError) -> Self {
        renkei_sdk::NormalizeError::at(err.location(), err.to_string())
    }
}

/// The delimiters of one message, read from `MSH-1` and `MSH-2`.
///
/// Every delimiter is an ASCII punctuation character. The ones `MSH-2` does not declare
/// are not used (their separators never split a value).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    // Held as bytes: every delimiter is ASCII, so the parser can split the UTF-8 text
    // byte by byte and always cut on a character boundary.
    field: u8,
    component: Option<u8>,
    repetition: Option<u8>,
    escape: Option<u8>,
    subcomponent: Option<u8>,
    truncation: Option<u8>,
}

impl Delimiters {
    /// The standard delimiters `|^~\&`.
    pub const STANDARD: Delimiters = Delimiters {
        field: b'|',
        component: Some(b'^'),
        repetition: Some(b'~'),
        escape: Some(b'\\'),
        subcomponent: Some(b'&'),
        truncation: None,
    };

    /// Delimiters from the field separator (`MSH-1`) and the encoding characters
    /// (`MSH-2`: component, repetition, escape, subcomponent and, since v2.7, truncation).
    pub fn new(field: char, encoding_characters: &str) -> Result<Self, ParseError> {
        let field = delimiter_byte(field).ok_or(ParseError::BadFieldSeparator)?;
        let mut bytes = [None; 5];
        let mut count = 0;
        for c in encoding_characters.chars() {
            let byte = delimiter_byte(c).ok_or(ParseError::BadEncodingCharacters)?;
            if count == bytes.len() || byte == field || bytes[..count].contains(&Some(byte)) {
                return Err(ParseError::BadEncodingCharacters);
            }
            bytes[count] = Some(byte);
            count += 1;
        }
        if count == 0 {
            return Err(ParseError::BadEncodingCharacters);
        }
        Ok(Delimiters {
            field,
            component: bytes[0],
            repetition: bytes[1],
            escape: bytes[2],
            subcomponent: bytes[3],
            truncation: bytes[4],
        })
    }

    /// Delimiters that split nothing and unescape nothing (used for `MSH-1`/`MSH-2`).
    const fn literal(field: u8) -> Self {
        Delimiters {
            field,
            component: None,
            repetition: None,
            escape: None,
            subcomponent: None,
            truncation: None,
        }
    }

    /// The field separator (`MSH-1`).
    pub fn field(&self) -> char {
        char::from(self.field)
    }

    /// The component separator (first character of `MSH-2`).
    pub fn component(&self) -> Option<char> {
        self.component.map(char::from)
    }

    /// The repetition separator (second character of `MSH-2`).
    pub fn repetition(&self) -> Option<char> {
        self.repetition.map(char::from)
    }

    /// The escape character (third character of `MSH-2`).
    pub fn escape(&self) -> Option<char> {
        self.escape.map(char::from)
    }

    /// The subcomponent separator (fourth character of `MSH-2`).
    pub fn subcomponent(&self) -> Option<char> {
        self.subcomponent.map(char::from)
    }

    /// The truncation character (fifth character of `MSH-2`, HL7 v2.7+).
    pub fn truncation(&self) -> Option<char> {
        self.truncation.map(char::from)
    }

    /// The encoding characters as they appear in `MSH-2`.
    pub fn encoding_characters(&self) -> String {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
            self.truncation,
        ]
        .into_iter()
        .map_while(|b| b.map(char::from))
        .collect()
    }
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters::STANDARD
    }
}

impl std::fmt::Debug for Delimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delimiters")
            .field("field", &self.field())
            .field("component", &self.component())
            .field("repetition", &self.repetition())
            .field("escape", &self.escape())
            .field("subcomponent", &self.subcomponent())
            .field("truncation", &self.truncation())
            .finish()
    }
}

fn is_delimiter_char(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// The byte of a valid delimiter character (ASCII punctuation), else `None`.
fn delimiter_byte(c: char) -> Option<u8> {
    if is_delimiter_char(c) {
        u8::try_from(c).ok()
    } else {
        None
    }
}

/// Byte search, eight bytes at a time: the parser finds a field by counting separators
/// from the start of its segment, so this is its inner loop.
///
/// Delimiters and segment terminators are ASCII, and in UTF-8 an ASCII byte is always a
/// whole character, so every offset found is a character boundary.
pub(crate) mod scan {
    use std::ops::Range;

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    /// The high bit of every byte of `word` that equals `byte`, and no other bit.
    fn equal(word: u64, byte: u8) -> u64 {
        let x = word ^ (ONES * u64::from(byte));
        // A byte of `x` is zero exactly when adding 0x7F to its low seven bits leaves
        // the high bit clear and its own high bit is clear; no carry crosses bytes.
        !(((x & !HIGH) + !HIGH) | x) & HIGH
    }

    /// The offset of the byte a set high bit of `mask` marks (the lowest one).
    fn offset(mask: u64) -> usize {
        (mask.trailing_zeros() / 8) as usize
    }

    /// How many bytes `mask` (a result of [`equal`]) marks. Cheaper than `count_ones`
    /// without a `popcnt` target feature: one 0/1 per byte, summed into the top byte.
    fn marked(mask: u64) -> usize {
        ((mask >> 7).wrapping_mul(ONES) >> 56) as usize
    }

    /// The offset of the first byte of `bytes` for which `mask` marks a match.
    fn find_by(bytes: &[u8], mask: impl Fn(u64) -> u64, is: impl Fn(u8) -> bool) -> Option<usize> {
        let (words, tail) = bytes.as_chunks::<8>();
        for (i, word) in words.iter().enumerate() {
            let m = mask(u64::from_le_bytes(*word));
            if m != 0 {
                return Some(i * 8 + offset(m));
            }
        }
        tail.iter()
            .position(|&b| is(b))
            .map(|j| words.len() * 8 + j)
    }

    /// The offset of the first `byte` in `bytes`.
    pub(crate) fn find(bytes: &[u8], byte: u8) -> Option<usize> {
        find_by(bytes, |w| equal(w, byte), |b| b == byte)
    }

    /// The offset of the first byte of `bytes` that is one of `sought` (`None` matches
    /// nothing).
    pub(crate) fn find_any(bytes: &[u8], sought: [Option<u8>; 3]) -> Option<usize> {
        let [a, b, c] = sought;
        find_by(
            bytes,
            |w| equal_opt(w, a) | equal_opt(w, b) | equal_opt(w, c),
            |x| sought.contains(&Some(x)),
        )
    }

    /// [`equal`], or no byte when `byte` is `None`.
    fn equal_opt(word: u64, byte: Option<u8>) -> u64 {
        byte.map_or(0, |byte| equal(word, byte))
    }

    /// Where the piece `index` (0-based) of `bytes` between `sep` lies, if there is one.
    pub(crate) fn piece(bytes: &[u8], sep: u8, index: usize) -> Option<Range<usize>> {
        let start = match index {
            0 => 0,
            _ => find_nth(bytes, sep, index)? + 1,
        };
        let rest = bytes.get(start..)?;
        let end = find(rest, sep).map_or(bytes.len(), |i| start + i);
        Some(start..end)
    }

    /// The offset of the first CR or LF in `bytes`.
    pub(crate) fn find_line_end(bytes: &[u8]) -> Option<usize> {
        find_by(
            bytes,
            |w| equal(w, b'\r') | equal(w, b'\n'),
            |b| b == b'\r' || b == b'\n',
        )
    }

    /// The offset of the `count`-th (1-based) `byte` in `bytes`.
    pub(crate) fn find_nth(bytes: &[u8], byte: u8, count: usize) -> Option<usize> {
        let mut remaining = count.checked_sub(1)?;
        let (words, tail) = bytes.as_chunks::<8>();
        for (i, word) in words.iter().enumerate() {
            let mut m = equal(u64::from_le_bytes(*word), byte);
            let found = marked(m);
            if found <= remaining {
                remaining -= found;
                continue;
            }
            for _ in 0..remaining {
                m &= m - 1;
            }
            return Some(i * 8 + offset(m));
        }
        tail.iter()
            .enumerate()
            .filter(|(_, b)| **b == byte)
            .nth(remaining)
            .map(|(j, _)| words.len() * 8 + j)
    }

    /// Calls `found` with the offset of every `byte` in `bytes`, in order.
    pub(crate) fn for_each(bytes: &[u8], byte: u8, mut found: impl FnMut(usize)) {
        let (words, tail) = bytes.as_chunks::<8>();
        for (i, word) in words.iter().enumerate() {
            let mut m = equal(u64::from_le_bytes(*word), byte);
            while m != 0 {
                found(i * 8 + offset(m));
                m &= m - 1;
            }
        }
        for (j, &b) in tail.iter().enumerate() {
            if b == byte {
                found(words.len() * 8 + j);
            }
        }
    }

    /// How many times `byte` occurs in `bytes`.
    pub(crate) fn count(bytes: &[u8], byte: u8) -> usize {
        let (words, tail) = bytes.as_chunks::<8>();
        let mut total = tail.iter().filter(|&&b| b == byte).count();
        // One counter per byte lane; each word adds 0 or 1 to a lane, so a lane cannot
        // overflow within 255 words.
        for block in words.chunks(255) {
            let mut lanes = 0u64;
            for word in block {
                lanes += equal(u64::from_le_bytes(*word), byte) >> 7;
            }
            let pairs = (lanes & 0x00FF_00FF_00FF_00FF) + ((lanes >> 8) & 0x00FF_00FF_00FF_00FF);
            total += (pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48) as usize;
        }
        total
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn counts_past_the_lane_capacity() {
            let bytes = b"a|b||".repeat(1000);
            assert_eq!(count(&bytes, b'|'), 3000);
            assert_eq!(count(&bytes, b'a'), 1000);
            assert_eq!(count(&bytes[1..], b'a'), 999);
        }

        /// Every offset, against a plain byte loop, for every length up to five words.
        #[test]
        fn agrees_with_a_byte_by_byte_search() {
            let text = b"MSH|^~\\&|A\r\nPID|1||42^^^^PI~\xe6\x9e\xb6|x\x7f\xff|\r|\n||";
            for len in 0..=text.len() {
                let bytes = &text[..len];
                for byte in [b'|', b'^', b'~', b'\r', b'\n', 0x7f, 0xff, 0x80] {
                    let plain: Vec<usize> = (0..len).filter(|&i| bytes[i] == byte).collect();
                    assert_eq!(find(bytes, byte), plain.first().copied(), "{len} {byte}");
                    assert_eq!(find_nth(bytes, byte, 0), None);
                    for (n, at) in plain.iter().enumerate() {
                        assert_eq!(find_nth(bytes, byte, n + 1), Some(*at), "{len} {byte} {n}");
                    }
                    assert_eq!(find_nth(bytes, byte, plain.len() + 1), None);
                    let mut each = Vec::new();
                    for_each(bytes, byte, |at| each.push(at));
                    assert_eq!(each, plain, "{len} {byte}");
                    assert_eq!(count(bytes, byte), plain.len(), "{len} {byte}");
                    let pieces: Vec<&[u8]> = bytes.split(|&b| b == byte).collect();
                    for index in 0..=pieces.len() {
                        let found = piece(bytes, byte, index).and_then(|r| bytes.get(r));
                        assert_eq!(found, pieces.get(index).copied(), "{len} {byte} {index}");
                    }
                }
                for sought in [
                    [Some(b'~'), Some(b'^'), Some(b'&')],
                    [Some(b'^'), None, Some(0xff)],
                    [None, None, None],
                ] {
                    let plain = (0..len).find(|&i| sought.contains(&Some(bytes[i])));
                    assert_eq!(find_any(bytes, sought), plain, "{len} {sought:?}");
                }
                let ends: Vec<usize> = (0..len)
                    .filter(|&i| bytes[i] == b'\r' || bytes[i] == b'\n')
                    .collect();
                assert_eq!(find_line_end(bytes), ends.first().copied(), "{len}");
            }
        }
    }
}

/// Iterates over the pieces of `s` between `sep`; `None` yields `s` whole.
///
/// Separators are ASCII, so every cut falls on a character boundary of `s`.
#[derive(Debug, Clone)]
struct Pieces<'a> {
    rest: Option<&'a str>,
    sep: Option<u8>,
}

impl<'a> Pieces<'a> {
    fn new(s: &'a str, sep: Option<u8>) -> Self {
        Pieces { rest: Some(s), sep }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match self.sep.and_then(|sep| scan::find(s.as_bytes(), sep)) {
            Some(i) => {
                self.rest = s.get(i + 1..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// The `n`-th (1-based) piece of `s` between `sep` (`None`: `s` is one piece), or `""`.
fn nth_piece(s: &str, sep: Option<u8>, n: usize) -> &str {
    let Some(index) = n.checked_sub(1) else {
        return "";
    };
    let Some(sep) = sep else {
        return if index == 0 { s } else { "" };
    };
    scan::piece(s.as_bytes(), sep, index)
        .and_then(|range| s.get(range))
        .unwrap_or("")
}

/// The text of `s` before the first of the `separators`: the first piece at every level
/// below, found in one pass.
fn first_piece(s: &str, separators: [Option<u8>; 3]) -> &str {
    match scan::find_any(s.as_bytes(), separators) {
        Some(end) => s.get(..end).unwrap_or_default(),
        None => s,
    }
}

/// Resolves the HL7 escape sequences in `raw` (`\F\ \S\ \T\ \R\ \E\ \P\ \Xhh..\`;
/// `\H\` and `\N\` highlighting marks are dropped). Unknown or malformed sequences are
/// kept literally. Borrows when `raw` holds no escape character.
pub fn unescape<'a>(raw: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let Some(esc) = delimiters.escape else {
        return Cow::Borrowed(raw);
    };
    let Some(first) = scan::find(raw.as_bytes(), esc) else {
        return Cow::Borrowed(raw);
    };
    let esc_char = char::from(esc);
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut next = Some(first);
    while let Some(i) = next {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        let Some(j) = scan::find(after.as_bytes(), esc) else {
            // No closing escape character: keep the rest as it is.
            out.push(esc_char);
            out.push_str(after);
            return Cow::Owned(out);
        };
        let sequence = after.get(..j).unwrap_or_default();
        if !resolve_escape(sequence, delimiters, &mut out) {
            out.push(esc_char);
            out.push_str(sequence);
            out.push(esc_char);
        }
        rest = after.get(j + 1..).unwrap_or_default();
        next = scan::find(rest.as_bytes(), esc);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends what `sequence` (the text between two escape characters) stands for;
/// `false` when it is not a sequence this parser resolves.
fn resolve_escape(sequence: &str, d: &Delimiters, out: &mut String) -> bool {
    let delimiter = match sequence {
        "F" => Some(d.field),
        "S" => d.component,
        "T" => d.subcomponent,
        "R" => d.repetition,
        "E" => d.escape,
        "P" => d.truncation,
        "H" | "N" => return true,
        _ => {
            return match sequence.strip_prefix('X') {
                Some(hex) => match decode_hex(hex) {
                    Some(text) => {
                        out.push_str(&text);
                        true
                    }
                    None => false,
                },
                None => false,
            };
        }
    };
    match delimiter {
        Some(b) => {
            out.push(char::from(b));
            true
        }
        None => false,
    }
}

/// `\Xhhhh\` payload: pairs of hex digits forming UTF-8 text. A payload holding NUL
/// is not resolved (it is kept literally): no stored text may contain NUL.
fn decode_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    if bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Room for the segments of a usual message, reserved up front.
const SEGMENTS_USUALLY: usize = 16;

/// A parsed HL7 v2 message: its delimiters and its segments, borrowed from the text.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    delimiters: Delimiters,
    segments: Vec<Segment<'a>>,
}

impl<'a> Message<'a> {
    /// Splits `text` into segments (separated by CR, LF or CRLF; empty lines are
    /// skipped) and reads the delimiters from `MSH-1`/`MSH-2`. Leading whitespace and a
    /// byte-order mark are ignored. The first segment must be `MSH`.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        let text = text.trim_start_matches(|c: char| c == '\u{feff}' || c.is_ascii_whitespace());
        let after_name = text.strip_prefix("MSH").ok_or(ParseError::NoMsh)?;
        let field = after_name
            .chars()
            .next()
            .ok_or(ParseError::BadFieldSeparator)?;
        let field_byte = delimiter_byte(field).ok_or(ParseError::BadFieldSeparator)?;
        let after_field = after_name.get(1..).unwrap_or_default();
        let encoding_characters = after_field
            .as_bytes()
            .iter()
            .position(|&b| b == field_byte || b == b'\r' || b == b'\n')
            .and_then(|end| after_field.get(..end))
            .unwrap_or(after_field);
        let delimiters = Delimiters::new(field, encoding_characters)?;

        // An ADT message rarely has more than 16 segments: one allocation, usually.
        let mut segments = Vec::with_capacity(SEGMENTS_USUALLY);
        let mut rest = text;
        loop {
            let end = scan::find_line_end(rest.as_bytes());
            let line = match end {
                Some(end) => rest.get(..end).unwrap_or_default(),
                None => rest,
            };
            if !is_blank(line) {
                segments.push(Segment::new(line, delimiters));
            }
            match end {
                Some(end) => rest = rest.get(end + 1..).unwrap_or_default(),
                None => break,
            }
        }
        Ok(Message {
            delimiters,
            segments,
        })
    }

    /// The message's delimiters.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// Every segment, in order (the first is `MSH`).
    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }

    /// The `MSH` segment (always present once parsed).
    pub fn msh(&self) -> Segment<'a> {
        self.segments
            .first()
            .copied()
            .unwrap_or_else(|| Segment::new("MSH", self.delimiters))
    }

    /// The first segment named `name`.
    pub fn segment(&self, name: &str) -> Option<Segment<'a>> {
        self.segments.iter().copied().find(|s| s.name() == name)
    }

    /// Every segment named `name`, in order.
    pub fn segments_named<'m>(&'m self, name: &'m str) -> impl Iterator<Item = Segment<'a>> + 'm {
        self.segments
            .iter()
            .copied()
            .filter(move |s| s.name() == name)
    }
}

/// Whether a line holds only whitespace (it is then no segment).
fn is_blank(line: &str) -> bool {
    // A segment starts with its name: checking the first byte spares the Unicode trim.
    match line.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii_alphanumeric() => false,
        Some(_) => line.trim().is_empty(),
    }
}

/// One segment, e.g. `PID|0001||0000482915^^^^PI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    raw: &'a str,
    name: &'a str,
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    fn new(raw: &'a str, delimiters: Delimiters) -> Self {
        let name = nth_piece(raw, Some(delimiters.field), 1);
        Segment {
            raw,
            name,
            delimiters,
        }
    }

    /// The segment id, e.g. `PID`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The segment as it appears in the message (without the segment terminator).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    fn is_msh(&self) -> bool {
        self.name == "MSH"
    }

    /// The number of the last field present (`MSH-1`/`MSH-2` count for `MSH`).
    pub fn field_count(&self) -> usize {
        let separators = scan::count(self.raw.as_bytes(), self.delimiters.field);
        if self.is_msh() {
            separators + 1
        } else {
            separators
        }
    }

    /// Field `n` in HL7 numbering (empty when absent). `MSH-1` and `MSH-2` are returned
    /// literally: they are never split or unescaped.
    ///
    /// Each call counts field separators from the start of the segment; to read several
    /// fields of a long segment, [`Segment::fields`] finds them all in one pass.
    pub fn field(&self, n: usize) -> Field<'a> {
        self.field_from(n, |index| {
            nth_piece(self.raw, Some(self.delimiters.field), index + 1)
        })
    }

    /// The segment with the boundaries of all its fields found in one pass, so that
    /// reading any of them costs no further search.
    pub fn fields(&self) -> SegmentFields<'a> {
        let bytes = self.raw.as_bytes();
        let separator = self.delimiters.field;
        let mut separators = Vec::with_capacity(scan::count(bytes, separator));
        scan::for_each(bytes, separator, |at| separators.push(at));
        SegmentFields {
            segment: *self,
            separators,
        }
    }

    /// Field `n`, given `piece(i)`: the `i`-th (0-based) text between field separators,
    /// piece 0 being the segment name.
    fn field_from(&self, n: usize, piece: impl FnOnce(usize) -> &'a str) -> Field<'a> {
        let d = self.delimiters;
        let literal = Delimiters::literal(d.field);
        let (raw, delimiters) = match n {
            0 => (self.name, literal),
            1 if self.is_msh() => (self.raw.get(3..4).unwrap_or(""), literal),
            // MSH-1 is the separator itself, so MSH-n is the (n-1)-th piece.
            2 if self.is_msh() => (piece(1), literal),
            _ if self.is_msh() => (piece(n - 1), d),
            _ => (piece(n), d),
        };
        Field { raw, delimiters }
    }
}

/// A segment whose field boundaries were found once ([`Segment::fields`]): reading any
/// field is a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFields<'a> {
    segment: Segment<'a>,
    /// The offset of every field separator in the segment.
    separators: Vec<usize>,
}

impl<'a> SegmentFields<'a> {
    /// The segment.
    pub fn segment(&self) -> Segment<'a> {
        self.segment
    }

    /// Field `n`, exactly as [`Segment::field`] reads it.
    pub fn field(&self, n: usize) -> Field<'a> {
        self.segment.field_from(n, |index| self.piece(index))
    }

    /// The text between field separators `index` and `index + 1` (0: the name).
    fn piece(&self, index: usize) -> &'a str {
        let raw = self.segment.raw;
        let start = match index.checked_sub(1) {
            None => 0,
            Some(before) => match self.separators.get(before) {
                Some(at) => at + 1,
                None => return "",
            },
        };
        let end = self.separators.get(index).copied().unwrap_or(raw.len());
        raw.get(start..end).unwrap_or("")
    }
}

/// One field: one or more repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a str,
    delimiters: Delimiters,
}

impl<'a> Field<'a> {
    /// The field as it appears in the message (escaped, with its separators).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the field is absent or empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether the field is the HL7 explicit null `""`.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    /// The repetitions of the field (one, possibly empty, when it does not repeat).
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + use<'a> {
        let delimiters = self.delimiters;
        Pieces::new(self.raw, delimiters.repetition).map(move |raw| Repetition { raw, delimiters })
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Repetition<'a> {
        Repetition {
            raw: nth_piece(self.raw, self.delimiters.repetition, n),
            delimiters: self.delimiters,
        }
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Component<'a> {
        self.repetition(1).component(n)
    }

    /// The unescaped value of the first repetition's first component's first
    /// subcomponent: the value of a primitive field.
    pub fn value(&self) -> Cow<'a, str> {
        let d = &self.delimiters;
        let raw = first_piece(self.raw, [d.repetition, d.component, d.subcomponent]);
        unescape(raw, d)
    }
}

/// One repetition of a field: one or more components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repetition<'a> {
    raw: &'a str,
    delimiters: Delimiters,
}

impl<'a> Repetition<'a> {
    /// The repetition as it appears in the message.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the repetition is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + use<'a> {
        let delimiters = self.delimiters;
        Pieces::new(self.raw, delimiters.component).map(move |raw| Component { raw, delimiters })
    }

    /// Component `n` (1-based).
    pub fn component(&self, n: usize) -> Component<'a> {
        Component {
            raw: nth_piece(self.raw, self.delimiters.component, n),
            delimiters: self.delimiters,
        }
    }

    /// The unescaped value of the first component's first subcomponent.
    pub fn value(&self) -> Cow<'a, str> {
        let d = &self.delimiters;
        unescape(
            first_piece(self.raw, [d.component, d.subcomponent, None]),
            d,
        )
    }
}

/// One component: one or more subcomponents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component<'a> {
    raw: &'a str,
    delimiters: Delimiters,
}

impl<'a> Component<'a> {
    /// The component as it appears in the message.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the component is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The subcomponents, in order.
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + use<'a> {
        let delimiters = self.delimiters;
        Pieces::new(self.raw, delimiters.subcomponent)
            .map(move |raw| Subcomponent { raw, delimiters })
    }

    /// Subcomponent `n` (1-based).
    pub fn subcomponent(&self, n: usize) -> Subcomponent<'a> {
        Subcomponent {
            raw: nth_piece(self.raw, self.delimiters.subcomponent, n),
            delimiters: self.delimiters,
        }
    }

    /// The unescaped value of the first subcomponent.
    pub fn value(&self) -> Cow<'a, str> {
        let d = &self.delimiters;
        unescape(first_piece(self.raw, [d.subcomponent, None, None]), d)
    }
}

/// One subcomponent: a leaf value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subcomponent<'a> {
    raw: &'a str,
    delimiters: Delimiters,
}

impl<'a> Subcomponent<'a> {
    /// The subcomponent as it appears in the message (still escaped).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the subcomponent is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The value with its escape sequences resolved (borrowed when there are none).
    pub fn value(&self) -> Cow<'a, str> {
        unescape(self.raw, &self.delimiters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message<'_> {
        match Message::parse(text) {
            Ok(m) => m,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    #[test]
    fn msh_numbering() {
        let m =
            parse("MSH|^~\\&|APP|1319999999|R|F|20250410||ADT^A01^ADT_A01|C1|P|2.5\rEVN||20250410");
        let msh = m.msh();
        assert_eq!(msh.field(0).raw(), "MSH");
        assert_eq!(msh.field(1).raw(), "|");
        assert_eq!(msh.field(2).raw(), "^~\\&");
        assert_eq!(msh.field(2).value(), "^~\\&");
        assert_eq!(msh.field(3).value(), "APP");
        assert_eq!(msh.field(9).component(1).value(), "ADT");
        assert_eq!(msh.field(9).component(2).value(), "A01");
        assert_eq!(msh.field(10).value(), "C1");
        assert_eq!(msh.field(12).value(), "2.5");
        assert_eq!(msh.field(13).raw(), "");
        assert_eq!(msh.field_count(), 12);
        let evn = m.segment("EVN").map(|s| s.field(2).value().into_owned());
        assert_eq!(evn.as_deref(), Some("20250410"));
    }

    #[test]
    fn fields_read_in_one_pass_match_fields_read_one_by_one() {
        let m = parse(
            "MSH|^~\\&|APP|1319999999||F|20250410||ADT^A01|C1|P|2.5|\rEVN\rPID|1||42~43||架空^花子|\rZZZ||||",
        );
        for segment in m.segments() {
            let fields = segment.fields();
            assert_eq!(fields.segment(), *segment);
            for n in 0..=segment.field_count() + 2 {
                assert_eq!(fields.field(n), segment.field(n), "{}-{n}", segment.name());
            }
        }
    }

    #[test]
    fn segment_terminators_cr_lf_crlf() {
        for sep in ["\r", "\n", "\r\n", "\r\r\n\n"] {
            let text = format!("MSH|^~\\&|A{sep}EVN||1{sep}PID|1||42{sep}");
            let m = parse(&text);
            let names: Vec<_> = m.segments().iter().map(|s| s.name()).collect();
            assert_eq!(names, ["MSH", "EVN", "PID"], "separator {sep:?}");
            assert_eq!(
                m.segment("PID")
                    .map(|s| s.field(3).value().into_owned())
                    .as_deref(),
                Some("42")
            );
        }
    }

    #[test]
    fn repetitions_components_subcomponents() {
        let m = parse("MSH|^~\\&\rPID|1||A1^^^X&1.2.3&ISO~B2^^^Y||F^G^^^^^L^I~K^H^^^^^L^P");
        let pid = m.segment("PID").unwrap_or_else(|| panic!("no PID"));
        let ids: Vec<_> = pid
            .field(3)
            .repetitions()
            .map(|r| r.value().into_owned())
            .collect();
        assert_eq!(ids, ["A1", "B2"]);
        let cx4 = pid.field(3).repetition(1).component(4);
        assert_eq!(cx4.subcomponent(2).value(), "1.2.3");
        assert_eq!(cx4.subcomponent(3).value(), "ISO");
        assert_eq!(cx4.subcomponent(4).value(), "");
        assert_eq!(pid.field(5).repetition(2).component(8).value(), "P");
        assert_eq!(pid.field(5).repetition(3).raw(), "");
        assert_eq!(pid.field(99).raw(), "");
        assert_eq!(pid.field(3).repetition(0).raw(), "");
    }

    #[test]
    fn escape_sequences() {
        let d = Delimiters::STANDARD;
        assert_eq!(unescape("plain", &d), "plain");
        assert!(matches!(unescape("plain", &d), Cow::Borrowed(_)));
        assert_eq!(
            unescape("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", &d),
            "a|b^c&d~e\\f"
        );
        assert_eq!(unescape("\\X0D0A\\", &d), "\r\n");
        assert_eq!(unescape("\\XE69EB6\\", &d), "架");
        assert_eq!(unescape("\\H\\bold\\N\\", &d), "bold");
        // Unknown, malformed and unterminated sequences stay as they are.
        assert_eq!(unescape("\\Z99\\", &d), "\\Z99\\");
        assert_eq!(unescape("\\XZZ\\", &d), "\\XZZ\\");
        assert_eq!(unescape("\\X0\\", &d), "\\X0\\");
        // NUL is never produced: no stored text may hold it.
        assert_eq!(unescape("A\\X00\\B", &d), "A\\X00\\B");
        assert_eq!(unescape("\\.br\\", &d), "\\.br\\");
        assert_eq!(unescape("tail\\F", &d), "tail\\F");
        assert_eq!(unescape("\\\\", &d), "\\\\");
        assert_eq!(unescape("\\P\\", &d), "\\P\\");
    }

    #[test]
    fn escapes_in_fields_use_the_message_delimiters() {
        let m = parse("MSH#$*!@\rNTE#1##a!F!b!S!c$x*y");
        let nte = m.segment("NTE").unwrap_or_else(|| panic!("no NTE"));
        assert_eq!(nte.field(3).value(), "a#b$c");
        assert_eq!(nte.field(3).repetition(1).component(2).raw(), "x");
        assert_eq!(nte.field(3).repetition(2).raw(), "y");
        assert_eq!(m.delimiters().encoding_characters(), "$*!@");
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            Message::parse("EVN||1\rMSH|^~\\&").err(),
            Some(ParseError::NoMsh)
        );
        assert_eq!(Message::parse("").err(), Some(ParseError::NoMsh));
        assert_eq!(
            Message::parse("MSH").err(),
            Some(ParseError::BadFieldSeparator)
        );
        assert_eq!(
            Message::parse("MSHA^~").err(),
            Some(ParseError::BadFieldSeparator)
        );
        assert_eq!(
            Message::parse("MSH|").err(),
            Some(ParseError::BadEncodingCharacters)
        );
        assert_eq!(
            Message::parse("MSH||").err(),
            Some(ParseError::BadEncodingCharacters)
        );
        assert_eq!(
            Message::parse("MSH|^^").err(),
            Some(ParseError::BadEncodingCharacters)
        );
        assert_eq!(
            Message::parse("MSH|^~\\&#$|").err(),
            Some(ParseError::BadEncodingCharacters)
        );
        // Fewer encoding characters: the undeclared ones split nothing.
        let m = parse("MSH|^\rPID|1||a~b&c");
        let pid = m.segment("PID").unwrap_or_else(|| panic!("no PID"));
        assert_eq!(pid.field(3).value(), "a~b&c");
    }

    #[test]
    fn leading_whitespace_and_bom_are_ignored() {
        let m = parse("\u{feff}\r\n MSH|^~\\&|A");
        assert_eq!(m.msh().field(3).value(), "A");
    }
}
