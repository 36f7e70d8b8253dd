//! Drop folders: a source (`type = "file_drop"`) for facilities that export files
//! rather than run servers — a care office's software writing a CSV into a folder the
//! hub watches, by SFTP, a shared folder or a scheduled export.
//!
//! One folder per facility. Every poll the source lists the folder (not its
//! sub-folders) and reads each file that has **settled**: a name that is not an
//! upload in progress (`.name`, `*.tmp`, `*.part`, `*.filepart`, `*~`), and a size and
//! modification time unchanged since the previous poll and older than `settle`. So a
//! file still being written is never read early, whether the writer renames it into
//! place or writes it slowly under its final name.
//!
//! A settled file is recognised by one of the hub's [file formats](FileFormat) and read
//! whole into its events; each event goes to the hub's ingest, in the file's order:
//!
//! - every event accepted (or a duplicate of one accepted before): the file moves to
//!   `archive/`. The same file dropped again is accepted as a duplicate and published
//!   once (events are keyed by file name and row);
//! - the file unreadable, or refused by the ingest: the file moves to `rejected/` with
//!   `<file>.reason.txt` beside it, and the hub keeps its bytes and the reason (see
//!   `renkei rejected`). A file is read whole or not at all, so one bad row refuses
//!   its file and never another file;
//! - the hub unavailable: the file stays where it is and is tried again next poll;
//!   events of it already accepted are then duplicates, published once.
//!
//! A file whose events name another facility than the folder's is refused: a folder
//! publishes for its own facility only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use renkei_sdk::file::{FileFormat, check_window};
use renkei_sdk::source::{RunningSource, Source, SourceContext, SourceError};
use renkei_sdk::{IngestOutcome, IngestSink, InputSource, NormalizeError, ReceivedInput};
use serde::Deserialize;

/// The source kind's `type`.
pub const KIND: &str = "file_drop";

/// Settings of a drop folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDropConfig {
    /// The folder the facility writes into.
    pub folder: PathBuf,
    /// The 10-digit code of the facility the folder belongs to.
    #[serde(deserialize_with = "renkei_sdk::source::facility_code")]
    pub facility: String,
    /// Where accepted files go (default `<folder>/archive`).
    #[serde(default)]
    pub archive: Option<PathBuf>,
    /// Where refused files go, each with a `.reason.txt` (default `<folder>/rejected`).
    #[serde(default)]
    pub rejected: Option<PathBuf>,
    /// How often the folder is listed.
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A file is read once its size and time stood still this long.
    #[serde(default = "defaults::settle", with = "humantime_serde")]
    pub settle: Duration,
    /// The formats this folder takes, by name (default: every format the hub reads).
    #[serde(default)]
    pub formats: Option<Vec<String>>,
    /// Files larger than this are refused unread.
    #[serde(default = "defaults::max_file_bytes")]
    pub max_file_bytes: u64,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn poll_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn settle() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn max_file_bytes() -> u64 {
        64 * 1024 * 1024
    }
}

impl FileDropConfig {
    fn archive_folder(&self) -> PathBuf {
        self.archive
            .clone()
            .unwrap_or_else(|| self.folder.join("archive"))
    }

    fn rejected_folder(&self) -> PathBuf {
        self.rejected
            .clone()
            .unwrap_or_else(|| self.folder.join("rejected"))
    }
}

/// The drop-folder source kind, reading the formats it is given.
pub struct FileDropSource {
    formats: Arc<Vec<Box<dyn FileFormat>>>,
}

impl FileDropSource {
    /// A kind that reads `formats` (the hub's list of file formats).
    pub fn new(formats: Vec<Box<dyn FileFormat>>) -> Self {
        Self {
            formats: Arc::new(formats),
        }
    }
}

#[async_trait::async_trait]
impl Source for FileDropSource {
    const KIND: &'static str = KIND;
    type Config = FileDropConfig;

