//! ケアプランデータ連携 CSV (ケアプランデータ連携標準仕様, edition 4.1, CSVバージョン
//! `202407`): the files a care-manager office (居宅介護支援事業所) and the service offices
//! exchange through the national ケアプランデータ連携システム.
//!
//! Every file is MS932, without a header row, CRLF between rows, free text quoted (and
//! holding commas, doubled quotes and line breaks). The kind, the target month, the two
//! offices and the 14-digit sequence come from the file name ([`CarePlanFileName`]);
//! [`CarePlanFile::parse`] reads one file strictly — every row the same number of
//! items, the layout's count for the kinds mapped item by item, real dates, numbers
//! where numbers belong, one care recipient per file — and refuses it whole otherwise,
//! naming the file, the row and the item.
//!
//! Files sent together share the sequence: 第1表 + 第2表 (+ 第3表) + 利用者補足情報
//! (`000000`), or 第6表 + 第7表 + 利用者補足情報 (the month). [`CarePlanSet`] gathers
//! them and makes one `care.plan` event per complete transmission.
//!
//! A few details of the layout are uncertain (which items 18–20 of 第7表 are, the
//! subtotal rows of 第7表, the items of 第3表 and of deletions); the hub keeps such
//! items by number in `unmapped` rather than guess, and where a real file disagrees with
//! this reading, the real file wins.

mod name;
mod set;
mod tables;

pub use name::{CarePlanFileKind, CarePlanFileName, DeletionTarget};
pub use set::{CarePlanSet, TransmissionKey, TransmissionKind, TransmissionStatus};
pub use tables::{
    Coded, GenericRecord, Period, PlanTable1, PlanTable2, PlanTable2Line, PlanTable3, UsageLine,
    UsageRecord, UsageTable6, UsageTable7, UsageTable7Row, UserSupplement, care_level_label,
};

use renkei_sdk::{NormalizeError, Origin};
use serde::Serialize;

use crate::ms932::decode_ms932;
use crate::rows::read_rows;
use tables::{CSV_VERSION, Cells, INSURED, INSURER};

/// The CSVバージョン of the layout the hub reads item by item (edition 4.1).
pub const CAREPLAN_CSV_VERSION: &str = "202407";

/// What one care-plan file holds, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CarePlanContent {
    /// `UP1KYO`.
    PlanTable1(PlanTable1),
    /// `UP2KYO`.
    PlanTable2(PlanTable2),
    /// `UP3KYO`.
    PlanTable3(PlanTable3),
    /// `UPPLAN` and `UPJSK`.
    UsageTable6(UsageTable6),
    /// `UPSIKYU`.
    UsageTable7(UsageTable7),
    /// `UPHOSOKU`.
    UserSupplement(UserSupplement),
    /// `DLT…`: the rows, kept by item.
    Deletion(Vec<GenericRecord>),
}

/// One care-plan file, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarePlanFile {
    /// The file name (its last path component).
    pub file_name: String,
    /// What the name says.
    pub name: CarePlanFileName,
    /// No.1 CSVバージョン.
    pub csv_version: String,
    /// No.2 保険者番号.
    pub insurer_number: String,
    /// No.3 被保険者番号.
    pub insured_number: String,
    /// Rows in the file.
    pub record_count: usize,
    /// Items per row.
    pub column_count: usize,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub raw_sha256: String,
    /// The content.
    pub content: CarePlanContent,
}

/// How many items a row of `kind` has: exactly, or at least.
enum Width {
    Exactly(usize),
    AtLeast(usize),
}

fn width(kind: &CarePlanFileKind) -> Width {
    match kind {
        CarePlanFileKind::PlanTable1 => Width::Exactly(28),
        CarePlanFileKind::PlanTable2 => Width::Exactly(22),
        CarePlanFileKind::UsageTable6Plan | CarePlanFileKind::UsageTable6Actual => {
            Width::Exactly(25)
        }
        CarePlanFileKind::UsageTable7 => Width::Exactly(37),
        CarePlanFileKind::UserSupplement => Width::Exactly(63),
        CarePlanFileKind::PlanTable3 => Width::AtLeast(5),
        CarePlanFileKind::Deletion(_) => Width::AtLeast(4),
    }
}

impl CarePlanFile {
    /// Reads one file: its name, then its MS932 bytes (see the module docs). Errors
    /// name the file, then the place in it (`row 2, column No.10 (サービス提供日)`).
    pub fn parse(file_name: &str, raw: &[u8]) -> Result<Self, NormalizeError> {
        let base = crate::names::base_name(file_name);
        let in_file = |e: NormalizeError| NormalizeError {
            location: Some(match e.location {
                Some(location) => format!("{base}, {location}"),
                None => base.to_owned(),
            }),
            reason: e.reason,
        };
        let name = CarePlanFileName::parse(base).map_err(in_file)?;
        Self::read(base, name, raw).map_err(in_file)
    }

