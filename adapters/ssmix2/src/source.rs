//! The SS-MIX2 poller as a source: `[sources.<name>]` with `type = "ss-mix2"`.
//!
//! ```toml
//! [sources.his-storage]
//! type = "ss-mix2"
//! root = "/mnt/ssmix2/standard"   # the standardized storage root of one hospital
//! facility = "1319999995"         # its 10-digit 医療機関コード; MSH-4 must say the same
//! poll_interval = "10s"           # between the end of a poll and the next
//! settle_time = "5s"              # a file this old is complete even if seen only once
//! max_files_per_poll = 1000       # handed over per poll, before progress is saved
//! ```
//!
//! Each poll runs the [`Scanner`], hands every ready record to the ingest sink as a
//! [`ReceivedInput`] (adapter: the source's name; peer: the record's path below the
//! root) and records its progress only once the sink answered `Accepted` or `Rejected`.
//! An `Unavailable` answer ends the poll: the record and everything after it are handed
//! over again at the next poll, nothing is skipped. After the poll what changed of the
//! [`Snapshot`] is saved in the source's state: the shards of the patients that changed
//! (`snapshot/0000` … `snapshot/1023`), then the index ([`SNAPSHOT_KEY`]). It is loaded
//! at start, so a restart neither hands over again what was answered nor misses what
//! arrived while the poller was down.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use renkei_sdk::source::{RunningSource, Source, SourceContext, SourceError, SourceState};
use renkei_sdk::{
    CanonicalEvent, EventType, IngestOutcome, IngestSink, InputSource, NormalizeError,
    ReceivedInput,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::normalize::{FileVerdict, Ssmix2Normalizer};
pub use crate::scan::SNAPSHOT_KEY;
use crate::scan::{
    CancelPlan, DeletionPlan, Finished, PollStats, Scanner, Snapshot, Work, WorkKind, shard_key,
};

/// The `type` of an SS-MIX2 source section.
pub const KIND: &str = "ss-mix2";
/// The largest record file read; an ADT message is a few kilobytes, so a larger file
/// is refused (and kept without its content) rather than read into memory.
pub const MAX_RECORD_BYTES: u64 = 1024 * 1024;

/// Settings of an SS-MIX2 source. `root` and `facility` are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssmix2Config {
    /// The standardized storage root (the folder holding the `000/`, `001/` … folders).
    pub root: PathBuf,
    /// The 10-digit code (医療機関コード) of the hospital whose storage it is; every
    /// record's `MSH-4` must name it.
    #[serde(deserialize_with = "renkei_sdk::source::facility_code")]
    pub facility: String,
    /// The pause between the end of one poll and the start of the next.
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A file whose modification time is at least this old is handed over the first
    /// time it is seen; a younger one once its size and time did not change for a poll.
    #[serde(default = "defaults::settle_time", with = "humantime_serde")]
    pub settle_time: Duration,
    /// Records handed over per poll at most; the rest wait for the next poll. Progress
    /// is saved after each poll, so this bounds what a crash makes the poller resend.
    #[serde(default = "defaults::max_files_per_poll")]
    pub max_files_per_poll: usize,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn poll_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn settle_time() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn max_files_per_poll() -> usize {
        1000
    }
}

