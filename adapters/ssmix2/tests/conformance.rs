//! Conformance: every SS-MIX2 case of the shared conformance set (the storage tree
//! under `ss-mix2/` and the misfiled record under `bad/ss-mix2/`, described in its
//! `EXPECTED.json`) asserted fact by fact; then the poller run against copies of the
//! tree in temporary folders with a recording ingest sink: what it publishes, the
//! condition-flag rule, an unavailable hub, a restart.
//!
//! The set lives outside the repository: `../shared/conformance` next to the checkout,
//! or wherever `RENKEI_CONFORMANCE_DIR` points. When it cannot be read every test here
//! fails; none is skipped.

// A failed `expect` on a conformance fixture is a test failure, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::DateTime;
use jsonschema::Validator;
use renkei_sdk::conformance::check_case;
use renkei_sdk::source::{
    AnySource, MemoryState, SourceContext, SourceCredentials, SourceError, SourceState,
};
use renkei_sdk::{
    CanonicalEvent, EVENT_SCHEMA_V1, EventType, IngestOutcome, IngestSink, NormalizeError,
    ReceivedInput, SourceFormat, TimeWindow,
};
use renkei_ssmix2::scan::{shard_key, shard_of};
use renkei_ssmix2::{
    PollSummary, Ssmix2Config, Ssmix2Normalizer, Ssmix2Poller, Ssmix2Source, StorageName,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// The hospital of the sample storage.
const FACILITY: &str = "1319999995";
/// The folder of the sample storage tree in the conformance set.
const TREE: &str = "ss-mix2";
/// The folder of the misfiled record's tree.
const BAD_TREE: &str = "bad/ss-mix2";

/// The conformance set, read once per test process.
struct Conformance {
    dir: PathBuf,
    expected: Map<String, Value>,
}

fn conformance() -> &'static Conformance {
    static SET: OnceLock<Conformance> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = renkei_sdk::conformance::set_dir(env!("CARGO_MANIFEST_DIR"));
        let expected = renkei_sdk::conformance::read_object(&dir.join("EXPECTED.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        Conformance { dir, expected }
    })
}

/// One `ss-mix2` entry of `EXPECTED.json` with its file's bytes.
struct Case {
    /// The key in `EXPECTED.json`, e.g. `ss-mix2/000/051/…`.
    key: String,
    /// The path below the storage root, as the poller reports it.
    relative: String,
    raw: Vec<u8>,
    facts: Map<String, Value>,
}

/// Every `ss-mix2` entry under `tree`, in key order.
fn cases(tree: &str) -> Vec<Case> {
    let set = conformance();
    let prefix = format!("{tree}/");
    let mut cases: Vec<Case> = set
        .expected
        .iter()
        .filter(|(_, facts)| facts["format"] == "ss-mix2")
        .filter_map(|(key, facts)| {
            let relative = key.strip_prefix(&prefix)?.to_owned();
            let raw = std::fs::read(set.dir.join(key))
                .unwrap_or_else(|e| panic!("EXPECTED.json lists {key}, but {e}"));
            let facts = facts
                .as_object()
                .unwrap_or_else(|| panic!("the entry of {key} is not an object"))
                .clone();
            Some(Case {
                key: key.clone(),
                relative,
                raw,
                facts,
            })
        })
        .collect();
    cases.sort_by(|a, b| a.key.cmp(&b.key));
    assert!(!cases.is_empty(), "no ss-mix2 entry under {tree}/");
    cases
}

fn is_skip(case: &Case) -> bool {
    case.facts.contains_key("skip")
}

fn normalizer() -> Ssmix2Normalizer {
    Ssmix2Normalizer::new().for_facility(FACILITY)
}

/// The schema compiled once, with `format` checked as well as the patterns.
fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(EVENT_SCHEMA_V1).expect("the schema is not JSON");
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the schema does not compile")
    })
}

