//! File formats: inputs that arrive whole, as a file (a care office's CSV, a FHIR
//! document, a message captured from a feed). One [`FileFormat`] per kind of file lets
//! every place that reads files — `renkei normalize`, drop folders, HTTP uploads — find
//! the format by name or by sniffing, and read it the same way.

use crate::adapter::NormalizeError;
use crate::event::CanonicalEvent;
use crate::plausible::TimeWindow;

/// A kind of file the hub reads.
pub trait FileFormat: Send + Sync {
    /// A short name, e.g. `hl7v2`, `care-csv` (what `renkei normalize --format` takes).
    fn name(&self) -> &'static str;

    /// Whether this format reads the file, judged by its name and first bytes only
    /// (cheap: called for every candidate format).
    fn recognizes(&self, file_name: &str, head: &[u8]) -> bool;

    /// Every event the file carries (a CSV may hold several rows), or why the file is
    /// refused as a whole. An empty list means the file carries nothing to publish (an
    /// SS-MIX2 record deleted before it was seen).
    fn read(
        &self,
        file_name: &str,
        raw: &[u8],
        window: &TimeWindow,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError>;
}

/// The first of `formats` that recognises the file.
pub fn sniff<'a>(
    formats: &'a [Box<dyn FileFormat>],
    file_name: &str,
    raw: &[u8],
) -> Option<&'a dyn FileFormat> {
    let head = &raw[..raw.len().min(4096)];
    formats
        .iter()
        .find(|f| f.recognizes(file_name, head))
        .map(AsRef::as_ref)
}

/// Refuses an event whose time (or whose patient's birth date) is outside `window`:
/// the check the HL7 normaliser makes field by field, for formats that make it on the
/// finished event.
pub fn check_window(event: &CanonicalEvent, window: &TimeWindow) -> Result<(), NormalizeError> {
    window
        .check("time", event.time)
        .map_err(|reason| NormalizeError::at("time", reason))?;
    if let Some(date) = event.data.patient.birth_date {
        window
            .check_past_date("birth date", date)
            .map_err(|reason| NormalizeError::at("birth date", reason))?;
    }
    Ok(())
}
