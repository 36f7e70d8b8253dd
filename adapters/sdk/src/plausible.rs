//! The window of times a normaliser accepts: a year 0000 admission or a discharge in
//! 9999 is a sender's bug, and delivering it would put nonsense into every recipient's
//! records. Each adapter checks every time it reads against one [`TimeWindow`] and
//! names the field of one outside it.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};

/// Times a normaliser accepts: not before `earliest`, not after a bound that is either
/// fixed or a span ahead of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    earliest: DateTime<Utc>,
    latest: Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Latest {
    /// This long after the clock's now.
    Ahead(Duration),
    /// A fixed instant (tests, replays of old data).
    At(DateTime<Utc>),
}

impl Default for TimeWindow {
    /// From 1900-01-01 (UTC) to one year (365 days) ahead of the clock.
    fn default() -> Self {
        Self {
            earliest: Utc
                .with_ymd_and_hms(1900, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            latest: Latest::Ahead(Duration::days(365)),
        }
    }
}

impl TimeWindow {
    /// From `earliest` to `ahead` after the clock's now, whenever a time is checked.
    pub fn ahead_of_now(earliest: DateTime<Utc>, ahead: std::time::Duration) -> Self {
        let ahead = Duration::from_std(ahead).unwrap_or(Duration::MAX);
        Self {
            earliest,
            latest: Latest::Ahead(ahead),
        }
    }

    /// From `earliest` to `latest`, fixed.
    pub fn between(earliest: DateTime<Utc>, latest: DateTime<Utc>) -> Self {
        Self {
            earliest,
            latest: Latest::At(latest),
        }
    }

    /// The earliest accepted time.
    pub fn earliest(&self) -> DateTime<Utc> {
        self.earliest
    }

    /// The latest accepted time, now.
    pub fn latest(&self) -> DateTime<Utc> {
        match self.latest {
            Latest::At(latest) => latest,
            Latest::Ahead(ahead) => Utc::now()
                .checked_add_signed(ahead)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// `Ok` when `time` lies in the window; otherwise what is wrong with it, in words
    /// that name `field` and the window (not the value, which may be patient data).
    pub fn check(&self, field: &str, time: DateTime<FixedOffset>) -> Result<(), String> {
        let latest = self.latest();
        if time < self.earliest || time > latest {
            return Err(format!(
                "{field} is outside the times the hub accepts ({} to {}); check the sender's clock and the field's value",
                self.earliest.date_naive(),
                latest.date_naive()
            ));
        }
        Ok(())
    }

    /// `Ok` when a date (of birth, say) lies between `earliest` and today (a date in
    /// the future is no one's birth date).
    pub fn check_past_date(&self, field: &str, date: NaiveDate) -> Result<(), String> {
        let today = Utc::now().date_naive().succ_opt().unwrap_or(NaiveDate::MAX);
        let latest = self.latest().date_naive().min(today);
        if date < self.earliest.date_naive() || date > latest {
            return Err(format!(
                "{field} is outside the dates the hub accepts ({} to {latest})",
                self.earliest.date_naive()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_default_window_refuses_year_0000_and_9999_and_names_the_field() {
        let window = TimeWindow::default();
        assert!(
            window
                .check("PV1-44", at("2025-04-10T09:30:00+09:00"))
                .is_ok()
        );
        assert!(
            window
                .check("PV1-44", at("1900-01-01T09:00:00+09:00"))
                .is_ok()
        );
        for bad in [
            "0000-01-01T00:00:00+09:00",
            "9999-12-31T23:59:59+09:00",
            "1899-12-31T00:00:00+00:00",
        ] {
            let error = window.check("PV1-44", at(bad)).err();
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("PV1-44 is outside")),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn the_latest_time_follows_the_clock() {
        let window = TimeWindow::default();
        let soon = Utc::now() + Duration::days(300);
        let late = Utc::now() + Duration::days(400);
        assert!(window.check("EVN-2", soon.fixed_offset()).is_ok());
        assert!(window.check("EVN-2", late.fixed_offset()).is_err());
    }

    #[test]
    fn a_birth_date_in_the_future_is_refused() {
        let window = TimeWindow::default();
        let tomorrow_but_one = Utc::now().date_naive() + Duration::days(2);
        assert!(window.check_past_date("PID-7", tomorrow_but_one).is_err());
        let date = NaiveDate::from_ymd_opt(1938, 4, 1).unwrap_or(NaiveDate::MIN);
        assert!(window.check_past_date("PID-7", date).is_ok());
    }
}
