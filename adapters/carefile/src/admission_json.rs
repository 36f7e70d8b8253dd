//! The 入院時情報提供書 as JSON (`"form": "renkei.admission_info"`): the same 26 items as
//! the `NYUIN` CSV, one key each, UTF-8, dates `YYYY-MM-DD`. Optional items may be
//! `null` or absent; unknown keys are ignored (so a sender may add its own); every value
//! that is present is a string. The event is the one the CSV row makes.
//!
//! **Message ids.** [`AdmissionInfoJsonNormalizer::normalize_file`] names the event
//! after the file; the [`Normalizer`] impl, which sees bytes only, uses
//! `NYUIN_<入院日>_<care office>_<hospital>@<first 16 hex of the SHA-256 of the bytes>`.

use renkei_sdk::{CanonicalEvent, NormalizeError, Normalizer, Origin, SourceFormat, TimeWindow};
use serde_json::Value;

use crate::form::{CareLayout, FormValues, Written};
use crate::names::{CareFileName, base_name};

/// Normalises the JSON 入院時情報提供書 to a `care.admission_info` event.
#[derive(Debug, Clone, Default)]
pub struct AdmissionInfoJsonNormalizer {
    window: TimeWindow,
}

impl AdmissionInfoJsonNormalizer {
    /// A normaliser accepting dates in the default [`TimeWindow`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A normaliser accepting dates in `window` (the admission date and the birth date
    /// are checked against it).
    pub fn with_time_window(window: TimeWindow) -> Self {
        Self { window }
    }

    /// Normalises a file; its name (the last path component) is the event's message id.
    /// A name that follows the `NYUIN_…` convention must agree with the content.
    /// Errors name the file before the JSON path.
    pub fn normalize_file(
        &self,
        file_name: &str,
        raw: &[u8],
    ) -> Result<CanonicalEvent, NormalizeError> {
        let name = base_name(file_name);
        let in_file = |e: NormalizeError| NormalizeError {
            location: Some(match e.location {
                Some(location) => format!("{name}, {location}"),
                None => name.to_owned(),
            }),
            reason: e.reason,
        };
        let convention = CareFileName::parse(name).map_err(in_file)?;
        let form = self.form(raw).map_err(in_file)?;
        if let Some(convention) = convention {
            if convention.layout != CareLayout::AdmissionInfo {
                return Err(in_file(NormalizeError::at(
                    "$.form",
                    "the file name says TAIIN (退院・退所情報記録書), but the JSON form is the 入院時情報提供書 (renkei.admission_info)",
                )));
            }
            convention
                .check_row(&form, Written::Json)
                .map_err(in_file)?;
        }
        form.into_event(SourceFormat::Json, name.to_owned(), Origin::sha256_hex(raw))
            .map_err(in_file)
    }

    fn form(&self, raw: &[u8]) -> Result<FormValues, NormalizeError> {
        let body = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            let what = if e.is_eof() {
                "the JSON is cut short"
            } else {
                "the bytes are not JSON (UTF-8)"
            };
            NormalizeError::at(
                format!("line {}, column {}", e.line(), e.column()),
                format!("{what}: {e}"),
            )
        })?;
        let Value::Object(object) = value else {
            return Err(NormalizeError::at(
                "$",
                "the admission information must be a JSON object",
            ));
        };
        let layout = CareLayout::AdmissionInfo;
        match object.get("form") {
            Some(Value::String(form)) if form == layout.form() => {}
            _ => {
                return Err(NormalizeError::at(
                    "$.form",
                    format!(
                        "`form` must be \"{}\" (the 入院時情報提供書 as JSON)",
                        layout.form()
                    ),
                ));
            }
        }
        let mut cells = Vec::with_capacity(layout.columns().len());
        for column in layout.columns() {
            cells.push(match object.get(column.key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(NormalizeError::at(
                        format!("$.{}", column.key),
                        format!(
                            "{} ({}) must be a string or null",
                            column.key, column.header
                        ),
                    ));
                }
            });
        }
        FormValues::check(layout, Written::Json, cells, &self.window)
    }
}

impl Normalizer for AdmissionInfoJsonNormalizer {
    fn format(&self) -> SourceFormat {
        SourceFormat::Json
    }

    fn normalize(&self, raw: &[u8]) -> Result<CanonicalEvent, NormalizeError> {
        let form = self.form(raw)?;
        let digest = Origin::sha256_hex(raw);
        let message_id = format!(
            "NYUIN_{}_{}_{}@{}",
            form.get("admission_date")
                .unwrap_or_default()
                .replace('-', ""),
            form.get("care_office_code").unwrap_or_default(),
            form.get("hospital_code").unwrap_or_default(),
            digest.get(..16).unwrap_or(&digest)
        );
        form.into_event(SourceFormat::Json, message_id, digest)
    }
}
