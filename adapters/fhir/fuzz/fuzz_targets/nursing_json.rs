//! The nursing summary's JSON form: any bytes are an event or a refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use renkei_sdk::Normalizer;

fuzz_target!(|data: &[u8]| {
    let _ = renkei_fhir::NursingSummaryJsonNormalizer::new().normalize(data);
});
