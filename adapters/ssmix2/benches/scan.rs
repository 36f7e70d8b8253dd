//! How long an SS-MIX2 poll takes on a large storage tree.
//!
//! Builds a synthetic standardized storage in a temporary folder (10 files per
//! patient: ADT-00, ADT-12, ADT-22, ADT-42 and ADT-52 records, and five prescription
//! and result files in OMP-01 and OML-11 folders the poller never enters), then
//! measures, with the default mtime margin:
//!
//! - the first full scan (a poller without a snapshot: every folder listed, every
//!   record file statted once), and marking every record published;
//! - a poll when nothing changed (every known folder statted, none listed);
//! - a poll after 10 records were added to 10 patients' folders;
//! - saving and loading the snapshot, and its size.
//!
//! `RENKEI_SSMIX2_BENCH_FILES` sets the number of files (default 100,000; e.g.
//! 1,000,000). Run with `cargo bench -p renkei-ssmix2`. The tree is fresh in the page
//! cache: on a network share every stat is a round trip, so the no-change figure is
//! then the one that grows.

// A bench is a test harness: failing loudly on a broken temporary tree is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use renkei_sdk::EventType;
use renkei_ssmix2::scan::Finished;
use renkei_ssmix2::{Scanner, Snapshot, StorageName};

/// Sets the number of files of the synthetic tree.
const FILES_VARIABLE: &str = "RENKEI_SSMIX2_BENCH_FILES";
const FILES_PER_PATIENT: usize = 10;
const NO_CHANGE_RUNS: usize = 5;

/// The patient id of the `n`th patient: spread over the prefix folders as real ids are
/// (104729 is coprime with 10^10, so the ids are distinct).
fn patient_id(n: usize) -> String {
    format!("{:010}", (n as u64 * 104_729) % 10_000_000_000)
}

/// The files of one patient, as paths below the root.
fn patient_files(patient: &str) -> Vec<String> {
    let name = |date: &str, data_type: &str, order: &str, occurred: &str, department: &str| {
        let file = format!("{patient}_{date}_{data_type}_{order}_{occurred}_{department}_1");
        StorageName::parse(&file)
            .expect("a valid synthetic name")
            .relative_path()
    };
    const NO_ORDER: &str = "999999999999999";
    vec![
        name("-", "ADT-00", NO_ORDER, "20250401090000000", "-"),
        name("20250401", "ADT-12", NO_ORDER, "20250401091000000", "01"),
        name(
            "20250401",
            "OMP-01",
            "000000000000001",
            "20250401093000000",
            "01",
        ),
        name("20250512", "ADT-22", NO_ORDER, "20250512093000000", "01"),
        name(
            "20250512",
            "OMP-01",
            "000000000000002",
            "20250512100000000",
            "01",
        ),
        name(
            "20250512",
            "OML-11",
            "000000000000003",
            "20250512110000000",
            "01",
        ),
        name("20250519", "ADT-42", NO_ORDER, "20250519140000000", "01"),
        name(
            "20250519",
            "OMP-01",
            "000000000000004",
            "20250519150000000",
            "01",
        ),
        name("20250526", "ADT-52", NO_ORDER, "20250526100000000", "01"),
        name(
            "20250526",
            "OML-11",
            "000000000000005",
            "20250526090000000",
            "01",
        ),
    ]
}

