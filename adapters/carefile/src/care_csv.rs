//! The care CSVs: 入院時情報提供書 (`NYUIN`) and 退院・退所情報記録書 (`TAIIN`).
//!
//! Both layouts are the hub's proposals (no national CSV exists for these forms; see
//! `docs/care-files.md`): MS932, a header row naming the columns, CRLF between rows, RFC 4180
//! quoting, dates `YYYYMMDD`. One data row is one form, and becomes one event.
//!
//! **All or nothing, per file.** A file is accepted only when every row is: a bad row
//! refuses the whole file, naming the row and the column (`row 3, column 入院日`). A
//! file is the sender's unit of work — it is fixed and sent again as a whole — so
//! accepting the good rows would make the corrected resend deliver them twice (a new
//! file name is a new message id) or force the sender to edit out the rows that went
//! through.
//!
//! **Message ids.** [`CareCsvNormalizer::normalize_file`] names each event
//! `<file name>#<row>` (`NYUIN_20250410_1379999999_1319999999_20250410101500.CSV#2`),
//! stable when the same file is sent again. The [`Normalizer`] impl, which sees bytes
//! only, uses `<layout>_<date>_<care office>_<hospital>@<first 16 hex of the SHA-256 of
//! the bytes>#<row>`, stable for the same bytes.

use renkei_sdk::{CanonicalEvent, NormalizeError, Normalizer, Origin, SourceFormat, TimeWindow};

use crate::form::{CareLayout, FormValues, Written};
use crate::ms932::decode_ms932;
use crate::names::{CareFileName, base_name};
use crate::rows::{Row, read_rows};

/// Normalises the care CSVs (`NYUIN`, `TAIIN`) to `care.admission_info` and
/// `care.discharge_info` events.
#[derive(Debug, Clone, Default)]
pub struct CareCsvNormalizer {
    window: TimeWindow,
}

impl CareCsvNormalizer {
    /// A normaliser accepting dates in the default [`TimeWindow`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A normaliser accepting dates in `window` (the 入院日 or 記入日 and the birth date
    /// are checked against it).
    pub fn with_time_window(window: TimeWindow) -> Self {
        Self { window }
    }

    /// Normalises a whole file: one event per data row, or the first error (all or
    /// nothing; see the module docs). `file_name` (a path is fine: only its last
    /// component is used) gives the events their message ids; when it follows the
    /// `NYUIN_…`/`TAIIN_…` convention its layout, date and facility codes must agree
    /// with every row. Errors name the file before the place in it.
    pub fn normalize_file(
        &self,
        file_name: &str,
        raw: &[u8],
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        let name = base_name(file_name);
        let in_file = |e: NormalizeError| NormalizeError {
            location: Some(match e.location {
                Some(location) => format!("{name}, {location}"),
                None => name.to_owned(),
            }),
            reason: e.reason,
        };
        let convention = CareFileName::parse(name).map_err(in_file)?;
        self.events(raw, Some((name, convention.as_ref())))
            .map_err(in_file)
    }

    fn events(
        &self,
        raw: &[u8],
        named: Option<(&str, Option<&CareFileName>)>,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        let text = decode_ms932(raw)?;
        let rows = read_rows(&text)?;
        let Some((header, data)) = rows.split_first() else {
            return Err(NormalizeError::whole(
                "the file is empty: a care CSV holds a header row and at least one data row",
            ));
        };
        let layout = detect_layout(header)?;
        if let Some((_, Some(convention))) = named
            && convention.layout != layout
        {
            return Err(NormalizeError::at(
                "row 1",
                format!(
                    "the file name says {} ({}) but the header is the {} ({}) layout",
                    convention.layout.prefix(),
                    convention.layout.title(),
                    layout.prefix(),
                    layout.title()
                ),
            ));
        }
        if data.is_empty() {
            return Err(NormalizeError::at(
                "row 2",
                "the file holds the header row but no data row",
            ));
        }
        let digest = Origin::sha256_hex(raw);
        let mut events = Vec::with_capacity(data.len());
        for row in data {
            let form = self.form(layout, header, row)?;
            let message_id = match named {
                Some((name, convention)) => {
                    if let Some(convention) = convention {
                        convention.check_row(&form, Written::Csv { row: row.number })?;
                    }
                    format!("{name}#{}", row.number)
                }
                None => anonymous_message_id(layout, &form, &digest, row.number),
            };
            events.push(form.into_event(SourceFormat::Csv, message_id, digest.clone())?);
        }
        Ok(events)
    }

