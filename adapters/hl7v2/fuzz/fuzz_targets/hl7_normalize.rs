//! HL7 v2 decoding, parsing and normalisation: any bytes are an event or a refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use renkei_sdk::Normalizer;

fuzz_target!(|data: &[u8]| {
    let _ = renkei_hl7v2::MshHeader::parse(data);
    let _ = renkei_hl7v2::Hl7Normalizer::new().normalize(data);
});
