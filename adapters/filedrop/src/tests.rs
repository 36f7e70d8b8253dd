// A failed unwrap on a fixture is a test failure, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use renkei_sdk::samples::minimal_event;
use renkei_sdk::{CanonicalEvent, TimeWindow, facility_source};

use super::*;

const FACILITY: &str = "1379999999";

/// `<facility>,<id>` per line; a line `bad` is refused naming it.
struct Lines;

impl FileFormat for Lines {
    fn name(&self) -> &'static str {
        "lines"
    }
    fn recognizes(&self, file_name: &str, _head: &[u8]) -> bool {
        file_name.ends_with(".txt")
    }
    fn read(
        &self,
        file_name: &str,
        raw: &[u8],
        _window: &TimeWindow,
    ) -> Result<Vec<CanonicalEvent>, NormalizeError> {
        let text = std::str::from_utf8(raw).map_err(|_| NormalizeError::whole("not UTF-8"))?;
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                let (facility, id) = line
                    .split_once(',')
                    .ok_or_else(|| NormalizeError::at(format!("line {}", i + 1), "no comma"))?;
                let mut event = minimal_event();
                event.source = facility_source(facility);
                event.data.origin.facility = Some(facility.to_owned());
                event.data.origin.message_id = format!("{file_name}#{id}");
                Ok(event)
            })
            .collect()
    }
}

/// Records what it is given; answers as told.
#[derive(Default)]
struct Sink {
    inputs: Mutex<Vec<ReceivedInput>>,
    unavailable: Mutex<bool>,
    published: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl IngestSink for Sink {
    async fn ingest(&self, input: ReceivedInput) -> IngestOutcome {
        let outcome = if *self.unavailable.lock().unwrap() {
            IngestOutcome::Unavailable("the bus is down".into())
        } else {
            match &input.normalized {
                Ok(event) => {
                    let mut published = self.published.lock().unwrap();
                    let id = event.data.origin.message_id.clone();
                    let duplicate = published.contains(&id);
                    if !duplicate {
                        published.push(id);
                    }
                    IngestOutcome::Accepted {
                        event_id: event.id,
                        duplicate,
                    }
                }
                Err(e) => IngestOutcome::Rejected(e.clone()),
            }
        };
        self.inputs.lock().unwrap().push(input);
        outcome
    }
}

fn folder(dir: &Path) -> DropFolder {
    let config = FileDropConfig {
        folder: dir.to_path_buf(),
        facility: FACILITY.to_owned(),
        archive: None,
        rejected: None,
        poll_interval: Duration::from_millis(10),
        settle: Duration::ZERO,
        formats: None,
        max_file_bytes: 1024,
    };
    for sub in ["archive", "rejected"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    DropFolder::new(
        vec![Box::new(Lines)],
        config,
        "office-drop",
        TimeWindow::default(),
    )
}

async fn poll(drop: &mut DropFolder, sink: &Sink) -> Vec<(String, FileOutcome)> {
    drop.poll(sink, SystemTime::now()).await
}

#[tokio::test]
async fn a_file_still_being_written_is_read_only_once_it_stands_still() {
    let dir = tempfile::tempdir().unwrap();
    let mut drop = folder(dir.path());
    let sink = Sink::default();
    let path = dir.path().join("a.txt");
    std::fs::write(&path, format!("{FACILITY},1\n")).unwrap();
    assert!(
        poll(&mut drop, &sink).await.is_empty(),
        "first sight: not yet"
    );
    std::fs::write(&path, format!("{FACILITY},1\n{FACILITY},2\n")).unwrap();
    assert!(poll(&mut drop, &sink).await.is_empty(), "it grew: not yet");
    let outcomes = poll(&mut drop, &sink).await;
    assert_eq!(
        outcomes,
        [("a.txt".to_owned(), FileOutcome::Archived { events: 2 })]
    );
    assert!(dir.path().join("archive/a.txt").is_file());
    assert!(!path.exists());
}

#[tokio::test]
async fn upload_names_are_left_alone_until_renamed_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut drop = folder(dir.path());
    let sink = Sink::default();
    for name in [
        ".a.txt",
        "a.txt.part",
        "a.txt.filepart",
        "a.txt.tmp",
        "a.txt~",
    ] {
        std::fs::write(dir.path().join(name), format!("{FACILITY},1\n")).unwrap();
    }
    poll(&mut drop, &sink).await;
    assert!(poll(&mut drop, &sink).await.is_empty());
    assert!(sink.inputs.lock().unwrap().is_empty());
    std::fs::rename(dir.path().join("a.txt.part"), dir.path().join("a.txt")).unwrap();
    poll(&mut drop, &sink).await;
    let outcomes = poll(&mut drop, &sink).await;
    assert_eq!(outcomes.len(), 1);
}

#[tokio::test]
async fn a_refused_file_moves_aside_with_its_reason_and_the_good_one_beside_it_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut drop = folder(dir.path());
    let sink = Sink::default();
    std::fs::write(
        dir.path().join("bad.txt"),
        format!("{FACILITY},1\nno comma here\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("good.txt"), format!("{FACILITY},1\n")).unwrap();
    std::fs::write(dir.path().join("what.bin"), b"?").unwrap();
    poll(&mut drop, &sink).await;
    let mut outcomes = poll(&mut drop, &sink).await;
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(
        outcomes[0],
        (
            "bad.txt".to_owned(),
            FileOutcome::Rejected("line 2: no comma".to_owned())
        )
    );
    assert_eq!(outcomes[1].1, FileOutcome::Archived { events: 1 });
    assert!(matches!(&outcomes[2].1, FileOutcome::Rejected(why) if why.contains("formats: lines")));
    let reason = std::fs::read_to_string(dir.path().join("rejected/bad.txt.reason.txt")).unwrap();
    assert_eq!(reason, "line 2: no comma\n");
    assert!(dir.path().join("rejected/bad.txt").is_file());
    assert!(dir.path().join("archive/good.txt").is_file());
    // The hub was handed the refused file's bytes, whole, to keep.
    let inputs = sink.inputs.lock().unwrap();
    let kept = inputs
        .iter()
        .find(|i| i.normalized.is_err() && i.source.peer == "bad.txt");
    assert_eq!(
        kept.map(|i| i.raw.to_vec()),
        Some(format!("{FACILITY},1\nno comma here\n").into_bytes())
    );
    assert!(inputs.iter().all(|i| i.source.adapter == "office-drop"));
}

#[tokio::test]
async fn the_same_file_dropped_twice_is_published_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut drop = folder(dir.path());
    let sink = Sink::default();
    for _ in 0..2 {
        std::fs::write(dir.path().join("a.txt"), format!("{FACILITY},1\n")).unwrap();
        poll(&mut drop, &sink).await;
        poll(&mut drop, &sink).await;
    }
    assert_eq!(sink.published.lock().unwrap().len(), 1);
    assert_eq!(sink.inputs.lock().unwrap().len(), 2);
    assert!(dir.path().join("archive/a.txt").is_file());
    assert!(dir.path().join("archive/a.txt.1").is_file());
}

#[tokio::test]
async fn when_the_hub_cannot_take_a_file_it_stays_and_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut drop = folder(dir.path());
    let sink = Sink::default();
    std::fs::write(dir.path().join("a.txt"), format!("{FACILITY},1\n")).unwrap();
    poll(&mut drop, &sink).await;
    *sink.unavailable.lock().unwrap() = true;
    let outcomes = poll(&mut drop, &sink).await;
    assert!(matches!(outcomes[..], [(_, FileOutcome::Retry(_))]));
    assert!(
        dir.path().join("a.txt").is_file(),
        "the file waits in place"
    );
    *sink.unavailable.lock().unwrap() = false;
    let outcomes = poll(&mut drop, &sink).await;
    assert_eq!(outcomes[0].1, FileOutcome::Archived { events: 1 });
}

