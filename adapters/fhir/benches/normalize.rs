//! FHIR normalisation speed, one Bundle per iteration (so criterion reports Bundles per
//! second).
//!
//! - `normalize/<file>`: every Bundle of the shared conformance set (`fhir/`), bytes to
//!   canonical event, as an HTTP receiver calls it (documents carry the whole Bundle in
//!   `document.content`).
//! - `parse_only/<file>`: the UTF-8 check and JSON parse alone (into
//!   `serde_json::Value`, which the event's `document.content` is, and dropped again),
//!   so the rest of a `normalize` figure is the mapping, the SHA-256 of the raw bytes
//!   and the event id.
//!
//! The set is read from `../shared/conformance` next to the checkout, or from
//! `RENKEI_CONFORMANCE_DIR`. Run with `cargo bench -p renkei-fhir`.

// A bench is a test harness: failing loudly on a missing fixture is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renkei_fhir::FhirNormalizer;
use renkei_sdk::Normalizer;

/// Overrides where the conformance set is read from (as in `tests/conformance.rs`).
const DIR_VARIABLE: &str = "RENKEI_CONFORMANCE_DIR";

fn fhir_dir() -> PathBuf {
    let root = match std::env::var_os(DIR_VARIABLE) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    };
    root.join("fhir")
}

/// Every `.json` file of the conformance set's `fhir/`, by name; panics with what to do
/// when the set is missing.
fn conformance_bundles() -> Vec<(String, Vec<u8>)> {
    let dir = fhir_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the conformance set is missing: cannot list {} ({e}). Put the set at \
             ../shared/conformance next to the checkout or set {DIR_VARIABLE}",
            dir.display()
        )
    });
    let mut bundles: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())))
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
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
    bundles.sort();
    assert!(
        !bundles.is_empty(),
        "{} holds no .json file: the conformance set is incomplete",
        dir.display()
    );
    bundles
}

fn normalize(c: &mut Criterion) {
    let normalizer = FhirNormalizer::new();
    let bundles = conformance_bundles();
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(1));
    for (name, bytes) in &bundles {
        if let Err(e) = normalizer.normalize(bytes) {
            panic!("{name} is refused, so it would measure the error path: {e}");
        }
        group.bench_function(name.as_str(), |b| {
            b.iter(|| normalizer.normalize(black_box(bytes)))
        });
    }
    group.finish();
}

fn parse_only(c: &mut Criterion) {
    let bundles = conformance_bundles();
    let mut group = c.benchmark_group("parse_only");
    group.throughput(Throughput::Elements(1));
    for (name, bytes) in &bundles {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let text = std::str::from_utf8(black_box(bytes)).expect("UTF-8");
                serde_json::from_str::<serde_json::Value>(text)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, normalize, parse_only);
criterion_main!(benches);
