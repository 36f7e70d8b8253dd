//! SS-MIX2 file names and storage paths: any text is a name or a refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = renkei_ssmix2::StorageName::parse_path(text) {
        let _ = name.relative_path();
    }
    let _ = renkei_ssmix2::StorageName::parse(text);
});