fn write(root: &Path, relative: &str) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create folders");
    }
    std::fs::write(
        path,
        b"MSH|^~\\&|HIS|1319999995|GW|RCV|20250512093000||ADT^A01|1|P|2.5\r",
    )
    .expect("write a record");
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let files: usize = match std::env::var(FILES_VARIABLE) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|e| panic!("{FILES_VARIABLE}={value} is not a number: {e}")),
        Err(_) if quick => 1_000,
        Err(_) => 100_000,
    };
    let patients = files.div_ceil(FILES_PER_PATIENT);
    let dir = tempfile::tempdir().expect("temporary folder");
    let root = dir.path();

    let started = Instant::now();
    for n in 0..patients {
        for relative in patient_files(&patient_id(n)) {
            write(root, &relative);
        }
    }
    let built = started.elapsed();
    println!(
        "synthetic SS-MIX2 tree: {} files ({} patients, {} of them ADT records), built in {}",
        patients * FILES_PER_PATIENT,
        patients,
        patients * 5,
        millis(built)
    );
    // Let the folders age past the mtime margin, as a tree between polls does.
    std::thread::sleep(renkei_ssmix2::scan::DEFAULT_MTIME_MARGIN + Duration::from_millis(200));

    let mut scanner = Scanner::new(root, Snapshot::default());
    let started = Instant::now();
    let first = scanner.poll(SystemTime::now()).expect("first scan");
    let first_scan = started.elapsed();
    let started = Instant::now();
    for work in &first.work {
        scanner.finish(
            work,
            Finished::Published {
                event: EventType::InpatientAdmitted,
                cancels: None,
            },
        );
    }
    let finished = started.elapsed();
    println!(
        "first full scan:          {:>10}  ({} folders statted, {} listed, {} records ready); marking them published {}",
        millis(first_scan),
        first.stats.folders_checked,
        first.stats.folders_listed,
        first.work.len(),
        millis(finished)
    );
    assert_eq!(first.work.len(), patients * 5);
    let all = scanner
        .take_delta()
        .expect("serialise")
        .expect("a first save");
    println!(
        "first save:               {:>10}  ({} shards and the index)",
        format!("{:.1} MB", all.bytes() as f64 / 1e6),
        all.shard_count()
    );

    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..NO_CHANGE_RUNS {
        let started = Instant::now();
        let poll = scanner.poll(SystemTime::now()).expect("poll");
        runs.push(started.elapsed());
        assert!(poll.work.is_empty());
        last = Some(poll.stats);
    }
    let stats = last.unwrap_or_default();
    println!(
        "no-change poll (median):  {:>10}  ({} folders statted, {} listed)",
        millis(median(runs)),
        stats.folders_checked,
        stats.folders_listed
    );

    for n in 0..10 {
        let patient = patient_id(n * patients / 10);
        let file = format!("{patient}_20250512_ADT-22_999999999999999_20250512180000{n:03}_01_1");
        write(root, &StorageName::parse(&file).unwrap().relative_path());
    }
    let started = Instant::now();
    let added = scanner.poll(SystemTime::now()).expect("poll");
    let after_adding = started.elapsed();
    println!(
        "poll after adding 10:     {:>10}  ({} folders statted, {} listed, {} records ready)",
        millis(after_adding),
        added.stats.folders_checked,
        added.stats.folders_listed,
        added.work.len()
    );
    assert_eq!(added.work.len(), 10);
    for work in &added.work {
        scanner.finish(
            work,
            Finished::Published {
                event: EventType::InpatientAdmitted,
                cancels: None,
            },
        );
    }
    let started = Instant::now();
    let delta = scanner.take_delta().expect("serialise").expect("a save");
    println!(
        "save after adding 10:     {:>10}  ({} shards and the index, serialised in {})",
        format!("{:.1} kB", delta.bytes() as f64 / 1e3),
        delta.shard_count(),
        millis(started.elapsed())
    );

    let started = Instant::now();
    let bytes = scanner.snapshot().to_bytes().expect("serialise");
    let saved = started.elapsed();
    let started = Instant::now();
    let loaded = Snapshot::from_bytes(&bytes).expect("deserialise");
    let load = started.elapsed();
    assert_eq!(&loaded, scanner.snapshot());
    println!(
        "whole snapshot:           {:>10}  ({} folders, {} files; serialised in {}, parsed in {})",
        format!("{:.1} MB", bytes.len() as f64 / 1e6),
        loaded.folder_count(),
        loaded.file_count(),
        millis(saved),
        millis(load)
    );
}
