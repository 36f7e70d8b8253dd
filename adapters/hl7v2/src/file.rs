//! An HL7 v2 message kept as a file (`renkei normalize`, a drop folder): one message
//! per file, with or without the MLLP frame bytes a capture keeps.

use renkei_sdk::file::FileFormat;
use renkei_sdk::{CanonicalEvent, NormalizeError, Normalizer, TimeWindow};

use crate::Hl7Normalizer;

/// The message inside an optional MLLP frame (`0x0B … 0x1C 0x0D`).
pub fn unframe(raw: &[u8]) -> &[u8] {
    raw.strip_prefix(b"\x0b")
        .map(|m| {
            m.strip_suffix(b"\x1c\r")
                .or_else(|| m.strip_suffix(b"\x1c"))
                .unwrap_or(m)
        })
        .unwrap_or(raw)
}

/// HL7 v2 ER7 files.
pub struct Hl7File;

impl FileFormat for Hl7File {
    fn name(&self) -> &'static str {
        "hl7v2"
    }

    fn recognizes(&self, file_name: &str, head: &[u8]) -> bool {
        let head = unframe(head);
        let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
        head.starts_with(b"MSH|") || file_name.to_ascii_lowercase().ends_with(".hl7")
    }

    fn read(
        &self,
        _file_name: &str,
        raw: &[u8],
        window: &TimeWindow,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        Hl7Normalizer::with_time_window(*window)
            .normalize(unframe(raw))
            .map(|event| vec![event])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_capture_and_a_bare_message_are_both_recognised() {
        assert!(Hl7File.recognizes("capture.bin", b"\x0bMSH|^~\\&|"));
        assert!(Hl7File.recognizes("x", b"MSH|^~\\&|"));
        assert!(Hl7File.recognizes("A01.HL7", b"garbage"));
        assert!(!Hl7File.recognizes("x.json", b"{\"resourceType\":"));
        assert_eq!(unframe(b"\x0bMSH|x\x1c\r"), b"MSH|x");
    }
}
