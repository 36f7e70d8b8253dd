//! Small text conversions shared by the layouts: names as the canonical event writes
//! them, care levels, calendar dates and digit codes.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use renkei_sdk::japan_offset;

/// Half-width katakana U+FF61..=U+FF9F and their full-width forms.
const HALF_WIDTH_KANA: [char; 63] = [
    '。', '「', '」', '、', '・', 'ヲ', 'ァ', 'ィ', 'ゥ', 'ェ', 'ォ', 'ャ', 'ュ', 'ョ', 'ッ', 'ー',
    'ア', 'イ', 'ウ', 'エ', 'オ', 'カ', 'キ', 'ク', 'ケ', 'コ', 'サ', 'シ', 'ス', 'セ', 'ソ', 'タ',
    'チ', 'ツ', 'テ', 'ト', 'ナ', 'ニ', 'ヌ', 'ネ', 'ノ', 'ハ', 'ヒ', 'フ', 'ヘ', 'ホ', 'マ', 'ミ',
    'ム', 'メ', 'モ', 'ヤ', 'ユ', 'ヨ', 'ラ', 'リ', 'ル', 'レ', 'ロ', 'ワ', 'ン', '゛', '゜',
];

/// The voiced (`゛`) form of a full-width katakana, if it has one.
fn voiced(base: char) -> Option<char> {
    match base {
        'ウ' => Some('ヴ'),
        'カ' | 'キ' | 'ク' | 'ケ' | 'コ' | 'サ' | 'シ' | 'ス' | 'セ' | 'ソ' | 'タ' | 'チ'
        | 'ツ' | 'テ' | 'ト' | 'ハ' | 'ヒ' | 'フ' | 'ヘ' | 'ホ' => {
            char::from_u32(u32::from(base) + 1)
        }
        _ => None,
    }
}

/// The semi-voiced (`゜`) form of a full-width katakana, if it has one.
fn semi_voiced(base: char) -> Option<char> {
    match base {
        'ハ' | 'ヒ' | 'フ' | 'ヘ' | 'ホ' => char::from_u32(u32::from(base) + 2),
        _ => None,
    }
}

/// A name as the canonical event writes it: half-width katakana widened (`ｼｹﾝ` →
/// `シケン`, with `ﾞ`/`ﾟ` joined to the letter before), and the ideographic space
/// between family and given name made an ASCII space, so every source reads `架空 花子`.
pub(crate) fn canonical_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = u32::from(c);
        let wide = if (0xFF61..=0xFF9F).contains(&code) {
            usize::try_from(code - 0xFF61)
                .ok()
                .and_then(|i| HALF_WIDTH_KANA.get(i))
                .copied()
                .unwrap_or(c)
        } else if c == '\u{3000}' {
            ' '
        } else {
            c
        };
        let joined = match wide {
            '゛' => out.chars().last().and_then(voiced),
            '゜' => out.chars().last().and_then(semi_voiced),
            _ => None,
        };
        match joined {
            Some(letter) => {
                out.pop();
                out.push(letter);
            }
            None => out.push(wide),
        }
    }
    out
}

/// Full-width digits made ASCII (`要介護２` → `要介護2`), as care levels are compared.
pub(crate) fn ascii_digits(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '０'..='９' => {
                char::from_u32(u32::from(c) - u32::from('０') + u32::from('0')).unwrap_or(c)
            }
            _ => c,
        })
        .collect()
}

/// `true` when `text` is exactly `len` ASCII digits.
pub(crate) fn is_digits(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit())
}

/// The number written by the ASCII digits `digits` (`None` if any is not a digit).
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u32::from(b - b'0')))
            .flatten()
    })
}

/// The day of year, month and day digits, if it is a real one.
fn ymd(year: &[u8], month: &[u8], day: &[u8]) -> Option<NaiveDate> {
    let year = i32::try_from(number(year)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(month)?, number(day)?)
}

/// A `YYYYMMDD` calendar date (exactly eight digits, a real day).
pub(crate) fn compact_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 8 {
        return None;
    }
    ymd(b.get(..4)?, b.get(4..6)?, b.get(6..)?)
}

/// A `YYYY-MM-DD` calendar date (exactly ten characters, a real day).
pub(crate) fn iso_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    ymd(b.get(..4)?, b.get(5..7)?, b.get(8..)?)
}

/// `date` as `YYYY-MM-DD`.
pub(crate) fn iso(date: NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// A `YYYYMM` month (`000000` is not one).
pub(crate) fn is_month(text: &str) -> bool {
    is_digits(text, 6)
        && text
            .get(4..6)
            .and_then(|m| m.parse::<u8>().ok())
            .is_some_and(|m| (1..=12).contains(&m))
        && text.get(..4).is_some_and(|y| y != "0000")
}

/// Midnight of `date` in Japan.
pub(crate) fn japan_midnight(date: NaiveDate) -> Option<DateTime<FixedOffset>> {
    date.and_hms_opt(0, 0, 0)?
        .and_local_timezone(japan_offset())
        .single()
}

/// A `YYYYMMDDHHMMSS` time in Japan (a real instant).
pub(crate) fn japan_timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
    if !is_digits(text, 14) {
        return None;
    }
    NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S")
        .ok()?
        .and_local_timezone(japan_offset())
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_width_kana_and_ideographic_spaces_become_the_canonical_name() {
        assert_eq!(canonical_name("ｼｹﾝ ﾊﾅｺ"), "シケン ハナコ");
        assert_eq!(canonical_name("ｶﾞｯｺｳ ﾎﾟﾝﾀ ｳﾞｨ"), "ガッコウ ポンタ ヴィ");
        assert_eq!(canonical_name("試験\u{3000}花子"), "試験 花子");
        assert_eq!(canonical_name("ﾞ"), "゛");
    }

    #[test]
    fn dates_must_be_real_days_in_the_exact_shape() {
        assert!(compact_date("20250231").is_none());
        assert!(compact_date("2025041").is_none());
        assert!(compact_date("+2025041").is_none());
        assert_eq!(
            compact_date("20240229"),
            NaiveDate::from_ymd_opt(2024, 2, 29)
        );
        assert!(iso_date("2025-4-10").is_none());
        assert_eq!(iso_date("2025-04-10"), NaiveDate::from_ymd_opt(2025, 4, 10));
        assert!(is_month("202505") && !is_month("202513") && !is_month("000000"));
        assert!(japan_timestamp("20250425093000").is_some());
        assert!(japan_timestamp("20250425246000").is_none());
    }

    #[test]
    fn care_levels_compare_with_ascii_digits() {
        assert_eq!(ascii_digits("要介護２"), "要介護2");
    }
}
