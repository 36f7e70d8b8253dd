//! The file formats this hub reads, in the order sniffing tries them.
//!
//! [`file_formats`] is the one list: `renkei normalize` and the sources that take files
//! find a format here by name (`--format`) or by its name and first bytes.

use renkei_sdk::file::FileFormat;

/// Every file format, most specific first (a format that recognises by content before
/// one that trusts a file-name extension).
pub fn file_formats() -> Vec<Box<dyn FileFormat>> {
    vec![
        Box::new(renkei_hl7v2::Hl7File),
        Box::new(renkei_carefile::AdmissionInfoJsonFile),
        Box::new(renkei_carefile::CareCsvFile),
        Box::new(renkei_fhir::NursingSummaryJsonFile),
        Box::new(renkei_fhir::FhirFile),
    ]
}

/// The names of every format, for messages.
pub fn names() -> Vec<&'static str> {
    file_formats().iter().map(|f| f.name()).collect()
}
