//! FHIR Bundle mapping: any bytes are an event or a refusal with its OperationOutcome.
#![no_main]
use libfuzzer_sys::fuzz_target;
use renkei_sdk::Normalizer;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = renkei_fhir::FhirNormalizer::new().normalize(data) {
        let _ = renkei_fhir::operation_outcome(&error);
        let _ = renkei_fhir::classify(&error).http_status();
    }
});
