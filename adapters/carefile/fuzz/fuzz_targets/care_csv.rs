//! The care CSV and JSON readers: any bytes under any of the layouts' names are events
//! or a refusal. The first byte picks the file name.
#![no_main]
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = [
    "NYUIN_20250410_1379999999_1319999999_20250410101500.CSV",
    "TAIIN_20250421_1379999999_1319999999_20250421160000.CSV",
    "export.csv",
    "NYUIN_20250612_1379999996_1319999999_20250612103000.json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let _ = renkei_carefile::decode_ms932(raw);
    if name.ends_with(".json") {
        let _ = renkei_carefile::AdmissionInfoJsonNormalizer::new().normalize_file(name, raw);
    } else {
        let _ = renkei_carefile::CareCsvNormalizer::new().normalize_file(name, raw);
    }
});
