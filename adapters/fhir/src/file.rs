//! FHIR Bundles as a [`FileFormat`], for `renkei normalize` and drop folders.

use renkei_sdk::file::FileFormat;
use renkei_sdk::{CanonicalEvent, NormalizeError, Normalizer, TimeWindow};

use crate::FhirNormalizer;

/// A FHIR R4 JSON resource (a message or document Bundle).
pub struct FhirFile;

impl FileFormat for FhirFile {
    fn name(&self) -> &'static str {
        "fhir"
    }

    fn recognizes(&self, file_name: &str, head: &[u8]) -> bool {
        let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
        let json = head.trim_ascii_start().starts_with(b"{");
        let resource = head
            .windows(b"\"resourceType\"".len())
            .any(|w| w == b"\"resourceType\"");
        json && (resource || file_name.to_ascii_lowercase().ends_with(".json"))
    }

    fn read(
        &self,
        _file_name: &str,
        raw: &[u8],
        window: &TimeWindow,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        FhirNormalizer::with_time_window(*window)
            .normalize(raw)
            .map(|event| vec![event])
    }
}