#[tokio::test]
async fn a_file_naming_another_facility_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut drop = folder(dir.path());
    let sink = Sink::default();
    std::fs::write(dir.path().join("a.txt"), "1379999990,1\n").unwrap();
    poll(&mut drop, &sink).await;
    let outcomes = poll(&mut drop, &sink).await;
    assert!(
        matches!(&outcomes[0].1, FileOutcome::Rejected(why) if why.contains("publishes for facility 1379999999 only")),
        "{outcomes:?}"
    );
    assert!(sink.published.lock().unwrap().is_empty());
}

#[test]
fn settings_name_what_is_wrong() {
    let kind = FileDropSource::new(vec![Box::new(Lines)]);
    let mut config: FileDropConfig = serde_json::from_value(serde_json::json!({
        "folder": "/tmp/x", "facility": FACILITY
    }))
    .unwrap();
    assert_eq!(Source::check(&kind, &config), Ok(()));
    config.formats = Some(vec!["telex".into()]);
    assert!(matches!(
        Source::check(&kind, &config),
        Err(SourceError::Config { setting, reason }) if setting == "formats" && reason.contains("known: lines")
    ));
    config.formats = None;
    config.facility = "137".into();
    assert!(Source::check(&kind, &config).is_err());
    // An environment variable's value arrives as a number: its leading zero comes back.
    let from_env: FileDropConfig = serde_json::from_value(serde_json::json!({
        "folder": "/tmp/x", "facility": 112_345_678
    }))
    .unwrap();
    assert_eq!(from_env.facility, "0112345678");
}
