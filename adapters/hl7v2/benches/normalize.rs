//! HL7 v2 ADT normalisation speed, one message per iteration (so criterion reports
//! messages per second).
//!
//! - `normalize/<file>`: every message of the shared conformance set (`hl7/`), bytes
//!   to canonical event, as the listener calls it.
//! - `normalize_a01/{utf8,iso2022jp}`: the same A01 admission sent in each character
//!   set, so the price of ISO-2022-JP is visible.
//! - `decode_only/…` and `parse_only/…`: the first two stages alone (charset decoding
//!   of the raw bytes; splitting the decoded text into segments), so the rest of a
//!   `normalize` figure is the mapping to the canonical event.
//!
//! The set is read from `../shared/conformance` next to the checkout, or from
//! `RENKEI_CONFORMANCE_DIR`. Run with `cargo bench -p renkei-hl7v2`.

// A bench is a test harness: failing loudly on a missing fixture is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renkei_hl7v2::{Hl7Normalizer, Message, decode};
use renkei_sdk::Normalizer;

/// Overrides where the conformance set is read from (as in `tests/conformance.rs`).
const DIR_VARIABLE: &str = "RENKEI_CONFORMANCE_DIR";

/// The A01 admission of the conformance set, in ISO-2022-JP (`MSH-18` `~ISO IR87`).
const A01_FILE: &str = "a01_admit_iso2022jp.hl7";

fn hl7_dir() -> PathBuf {
    let root = match std::env::var_os(DIR_VARIABLE) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    };
    root.join("hl7")
}

/// Every `.hl7` file of the conformance set, by name; panics with what to do when the
/// set is missing.
fn conformance_messages() -> Vec<(String, Vec<u8>)> {
    let dir = hl7_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the conformance set is missing: cannot list {} ({e}). Put the set at \
             ../shared/conformance next to the checkout or set {DIR_VARIABLE}",
            dir.display()
        )
    });
    let mut messages: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())))
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "hl7"))
        .map(|path| {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, bytes)
        })
        .collect();
    messages.sort();
    assert!(
        !messages.is_empty(),
        "{} holds no .hl7 file: the conformance set is incomplete",
        dir.display()
    );
    messages
}

/// The A01 admission in ISO-2022-JP as sent, and the same message in UTF-8.
fn a01_pair() -> (Vec<u8>, Vec<u8>) {
    let path = hl7_dir().join(A01_FILE);
    let iso2022jp =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let text = decode(&iso2022jp)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
        .text
        .into_owned();
    let utf8 = text.replacen("|~ISO IR87|", "|UNICODE UTF-8|", 1);
    assert_ne!(utf8, text, "{A01_FILE}: MSH-18 is no longer `~ISO IR87`");
    (iso2022jp, utf8.into_bytes())
}

fn normalize(c: &mut Criterion) {
    let normalizer = Hl7Normalizer::new();
    let messages = conformance_messages();
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(1));
    for (name, bytes) in &messages {
        if let Err(e) = normalizer.normalize(bytes) {
            panic!("{name} is refused, so it would measure the error path: {e}");
        }
        group.bench_function(name.as_str(), |b| {
            b.iter(|| normalizer.normalize(black_box(bytes)))
        });
    }
    group.finish();
}

fn normalize_a01(c: &mut Criterion) {
    let normalizer = Hl7Normalizer::new();
    let (iso2022jp, utf8) = a01_pair();
    let mut group = c.benchmark_group("normalize_a01");
    group.throughput(Throughput::Elements(1));
    for (case, bytes) in [("utf8", &utf8), ("iso2022jp", &iso2022jp)] {
        let event = normalizer
            .normalize(bytes)
            .unwrap_or_else(|e| panic!("the {case} A01 is refused: {e}"));
        assert_eq!(event.event_type.as_str(), "inpatient.admitted", "{case}");
        group.bench_function(case, |b| b.iter(|| normalizer.normalize(black_box(bytes))));
    }
    group.finish();
}

fn stages(c: &mut Criterion) {
    let (iso2022jp, utf8) = a01_pair();
    let mut group = c.benchmark_group("decode_only");
    group.throughput(Throughput::Elements(1));
    for (case, bytes) in [("a01_utf8", &utf8), ("a01_iso2022jp", &iso2022jp)] {
        group.bench_function(case, |b| b.iter(|| decode(black_box(bytes))));
    }
    group.finish();

    let text = decode(&utf8)
        .unwrap_or_else(|e| panic!("the UTF-8 A01 does not decode: {e}"))
        .text
        .into_owned();
    let mut group = c.benchmark_group("parse_only");
    group.throughput(Throughput::Elements(1));
    group.bench_function("a01", |b| {
        b.iter(|| Message::parse(black_box(&text)).map(|m| m.segments().len()))
    });
    group.finish();
}

criterion_group!(benches, normalize, normalize_a01, stages);
criterion_main!(benches);
