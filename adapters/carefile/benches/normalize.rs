//! Care-file normalisation speed, in bytes per second (criterion reports MB/s).
//!
//! - `care_csv/<file>`, `admission_json/<file>`: every accepted care CSV and JSON file
//!   of the shared conformance set, bytes to events, as a file-drop source calls it.
//! - `care_csv_bulk/nyuin_1000_rows`: one NYUIN file of 1,000 rows (the quoted, multi-line
//!   conformance row repeated), where the per-file costs no longer dominate.
//! - `careplan/<file>`: every care-plan file of `csv/careplan/`, bytes to a checked
//!   [`CarePlanFile`].
//! - `careplan_bulk/upplan_2000_rows`: a 第6表 of 2,000 rows (the conformance rows
//!   repeated), the batch-upload case.
//! - `careplan_transmission/usage`: the three files of the usage transmission added to a
//!   [`CarePlanSet`] and made into its `care.plan` event.
//! - `decode_only/ms932`: strict MS932 decoding of the bulk 第6表 alone.
//!
//! The set is read from `../shared/conformance` next to the checkout, or from
//! `RENKEI_CONFORMANCE_DIR`. Run with `cargo bench -p renkei-carefile`.

// A bench is a test harness: failing loudly on a missing fixture is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renkei_carefile::{
    AdmissionInfoJsonNormalizer, CareCsvNormalizer, CarePlanFile, CarePlanSet, decode_ms932,
};

/// Overrides where the conformance set is read from (as in `tests/conformance.rs`).
const DIR_VARIABLE: &str = "RENKEI_CONFORMANCE_DIR";

fn conformance_dir() -> PathBuf {
    match std::env::var_os(DIR_VARIABLE) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    }
}

/// Every file of `folder` whose name ends in `extension`, by name.
fn files(folder: &str, extension: &str) -> Vec<(String, Vec<u8>)> {
    let dir = conformance_dir().join(folder);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the conformance set is missing: cannot list {} ({e}). Put the set at \
             ../shared/conformance next to the checkout or set {DIR_VARIABLE}",
            dir.display()
        )
    });
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext.eq_ignore_ascii_case(extension))
        })
        .map(|path| {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let name = path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{} holds no .{extension} file",
        dir.display()
    );
    files
}

/// `raw` (a file whose first `keep` lines are kept once) with its remaining rows
/// repeated until it holds `rows` of them.
fn repeated(raw: &[u8], keep: usize, rows: usize) -> Vec<u8> {
    let text = decode_ms932(raw).expect("MS932");
    // Rows end with CRLF; a line break inside a quoted cell is a bare LF or CRLF inside
    // quotes, so split on CRLF only where the quotes balance.
    let mut records = Vec::new();
    let mut current = String::new();
    for piece in text.split_inclusive("\r\n") {
        current.push_str(piece);
        if current.matches('"').count().is_multiple_of(2) {
            records.push(std::mem::take(&mut current));
        }
    }
    let (head, body) = records.split_at(keep);
    let mut out = head.concat();
    for i in 0..rows {
        out.push_str(&body[i % body.len()]);
    }
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&out);
    assert!(!unmappable);
    bytes.into_owned()
}

fn care_files(c: &mut Criterion) {
    let csv = CareCsvNormalizer::new();
    let mut group = c.benchmark_group("care_csv");
    for (name, bytes) in files("csv", "csv") {
        csv.normalize_file(&name, &bytes).unwrap_or_else(|e| {
            panic!("{name} is refused, so it would measure the error path: {e}")
        });
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name.as_str(), |b| {
            b.iter(|| csv.normalize_file(black_box(&name), black_box(&bytes)))
        });
    }
    group.finish();

    let json = AdmissionInfoJsonNormalizer::new();
    let mut group = c.benchmark_group("admission_json");
    for (name, bytes) in files("json", "json") {
        json.normalize_file(&name, &bytes)
            .unwrap_or_else(|e| panic!("{name} is refused: {e}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name.as_str(), |b| {
            b.iter(|| json.normalize_file(black_box(&name), black_box(&bytes)))
        });
    }
    group.finish();

    let (name, raw) = files("csv", "csv")
        .into_iter()
        .find(|(name, _)| name.starts_with("NYUIN_20250611"))
        .expect("the quoted NYUIN file");
    let bulk = repeated(&raw, 1, 1000);
    let events = csv.normalize_file(&name, &bulk).expect("the bulk file");
    assert_eq!(events.len(), 1000);
    let mut group = c.benchmark_group("care_csv_bulk");
    group.throughput(Throughput::Bytes(bulk.len() as u64));
    group.sample_size(20);
    group.bench_function("nyuin_1000_rows", |b| {
        b.iter(|| csv.normalize_file(black_box(&name), black_box(&bulk)))
    });
    group.finish();
}

fn careplan(c: &mut Criterion) {
    let all = files("csv/careplan", "csv");
    let mut group = c.benchmark_group("careplan");
    for (name, bytes) in &all {
        CarePlanFile::parse(name, bytes).unwrap_or_else(|e| panic!("{name} is refused: {e}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name.as_str(), |b| {
            b.iter(|| CarePlanFile::parse(black_box(name), black_box(bytes)))
        });
    }
    group.finish();

    let (plan_name, plan_raw) = all
        .iter()
        .find(|(name, _)| name.starts_with("UPPLAN"))
        .expect("a 第6表");
    let bulk = repeated(plan_raw, 0, 2000);
    let parsed = CarePlanFile::parse(plan_name, &bulk).expect("the bulk 第6表");
    assert_eq!(parsed.record_count, 2000);
    let mut group = c.benchmark_group("careplan_bulk");
    group.throughput(Throughput::Bytes(bulk.len() as u64));
    group.sample_size(20);
    group.bench_function("upplan_2000_rows", |b| {
        b.iter(|| CarePlanFile::parse(black_box(plan_name), black_box(&bulk)))
    });
    group.finish();

    let usage: Vec<&(String, Vec<u8>)> = all
        .iter()
        .filter(|(name, _)| name.ends_with("_20250425100000.CSV"))
        .collect();
    assert_eq!(usage.len(), 3, "第6表, 第7表 and 利用者補足情報");
    let total: usize = usage.iter().map(|(_, bytes)| bytes.len()).sum();
    let mut group = c.benchmark_group("careplan_transmission");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("usage", |b| {
        b.iter(|| {
            let mut set = CarePlanSet::new();
            for (name, bytes) in &usage {
                set.add_file(name, bytes).expect("add");
            }
            let events = set.take_complete();
            assert_eq!(events.len(), 1);
            events
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decode_only");
    group.throughput(Throughput::Bytes(bulk.len() as u64));
    group.bench_function("ms932", |b| b.iter(|| decode_ms932(black_box(&bulk))));
    group.finish();
}

criterion_group!(benches, care_files, careplan);
criterion_main!(benches);