    fn form(
        &self,
        layout: CareLayout,
        header: &Row,
        row: &Row,
    ) -> Result<FormValues, NormalizeError> {
        if row.cells.len() != header.cells.len() {
            return Err(NormalizeError::at(
                format!("row {}", row.number),
                format!(
                    "the row has {} columns, the header {}: a cell holding a comma or a line break must be quoted",
                    row.cells.len(),
                    header.cells.len()
                ),
            ));
        }
        let cells = row.cells.iter().map(|c| Some(c.to_string())).collect();
        FormValues::check(
            layout,
            Written::Csv { row: row.number },
            cells,
            &self.window,
        )
    }
}

impl Normalizer for CareCsvNormalizer {
    fn format(&self) -> SourceFormat {
        SourceFormat::Csv
    }

    /// Normalises a care CSV of exactly one data row (a file of several rows is refused:
    /// use [`CareCsvNormalizer::normalize_file`], which returns one event per row).
    fn normalize(&self, raw: &[u8]) -> Result<CanonicalEvent, NormalizeError> {
        let mut events = self.events(raw, None)?;
        match events.len() {
            1 => events
                .pop()
                .ok_or_else(|| NormalizeError::whole("no event")),
            n => Err(NormalizeError::whole(format!(
                "the file holds {n} data rows, and one normalisation yields one event: hand the file to CareCsvNormalizer::normalize_file, which returns one event per row"
            ))),
        }
    }
}

/// The layout whose header `header` is; an error naming the first column that differs.
fn detect_layout(header: &Row) -> Result<CareLayout, NormalizeError> {
    let cells: Vec<&str> = header.cells.iter().map(|c| c.trim()).collect();
    let matches = |layout: CareLayout| {
        layout.columns().len() == cells.len()
            && layout
                .columns()
                .iter()
                .zip(&cells)
                .all(|(column, cell)| column.header == *cell)
    };
    if let Some(layout) = CareLayout::ALL.into_iter().find(|l| matches(*l)) {
        return Ok(layout);
    }
    // The closest layout: by its first distinguishing header, then by column count.
    let closest = CareLayout::ALL
        .into_iter()
        .find(|l| {
            l.columns()
                .get(1)
                .is_some_and(|c| cells.get(1) == Some(&c.header))
        })
        .or_else(|| {
            CareLayout::ALL
                .into_iter()
                .find(|l| l.columns().len() == cells.len())
        });
    let Some(layout) = closest else {
        return Err(NormalizeError::at(
            "row 1",
            format!(
                "the first row is not the header of a care CSV layout: NYUIN (入院時情報提供書) starts CSVバージョン,保険者番号 and has 26 columns, TAIIN (退院・退所情報記録書) starts CSVバージョン,記入日 and has 46; this one has {}",
                cells.len()
            ),
        ));
    };
    let columns = layout.columns();
    // Header cells are not echoed: a file without a header has patient data in row 1.
    if let Some((i, column)) = columns
        .iter()
        .enumerate()
        .find(|(i, column)| cells.get(*i) != Some(&column.header))
    {
        return Err(NormalizeError::at(
            format!("row 1, column {}", i + 1),
            format!(
                "the header is not the {} ({}) layout: column {} must be `{}`",
                layout.prefix(),
                layout.title(),
                i + 1,
                column.header
            ),
        ));
    }
    Err(NormalizeError::at(
        "row 1",
        format!(
            "the header has {} columns; the {} ({}) layout has {}",
            cells.len(),
            layout.prefix(),
            layout.title(),
            columns.len()
        ),
    ))
}

/// The message id of a row read without its file name (see the module docs).
fn anonymous_message_id(layout: CareLayout, form: &FormValues, digest: &str, row: usize) -> String {
    let compact = |key: &str| form.get(key).unwrap_or_default().replace('-', "");
    let date = match layout {
        CareLayout::AdmissionInfo => compact("admission_date"),
        CareLayout::DischargeInfo => compact("record_date"),
    };
    format!(
        "{}_{date}_{}_{}@{}#{row}",
        layout.prefix(),
        form.get("care_office_code").unwrap_or_default(),
        form.get("hospital_code").unwrap_or_default(),
        digest.get(..16).unwrap_or(digest)
    )
}