    fn read(base: &str, name: CarePlanFileName, raw: &[u8]) -> Result<Self, NormalizeError> {
        let kind = name.kind.clone();
        let text = decode_ms932(raw)?;
        let rows = read_rows(&text)?;
        let Some(first) = rows.first() else {
            return Err(NormalizeError::whole(format!(
                "the file holds no row: a {kind} file holds at least one"
            )));
        };
        let column_count = first.cells.len();
        let exact = match width(&kind) {
            Width::Exactly(n) => Some(n),
            Width::AtLeast(_) => None,
        };
        for row in &rows {
            let count = row.cells.len();
            let wrong = match width(&kind) {
                Width::Exactly(n) if count != n => Some(format!(
                    "the row has {count} items; a {kind} row has {n} (CSVバージョン {CAREPLAN_CSV_VERSION})"
                )),
                Width::AtLeast(n) if count < n => Some(format!(
                    "the row has {count} items; a {kind} row has at least {n}"
                )),
                _ if count != column_count => Some(format!(
                    "the row has {count} items, the first row {column_count}"
                )),
                _ => None,
            };
            if let Some(reason) = wrong {
                return Err(NormalizeError::at(format!("row {}", row.number), reason));
            }
        }
        let cells: Vec<Cells<'_>> = rows
            .iter()
            .map(|r| Cells {
                row: r.number,
                cells: &r.cells,
            })
            .collect();
        let mut head: Option<(String, String, String)> = None;
        for row in &cells {
            let version = row.required_digits(CSV_VERSION, 6)?;
            if exact.is_some() && version != CAREPLAN_CSV_VERSION {
                return Err(row.error(
                    CSV_VERSION,
                    format!(
                        "CSVバージョン {version} is not the layout the hub reads ({CAREPLAN_CSV_VERSION}, edition 4.1)"
                    ),
                ));
            }
            let insurer = row.required_digits(INSURER, 6)?;
            let insured = row.required_digits(INSURED, 10)?;
            match &head {
                None => head = Some((version, insurer, insured)),
                Some((v, i, n)) => {
                    if *v != version {
                        return Err(row.error(
                            CSV_VERSION,
                            "CSVバージョン differs from the first row's".to_owned(),
                        ));
                    }
                    if *i != insurer || *n != insured {
                        return Err(row.error(
                            INSURED,
                            "the row is about another care recipient than the first row (保険者番号, 被保険者番号): a care-plan file holds one person's plan".to_owned(),
                        ));
                    }
                }
            }
        }
        let Some((csv_version, insurer_number, insured_number)) = head else {
            return Err(NormalizeError::whole("the file holds no row"));
        };
        let single = || -> Result<&Cells<'_>, NormalizeError> {
            match cells.as_slice() {
                [one] => Ok(one),
                _ => Err(NormalizeError::at(
                    "row 2",
                    format!(
                        "a {kind} file holds one row; this one holds {}",
                        cells.len()
                    ),
                )),
            }
        };
        let content = match &kind {
            CarePlanFileKind::PlanTable1 => {
                CarePlanContent::PlanTable1(PlanTable1::read(single()?)?)
            }
            CarePlanFileKind::PlanTable2 => CarePlanContent::PlanTable2(PlanTable2::read(&cells)?),
            CarePlanFileKind::PlanTable3 => CarePlanContent::PlanTable3(PlanTable3::read(&cells)?),
            CarePlanFileKind::UsageTable6Plan | CarePlanFileKind::UsageTable6Actual => {
                CarePlanContent::UsageTable6(UsageTable6::read(&cells, &name.receiver_office)?)
            }
            CarePlanFileKind::UsageTable7 => {
                CarePlanContent::UsageTable7(UsageTable7::read(&cells)?)
            }
            CarePlanFileKind::UserSupplement => {
                CarePlanContent::UserSupplement(UserSupplement::read(single()?)?)
            }
            CarePlanFileKind::Deletion(_) => {
                CarePlanContent::Deletion(cells.iter().map(GenericRecord::read).collect())
            }
        };
        let file = CarePlanFile {
            file_name: base.to_owned(),
            csv_version,
            insurer_number,
            insured_number,
            record_count: rows.len(),
            column_count,
            raw_sha256: Origin::sha256_hex(raw),
            content,
            name,
        };
        file.check_month()?;
        Ok(file)
    }

    /// The month in the content agrees with the month in the name.
    fn check_month(&self) -> Result<(), NormalizeError> {
        let in_content = match &self.content {
            CarePlanContent::UsageTable6(t) => Some((t.target_month.as_str(), 5, "対象年月")),
            CarePlanContent::UsageTable7(t) => Some((t.target_month.as_str(), 5, "対象年月")),
            CarePlanContent::UserSupplement(s) => {
                s.target_month.as_deref().map(|m| (m, 63, "対象年月"))
            }
            _ => None,
        };
        let Some((month, no, item)) = in_content else {
            return Ok(());
        };
        let named = self.name.target_month.as_deref().unwrap_or("000000");
        if month != named {
            return Err(NormalizeError::at(
                format!("row 1, column No.{no} ({item})"),
                format!(
                    "{item} {month} is not the month in the file name ({named}): the name and the content must agree"
                ),
            ));
        }
        Ok(())
    }

    /// The content as JSON (the shape of `data.care.<kind>` in a `care.plan` event).
    pub fn content_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.content).unwrap_or(serde_json::Value::Null)
    }
}
