//! HL7 `DTM` / `TS` timestamps: `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
//! A timestamp without an offset is Japan time (+09:00).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone};

/// Japan Standard Time, for timestamps that carry no offset.
pub(crate) const JST_SECONDS: i32 = 9 * 3600;

/// The components of a timestamp, as precise as the source gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dtm {
    pub date: NaiveDate,
    /// False when the value had only a year or a year and month.
    pub has_day: bool,
    pub time: NaiveTime,
    pub offset: FixedOffset,
}

impl Dtm {
    pub fn to_datetime(self) -> Option<DateTime<FixedOffset>> {
        self.offset
            .from_local_datetime(&self.date.and_time(self.time))
            .single()
    }
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses an HL7 timestamp; `None` when it is not one.
pub(crate) fn parse(value: &str) -> Option<Dtm> {
    let bytes = value.as_bytes();
    let (body, offset) = match bytes.iter().position(|&b| b == b'+' || b == b'-') {
        Some(i) => {
            let zone = &bytes[i..];
            if zone.len() != 5 {
                return None;
            }
            let hours = i32::try_from(digits(&zone[1..3])?).ok()?;
            let minutes = i32::try_from(digits(&zone[3..5])?).ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            let seconds = if zone[0] == b'-' { -seconds } else { seconds };
            (&bytes[..i], FixedOffset::east_opt(seconds)?)
        }
        None => (bytes, FixedOffset::east_opt(JST_SECONDS)?),
    };
    let (main, fraction) = match body.iter().position(|&b| b == b'.') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) || !main.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let part = |range: std::ops::Range<usize>, default: u32| -> Option<u32> {
        match main.get(range) {
            Some(s) => digits(s),
            None => Some(default),
        }
    };
    let year = i32::try_from(part(0..4, 0)?).ok()?;
    let month = part(4..6, 1)?;
    let day = part(6..8, 1)?;
    let hour = part(8..10, 0)?;
    let minute = part(10..12, 0)?;
    let second = part(12..14, 0)?;
    let nanos = match fraction {
        None => 0,
        Some(f) => {
            if main.len() != 14 || f.is_empty() || f.len() > 9 {
                return None;
            }
            let n = digits(f)?;
            let scale = 10u32.checked_pow(u32::try_from(9 - f.len()).ok()?)?;
            n.checked_mul(scale)?
        }
    };
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(Dtm {
        date,
        has_day: main.len() >= 8,
        time,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(s: &str) -> Option<String> {
        parse(s).and_then(Dtm::to_datetime).map(|d| d.to_rfc3339())
    }

    #[test]
    fn precisions_and_offsets() {
        assert_eq!(
            rfc3339("202504100900").as_deref(),
            Some("2025-04-10T09:00:00+09:00")
        );
        assert_eq!(
            rfc3339("20250410093015").as_deref(),
            Some("2025-04-10T09:30:15+09:00")
        );
        assert_eq!(
            rfc3339("20250410093015.123").as_deref(),
            Some("2025-04-10T09:30:15.123+09:00")
        );
        assert_eq!(
            rfc3339("2025").as_deref(),
            Some("2025-01-01T00:00:00+09:00")
        );
        assert_eq!(
            rfc3339("202504").as_deref(),
            Some("2025-04-01T00:00:00+09:00")
        );
        assert_eq!(
            rfc3339("20250410").as_deref(),
            Some("2025-04-10T00:00:00+09:00")
        );
        assert_eq!(
            rfc3339("2025041009").as_deref(),
            Some("2025-04-10T09:00:00+09:00")
        );
        assert_eq!(
            rfc3339("20250410093015+0000").as_deref(),
            Some("2025-04-10T09:30:15+00:00")
        );
        assert_eq!(
            rfc3339("202504100930-0500").as_deref(),
            Some("2025-04-10T09:30:00-05:00")
        );
        assert!(parse("2025").is_some_and(|d| !d.has_day));
    }

    #[test]
    fn rejects_non_timestamps() {
        for bad in [
            "",
            "yesterday",
            "2025-04-10 9:00",
            "20250410 0900",
            "202",
            "2025041",
            "20251310",
            "20250230",
            "2025041024",
            "202504102360",
            "20250410235960",
            "20250410.5",
            "20250410093015.",
            "20250410093015.1234567890",
            "20250410093015+09",
            "20250410093015+2400",
            "20250410093015+0960",
            "２０２５",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} accepted");
        }
    }
}
