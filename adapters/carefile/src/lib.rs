//! Care offices' files for Renkei: pure normalisers (bytes in, canonical events out, no
//! I/O) for what care-manager offices (居宅介護支援事業所) and service offices send.
//!
//! | input | reader | event |
//! |---|---|---|
//! | 入院時情報提供書 CSV (`NYUIN_….CSV`, 26 columns, MS932) | [`CareCsvNormalizer`] | `care.admission_info` |
//! | 退院・退所情報記録書 CSV (`TAIIN_….CSV`, 46 columns, MS932) | [`CareCsvNormalizer`] | `care.discharge_info` |
//! | 入院時情報提供書 JSON (`"form": "renkei.admission_info"`, UTF-8) | [`AdmissionInfoJsonNormalizer`] | `care.admission_info` |
//! | ケアプランデータ連携 CSV (edition 4.1: `UP1KYO`, `UP2KYO`, `UP3KYO`, `UPPLAN`, `UPJSK`, `UPSIKYU`, `UPHOSOKU`, `DLT…`) | [`CarePlanFile`], [`CarePlanSet`] | `care.plan`, one per transmission |
//!
//! The NYUIN/TAIIN layouts and the JSON form are the hub's proposals (no national CSV
//! exists for these forms); `docs/care-files.md` describes them.
//!
//! Decisions every reader here shares:
//!
//! - **MS932, strictly** ([`decode_ms932`]): bytes that are not MS932 refuse the file
//!   with their byte offset; UTF-8 is recognised and refused as UTF-8. Never mojibake.
//! - **All or nothing per file**: a bad row refuses the whole file, naming the row and
//!   the column (see [`CareCsvNormalizer`]).
//! - **Who the person is**: a care file knows the care recipient by the long-term-care
//!   insurance, so the patient identifier is `{system:
//!   urn:renkei:ltc-insured:<保険者番号>, value: <被保険者番号>}` ([`ltc_insured_system`]):
//!   the insured number is unique per insurer (municipality), as a facility-local id is
//!   per facility. The numbers are also in `patient.insurance.ltc` with the care level.
//! - **Errors never repeat patient data**: names, insured numbers, birth dates and
//!   phone numbers are named by their column, not quoted.
//! - **Dates** are calendar dates; a form's event time is its date at 00:00 Japan time
//!   (+09:00), and the dates of the form are `YYYY-MM-DD` members of `data.care`.

#![warn(missing_docs)]

mod admission_json;
mod care_csv;
pub mod careplan;
pub mod file;
mod form;
mod ms932;
mod names;
mod rows;
mod text;

pub use admission_json::AdmissionInfoJsonNormalizer;
pub use care_csv::CareCsvNormalizer;
pub use careplan::{CarePlanFile, CarePlanSet};
pub use file::{AdmissionInfoJsonFile, CareCsvFile};
pub use form::{CareLayout, Column, ColumnKind, LTC_INSURED_SYSTEM_PREFIX, ltc_insured_system};
pub use ms932::{EncodingError, decode_ms932};
pub use names::CareFileName;
