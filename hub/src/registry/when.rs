//! Dates and instants in registry documents, written either as strings
//! (`"2025-04-01"`, JSON) or as native TOML dates and date-times (`2025-04-01`,
//! `2025-04-01T00:00:00+09:00`), which is what an administrator naturally types.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Parses from text; a TOML date-time arrives as a one-entry map holding its text.
struct TextVisitor<T>(PhantomData<T>);

impl<'de, T> Visitor<'de> for TextVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a date (2025-04-01) or a date-time with offset (2025-04-01T09:00:00+09:00)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(|e| E::custom(format!("`{v}`: {e}")))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        match map.next_entry::<String, String>()? {
            Some((_, text)) => self.visit_str(&text),
            None => Err(de::Error::custom("empty value")),
        }
    }
}

struct Parse<T>(T);

impl<'de, T> serde::Deserialize<'de> for Parse<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor(PhantomData)).map(Parse)
    }
}

/// A calendar date.
pub fn date<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    Deserialize::deserialize(d).map(|Parse(v)| v)
}

/// An optional calendar date.
pub fn opt_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    Option::<Parse<NaiveDate>>::deserialize(d).map(|v| v.map(|Parse(v)| v))
}

/// An instant; the text must carry its offset (`Z` or `+09:00`).
pub fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    Deserialize::deserialize(d).map(|Parse(v)| v)
}

/// An optional instant.
pub fn opt_instant<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<Parse<DateTime<Utc>>>::deserialize(d).map(|v| v.map(|Parse(v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Doc {
        #[serde(deserialize_with = "date")]
        day: NaiveDate,
        #[serde(default, deserialize_with = "opt_date")]
        until: Option<NaiveDate>,
        #[serde(deserialize_with = "instant")]
        at: DateTime<Utc>,
        #[serde(default, deserialize_with = "opt_instant")]
        gone: Option<DateTime<Utc>>,
    }

    #[test]
    fn native_toml_and_strings_read_the_same() {
        let native: Doc = toml::from_str(
            "day = 2025-04-01\nuntil = 2026-03-31\nat = 2025-04-01T00:00:00+09:00\ngone = 2025-09-01T01:00:00Z",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let quoted: Doc = serde_json::from_str(
            r#"{"day":"2025-04-01","until":"2026-03-31","at":"2025-03-31T15:00:00Z","gone":"2025-09-01T10:00:00+09:00"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(native.day, quoted.day);
        assert_eq!(native.until, quoted.until);
        assert_eq!(native.at, quoted.at);
        assert_eq!(native.gone, quoted.gone);
        assert_eq!(native.at.to_rfc3339(), "2025-03-31T15:00:00+00:00");
    }

    #[test]
    fn a_date_time_without_offset_is_refused_with_the_value() {
        let err = toml::from_str::<Doc>("day = 2025-04-01\nat = 2025-04-01T00:00:00")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("2025-04-01T00:00:00"), "{err}");
    }
}
