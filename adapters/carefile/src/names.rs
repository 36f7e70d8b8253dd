//! The file names of the care forms:
//! `NYUIN_<入院日>_<介護支援事業所番号>_<医療機関コード>_<作成日時14桁>.CSV` and
//! `TAIIN_<記入日>_<介護支援事業所番号>_<医療機関・施設コード>_<作成日時14桁>.CSV` (the
//! JSON form is named the same with `.json`).

use chrono::{DateTime, FixedOffset, NaiveDate};
use renkei_sdk::NormalizeError;

use crate::form::{CareLayout, FormValues, Written};
use crate::text::{compact_date, is_digits, japan_timestamp};

/// The last component of a path (either separator), which is what names a file.
pub(crate) fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// A care form file name that follows the convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareFileName {
    /// `NYUIN` or `TAIIN`.
    pub layout: CareLayout,
    /// 入院日 (NYUIN) or 記入日 (TAIIN).
    pub date: NaiveDate,
    /// 介護支援事業所番号 of the sending office.
    pub care_office_code: String,
    /// 医療機関コード (or 施設コード for TAIIN).
    pub hospital_code: String,
    /// 作成日時, in Japan.
    pub created_at: DateTime<FixedOffset>,
}

impl CareFileName {
    /// Reads a file name. `Ok(None)` when it does not start with `NYUIN_` or `TAIIN_`
    /// (the layout is then known from the header alone); an error when it does but the
    /// rest does not follow the convention, since a sender who names files by it
    /// should name them right.
    pub fn parse(file_name: &str) -> Result<Option<Self>, NormalizeError> {
        let name = base_name(file_name);
        let stem = match name.rsplit_once('.') {
            Some((stem, ext))
                if ext.eq_ignore_ascii_case("csv") || ext.eq_ignore_ascii_case("json") =>
            {
                stem
            }
            _ => name,
        };
        let mut parts = stem.split('_');
        let prefix = parts.next().unwrap_or_default();
        let Some(layout) = CareLayout::ALL
            .into_iter()
            .find(|l| prefix.eq_ignore_ascii_case(l.prefix()))
        else {
            return Ok(None);
        };
        let wrong = || {
            NormalizeError::whole(format!(
                "the file name does not follow the {} convention {}_<{}>_<介護支援事業所番号 10 digits>_<{} 10 digits>_<作成日時 YYYYMMDDHHMMSS>.CSV",
                layout.prefix(),
                layout.prefix(),
                match layout {
                    CareLayout::AdmissionInfo => "入院日 YYYYMMDD",
                    CareLayout::DischargeInfo => "記入日 YYYYMMDD",
                },
                match layout {
                    CareLayout::AdmissionInfo => "医療機関コード",
                    CareLayout::DischargeInfo => "医療機関・施設コード",
                },
            ))
        };
        let tokens: Vec<&str> = parts.collect();
        let [date, office, hospital, created] = tokens.as_slice() else {
            return Err(wrong());
        };
        let date = compact_date(date).ok_or_else(wrong)?;
        let created_at = japan_timestamp(created).ok_or_else(wrong)?;
        if !is_digits(office, 10) || !is_digits(hospital, 10) {
            return Err(wrong());
        }
        Ok(Some(CareFileName {
            layout,
            date,
            care_office_code: (*office).to_owned(),
            hospital_code: (*hospital).to_owned(),
            created_at,
        }))
    }

    /// The row agrees with the file name: same date, office and hospital.
    pub(crate) fn check_row(
        &self,
        form: &FormValues,
        written: Written,
    ) -> Result<(), NormalizeError> {
        let date = self.date.format("%Y-%m-%d").to_string();
        let date_key = match self.layout {
            CareLayout::AdmissionInfo => "admission_date",
            CareLayout::DischargeInfo => "record_date",
        };
        for (key, expected, part) in [
            (date_key, date.as_str(), "date"),
            (
                "care_office_code",
                self.care_office_code.as_str(),
                "care office",
            ),
            (
                "hospital_code",
                self.hospital_code.as_str(),
                "hospital code",
            ),
        ] {
            if form.get(key) != Some(expected) {
                let Some(column) = self.layout.columns().iter().find(|c| c.key == key) else {
                    continue;
                };
                return Err(written.error(
                    column,
                    format!(
                        "{} is not the {part} in the file name ({}): the file name and the content must agree, since receivers route by either",
                        written.name(column),
                        expected.replace('-', "")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_names_are_read_and_others_left_to_the_header() {
        let name =
            CareFileName::parse("in/NYUIN_20250410_1379999999_1319999999_20250410101500.CSV");
        let name = name.ok().flatten();
        assert_eq!(
            name.as_ref().map(|n| n.layout),
            Some(CareLayout::AdmissionInfo)
        );
        assert_eq!(
            name.as_ref().map(|n| n.hospital_code.as_str()),
            Some("1319999999")
        );
        assert_eq!(CareFileName::parse("csv_wrong_columns.CSV"), Ok(None));
        assert!(
            CareFileName::parse("TAIIN_20250231_1379999999_1319999999_20250421160000.CSV").is_err()
        );
        assert!(
            CareFileName::parse("TAIIN_20250421_137999999_1319999999_20250421160000.CSV").is_err()
        );
    }
}