impl Ssmix2Config {
    /// The settings with every default, for the storage at `root` of `facility`.
    pub fn new(root: impl Into<PathBuf>, facility: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            facility: facility.into(),
            poll_interval: defaults::poll_interval(),
            settle_time: defaults::settle_time(),
            max_files_per_poll: defaults::max_files_per_poll(),
        }
    }

    /// Settings that parse but cannot work.
    pub fn validate(&self) -> Result<(), SourceError> {
        if self.root.as_os_str().is_empty() {
            return Err(SourceError::config(
                "root",
                "is empty: name the SS-MIX2 standardized storage folder",
            ));
        }
        if self.facility.len() != 10 || !self.facility.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SourceError::config(
                "facility",
                "must be the 10-digit 医療機関コード of the hospital whose storage this is",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(SourceError::config(
                "poll_interval",
                "must be longer than 0s",
            ));
        }
        if self.max_files_per_poll == 0 {
            return Err(SourceError::config(
                "max_files_per_poll",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The SS-MIX2 source kind.
pub struct Ssmix2Source;

#[async_trait::async_trait]
impl Source for Ssmix2Source {
    const KIND: &'static str = KIND;
    type Config = Ssmix2Config;

    fn check(&self, config: &Ssmix2Config) -> Result<(), SourceError> {
        config.validate()
    }

    async fn build(
        &self,
        config: Ssmix2Config,
        context: SourceContext,
    ) -> Result<RunningSource, SourceError> {
        let interval = config.poll_interval;
        let shutdown = context.shutdown.clone();
        let mut poller = Ssmix2Poller::start(config, context).await?;
        Ok(Box::pin(async move {
            while !shutdown.is_cancelled() {
                poller.poll_once().await?;
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
            Ok(())
        }))
    }
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollSummary {
    /// Events the hub accepted.
    pub published: usize,
    /// Inputs the hub refused (and kept).
    pub rejected: usize,
    /// Records that publish nothing (not published, deleted first, already cancelled).
    pub skipped: usize,
    /// Ready records left for the next poll (the per-poll limit, or the hub was
    /// unavailable, or shutdown).
    pub left: usize,
    /// The hub answered `Unavailable` and the poll stopped.
    pub unavailable: bool,
    /// The storage root could not be read.
    pub storage_unreadable: bool,
    /// What the scan did.
    pub scan: PollStats,
}

/// The poller behind [`Ssmix2Source`]: one poll at a time, for the source's loop and
/// for tests that want each poll under their control.
pub struct Ssmix2Poller {
    name: String,
    root: PathBuf,
    max_files_per_poll: usize,
    scanner: Arc<Mutex<Scanner>>,
    normalizer: Ssmix2Normalizer,
    sink: Arc<dyn IngestSink>,
    state: Arc<dyn SourceState>,
    shutdown: CancellationToken,
}

/// How handing one piece of work over went.
enum Step {
    Published,
    Rejected,
    Skipped,
    /// Not finished: try again at the next poll.
    Later,
    /// The hub is unavailable: stop the poll.
    Stop,
}

fn locked(scanner: &Mutex<Scanner>) -> MutexGuard<'_, Scanner> {
    // A panic while holding the lock leaves a usable scanner: every update is a whole
    // step, and a half-updated snapshot only makes work ready again.
    scanner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ssmix2Poller {
    /// Checks the settings and the root, and loads the saved snapshot.
    pub async fn start(config: Ssmix2Config, context: SourceContext) -> Result<Self, SourceError> {
        config.validate()?;
        match std::fs::metadata(&config.root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(SourceError::Start(format!(
                    "the SS-MIX2 storage root {} (root) is not a folder",
                    config.root.display()
                )));
            }
            Err(e) => {
                return Err(SourceError::Start(format!(
                    "cannot read the SS-MIX2 storage root {} (root): {e}",
                    config.root.display()
                )));
            }
        }
        let snapshot = load_snapshot(context.state.as_ref(), &context.name).await?;
        tracing::info!(
            source = %context.name,
            root = %config.root.display(),
            files = snapshot.file_count(),
            "SS-MIX2 poller ready"
        );
        let scanner =
            Scanner::new(config.root.clone(), snapshot).with_settle_time(config.settle_time);
        Ok(Self {
            name: context.name,
            root: config.root,
            max_files_per_poll: config.max_files_per_poll,
            scanner: Arc::new(Mutex::new(scanner)),
            normalizer: Ssmix2Normalizer::with_time_window(context.time_window)
                .for_facility(config.facility),
            sink: context.sink,
            state: context.state,
            shutdown: context.shutdown,
        })
    }

    /// One poll: scan, hand over what is ready, save the snapshot. Fails only when a
    /// blocking task panicked.
    pub async fn poll_once(&mut self) -> Result<PollSummary, SourceError> {
        let mut summary = PollSummary::default();
        let scanner = Arc::clone(&self.scanner);
        let scanned = tokio::task::spawn_blocking(move || locked(&scanner).poll(SystemTime::now()))
            .await
            .map_err(|e| SourceError::Failed(format!("the SS-MIX2 scan stopped: {e}")))?;
        let poll = match scanned {
            Ok(poll) => poll,
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot poll the SS-MIX2 storage; trying again at the next poll");
                summary.storage_unreadable = true;
                return Ok(summary);
            }
        };
        summary.scan = poll.stats;
        let total = poll.work.len();
        for work in poll.work.iter().take(self.max_files_per_poll) {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.hand_over(work).await? {
                Step::Published => summary.published += 1,
                Step::Rejected => summary.rejected += 1,
                Step::Skipped => summary.skipped += 1,
                Step::Later => {}
                Step::Stop => {
                    summary.unavailable = true;
                    break;
                }
            }
        }
        summary.left = total - summary.published - summary.rejected - summary.skipped;
        self.save().await?;
        if summary.published + summary.rejected > 0 || summary.unavailable {
            tracing::info!(
                source = %self.name,
                published = summary.published,
                rejected = summary.rejected,
                skipped = summary.skipped,
                left = summary.left,
                unavailable = summary.unavailable,
                "SS-MIX2 poll"
            );
        }
        Ok(summary)
    }

    /// Saves what changed of the snapshot: the shards, then the index. A failure is
    /// logged and the save retried after the next poll (a restart before then hands
    /// over again what the hub already has, which its deduplication recognises).
    async fn save(&self) -> Result<(), SourceError> {
        let scanner = Arc::clone(&self.scanner);
        let delta = tokio::task::spawn_blocking(move || locked(&scanner).take_delta())
            .await
            .map_err(|e| {
                SourceError::Failed(format!("saving the SS-MIX2 snapshot stopped: {e}"))
            })?;
        let delta = match delta {
            Ok(Some(delta)) => delta,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!(source = %self.name, error = %e, "cannot serialise the SS-MIX2 snapshot");
                return Ok(());
            }
        };
        for (key, value) in delta.entries() {
            if let Err(e) = self.state.save(&self.name, key, value).await {
                tracing::warn!(source = %self.name, key, error = %e, "cannot save the SS-MIX2 poller's progress; trying again after the next poll");
                locked(&self.scanner).unsaved(delta);
                return Ok(());
            }
        }
        Ok(())
    }

    fn finish(&self, work: &Work, finished: Finished) {
        locked(&self.scanner).finish(work, finished);
    }

    async fn hand_over(&self, work: &Work) -> Result<Step, SourceError> {
        let path = work.relative_path();
        match work.kind() {
            WorkKind::Deleted => {
                // Bound first: a guard in an `if let` scrutinee would live through the
                // block, which locks again to finish.
                let plan = locked(&self.scanner).deletion_plan(work);
                if let DeletionPlan::Nothing(reason) = plan {
                    tracing::debug!(source = %self.name, path = %crate::log_ref(path), reason, "deleted SS-MIX2 record publishes nothing");
                    self.finish(work, Finished::Nothing);
                    return Ok(Step::Skipped);
                }
                let (Some(name), Some(observed_at)) = (work.name(), work.first_listed_at()) else {
                    self.finish(work, Finished::Nothing);
                    return Ok(Step::Skipped);
                };
                let raw = match self.read(work).await? {
                    None => return Ok(Step::Later),
                    Some(Ok(raw)) => raw,
                    Some(Err((raw, error))) => return self.send(work, raw, Err(error)).await,
                };
                match self.normalizer.deletion_of(name, &raw, observed_at) {
                    Ok(None) => {
                        self.finish(work, Finished::Nothing);
                        Ok(Step::Skipped)
                    }
                    Ok(Some(event)) => self.send(work, raw, Ok(event)).await,
                    Err(error) => self.send(work, raw, Err(error)).await,
                }
            }
            WorkKind::Record => {
                let raw = match self.read(work).await? {
                    None => return Ok(Step::Later),
                    Some(Ok(raw)) => raw,
                    Some(Err((raw, error))) => return self.send(work, raw, Err(error)).await,
                };
                match self.normalizer.read_file(&path, &raw) {
                    Err(error) => self.send(work, raw, Err(error)).await,
                    Ok(FileVerdict::Skipped(reason)) => {
                        tracing::debug!(source = %self.name, path = %crate::log_ref(&path), reason = %reason, "SS-MIX2 record publishes nothing");
                        self.finish(work, Finished::Nothing);
                        Ok(Step::Skipped)
                    }
                    Ok(FileVerdict::Event(event)) => {
                        let plan = match (event.event_type, event.data.cancels) {
                            (EventType::InpatientCancelled, Some(cancels)) => {
                                locked(&self.scanner).cancel_plan(work, cancels)
                            }
                            _ => CancelPlan::Publish,
                        };
                        if let CancelPlan::Suppress(reason) = plan {
                            tracing::info!(source = %self.name, path = %crate::log_ref(&path), reason, "SS-MIX2 cancel message publishes nothing");
                            self.finish(work, Finished::Nothing);
                            return Ok(Step::Skipped);
                        }
                        self.send(work, raw, Ok(*event)).await
                    }
                }
            }
        }
    }

    /// Reads a record: `None` when it cannot be read now (try again next poll; a file
    /// that vanished is forgotten), `Err` with what to keep when it is too large.
    async fn read(
        &self,
        work: &Work,
    ) -> Result<Option<Result<Bytes, (Bytes, NormalizeError)>>, SourceError> {
        let path = work.path_below(&self.root);
        let read = tokio::task::spawn_blocking(move || read_record(&path))
            .await
            .map_err(|e| SourceError::Failed(format!("reading an SS-MIX2 record stopped: {e}")))?;
        match read {
            Ok(read) => Ok(Some(read)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                locked(&self.scanner).forget(work);
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(source = %self.name, path = %crate::log_ref(work.relative_path()), error = %e, "cannot read an SS-MIX2 record; trying again at the next poll");
                Ok(None)
            }
        }
    }

    async fn send(
        &self,
        work: &Work,
        raw: Bytes,
        normalized: Result<CanonicalEvent, NormalizeError>,
    ) -> Result<Step, SourceError> {
        let published = normalized
            .as_ref()
            .ok()
            .map(|event| (event.event_type, event.data.cancels));
        let input = ReceivedInput {
            source: InputSource {
                adapter: self.name.clone(),
                peer: work.relative_path(),
            },
            raw,
            normalized,
        };
        match self.sink.ingest(input).await {
            IngestOutcome::Accepted { .. } => {
                let finished = match published {
                    Some((event, cancels)) => Finished::Published { event, cancels },
                    None => Finished::Nothing,
                };
                self.finish(work, finished);
                Ok(if published.is_some() {
                    Step::Published
                } else {
                    Step::Rejected
                })
            }
            IngestOutcome::Rejected(_) => {
                self.finish(work, Finished::Nothing);
                Ok(Step::Rejected)
            }
            IngestOutcome::Unavailable(why) => {
                tracing::warn!(source = %self.name, path = %crate::log_ref(work.relative_path()), reason = %why, "the hub is unavailable; the SS-MIX2 poll stops and resumes at the next");
                Ok(Step::Stop)
            }
        }
    }
}

/// The snapshot saved by the source `name`: its index, then every shard. A shard that
/// is missing leaves its patients to be read anew (nothing is missed; the hub
/// recognises what it already has).
async fn load_snapshot(state: &dyn SourceState, name: &str) -> Result<Snapshot, SourceError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        SourceError::Start(format!(
            "{e}. Delete the `{SNAPSHOT_KEY}` state of source `{name}` to read the storage again \
             from the start (the hub recognises records it already accepted)"
        ))
    };
    let load = |key: String| async move {
        state.load(name, &key).await.map_err(|e| {
            SourceError::Start(format!(
                "cannot load what the poller has read so far ({key}): {e}"
            ))
        })
    };
    let Some(index) = load(SNAPSHOT_KEY.to_owned()).await? else {
        return Ok(Snapshot::default());
    };
    let (mut snapshot, shards) = Snapshot::from_index(&index).map_err(|e| unreadable(&e))?;
    for shard in shards {
        if let Some(bytes) = load(shard_key(shard)).await? {
            snapshot.restore_shard(&bytes).map_err(|e| unreadable(&e))?;
        }
    }
    Ok(snapshot)
}

/// The bytes of a record, or (for a file over [`MAX_RECORD_BYTES`]) the refusal.
fn read_record(path: &Path) -> std::io::Result<Result<Bytes, (Bytes, NormalizeError)>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Ok(Err((
            Bytes::new(),
            NormalizeError::whole(format!(
                "the file is larger than {MAX_RECORD_BYTES} bytes, which no ADT record is; it was not read (its content is not kept)"
            )),
        )));
    }
    Ok(Ok(Bytes::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_facility_are_required_and_misspelt_settings_refused() {
        let config: Ssmix2Config = serde_json::from_value(serde_json::json!({
            "root": "/srv/ssmix2",
            "facility": "1319999995",
            "poll_interval": "2s",
            "settle_time": "500ms",
        }))
        .unwrap();
        assert_eq!(config.poll_interval, Duration::from_secs(2));
        assert_eq!(config.settle_time, Duration::from_millis(500));
        assert_eq!(config.max_files_per_poll, 1000);
        assert!(config.validate().is_ok());
        let misspelt = serde_json::from_value::<Ssmix2Config>(serde_json::json!({
            "root": "/srv/ssmix2", "facility": "1319999995", "poll_intervall": "2s"
        }));
        assert!(misspelt.is_err_and(|e| e.to_string().contains("poll_intervall")));
        assert!(serde_json::from_value::<Ssmix2Config>(serde_json::json!({"root": "/x"})).is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_naming_the_setting() {
        let setting_of = |config: Ssmix2Config| match config.validate() {
            Err(SourceError::Config { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        assert_eq!(setting_of(Ssmix2Config::new("/x", "131999999")), "facility");
        assert_eq!(setting_of(Ssmix2Config::new("", "1319999995")), "root");
        let mut config = Ssmix2Config::new("/x", "1319999995");
        config.max_files_per_poll = 0;
        assert_eq!(setting_of(config.clone()), "max_files_per_poll");
        config.max_files_per_poll = 1;
        config.poll_interval = Duration::ZERO;
        assert_eq!(setting_of(config), "poll_interval");
    }
}
