//! The ケアプランデータ連携 file readers: any bytes under each kind's name are a parsed
//! file or a refusal. The first byte picks the file name.
#![no_main]
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 5] = [
    "UP1KYO_1379999999_43_1379999998_11_20250425093000.CSV",
    "UP2KYO_1379999999_43_1379999998_11_20250425093000.CSV",
    "UPHOSOKU_202505_1379999999_43_1379999998_11_20250425100000.CSV",
    "UPPLAN_202505_1379999999_43_1379999998_11_20250425100000.CSV",
    "UPSIKYU_202505_1379999999_43_1379999998_11_20250425100000.CSV",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let _ = renkei_carefile::CarePlanFile::parse(name, raw);
});
