//! FHIR `dateTime`, `instant` and `date` values.
//!
//! FHIR requires an offset on every value with a time of day, so no Japan time is ever
//! assumed for one. The hub shows instants in Japan time: a value sent in UTC becomes
//! the *same instant* written with `+09:00` (2025-05-19T23:40:00Z is
//! 2025-05-20T08:40:00+09:00), never the same clock reading relabelled.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};
use renkei_sdk::{NormalizeError, TimeWindow, japan_offset};
use serde_json::Value;

use crate::text::shown_time;

/// A FHIR `dateTime` as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FhirTime {
    /// A date and time with its offset, already in Japan time.
    Instant(DateTime<FixedOffset>),
    /// A calendar day.
    Date(NaiveDate),
    /// A year, or a year and month.
    Partial,
}

impl FhirTime {
    /// The instant, or the start of the day in Japan for a date.
    pub(crate) fn start(self) -> Option<DateTime<FixedOffset>> {
        match self {
            FhirTime::Instant(t) => Some(t),
            FhirTime::Date(date) => date
                .and_time(NaiveTime::MIN)
                .and_local_timezone(japan_offset())
                .single(),
            FhirTime::Partial => None,
        }
    }
}

/// Parses a FHIR `dateTime` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD` or
/// `YYYY-MM-DDThh:mm:ss[.f]±hh:mm|Z`).
pub(crate) fn parse(text: &str) -> Option<FhirTime> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    match bytes.len() {
        4 if digits(0..4) => Some(FhirTime::Partial),
        7 if digits(0..4) && bytes[4] == b'-' && digits(5..7) => text[5..7]
            .parse::<u8>()
            .is_ok_and(|month| (1..=12).contains(&month))
            .then_some(FhirTime::Partial),
        10 if digits(0..4)
            && bytes[4] == b'-'
            && digits(5..7)
            && bytes[7] == b'-'
            && digits(8..10) =>
        {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .map(FhirTime::Date)
        }
        // A time of day needs seconds and an offset (FHIR dateTime and instant).
        len if len >= 20 && bytes.get(10) == Some(&b'T') => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| FhirTime::Instant(t.with_timezone(&japan_offset()))),
        _ => None,
    }
}

/// Reads the `dateTime` at `value` (absent: `None`), checked against `window`.
/// `path` is the FHIRPath the error names.
pub(crate) fn read(
    value: Option<&Value>,
    path: impl FnOnce() -> String,
    window: &TimeWindow,
) -> Result<Option<FhirTime>, NormalizeError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(text) = value.as_str() else {
        let path = path();
        return Err(NormalizeError::at(
            path.clone(),
            format!(
                "{path} is not a string: a FHIR dateTime is written like 2025-04-10T09:00:00+09:00"
            ),
        ));
    };
    let Some(time) = parse(text) else {
        let path = path();
        return Err(NormalizeError::at(
            path.clone(),
            format!(
                "{path} {} is not a FHIR dateTime (expected YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss with an offset such as +09:00 or Z)",
                shown_time(text)
            ),
        ));
    };
    if let Some(start) = time.start() {
        let path = path();
        window
            .check(&path, start)
            .map_err(|problem| NormalizeError::at(path, problem))?;
    }
    Ok(Some(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utc_instant_is_the_same_instant_in_japan_time() {
        let Some(FhirTime::Instant(t)) = parse("2025-05-19T23:40:00Z") else {
            panic!("not an instant");
        };
        assert_eq!(t.to_rfc3339(), "2025-05-20T08:40:00+09:00");
        assert_eq!(
            t,
            DateTime::parse_from_rfc3339("2025-05-19T23:40:00+00:00").unwrap_or_default()
        );
    }

    #[test]
    fn precision_is_read_as_sent() {
        assert_eq!(parse("2025"), Some(FhirTime::Partial));
        assert_eq!(parse("2025-04"), Some(FhirTime::Partial));
        assert_eq!(parse("2025-13"), None);
        assert_eq!(
            parse("2025-04-10")
                .and_then(FhirTime::start)
                .map(|t| t.to_rfc3339()),
            Some("2025-04-10T00:00:00+09:00".to_owned())
        );
        assert_eq!(parse("2025-02-30"), None);
        // No offset, no seconds: not FHIR.
        assert_eq!(parse("2025-04-10T09:00:00"), None);
        assert_eq!(parse("2025-04-10T09:00+09:00"), None);
        assert!(parse("2025-04-10T09:00:00.123+09:00").is_some());
    }

    #[test]
    fn times_outside_the_window_are_refused_naming_the_path() {
        let window = TimeWindow::default();
        let value = Value::String("0001-01-01T00:00:00Z".to_owned());
        let e = read(
            Some(&value),
            || "Encounter.period.start".to_owned(),
            &window,
        )
        .err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.location.as_deref() == Some("Encounter.period.start")
                    && e.reason.contains("outside the times")),
            "{e:?}"
        );
    }
}