    fn check(&self, config: &FileDropConfig) -> Result<(), SourceError> {
        if config.facility.len() != 10 || !config.facility.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SourceError::config("facility", "must be a 10-digit code"));
        }
        if config.poll_interval.is_zero() {
            return Err(SourceError::config(
                "poll_interval",
                "must be longer than 0s",
            ));
        }
        if let Some(wanted) = &config.formats {
            let known: Vec<&str> = self.formats.iter().map(|f| f.name()).collect();
            if let Some(unknown) = wanted.iter().find(|w| !known.contains(&w.as_str())) {
                return Err(SourceError::config(
                    "formats",
                    format!(
                        "`{unknown}` is not a file format (known: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn build(
        &self,
        config: FileDropConfig,
        context: SourceContext,
    ) -> Result<RunningSource, SourceError> {
        for folder in [
            config.folder.clone(),
            config.archive_folder(),
            config.rejected_folder(),
        ] {
            tokio::fs::create_dir_all(&folder).await.map_err(|e| {
                SourceError::Start(format!("cannot use the folder {}: {e}", folder.display()))
            })?;
        }
        tracing::info!(source = %context.name, folder = %config.folder.display(), "drop folder watched");
        let mut folder = DropFolder {
            formats: self.formats.clone(),
            config,
            name: context.name.clone(),
            window: context.time_window,
            seen: HashMap::new(),
        };
        let (sink, shutdown) = (context.sink, context.shutdown);
        Ok(Box::pin(async move {
            loop {
                folder.poll(sink.as_ref(), SystemTime::now()).await;
                tokio::select! {
                    () = tokio::time::sleep(folder.config.poll_interval) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        }))
    }
}

/// A file's size and modification time, as one poll saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: SystemTime,
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Every event accepted; the file is archived.
    Archived {
        /// Events in the file (duplicates included).
        events: usize,
    },
    /// Refused; the file is in the rejected folder with its reason.
    Rejected(String),
    /// The hub could not take it now; the file stays for the next poll.
    Retry(String),
}

/// One watched folder and what the last poll saw in it.
pub struct DropFolder {
    formats: Arc<Vec<Box<dyn FileFormat>>>,
    config: FileDropConfig,
    name: String,
    window: renkei_sdk::TimeWindow,
    seen: HashMap<PathBuf, Seen>,
}

/// A name an uploader uses while the file is still being written.
fn in_progress(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".filepart", ".partial", ".crdownload"]
            .iter()
            .any(|suffix| lower.ends_with(suffix))
        || lower.ends_with(".reason.txt")
}

impl DropFolder {
    /// A folder read with `formats`, for tests and tools that poll by hand.
    pub fn new(
        formats: Vec<Box<dyn FileFormat>>,
        config: FileDropConfig,
        name: &str,
        window: renkei_sdk::TimeWindow,
    ) -> Self {
        Self {
            formats: Arc::new(formats),
            config,
            name: name.to_owned(),
            window,
            seen: HashMap::new(),
        }
    }

    /// Lists the folder once and handles every settled file, oldest first; returns
    /// what became of each handled file.
    pub async fn poll(
        &mut self,
        sink: &dyn IngestSink,
        now: SystemTime,
    ) -> Vec<(String, FileOutcome)> {
        let listed = match self.settled(now).await {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot list the drop folder; trying again next poll");
                return Vec::new();
            }
        };
        let mut outcomes = Vec::new();
        for (path, name) in listed {
            let outcome = self.handle(sink, &path, &name).await;
            if let FileOutcome::Retry(why) = &outcome {
                tracing::info!(source = %self.name, file = %name, reason = %why, "the hub cannot take the file now; trying again next poll");
                outcomes.push((name, outcome));
                // Later files wait too, so files are taken in the order they came.
                break;
            }
            self.seen.remove(&path);
            outcomes.push((name, outcome));
        }
        outcomes
    }

    /// The settled files, oldest first.
    async fn settled(&mut self, now: SystemTime) -> std::io::Result<Vec<(PathBuf, String)>> {
        let mut entries = tokio::fs::read_dir(&self.config.folder).await?;
        let mut present = HashMap::new();
        let mut ready = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if in_progress(&name) {
                continue;
            }
            let path = entry.path();
            let seen = Seen {
                len: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            };
            let still = self.seen.get(&path) == Some(&seen);
            let old_enough = now
                .duration_since(seen.modified)
                .is_ok_and(|age| age >= self.config.settle);
            if still && old_enough {
                ready.push((seen.modified, path.clone(), name));
            }
            present.insert(path, seen);
        }
        // Forget files that went away; remember the rest for the next poll.
        self.seen = present;
        ready.sort();
        Ok(ready
            .into_iter()
            .map(|(_, path, name)| (path, name))
            .collect())
    }

    async fn handle(&self, sink: &dyn IngestSink, path: &Path, name: &str) -> FileOutcome {
        let raw = match tokio::fs::read(path).await {
            Ok(raw) => bytes::Bytes::from(raw),
            Err(e) => return FileOutcome::Retry(format!("cannot read the file: {e}")),
        };
        let source = InputSource {
            adapter: self.name.clone(),
            peer: name.to_owned(),
        };
        let events = self.read(name, &raw);
        let events = match events {
            Ok(events) => events,
            Err(error) => {
                let input = ReceivedInput {
                    source,
                    raw,
                    normalized: Err(error),
                };
                return match sink.ingest(input).await {
                    IngestOutcome::Rejected(error) => self.reject(path, name, &error).await,
                    IngestOutcome::Unavailable(why) => FileOutcome::Retry(why),
                    IngestOutcome::Accepted { .. } => FileOutcome::Retry(
                        "the hub accepted a file it was told is refused".to_owned(),
                    ),
                };
            }
        };
        let count = events.len();
        for event in events {
            let input = ReceivedInput {
                source: source.clone(),
                raw: raw.clone(),
                normalized: Ok(event),
            };
            match sink.ingest(input).await {
                IngestOutcome::Accepted { .. } => {}
                IngestOutcome::Rejected(error) => return self.reject(path, name, &error).await,
                IngestOutcome::Unavailable(why) => return FileOutcome::Retry(why),
            }
        }
        match move_aside(path, &self.config.archive_folder(), name).await {
            Ok(_) => FileOutcome::Archived { events: count },
            Err(e) => {
                // Accepted, but still in the folder: the next poll's copy is a duplicate.
                tracing::warn!(source = %self.name, file = %name, error = %e, "accepted but cannot archive the file");
                FileOutcome::Archived { events: count }
            }
        }
    }

    /// The file's events, checked against the folder's facility and the time window.
    fn read(
        &self,
        name: &str,
        raw: &[u8],
    ) -> Result<Vec<renkei_sdk::CanonicalEvent>, NormalizeError> {
        if raw.len() as u64 > self.config.max_file_bytes {
            return Err(NormalizeError::whole(format!(
                "the file is {} bytes, more than this folder takes ({} bytes, max_file_bytes)",
                raw.len(),
                self.config.max_file_bytes
            )));
        }
        let allowed: Vec<&dyn FileFormat> = self
            .formats
            .iter()
            .filter(|f| {
                self.config
                    .formats
                    .as_ref()
                    .is_none_or(|wanted| wanted.iter().any(|w| w == f.name()))
            })
            .map(AsRef::as_ref)
            .collect();
        let head = &raw[..raw.len().min(4096)];
        let format = allowed
            .iter()
            .find(|f| f.recognizes(name, head))
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|f| f.name()).collect();
                NormalizeError::whole(format!(
                    "not a file this folder takes (formats: {}); check the file's name and contents",
                    names.join(", ")
                ))
            })?;
        let events = format.read(name, raw, &self.window)?;
        for event in &events {
            check_window(event, &self.window)?;
            let claimed = event
                .data
                .origin
                .facility
                .as_deref()
                .or_else(|| event.source_facility());
            if claimed != Some(self.config.facility.as_str()) {
                return Err(NormalizeError::whole(format!(
                    "this folder publishes for facility {} only, and the file names {}: \
                     put it in that facility's folder",
                    self.config.facility,
                    claimed.unwrap_or("no facility")
                )));
            }
        }
        Ok(events)
    }

    async fn reject(&self, path: &Path, name: &str, error: &NormalizeError) -> FileOutcome {
        let reason = error.to_string();
        let folder = self.config.rejected_folder();
        match move_aside(path, &folder, name).await {
            Ok(moved) => {
                let mut note = moved.into_os_string();
                note.push(".reason.txt");
                if let Err(e) = tokio::fs::write(&note, format!("{reason}\n")).await {
                    tracing::warn!(source = %self.name, file = %name, error = %e, "cannot write the reason file");
                }
            }
            Err(e) => {
                tracing::warn!(source = %self.name, file = %name, error = %e, "refused but cannot move the file aside");
            }
        }
        tracing::info!(source = %self.name, file = %name, "file refused; kept with its reason");
        FileOutcome::Rejected(reason)
    }
}

/// Moves `path` into `folder` under its name, or `name.1`, `name.2`… when taken.
async fn move_aside(path: &Path, folder: &Path, name: &str) -> std::io::Result<PathBuf> {
    let mut target = folder.join(name);
    let mut n = 0;
    while tokio::fs::try_exists(&target).await? {
        n += 1;
        target = folder.join(format!("{name}.{n}"));
    }
    tokio::fs::rename(path, &target).await?;
    Ok(target)
}

#[cfg(test)]
mod tests;