fn schema_violations(event: &CanonicalEvent) -> Vec<String> {
    let instance = serde_json::to_value(event).expect("serialise");
    validator()
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every file below `dir`, as `/`-separated paths relative to `dir`.
fn files_below(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, at: &str, out: &mut Vec<String>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if at.is_empty() {
                name
            } else {
                format!("{at}/{name}")
            };
            if entry.file_type().expect("file type").is_dir() {
                walk(&entry.path(), &relative, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// Copies the tree at `from` into `to` (folders created writable; files keep their
/// content, get a fresh modification time).
fn copy_tree(from: &Path, to: &Path) {
    for relative in files_below(from) {
        let target = to.join(&relative);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("create folders");
        std::fs::copy(from.join(&relative), &target).expect("copy");
    }
}

// ---------------------------------------------------------------------------------
// The conformance entries, file by file.

#[test]
fn every_ss_mix2_file_has_an_expected_entry_and_every_entry_a_file() {
    let set = conformance();
    let mut problems = Vec::new();
    let mut seen = 0;
    for tree in [TREE, BAD_TREE] {
        for relative in files_below(&set.dir.join(tree)) {
            seen += 1;
            let key = format!("{tree}/{relative}");
            match set.expected.get(&key) {
                None => problems.push(format!("{key} has no entry in EXPECTED.json")),
                Some(facts) if facts["format"] != "ss-mix2" => problems.push(format!(
                    "{key} is not declared `\"format\": \"ss-mix2\"` in EXPECTED.json"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        seen >= 8,
        "only {seen} SS-MIX2 files in the conformance set"
    );
    for (key, facts) in &set.expected {
        if facts["format"] == "ss-mix2" && !set.dir.join(key).is_file() {
            problems.push(format!("EXPECTED.json lists {key}, which is not a file"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn ss_mix2_records_carry_every_expected_fact() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases(TREE).iter().filter(|c| !is_skip(c)) {
        assert!(
            !case.facts.contains_key("error"),
            "{}: an entry of the valid tree expects an error",
            case.key
        );
        for normalizer in [Ssmix2Normalizer::new(), normalizer()] {
            let event = match normalizer.normalize_file(&case.relative, &case.raw) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    failures.push(format!("{}: no event", case.key));
                    continue;
                }
                Err(e) => {
                    failures.push(format!("{}: refused: {e}", case.key));
                    continue;
                }
            };
            let (held, problems) = check_case(&event, &case.facts);
            checked += held;
            failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.key)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 40, "only {checked} facts were checked");
}

#[test]
fn skipped_entries_give_no_event() {
    let skips: Vec<Case> = cases(TREE).into_iter().filter(is_skip).collect();
    assert_eq!(skips.len(), 2, "the OMP-01 order and the deleted admission");
    for case in &skips {
        assert_eq!(
            normalizer().normalize_file(&case.relative, &case.raw),
            Ok(None),
            "{}",
            case.key
        );
    }
}

#[test]
fn a_misfiled_record_is_refused_without_repeating_the_patient_ids() {
    let bad = cases(BAD_TREE);
    assert_eq!(bad.len(), 1);
    let case = &bad[0];
    assert!(case.facts["error"].is_string(), "{}: no error", case.key);
    // The ids really are in the file and its path, so their absence means something.
    let text = String::from_utf8_lossy(&case.raw);
    assert!(text.contains("0000512009") && case.relative.contains("0000512002"));
    let error = normalizer()
        .normalize_file(&case.relative, &case.raw)
        .expect_err("a misfiled record must be refused");
    let shown = error.to_string();
    assert_eq!(error.location.as_deref(), Some("PID-3"), "{shown}");
    assert!(
        shown.contains("PID-3 does not match the patient id of the file name and folders"),
        "{shown}"
    );
    for patient_data in ["0000512002", "0000512009", "19390909"] {
        assert!(!shown.contains(patient_data), "{shown}");
    }
}

#[test]
fn conformance_events_match_the_json_schema_and_round_trip() {
    let seen = DateTime::parse_from_rfc3339("2025-06-01T11:31:00+09:00").unwrap();
    let mut events = Vec::new();
    for case in cases(TREE) {
        if let Some(event) = normalizer()
            .normalize_file(&case.relative, &case.raw)
            .unwrap()
        {
            events.push((case.key.clone(), event));
        }
        // What a deleted record becomes once it was published: a cancellation.
        let name = StorageName::parse_path(&case.relative).unwrap();
        if name.condition().is_deleted() {
            let cancel = normalizer()
                .deletion_of(&name, &case.raw, seen)
                .unwrap()
                .expect("a deleted admission becomes a cancellation");
            assert_eq!(cancel.data.cancels, Some(EventType::InpatientAdmitted));
            events.push((format!("{} (deleted)", case.key), cancel));
        }
    }
    assert_eq!(events.len(), 6);
    for (key, event) in events {
        assert_eq!(event.data.origin.format, SourceFormat::Ssmix2, "{key}");
        let violations = schema_violations(&event);
        assert!(violations.is_empty(), "{key}: {violations:#?}");
        let text = serde_json::to_string(&event).expect("serialise");
        let back: CanonicalEvent = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, event, "{key}");
    }
}

/// Bytes that structure HL7 v2 (and ISO-2022-JP) text.
const DELIMITERS: [u8; 9] = [b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', 0x1b, b'$'];

#[test]
fn corrupted_records_never_panic_and_accepted_ones_stay_valid() {
    let mut panics = Vec::new();
    let mut invalid = Vec::new();
    let mut tried = 0;
    let all = cases(TREE).into_iter().chain(cases(BAD_TREE));
    for case in all {
        let raw = &case.raw;
        let mut mutants: Vec<(String, Vec<u8>)> = (0..raw.len())
            .map(|end| (format!("truncated at {end}"), raw[..end].to_vec()))
            .collect();
        for i in 0..raw.len() {
            let byte = DELIMITERS[i % DELIMITERS.len()];
            let mut mutant = raw.clone();
            if i % 2 == 0 {
                mutant[i] = byte;
            } else {
                mutant.insert(i, byte);
            }
            mutants.push((format!("{byte:#04x} at {i}"), mutant));
        }
        for (what, mutant) in mutants {
            tried += 1;
            match catch_unwind(AssertUnwindSafe(|| {
                normalizer().normalize_file(&case.relative, &mutant)
            })) {
                Err(_) => panics.push(format!("{}: {what}", case.key)),
                Ok(Ok(Some(event))) => {
                    let violations = schema_violations(&event);
                    if !violations.is_empty() {
                        invalid.push(format!("{}: {what}: {violations:?}", case.key));
                    }
                }
                Ok(_) => {}
            }
        }
    }
    assert!(tried > 5000, "only {tried} mutants");
    assert!(panics.is_empty(), "{panics:#?}");
    assert!(invalid.is_empty(), "{invalid:#?}");
}

/// A small deterministic generator (the tests need no randomness crate).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

#[test]
fn the_name_parser_never_panics_and_what_it_accepts_reads_back_the_same() {
    const ALPHABET: [char; 16] = [
        '_',
        '-',
        '/',
        '0',
        '1',
        '2',
        '9',
        'A',
        'z',
        '.',
        ' ',
        'é',
        '架',
        '\u{0}',
        '\u{1f600}',
        '\\',
    ];
    let seeds: Vec<String> = cases(TREE)
        .into_iter()
        .chain(cases(BAD_TREE))
        .map(|c| c.relative)
        .collect();
    let mut rng = Lcg(0x5eed);
    let (mut tried, mut accepted) = (0, 0);
    for round in 0..40_000 {
        let seed = &seeds[round % seeds.len()];
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..=rng.next(3) {
            let at = rng.next(chars.len() + 1);
            let c = ALPHABET[rng.next(ALPHABET.len())];
            match rng.next(5) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => chars.insert(at, c),
                2 if at < chars.len() => chars[at] = c,
                3 => chars.truncate(at),
                _ if at + 1 < chars.len() => chars.swap(at, at + 1),
                _ => {}
            }
        }
        let path: String = chars.into_iter().collect();
        let file_name = path.rsplit('/').next().unwrap_or_default().to_owned();
        tried += 1;
        let outcome = catch_unwind(|| {
            (
                StorageName::parse(&file_name),
                StorageName::parse_path(&path),
            )
        });
        let Ok((by_name, by_path)) = outcome else {
            panic!("the parser panicked on {path:?}");
        };
        if let Ok(name) = by_name {
            accepted += 1;
            assert_eq!(name.file_name(), file_name);
            assert_eq!(StorageName::parse(name.file_name()), Ok(name.clone()));
            assert_eq!(
                StorageName::parse_path(&name.relative_path()),
                Ok(name.clone())
            );
        }
        if let Ok(name) = by_path {
            assert_eq!(name.relative_path(), path, "{path:?}");
        }
    }
    assert_eq!(tried, 40_000);
    assert!(
        accepted > 1000,
        "only {accepted} mutants parsed: the mutations are too harsh"
    );
}

// ---------------------------------------------------------------------------------
// The poller against a storage tree.

/// What the recording sink was given.
#[derive(Debug, Clone)]
struct Received {
    adapter: String,
    peer: String,
    raw_len: usize,
    normalized: Result<CanonicalEvent, NormalizeError>,
}

impl Received {
    fn event(&self) -> &CanonicalEvent {
        self.normalized
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: refused: {e}", self.peer))
    }
}

/// An ingest sink that accepts every event and refuses every error, as the hub does,
/// and can play an unavailable hub.
#[derive(Default)]
struct RecordingSink {
    received: Mutex<Vec<Received>>,
    unavailable: AtomicBool,
    attempts: AtomicUsize,
}

impl RecordingSink {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn peers(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.peer).collect()
    }
}

#[async_trait::async_trait]
impl IngestSink for RecordingSink {
    async fn ingest(&self, input: ReceivedInput) -> IngestOutcome {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.unavailable.load(Ordering::SeqCst) {
            return IngestOutcome::Unavailable("the test's hub is down".to_owned());
        }
        let outcome = match &input.normalized {
            Ok(event) => IngestOutcome::Accepted {
                event_id: event.id,
                duplicate: false,
            },
            Err(error) => IngestOutcome::Rejected(error.clone()),
        };
        self.received.lock().unwrap().push(Received {
            adapter: input.source.adapter,
            peer: input.source.peer,
            raw_len: input.raw.len(),
            normalized: input.normalized,
        });
        outcome
    }
}

const SOURCE_NAME: &str = "his-storage";

/// The poller reads a folder: no sender presents a key.
struct NoKeys;

#[async_trait::async_trait]
impl SourceCredentials for NoKeys {
    async fn facility_of(&self, _key: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// A source state that remembers which keys were saved, in order.
#[derive(Default)]
struct RecordingState {
    values: MemoryState,
    saved: Mutex<Vec<String>>,
    /// Refuse every save, as a database that is down does.
    failing: AtomicBool,
}

impl RecordingState {
    fn take_saved(&self) -> Vec<String> {
        std::mem::take(&mut *self.saved.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl SourceState for RecordingState {
    async fn load(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.values.load(source, key).await
    }

    async fn save(&self, source: &str, key: &str, value: &[u8]) -> Result<(), String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("the test's database is down".to_owned());
        }
        self.saved.lock().unwrap().push(key.to_owned());
        self.values.save(source, key, value).await
    }
}

fn context<S: SourceState>(sink: &Arc<RecordingSink>, state: &Arc<S>) -> SourceContext {
    let sink: Arc<dyn IngestSink> = sink.clone();
    let state: Arc<dyn SourceState> = state.clone();
    SourceContext::new(
        SOURCE_NAME,
        sink,
        CancellationToken::new(),
        TimeWindow::default(),
        state,
        Arc::new(NoKeys),
    )
}

fn config(root: &Path) -> Ssmix2Config {
    let mut config = Ssmix2Config::new(root, FACILITY);
    config.settle_time = Duration::ZERO;
    config.poll_interval = Duration::from_millis(20);
    config
}

async fn poller<S: SourceState>(
    root: &Path,
    sink: &Arc<RecordingSink>,
    state: &Arc<S>,
) -> Ssmix2Poller {
    Ssmix2Poller::start(config(root), context(sink, state))
        .await
        .unwrap_or_else(|e| panic!("the poller does not start: {e}"))
}

async fn poll(poller: &mut Ssmix2Poller) -> PollSummary {
    poller.poll_once().await.expect("the poll ran")
}

/// A temporary copy of the sample storage tree.
fn sample_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary folder");
    copy_tree(&conformance().dir.join(TREE), dir.path());
    dir
}

/// The records of the sample tree the poller publishes, in time order: patient
/// 0000512001's four, and patient 7770012's A11 (its admission was deleted before the
/// poller saw it, so only the cancel message is published).
fn published_sample_records() -> Vec<String> {
    let mut records: Vec<(String, String)> = cases(TREE)
        .into_iter()
        .filter(|c| !is_skip(c))
        .map(|c| {
            (
                StorageName::parse_path(&c.relative)
                    .unwrap()
                    .occurred_at()
                    .to_string(),
                c.relative,
            )
        })
        .collect();
    records.sort();
    records.into_iter().map(|(_, path)| path).collect()
}

/// An HL7 v2.5 ADT record of a made-up patient, UTF-8.
fn record(patient: &str, trigger: &str, control_id: &str, evn_2: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS-N|{FACILITY}|GW|RCV|{evn_2}||ADT^{trigger}|{control_id}|P|2.5||||||UNICODE UTF-8\r\
         EVN||{evn_2}|||||{FACILITY}\r\
         PID|0001||{patient}^^^^PI||架空^次郎^^^^^L^I~カクウ^ジロウ^^^^^L^P||19500101|M\r\
         PV1|0001|I|5N^501^2^^^N||||||||01||||||||||||||||||||||||||||||||||202506020900\r"
    )
    .into_bytes()
}

/// The path of a made-up patient's ADT-22 record with a 発生日時 and a flag.
fn adt22(patient: &str, occurred: &str, flag: char) -> String {
    let name = format!("{patient}_20250602_ADT-22_999999999999999_{occurred}_01_{flag}");
    StorageName::parse(&name).unwrap().relative_path()
}

fn write(root: &Path, relative: &str, content: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[tokio::test]
async fn the_sample_tree_is_published_once_in_time_order_with_every_fact() {
    let tree = sample_tree();
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let mut poller = poller(tree.path(), &sink, &state).await;
    let first = poll(&mut poller).await;
    assert_eq!(
        (first.published, first.rejected, first.left),
        (5, 0, 0),
        "{first:?}"
    );
    // The OMP-01 folder is never entered; the admission deleted before the poller
    // saw it publishes nothing.
    assert_eq!(first.skipped, 1, "{first:?}");
    assert_eq!(sink.peers(), published_sample_records());
    let expected = &conformance().expected;
    for received in sink.received() {
        assert_eq!(received.adapter, SOURCE_NAME);
        assert!(received.raw_len > 0);
        let facts = expected[&format!("{TREE}/{}", received.peer)]
            .as_object()
            .unwrap();
        let (held, failures) = check_case(received.event(), facts);
        assert!(failures.is_empty(), "{}: {failures:#?}", received.peer);
        assert!(held >= 8, "{}", received.peer);
    }
    for _ in 0..2 {
        let again = poll(&mut poller).await;
        assert_eq!(
            again.published + again.rejected + again.skipped,
            0,
            "{again:?}"
        );
    }
    assert_eq!(sink.received().len(), 5, "nothing is handed over twice");
}

#[tokio::test]
async fn the_misfiled_record_is_handed_over_refused_once() {
    let tree = tempfile::tempdir().unwrap();
    copy_tree(&conformance().dir.join(BAD_TREE), tree.path());
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let mut poller = poller(tree.path(), &sink, &state).await;
    assert_eq!(poll(&mut poller).await.rejected, 1);
    assert_eq!(poll(&mut poller).await.rejected, 0);
    let received = sink.received();
    assert_eq!(received.len(), 1);
    let error = received[0].normalized.as_ref().expect_err("refused");
    assert_eq!(error.location.as_deref(), Some("PID-3"));
    // The refused bytes are kept for an operator.
    assert!(received[0].raw_len > 0);
}

#[tokio::test]
async fn a_restart_neither_hands_over_again_nor_misses_what_came_while_down() {
    let tree = sample_tree();
    let state = Arc::new(RecordingState::default());
    let first_sink = Arc::new(RecordingSink::default());
    {
        let mut poller = poller(tree.path(), &first_sink, &state).await;
        assert_eq!(poll(&mut poller).await.published, 5);
    }
    // The shards of the two patients, then the index.
    let shard = |patient: &str| shard_key(shard_of(patient));
    let mut shards = vec![shard("0000512001"), shard("7770012")];
    shards.sort();
    shards.push("snapshot".to_owned());
    assert_eq!(state.take_saved(), shards);
    // While the poller is down: a transfer of patient 0000512001, and a misnamed file.
    let transfer = "000/051/0000512001/20250520/ADT-42/\
                    0000512001_20250520_ADT-42_999999999999999_20250520100000000_01_1";
    write(
        tree.path(),
        transfer,
        &record("0000512001", "A02", "LATE-1", "20250520100000"),
    );
    let second_sink = Arc::new(RecordingSink::default());
    let mut poller = poller(tree.path(), &second_sink, &state).await;
    let summary = poll(&mut poller).await;
    assert_eq!(summary.published, 1, "{summary:?}");
    assert_eq!(second_sink.peers(), [transfer]);
    assert_eq!(
        second_sink.received()[0].event().data.origin.message_id,
        "LATE-1"
    );
    // Only the part of the tree that changed is saved again.
    assert_eq!(
        state.take_saved(),
        [shard("0000512001"), "snapshot".to_owned()]
    );
    poll(&mut poller).await;
    assert_eq!(second_sink.peers(), [transfer], "and nothing after it");
}

#[tokio::test]
async fn progress_that_could_not_be_saved_is_handed_over_again_never_lost() {
    let tree = sample_tree();
    let state = Arc::new(RecordingState::default());
    let sink = Arc::new(RecordingSink::default());
    {
        let mut poller = poller(tree.path(), &sink, &state).await;
        assert_eq!(poll(&mut poller).await.published, 5);
    }
    // The state store goes down; a record arrives and is published, but its progress
    // cannot be saved before the poller stops.
    state.failing.store(true, Ordering::SeqCst);
    let transfer = "000/051/0000512001/20250520/ADT-42/\
                    0000512001_20250520_ADT-42_999999999999999_20250520100000000_01_1";
    write(
        tree.path(),
        transfer,
        &record("0000512001", "A02", "LATE-1", "20250520100000"),
    );
    {
        let mut poller = poller(tree.path(), &sink, &state).await;
        assert_eq!(poll(&mut poller).await.published, 1);
    }
    state.failing.store(false, Ordering::SeqCst);
    // After the restart the record is handed over again (the hub recognises it),
    // and nothing else is.
    let mut poller = poller(tree.path(), &sink, &state).await;
    assert_eq!(poll(&mut poller).await.published, 1);
    assert_eq!(poll(&mut poller).await.published, 0);
    let mut expected = published_sample_records();
    expected.extend([transfer.to_owned(), transfer.to_owned()]);
    assert_eq!(sink.peers(), expected);
}

#[tokio::test]
async fn an_unavailable_hub_makes_the_poll_stop_and_loses_nothing() {
    let tree = sample_tree();
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let mut poller = poller(tree.path(), &sink, &state).await;
    sink.unavailable.store(true, Ordering::SeqCst);
    let down = poll(&mut poller).await;
    assert!(down.unavailable, "{down:?}");
    assert_eq!(down.published, 0);
    assert_eq!(
        sink.attempts.load(Ordering::SeqCst),
        1,
        "the poll stops at the first"
    );
    // A restart while the hub is down changes nothing either.
    drop(poller);
    let mut poller = self::poller(tree.path(), &sink, &state).await;
    sink.unavailable.store(false, Ordering::SeqCst);
    let up = poll(&mut poller).await;
    assert_eq!(up.published, 5, "{up:?}");
    assert_eq!(sink.peers(), published_sample_records());
}

#[tokio::test]
async fn a_poll_hands_over_at_most_its_limit_and_the_rest_next_time() {
    let tree = sample_tree();
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let mut config = config(tree.path());
    config.max_files_per_poll = 3;
    let mut poller = Ssmix2Poller::start(config, context(&sink, &state))
        .await
        .unwrap();
    let first = poll(&mut poller).await;
    assert_eq!(first.published + first.skipped, 3, "{first:?}");
    assert_eq!(first.left, 3);
    let second = poll(&mut poller).await;
    assert_eq!(second.published + second.skipped, 3, "{second:?}");
    assert_eq!(sink.peers(), published_sample_records());
}

#[tokio::test]
async fn a_published_admission_that_turns_deleted_is_one_cancellation() {
    let tree = tempfile::tempdir().unwrap();
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let mut poller = poller(tree.path(), &sink, &state).await;
    let admission = adt22("1234567", "20250602090000000", '1');
    write(
        tree.path(),
        &admission,
        &record("1234567", "A01", "ADM-1", "20250602090000"),
    );
    assert_eq!(poll(&mut poller).await.published, 1);

    // The hospital deletes the admission by its flag: one cancellation.
    let deleted = adt22("1234567", "20250602090000000", '0');
    std::fs::rename(tree.path().join(&admission), tree.path().join(&deleted)).unwrap();
    assert_eq!(poll(&mut poller).await.published, 1);
    let received = sink.received();
    assert_eq!(received[1].peer, deleted);
    let cancel = received[1].event();
    assert_eq!(cancel.event_type, EventType::InpatientCancelled);
    assert_eq!(cancel.data.cancels, Some(EventType::InpatientAdmitted));
    assert_eq!(cancel.data.origin.message_id, "ADM-1:deleted");
    assert_eq!(cancel.data.origin.format, SourceFormat::Ssmix2);
    assert!(schema_violations(cancel).is_empty());

    // Then writes the A11 beside it: nothing more is published.
    let a11 = adt22("1234567", "20250602093000000", '1');
    write(
        tree.path(),
        &a11,
        &record("1234567", "A11", "CAN-1", "20250602093000"),
    );
    let after = poll(&mut poller).await;
    assert_eq!((after.published, after.skipped), (0, 1), "{after:?}");
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test]
async fn an_a11_and_the_deletion_of_its_admission_are_one_cancellation_in_either_order() {
    let tree = tempfile::tempdir().unwrap();
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let mut poller = poller(tree.path(), &sink, &state).await;
    // Patient 2345678: the A11 and the deletion arrive together; the A11 is taken.
    // Patient 3456789: the A11 arrives first, the deletion a poll later.
    for patient in ["2345678", "3456789"] {
        write(
            tree.path(),
            &adt22(patient, "20250602090000000", '1'),
            &record(patient, "A01", &format!("ADM-{patient}"), "20250602090000"),
        );
    }
    assert_eq!(poll(&mut poller).await.published, 2);

    let delete = |patient: &str| {
        std::fs::rename(
            tree.path().join(adt22(patient, "20250602090000000", '1')),
            tree.path().join(adt22(patient, "20250602090000000", '0')),
        )
        .unwrap();
    };
    let cancel = |patient: &str| {
        write(
            tree.path(),
            &adt22(patient, "20250602093000000", '1'),
            &record(patient, "A11", &format!("CAN-{patient}"), "20250602093000"),
        );
    };
    cancel("2345678");
    delete("2345678");
    cancel("3456789");
    let together = poll(&mut poller).await;
    assert_eq!(together.published, 2, "{together:?}");
    delete("3456789");
    let later = poll(&mut poller).await;
    assert_eq!(later.published, 0, "{later:?}");

    let cancellations: Vec<(String, String)> = sink
        .received()
        .iter()
        .map(|r| r.event())
        .filter(|e| e.event_type == EventType::InpatientCancelled)
        .map(|e| {
            (
                e.data.patient.identifiers[0].value.clone(),
                e.data.origin.message_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        cancellations,
        [
            ("2345678".to_owned(), "CAN-2345678".to_owned()),
            ("3456789".to_owned(), "CAN-3456789".to_owned()),
        ]
    );
}

#[tokio::test]
async fn misnamed_misfiled_and_foreign_records_are_refused_and_work_files_ignored() {
    let tree = tempfile::tempdir().unwrap();
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let mut poller = poller(tree.path(), &sink, &state).await;
    let good = adt22("1234567", "20250602090000000", '1');
    let folder = good.rsplit_once('/').unwrap().0.to_owned();
    // Written under a temporary name: never read.
    write(tree.path(), &format!("{good}.part"), b"MSH|half");
    write(tree.path(), &format!("{folder}/.{}", "lock"), b"");
    // Not an SS-MIX2 name.
    write(tree.path(), &format!("{folder}/readme"), b"hello");
    // Another patient's record in this patient's folder.
    let misfiled = format!(
        "{folder}/{}",
        adt22("1234568", "20250602090000000", '1')
            .rsplit('/')
            .next()
            .unwrap()
    );
    write(
        tree.path(),
        &misfiled,
        &record("1234568", "A01", "X-1", "20250602090000"),
    );
    // Another hospital's record.
    let foreign = adt22("1234567", "20250602091500000", '1');
    let other_hospital = String::from_utf8(record("1234567", "A01", "X-2", "20250602091500"))
        .unwrap()
        .replace(FACILITY, "1329999999")
        .into_bytes();
    write(tree.path(), &foreign, &other_hospital);

    let summary = poll(&mut poller).await;
    assert_eq!((summary.published, summary.rejected), (0, 3), "{summary:?}");
    let locations: BTreeSet<(String, Option<String>)> = sink
        .received()
        .into_iter()
        .map(|r| (r.peer, r.normalized.err().and_then(|e| e.location)))
        .collect();
    assert_eq!(
        locations,
        BTreeSet::from([
            (format!("{folder}/readme"), Some("file name".to_owned())),
            (misfiled, Some("path".to_owned())),
            (foreign, Some("MSH-4".to_owned())),
        ])
    );
    // The finished file arrives under its final name.
    std::fs::rename(
        tree.path().join(format!("{good}.part")),
        tree.path().join(&good),
    )
    .unwrap();
    std::fs::write(
        tree.path().join(&good),
        record("1234567", "A01", "ADM-1", "20250602090000"),
    )
    .unwrap();
    assert_eq!(poll(&mut poller).await.published, 1);
    assert_eq!(sink.peers().last(), Some(&good));
}

#[tokio::test]
async fn the_source_kind_polls_until_shutdown() {
    let tree = sample_tree();
    let (sink, state) = (
        Arc::new(RecordingSink::default()),
        Arc::new(MemoryState::default()),
    );
    let kind: Box<dyn AnySource> = Box::new(Ssmix2Source);
    assert_eq!(kind.kind(), "ss-mix2");
    let settings = serde_json::json!({
        "root": tree.path(),
        "facility": FACILITY,
        "poll_interval": "20ms",
        "settle_time": "0s",
    });
    kind.check(&settings).unwrap();
    let misspelt =
        serde_json::json!({"root": tree.path(), "facility": FACILITY, "setle_time": "1s"});
    assert!(matches!(
        kind.check(&misspelt),
        Err(SourceError::Config { reason, .. }) if reason.contains("setle_time")
    ));
    let missing = serde_json::json!({"root": tree.path().join("nowhere"), "facility": FACILITY});
    assert!(matches!(
        kind.build(missing, context(&sink, &state)).await,
        Err(SourceError::Start(why)) if why.contains("root")
    ));

    let context = context(&sink, &state);
    let shutdown = context.shutdown.clone();
    let running = tokio::spawn(kind.build(settings, context).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sink.received().len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {:?} after 20s",
            sink.peers()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A few more polls hand nothing over again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the source stops on shutdown")
        .expect("the task did not panic");
    assert_eq!(stopped, Ok(()));
    assert_eq!(sink.peers(), published_sample_records());
}
