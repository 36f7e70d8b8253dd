//! An allocation-light ER7 (pipe-delimited) HL7 v2 parser over already-decoded text.
//!
//! [`Message::parse`] makes one allocation (the list of segments); every field,
//! repetition, component and subcomponent is a borrowed slice of the input, found on
//! demand. Escape sequences are only resolved when a value is read
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    field: char,
    component: Option<char>,
    repetition: Option<char>,
    escape: Option<char>,
    subcomponent: Option<char>,
    truncation: Option<char>,
}

impl Delimiters {
    /// The standard delimiters `|^~\&`.
    pub const STANDARD: Delimiters = Delimiters {
        field: '|',
        component: Some('^'),
        repetition: Some('~'),
        escape: Some('\\'),
        subcomponent: Some('&'),
        truncation: None,
    };

    /// Delimiters from the field separator (`MSH-1`) and the encoding characters
    /// (`MSH-2`: component, repetition, escape, subcomponent and, since v2.7, truncation).
    pub fn new(field: char, encoding_characters: &str) -> Result<Self, ParseError> {
        if !is_delimiter_char(field) {
            return Err(ParseError::BadFieldSeparator);
        }
        let mut chars = [None; 5];
        let mut count = 0;
        for c in encoding_characters.chars() {
            if count == chars.len() || !is_delimiter_char(c) || c == field {
                return Err(ParseError::BadEncodingCharacters);
            }
            if chars[..count].contains(&Some(c)) {
                return Err(ParseError::BadEncodingCharacters);
            }
            chars[count] = Some(c);
            count += 1;
        }
        if count == 0 {
            return Err(ParseError::BadEncodingCharacters);
        }
        Ok(Delimiters {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars[2],
            subcomponent: chars[3],
            truncation: chars[4],
        })
    }

    /// Delimiters that split nothing and unescape nothing (used for `MSH-1`/`MSH-2`).
    const fn literal(field: char) -> Self {
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
        self.field
    }

    /// The component separator (first character of `MSH-2`).
    pub fn component(&self) -> Option<char> {
        self.component
    }

    /// The repetition separator (second character of `MSH-2`).
    pub fn repetition(&self) -> Option<char> {
        self.repetition
    }

    /// The escape character (third character of `MSH-2`).
    pub fn escape(&self) -> Option<char> {
        self.escape
    }

    /// The subcomponent separator (fourth character of `MSH-2`).
    pub fn subcomponent(&self) -> Option<char> {
        self.subcomponent
    }

    /// The truncation character (fifth character of `MSH-2`, HL7 v2.7+).
    pub fn truncation(&self) -> Option<char> {
        self.truncation
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
        .map_while(|c| c)
        .collect()
    }
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters::STANDARD
    }
}

fn is_delimiter_char(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Iterates over the pieces of `s` between `sep`; `None` yields `s` whole.
#[derive(Debug, Clone)]
struct Pieces<'a> {
    rest: Option<&'a str>,
    sep: Option<char>,
}

impl<'a> Pieces<'a> {
    fn new(s: &'a str, sep: Option<char>) -> Self {
        Pieces { rest: Some(s), sep }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match self.sep.and_then(|c| s.find(c).map(|i| (i, c))) {
            Some((i, c)) => {
                self.rest = s.get(i + c.len_utf8()..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// The `n`-th (1-based) piece of `s`, or `""`.
fn nth_piece(s: &str, sep: Option<char>, n: usize) -> &str {
    match n.checked_sub(1) {
        Some(index) => Pieces::new(s, sep).nth(index).unwrap_or(""),
        None => "",
    }
}

/// Resolves the HL7 escape sequences in `raw` (`\F\ \S\ \T\ \R\ \E\ \P\ \Xhh..\`;
/// `\H\` and `\N\` highlighting marks are dropped). Unknown or malformed sequences are
/// kept literally. Borrows when `raw` holds no escape character.
pub fn unescape<'a>(raw: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let Some(esc) = delimiters.escape else {
        return Cow::Borrowed(raw);
    };
    if !raw.contains(esc) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(esc) {
        out.push_str(&rest[..i]);
        let after = &rest[i + esc.len_utf8()..];
        let Some(j) = after.find(esc) else {
            // No closing escape character: keep the rest as it is.
            out.push(esc);
            out.push_str(after);
            return Cow::Owned(out);
        };
        let sequence = &after[..j];
        if !resolve_escape(sequence, delimiters, &mut out) {
            out.push(esc);
            out.push_str(sequence);
            out.push(esc);
        }
        rest = &after[j + esc.len_utf8()..];
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
        Some(c) => {
            out.push(c);
            true
        }
        None => false,
    }
}

/// `\Xhhhh\` payload: pairs of hex digits forming UTF-8 text.
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
    String::from_utf8(bytes).ok()
}

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
        if !is_delimiter_char(field) {
            return Err(ParseError::BadFieldSeparator);
        }
        let after_field = &after_name[field.len_utf8()..];
        let encoding_characters = after_field.split([field, '\r', '\n']).next().unwrap_or("");
        let delimiters = Delimiters::new(field, encoding_characters)?;

        let segments = text
            .split(['\r', '\n'])
            .filter(|line| !line.trim().is_empty())
            .map(|raw| Segment::new(raw, delimiters))
            .collect();
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

/// One segment, e.g. `PID|0001||0000482915^^^^PI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    raw: &'a str,
    name: &'a str,
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    fn new(raw: &'a str, delimiters: Delimiters) -> Self {
        let name = raw.split(delimiters.field).next().unwrap_or("");
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
        let separators = self.raw.matches(self.delimiters.field).count();
        if self.is_msh() {
            separators + 1
        } else {
            separators
        }
    }

    /// Field `n` in HL7 numbering (empty when absent). `MSH-1` and `MSH-2` are returned
    /// literally: they are never split or unescaped.
    pub fn field(&self, n: usize) -> Field<'a> {
        let d = self.delimiters;
        if n == 0 {
            return Field {
                raw: self.name,
                delimiters: Delimiters::literal(d.field),
            };
        }
        if self.is_msh() {
            match n {
                1 => {
                    let raw = self.raw.get(3..3 + d.field.len_utf8()).unwrap_or("");
                    return Field {
                        raw,
                        delimiters: Delimiters::literal(d.field),
                    };
                }
                _ => {
                    let raw = nth_piece(self.raw, Some(d.field), n);
                    let delimiters = if n == 2 {
                        Delimiters::literal(d.field)
                    } else {
                        d
                    };
                    return Field { raw, delimiters };
                }
            }
        }
        Field {
            raw: nth_piece(self.raw, Some(d.field), n + 1),
            delimiters: d,
        }
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
        self.component(1).value()
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
        self.component(1).value()
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
        self.subcomponent(1).value()
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
