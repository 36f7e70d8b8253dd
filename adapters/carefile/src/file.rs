//! The care files as [`FileFormat`]s, for `renkei normalize` and drop folders.

use renkei_sdk::file::FileFormat;
use renkei_sdk::{CanonicalEvent, NormalizeError, TimeWindow};

use crate::{AdmissionInfoJsonNormalizer, CareCsvNormalizer};

fn starts_with_ignoring_case(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The 入院時情報提供書 (`NYUIN_…`) and 退院・退所情報記録書 (`TAIIN_…`) CSV files.
pub struct CareCsvFile;

impl FileFormat for CareCsvFile {
    fn name(&self) -> &'static str {
        "care-csv"
    }

    fn recognizes(&self, file_name: &str, head: &[u8]) -> bool {
        // Any CSV but the care-plan files (UP*/DLT*, read as a transmission); the
        // layout is then told by the header row. A JSON form is the JSON format's.
        let care_plan = ["UP", "DLT"]
            .iter()
            .any(|prefix| starts_with_ignoring_case(file_name, prefix));
        let csv = file_name.to_ascii_lowercase().ends_with(".csv");
        csv && !care_plan && !head.trim_ascii_start().starts_with(b"{")
    }

    fn read(
        &self,
        file_name: &str,
        raw: &[u8],
        window: &TimeWindow,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        CareCsvNormalizer::with_time_window(*window).normalize_file(file_name, raw)
    }
}

/// The 入院時情報提供書 as JSON (`"form": "renkei.admission_info"`).
pub struct AdmissionInfoJsonFile;

impl FileFormat for AdmissionInfoJsonFile {
    fn name(&self) -> &'static str {
        "care-json"
    }

    fn recognizes(&self, file_name: &str, head: &[u8]) -> bool {
        let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
        let json = head.trim_ascii_start().starts_with(b"{");
        let form = head
            .windows(b"renkei.admission_info".len())
            .any(|w| w == b"renkei.admission_info");
        json && (form || starts_with_ignoring_case(file_name, "NYUIN_"))
    }

    fn read(
        &self,
        file_name: &str,
        raw: &[u8],
        window: &TimeWindow,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        AdmissionInfoJsonNormalizer::with_time_window(*window)
            .normalize_file(file_name, raw)
            .map(|event| vec![event])
    }
}
