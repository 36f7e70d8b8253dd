//! Finding what is new in an SS-MIX2 storage tree without reading it all again.
//!
//! The [`Scanner`] keeps a [`Snapshot`]: for every folder of the tree the modification
//! time it had when it was last listed, and for every polled data-type folder (the ADT
//! folders of [`crate::datatype`] that publish something) the names of its files and
//! what became of each. A poll:
//!
//! 1. stats every known folder, and lists (`readdir`) only those whose modification
//!    time changed: a folder's time changes when an entry is added, removed or renamed
//!    in it, so an unchanged folder has the children it had. Folders of data types that
//!    publish nothing (OMP-01, OML-11, ADT-21 …) are never entered;
//! 2. stats the files that are still waiting to be handed over;
//! 3. returns the [`Work`] that is ready: records (valid names, and names that are
//!    not SS-MIX2 names, which the normaliser refuses with a reason) in the order of
//!    their 発生日時, then records whose condition flag turned deleted.
//!
//! A file is ready when its name is final ([`crate::name::is_work_file`] names are
//! ignored: writers write under a temporary name and rename) and its size and
//! modification time were unchanged since the previous poll, or it is older than the
//! settle time.
//!
//! A folder modified within the mtime margin (2 s by default) of the poll is listed
//! again at the next poll: a second change within the same clock tick as the listing
//! would otherwise leave the time as recorded and the change unseen.
//!
//! The caller hands each [`Work`] over and then calls [`Scanner::finish`]; nothing is
//! marked handled before that, so work that could not be handed over (the hub was
//! unavailable) is ready again at the next poll. See the crate documentation for the
//! condition-flag rule ([`Scanner::deletion_plan`], [`Scanner::cancel_plan`]).
//!
//! [`Scanner::take_delta`] gives what changed since the last save: the shards of the
//! patients whose folders changed (see [`Snapshot`]), so a poll that touched a few
//! patients saves a few kilobytes whatever the size of the tree.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use renkei_sdk::{EventType, japan_offset};
use serde::{Deserialize, Serialize};

use crate::datatype::is_polled;
use crate::name::{ConditionFlag, StorageName, is_work_file};
use crate::normalize::cancellable;

/// The version of the [`Snapshot`] format this scanner reads and writes.
pub const SNAPSHOT_VERSION: u32 = 1;
/// The key of the snapshot's index in a source's state; the patients' parts are kept
/// under [`shard_key`].
pub const SNAPSHOT_KEY: &str = "snapshot";
/// How many shards the patients are spread over (by a hash of the patient folder's
/// name, so zero-padded sequential ids spread as well as random ones).
pub const SNAPSHOT_SHARDS: u32 = 1024;
/// How recent a folder's modification time may be before the folder is listed again
/// at the next poll (covers file systems with one- or two-second timestamps).
pub const DEFAULT_MTIME_MARGIN: Duration = Duration::from_secs(2);
/// Depth of a data-type folder below the root: `<1-3>/<4-6>/<patient>/<date>/<type>`.
const LEAF_DEPTH: usize = 5;
/// Depth of a patient folder.
const PATIENT_DEPTH: usize = 3;

/// A file-system time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp(i64, u32);

impl Stamp {
    /// The stamp of a [`SystemTime`].
    pub fn of(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Stamp(
                i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                after.subsec_nanos(),
            ),
            Err(before) => {
                let before = before.duration();
                let seconds = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                match before.subsec_nanos() {
                    0 => Stamp(-seconds, 0),
                    nanos => Stamp(-seconds - 1, 1_000_000_000 - nanos),
                }
            }
        }
    }

    /// The instant, in Japan time.
    pub fn to_datetime(self) -> Option<DateTime<FixedOffset>> {
        DateTime::from_timestamp(self.0, self.1).map(|t| t.with_timezone(&japan_offset()))
    }

    /// How long after `self` `later` is; `None` when it is not later.
    fn until(self, later: Stamp) -> Option<Duration> {
        let nanos = (i128::from(later.0) - i128::from(self.0)) * 1_000_000_000
            + (i128::from(later.1) - i128::from(self.1));
        u64::try_from(nanos).ok().map(Duration::from_nanos)
    }

    fn of_metadata(meta: &std::fs::Metadata) -> Option<Self> {
        meta.modified().ok().map(Stamp::of)
    }

    /// Whether at least `span` passed from `self` to `now`.
    fn older_than(self, span: Duration, now: Stamp) -> bool {
        self.until(now).is_some_and(|age| age >= span)
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// What the scanner remembers between polls and across restarts. Serialisable (JSON,
/// with one-letter member names: it holds an entry per file of the polled folders),
/// whole ([`Snapshot::to_bytes`]) or in [`SNAPSHOT_SHARDS`] shards of patients
/// ([`Snapshot::shard_bytes`]), so a poll that touched a few patients saves a few
/// shards rather than the whole tree.
///
/// A shard holds whole patient folders (everything below `<1-3>/<4-6>/<patient>/`);
/// the three folder levels above them are not kept in shards: a scanner restored from
/// shards lists them again at its first poll, which finds any patient whose shard was
/// not saved. So each shard is consistent on its own and shards can be saved in any
/// order: a crash between two saves makes records be handed over again (the hub
/// recognises them), never missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    version: u32,
    root: FolderState,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            version: SNAPSHOT_VERSION,
            root: FolderState::default(),
        }
    }
}

/// A saved snapshot that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot.
    #[error("the saved snapshot is not readable: {0}")]
    Unreadable(String),
    /// A snapshot of another format version.
    #[error(
        "the saved snapshot is of format version {found}; this poller reads version {SNAPSHOT_VERSION}"
    )]
    Version {
        /// Its version.
        found: u32,
    },
}

impl Snapshot {
    /// The snapshot as JSON bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        serde_json::to_vec(self).map_err(|e| SnapshotError::Unreadable(e.to_string()))
    }

    /// A snapshot saved by [`Snapshot::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
        if versioned.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: versioned.version,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| SnapshotError::Unreadable(e.to_string()))
    }

    /// The index saved under [`SNAPSHOT_KEY`]: the format version and shard count.
    pub fn index_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let index = SnapshotIndex {
            version: SNAPSHOT_VERSION,
            shards: SNAPSHOT_SHARDS,
        };
        serde_json::to_vec(&index).map_err(|e| SnapshotError::Unreadable(e.to_string()))
    }

    /// Shard `shard` (below [`SNAPSHOT_SHARDS`]): the patient folders whose names hash
    /// to it, by `<1-3>/<4-6>/<patient>` path; `{}` when there are none.
    pub fn shard_bytes(&self, shard: u32) -> Result<Vec<u8>, SnapshotError> {
        let mut bytes = self.shards_bytes(&BTreeSet::from([shard]))?;
        Ok(bytes.pop().map(|(_, bytes)| bytes).unwrap_or_default())
    }

    /// [`Snapshot::shard_bytes`] of each of `shards`, in one pass over the patients.
    pub fn shards_bytes(
        &self,
        shards: &BTreeSet<u32>,
    ) -> Result<Vec<(u32, Vec<u8>)>, SnapshotError> {
        let mut patients: BTreeMap<u32, BTreeMap<String, &FolderState>> = shards
            .iter()
            .map(|&shard| (shard, BTreeMap::new()))
            .collect();
        for (prefix, first) in &self.root.folders {
            for (middle, second) in &first.folders {
                for (patient, folder) in &second.folders {
                    if let Some(shard) = patients.get_mut(&shard_of(patient)) {
                        shard.insert(format!("{prefix}/{middle}/{patient}"), folder);
                    }
                }
            }
        }
        patients
            .into_iter()
            .map(|(shard, patients)| {
                serde_json::to_vec(&patients)
                    .map(|bytes| (shard, bytes))
                    .map_err(|e| SnapshotError::Unreadable(e.to_string()))
            })
            .collect()
    }

    /// An empty snapshot for the index saved by [`Snapshot::index_bytes`], and the
    /// shards to restore into it with [`Snapshot::restore_shard`].
    pub fn from_index(bytes: &[u8]) -> Result<(Self, Vec<u32>), SnapshotError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
        if versioned.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: versioned.version,
            });
        }
        let index: SnapshotIndex =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
        if index.shards != SNAPSHOT_SHARDS {
            return Err(SnapshotError::Unreadable(format!(
                "it is split in {} shards; this poller splits it in {SNAPSHOT_SHARDS}",
                index.shards
            )));
        }
        Ok((Snapshot::default(), (0..index.shards).collect()))
    }

    /// Adds the patients of a shard saved by [`Snapshot::shard_bytes`]. The folders
    /// above them are left unknown, so the first poll lists them again.
    pub fn restore_shard(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let patients: BTreeMap<String, FolderState> = serde_json::from_slice(bytes)
            .map_err(|e| SnapshotError::Unreadable(format!("a shard: {e}")))?;
        for (path, folder) in patients {
            let mut parts = path.splitn(3, '/');
            let (Some(prefix), Some(middle), Some(patient)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(SnapshotError::Unreadable(format!(
                    "a shard names `{path}`, which is not a patient folder"
                )));
            };
            self.root
                .folders
                .entry(prefix.to_owned())
                .or_default()
                .folders
                .entry(middle.to_owned())
                .or_default()
                .folders
                .insert(patient.to_owned(), folder);
        }
        Ok(())
    }

    /// How many files of polled folders it remembers.
    pub fn file_count(&self) -> usize {
        fn count(folder: &FolderState) -> usize {
            folder.files.len() + folder.folders.values().map(count).sum::<usize>()
        }
        count(&self.root)
    }

    /// How many folders it remembers, the root included.
    pub fn folder_count(&self) -> usize {
        fn count(folder: &FolderState) -> usize {
            1 + folder.folders.values().map(count).sum::<usize>()
        }
        count(&self.root)
    }
}

/// The key of shard `shard` in a source's state: `snapshot/0000` … `snapshot/1023`.
pub fn shard_key(shard: u32) -> String {
    format!("{SNAPSHOT_KEY}/{shard:04}")
}

/// The shard of a patient folder: FNV-1a of its name (stable across releases, unlike
/// the standard library's hasher).
pub fn shard_of(patient_folder: &str) -> u32 {
    let hash = patient_folder
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    // The remainder is below SNAPSHOT_SHARDS, so it fits.
    u32::try_from(hash % u64::from(SNAPSHOT_SHARDS)).unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SnapshotIndex {
    version: u32,
    shards: u32,
}

/// What to save after a poll: the shards that changed, then the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDelta {
    shards: Vec<u32>,
    entries: Vec<(String, Vec<u8>)>,
}

impl SnapshotDelta {
    /// `(key, value)` pairs, in the order to save them (the index last).
    pub fn entries(&self) -> &[(String, Vec<u8>)] {
        &self.entries
    }

    /// How many bytes it writes.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(_, value)| value.len()).sum()
    }

    /// How many shards it writes.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FolderState {
    /// The modification time at the last listing; `None`: list at the next poll.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    listed_mtime: Option<Stamp>,
    /// Sub-folders (every level but the data-type folders).
    #[serde(rename = "d", default, skip_serializing_if = "BTreeMap::is_empty")]
    folders: BTreeMap<String, FolderState>,
    /// Files (data-type folders only).
    #[serde(rename = "f", default, skip_serializing_if = "BTreeMap::is_empty")]
    files: BTreeMap<String, FileState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FileState {
    /// Seen but not yet handed over: how it looked at the last poll.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    waiting: Option<Seen>,
    /// Handed over and accepted: the type of the event it published.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    published: Option<EventType>,
    /// Its event's cancellation was published (by a cancel message or by its own
    /// deletion): it is never cancelled again.
    #[serde(rename = "c", default, skip_serializing_if = "is_false")]
    cancelled: bool,
    /// The file is no longer in its folder (renamed by a deletion); kept because it was
    /// published and a cancellation may still refer to it.
    #[serde(rename = "g", default, skip_serializing_if = "is_false")]
    gone: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    #[serde(rename = "s")]
    size: u64,
    #[serde(rename = "m")]
    mtime: Stamp,
    /// The folder's modification time when the name first appeared in it.
    #[serde(rename = "l")]
    listed: Stamp,
}

/// What a piece of work is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// A record to normalise and hand over (also a file whose name is not an SS-MIX2
    /// name: the normaliser refuses it with the reason, so an operator sees it).
    Record,
    /// A record whose condition flag is `0` or `2`: see [`Scanner::deletion_plan`].
    Deleted,
}

/// A file that is ready to be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    folders: [String; LEAF_DEPTH],
    file_name: String,
    name: Option<StorageName>,
    kind: WorkKind,
    first_listed: Stamp,
}

impl Work {
    /// What it is.
    pub fn kind(&self) -> WorkKind {
        self.kind
    }

    /// Its name, when it is an SS-MIX2 name.
    pub fn name(&self) -> Option<&StorageName> {
        self.name.as_ref()
    }

    /// Its file name.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Its path relative to the storage root, `/`-separated.
    pub fn relative_path(&self) -> String {
        let mut path = self.folders.join("/");
        path.push('/');
        path.push_str(&self.file_name);
        path
    }

    /// Its path below `root`.
    pub fn path_below(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.folders);
        path.push(&self.file_name);
        path
    }

    /// When its name first appeared: its folder's modification time at that listing.
    pub fn first_listed_at(&self) -> Option<DateTime<FixedOffset>> {
        self.first_listed.to_datetime()
    }

    fn occurred_at(&self) -> Option<NaiveDateTime> {
        self.name.as_ref().map(StorageName::occurred_at)
    }
}

/// Counts of one poll, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Folders whose modification time was read.
    pub folders_checked: usize,
    /// Folders that were listed because their modification time changed.
    pub folders_listed: usize,
    /// Waiting files whose size and modification time were read again.
    pub files_checked: usize,
    /// Files still settling after this poll.
    pub files_settling: usize,
}

/// The outcome of one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Poll {
    /// The work that is ready, in the order to hand it over.
    pub work: Vec<Work>,
    /// What the poll did.
    pub stats: PollStats,
}

/// Why the storage could not be polled at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root folder cannot be read.
    #[error("cannot read the storage root {path}: {source}")]
    Root {
        /// The root.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The root is not a folder.
    #[error("the storage root {0} is not a folder")]
    NotAFolder(PathBuf),
}

/// What to do with a record whose condition flag is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPlan {
    /// Publish the cancellation of the published record it deletes.
    Cancel {
        /// The type of the event being cancelled.
        cancels: EventType,
    },
    /// Publish nothing, for this reason.
    Nothing(&'static str),
}

/// Whether to publish a cancel message (A11, A12, A13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelPlan {
    /// Publish it.
    Publish,
    /// Publish nothing, for this reason.
    Suppress(&'static str),
}

/// What became of a piece of work, for [`Scanner::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The hub accepted an event of this type (and for a cancellation, of this
    /// cancelled type).
    Published {
        /// The event type published.
        event: EventType,
        /// `data.cancels` of the event.
        cancels: Option<EventType>,
    },
    /// Nothing was published: skipped, suppressed, or refused and kept by the hub.
    Nothing,
}

/// The cancel target of a cancel message in its folder.
enum Target<'a> {
    /// A published record of the cancelled type, not yet cancelled: the latest one no
    /// later than the cancel.
    Open(&'a str),
    /// Every such record was cancelled already.
    AlreadyCancelled,
    /// Nothing to pair it with (its record was deleted before the poller published it,
    /// or came from before the storage was polled).
    Nothing,
}

/// The valid twin of a record name: the same record with condition flag `1`.
fn valid_twin(name: &StorageName) -> String {
    format!("{}_{}", name.record_key(), ConditionFlag::Valid.as_char())
}

fn cancel_target<'a>(
    files: &'a BTreeMap<String, FileState>,
    cancel: &StorageName,
    cancels: EventType,
) -> Target<'a> {
    let mut open: Option<(NaiveDateTime, &'a str)> = None;
    let mut cancelled = false;
    for (file, state) in files {
        if file == cancel.file_name() {
            continue;
        }
        let Ok(name) = StorageName::parse(file) else {
            continue;
        };
        // Deleted names published nothing of their own (a deletion's cancellation is
        // recorded on its valid twin).
        if name.occurred_at() > cancel.occurred_at() || name.condition().is_deleted() {
            continue;
        }
        if state.published != Some(cancels) {
            continue;
        }
        if state.cancelled {
            cancelled = true;
        } else if open.is_none_or(|(at, _)| name.occurred_at() >= at) {
            open = Some((name.occurred_at(), file.as_str()));
        }
    }
    match open {
        Some((_, file)) => Target::Open(file),
        None if cancelled => Target::AlreadyCancelled,
        None => Target::Nothing,
    }
}

/// Polls one storage tree. Synchronous (file-system calls only): run it where blocking
/// is fine.
#[derive(Debug)]
pub struct Scanner {
    root: PathBuf,
    snapshot: Snapshot,
    settle: Duration,
    margin: Duration,
    /// Shards that changed since the last save.
    dirty: BTreeSet<u32>,
}

/// One poll's walk over the tree.
struct Walk {
    now: Stamp,
    settle: Duration,
    margin: Duration,
    stats: PollStats,
    records: Vec<Work>,
    deletions: Vec<Work>,
    /// Something changed below the folder being walked.
    changed: bool,
    /// Shards that changed.
    dirty: BTreeSet<u32>,
    /// The folder names from the root to where the walk is.
    at: Vec<String>,
}

enum Visit {
    Keep,
    Gone,
}

impl Scanner {
    /// A scanner of the tree at `root` that remembers `snapshot` (use
    /// `Snapshot::default()` for a first run), with no settle time.
    pub fn new(root: impl Into<PathBuf>, snapshot: Snapshot) -> Self {
        Self {
            root: root.into(),
            snapshot,
            settle: Duration::ZERO,
            margin: DEFAULT_MTIME_MARGIN,
            dirty: BTreeSet::new(),
        }
    }

    /// Files younger than `settle` are handed over only once unchanged for a poll.
    pub fn with_settle_time(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Folders modified less than `margin` before a poll are listed again at the next
    /// ([`DEFAULT_MTIME_MARGIN`] by default; tests and benchmarks may lower it).
    pub fn with_mtime_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What the scanner remembers.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// What changed since the last call, ready to save; `None` when nothing did.
    pub fn take_delta(&mut self) -> Result<Option<SnapshotDelta>, SnapshotError> {
        if self.dirty.is_empty() {
            return Ok(None);
        }
        let mut entries: Vec<(String, Vec<u8>)> = self
            .snapshot
            .shards_bytes(&self.dirty)?
            .into_iter()
            .map(|(shard, bytes)| (shard_key(shard), bytes))
            .collect();
        entries.push((SNAPSHOT_KEY.to_owned(), self.snapshot.index_bytes()?));
        let shards = std::mem::take(&mut self.dirty).into_iter().collect();
        Ok(Some(SnapshotDelta { shards, entries }))
    }

    /// Marks what `delta` held as changed again, after saving it failed.
    pub fn unsaved(&mut self, delta: SnapshotDelta) {
        self.dirty.extend(delta.shards);
    }

    fn touched(&mut self, work: &Work) {
        self.dirty.insert(shard_of(&work.folders[2]));
    }

    /// Looks at the tree (see the module documentation) and returns what is ready.
    pub fn poll(&mut self, now: SystemTime) -> Result<Poll, ScanError> {
        let meta = std::fs::metadata(&self.root).map_err(|source| ScanError::Root {
            path: self.root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ScanError::NotAFolder(self.root.clone()));
        }
        let mut walk = Walk {
            now: Stamp::of(now),
            settle: self.settle,
            margin: self.margin,
            stats: PollStats::default(),
            records: Vec::new(),
            deletions: Vec::new(),
            changed: false,
            dirty: BTreeSet::new(),
            at: Vec::with_capacity(LEAF_DEPTH),
        };
        let mut path = self.root.clone();
        // The root itself never goes: it was just read.
        let _ = walk.visit(&mut self.snapshot.root, &mut path, 0);
        self.dirty.append(&mut walk.dirty);

        let order = |a: &Work, b: &Work| {
            // Names that are not SS-MIX2 names (no 発生日時) last.
            let key = |w: &Work| {
                (
                    w.occurred_at().is_none(),
                    w.occurred_at(),
                    w.relative_path(),
                )
            };
            key(a).cmp(&key(b))
        };
        walk.records.sort_by(order);
        walk.deletions.sort_by(order);
        let mut work = walk.records;
        work.append(&mut walk.deletions);
        Ok(Poll {
            work,
            stats: walk.stats,
        })
    }

    fn leaf(&self, folders: &[String; LEAF_DEPTH]) -> Option<&FolderState> {
        folders
            .iter()
            .try_fold(&self.snapshot.root, |folder, name| folder.folders.get(name))
    }

    fn leaf_mut(&mut self, folders: &[String; LEAF_DEPTH]) -> Option<&mut FolderState> {
        folders
            .iter()
            .try_fold(&mut self.snapshot.root, |folder, name| {
                folder.folders.get_mut(name)
            })
    }

    /// A deleted record (condition flag `0` or `2`) becomes the cancellation of the
    /// event its valid twin (the same name with flag `1`) published, unless that event
    /// was already cancelled (by a cancel message, or by an earlier deletion) or is not
    /// one that can be cancelled. A record deleted before the poller published it
    /// publishes nothing.
    pub fn deletion_plan(&self, work: &Work) -> DeletionPlan {
        let (Some(name), Some(leaf)) = (work.name(), self.leaf(&work.folders)) else {
            return DeletionPlan::Nothing("the record's folder is no longer known");
        };
        let Some(twin) = leaf.files.get(&valid_twin(name)) else {
            return DeletionPlan::Nothing("the record was deleted before the poller published it");
        };
        match twin.published {
            None => DeletionPlan::Nothing("the record was deleted before the poller published it"),
            Some(_) if twin.cancelled => {
                DeletionPlan::Nothing("the record's cancellation was already published")
            }
            Some(published) => match cancellable(published) {
                Some(cancels) => DeletionPlan::Cancel { cancels },
                None => {
                    DeletionPlan::Nothing("no canonical event undoes what the record published")
                }
            },
        }
    }

    /// A cancel message (A11, A12, A13) cancels the latest published, not yet cancelled
    /// record of the type it cancels in its own folder, no later than itself. It is
    /// published unless every such record's cancellation was published already (its
    /// deletion came first). One with nothing to pair it with is published as it is:
    /// it is a valid record, and whoever received the event it cancels (by another
    /// route, or before the storage was polled) must learn of it.
    pub fn cancel_plan(&self, work: &Work, cancels: EventType) -> CancelPlan {
        let (Some(name), Some(leaf)) = (work.name(), self.leaf(&work.folders)) else {
            return CancelPlan::Publish;
        };
        match cancel_target(&leaf.files, name, cancels) {
            Target::Open(_) | Target::Nothing => CancelPlan::Publish,
            Target::AlreadyCancelled => {
                CancelPlan::Suppress("the cancelled record's cancellation was already published")
            }
        }
    }

    /// Records what became of `work`, once the hub answered (or it was skipped): it
    /// is not handed over again. A published cancellation marks the record it cancels.
    pub fn finish(&mut self, work: &Work, finished: Finished) {
        let Some(leaf) = self.leaf_mut(&work.folders) else {
            return;
        };
        let state = leaf.files.entry(work.file_name.clone()).or_default();
        state.waiting = None;
        state.published = match finished {
            Finished::Published { event, .. } => Some(event),
            Finished::Nothing => None,
        };
        if let (
            Finished::Published {
                cancels: Some(cancels),
                ..
            },
            Some(name),
        ) = (finished, work.name())
        {
            let target = match work.kind {
                WorkKind::Deleted => Some(valid_twin(name)),
                WorkKind::Record => match cancel_target(&leaf.files, name, cancels) {
                    Target::Open(file) => Some(file.to_owned()),
                    _ => None,
                },
            };
            if let Some(record) = target.and_then(|file| leaf.files.get_mut(&file)) {
                record.cancelled = true;
            }
        }
        self.touched(work);
    }

    /// Forgets `work` whose file disappeared before it could be read.
    pub fn forget(&mut self, work: &Work) {
        if let Some(leaf) = self.leaf_mut(&work.folders)
            && leaf
                .files
                .get(&work.file_name)
                .is_some_and(|state| state.published.is_none())
        {
            leaf.files.remove(&work.file_name);
            self.touched(work);
        }
    }
}

impl Walk {
    fn trusted(&self, mtime: Option<Stamp>) -> Option<Stamp> {
        mtime.filter(|m| m.older_than(self.margin, self.now))
    }

    fn visit(&mut self, folder: &mut FolderState, path: &mut PathBuf, depth: usize) -> Visit {
        let meta = match std::fs::metadata(&*path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Visit::Gone,
            Err(e) => {
                tracing::warn!(path = %crate::log_ref(&path), error = %e, "cannot read an SS-MIX2 folder; trying again at the next poll");
                return Visit::Keep;
            }
        };
        if !meta.is_dir() {
            return Visit::Gone;
        }
        self.stats.folders_checked += 1;
        let mtime = Stamp::of_metadata(&meta);
        let relist = mtime.is_none() || folder.listed_mtime != mtime;
        if depth == LEAF_DEPTH {
            let fresh = if relist {
                match self.list_files(folder, path, mtime) {
                    Some(fresh) => fresh,
                    None => return Visit::Keep,
                }
            } else {
                BTreeSet::new()
            };
            self.check_files(folder, path, &fresh);
            return Visit::Keep;
        }
        if relist && !self.list_folders(folder, path, depth, mtime) {
            return Visit::Keep;
        }
        let mut gone = Vec::new();
        for (name, child) in &mut folder.folders {
            path.push(name);
            self.at.push(name.clone());
            // Below a patient folder every change is its shard's.
            let outer = std::mem::take(&mut self.changed);
            let visit = self.visit(child, path, depth + 1);
            if depth + 1 == PATIENT_DEPTH && (self.changed || matches!(visit, Visit::Gone)) {
                self.dirty.insert(shard_of(name));
            }
            self.changed |= outer;
            if let Visit::Gone = visit {
                gone.push(name.clone());
            }
            self.at.pop();
            path.pop();
        }
        for name in gone {
            folder.folders.remove(&name);
            self.changed = true;
        }
        Visit::Keep
    }

    /// Lists a folder above the data-type level; `false` when it cannot be read.
    fn list_folders(
        &mut self,
        folder: &mut FolderState,
        path: &Path,
        depth: usize,
        mtime: Option<Stamp>,
    ) -> bool {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(path = %crate::log_ref(path), error = %e, "cannot list an SS-MIX2 folder; trying again at the next poll");
                return false;
            }
        };
        self.stats.folders_listed += 1;
        let mut present = BTreeSet::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // Only data-type folders that publish something are entered.
            if depth + 1 == LEAF_DEPTH && !is_polled(&name) {
                continue;
            }
            present.insert(name);
        }
        let before = folder.folders.len();
        folder.folders.retain(|name, _| {
            let keep = present.contains(name);
            if !keep && depth + 1 == PATIENT_DEPTH {
                self.dirty.insert(shard_of(name));
            }
            keep
        });
        let mut changed = folder.folders.len() != before;
        for name in present {
            if let std::collections::btree_map::Entry::Vacant(entry) = folder.folders.entry(name) {
                entry.insert(FolderState::default());
                changed = true;
            }
        }
        let trusted = self.trusted(mtime);
        if folder.listed_mtime != trusted {
            folder.listed_mtime = trusted;
            changed = true;
        }
        self.changed |= changed;
        true
    }

    /// Lists a data-type folder: new names start waiting, vanished ones are dropped
    /// (or, when published, kept as gone). Returns the new names; `None` when the
    /// folder cannot be read.
    fn list_files(
        &mut self,
        folder: &mut FolderState,
        path: &Path,
        mtime: Option<Stamp>,
    ) -> Option<BTreeSet<String>> {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(path = %crate::log_ref(path), error = %e, "cannot list an SS-MIX2 folder; trying again at the next poll");
                return None;
            }
        };
        self.stats.folders_listed += 1;
        let listed = mtime.unwrap_or(self.now);
        let mut present = BTreeSet::new();
        let mut fresh = BTreeSet::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_work_file(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Some(state) = folder.files.get_mut(&name) {
                if state.gone {
                    state.gone = false;
                    self.changed = true;
                }
            } else {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let seen = Seen {
                    size: meta.len(),
                    mtime: meta.modified().map(Stamp::of).unwrap_or(self.now),
                    listed,
                };
                folder.files.insert(
                    name.clone(),
                    FileState {
                        waiting: Some(seen),
                        ..FileState::default()
                    },
                );
                fresh.insert(name.clone());
                self.changed = true;
            }
            present.insert(name);
        }
        for (name, state) in &mut folder.files {
            if !present.contains(name) && state.published.is_some() && !state.gone {
                state.gone = true;
                self.changed = true;
            }
        }
        let before = folder.files.len();
        folder
            .files
            .retain(|name, state| present.contains(name) || state.published.is_some());
        self.changed |= folder.files.len() != before;
        let trusted = self.trusted(mtime);
        if folder.listed_mtime != trusted {
            folder.listed_mtime = trusted;
            self.changed = true;
        }
        Some(fresh)
    }

    /// Decides which waiting files of a data-type folder are ready.
    fn check_files(&mut self, folder: &mut FolderState, path: &Path, fresh: &BTreeSet<String>) {
        let mut ready = Vec::new();
        let mut vanished = Vec::new();
        let mut settling = false;
        for (name, state) in &mut folder.files {
            let Some(seen) = state.waiting else {
                continue;
            };
            let is_ready = if fresh.contains(name) {
                seen.mtime.older_than(self.settle, self.now)
            } else {
                self.stats.files_checked += 1;
                match std::fs::metadata(path.join(name)) {
                    Ok(meta) => {
                        let size = meta.len();
                        let mtime = meta.modified().map(Stamp::of).unwrap_or(self.now);
                        let unchanged = size == seen.size && mtime == seen.mtime;
                        if !unchanged {
                            state.waiting = Some(Seen {
                                size,
                                mtime,
                                ..seen
                            });
                            self.changed = true;
                        }
                        unchanged || mtime.older_than(self.settle, self.now)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        vanished.push(name.clone());
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(path = %crate::log_ref(path.join(name)), error = %e, "cannot read an SS-MIX2 file's size; trying again at the next poll");
                        false
                    }
                }
            };
            if is_ready {
                ready.push((name.clone(), seen.listed));
            } else {
                settling = true;
                self.stats.files_settling += 1;
            }
        }
        for name in vanished {
            folder.files.remove(&name);
            self.changed = true;
        }
        let Ok(folders) = <[String; LEAF_DEPTH]>::try_from(self.at.clone()) else {
            return;
        };
        for (file_name, first_listed) in ready {
            let name = StorageName::parse(&file_name).ok();
            let kind = match &name {
                Some(name) if name.condition().is_deleted() => WorkKind::Deleted,
                _ => WorkKind::Record,
            };
            // A deletion waits while its folder has files still settling: the cancel
            // message written beside it is preferred to a cancellation made up from
            // the flag.
            if kind == WorkKind::Deleted && settling {
                continue;
            }
            let work = Work {
                folders: folders.clone(),
                file_name,
                name,
                kind,
                first_listed,
            };
            match kind {
                WorkKind::Record => self.records.push(work),
                WorkKind::Deleted => self.deletions.push(work),
            }
        }
    }
}

/// The published records of a snapshot: `(relative path, type, cancelled)`.
#[cfg(test)]
fn published_records(snapshot: &Snapshot) -> Vec<(String, EventType, bool)> {
    fn walk(folder: &FolderState, at: &mut Vec<String>, out: &mut Vec<(String, EventType, bool)>) {
        for (file, state) in &folder.files {
            if let Some(published) = state.published {
                out.push((
                    format!("{}/{file}", at.join("/")),
                    published,
                    state.cancelled,
                ));
            }
        }
        for (name, child) in &folder.folders {
            at.push(name.clone());
            walk(child, at, out);
            at.pop();
        }
    }
    let mut out = Vec::new();
    walk(&snapshot.root, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, relative: &str, content: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    const A01: &str = "777/001/7770012/20250601/ADT-22/7770012_20250601_ADT-22_999999999999999_20250601100000000_01_1";
    const A11: &str = "777/001/7770012/20250601/ADT-22/7770012_20250601_ADT-22_999999999999999_20250601113000000_01_1";

    fn paths(poll: &Poll) -> Vec<String> {
        poll.work.iter().map(Work::relative_path).collect()
    }

    fn scanner(root: &Path) -> Scanner {
        Scanner::new(root, Snapshot::default()).with_mtime_margin(Duration::ZERO)
    }

    #[test]
    fn an_unchanged_tree_is_statted_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), A01, "x");
        write(
            dir.path(),
            "777/001/7770012/20250601/OMP-01/7770012_20250601_OMP-01_000000000012345_20250601101500000_01_1",
            "x",
        );
        let mut scanner = scanner(dir.path());
        let first = scanner.poll(SystemTime::now()).unwrap();
        assert_eq!(paths(&first), [A01]);
        // root, 777, 001, 7770012, 20250601, ADT-22: OMP-01 is never entered.
        assert_eq!(first.stats.folders_listed, 6);
        scanner.finish(&first.work[0], Finished::Nothing);
        std::thread::sleep(Duration::from_millis(30));
        let second = scanner.poll(SystemTime::now()).unwrap();
        assert!(second.work.is_empty());
        assert_eq!(second.stats.folders_checked, 6);
        assert_eq!(second.stats.folders_listed, 0);
        // A new file: only its folder is listed.
        write(dir.path(), A11, "y");
        let third = scanner.poll(SystemTime::now()).unwrap();
        assert_eq!(paths(&third), [A11]);
        assert_eq!(third.stats.folders_listed, 1);
    }

    #[test]
    fn work_not_finished_is_ready_again_and_recent_folders_are_listed_again() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), A01, "x");
        let mut scanner = Scanner::new(dir.path(), Snapshot::default());
        assert_eq!(paths(&scanner.poll(SystemTime::now()).unwrap()), [A01]);
        // Not finished (the hub was unavailable): handed over again.
        let again = scanner.poll(SystemTime::now()).unwrap();
        assert_eq!(paths(&again), [A01]);
        // Within the default margin the fresh folders are listed again.
        assert!(again.stats.folders_listed > 0);
    }

    #[test]
    fn files_still_being_written_wait_and_work_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), A01, "x");
        write(dir.path(), &format!("{A11}.tmp"), "partial");
        let mut scanner = scanner(dir.path()).with_settle_time(Duration::from_secs(3600));
        let first = scanner.poll(SystemTime::now()).unwrap();
        assert!(first.work.is_empty());
        assert_eq!(first.stats.files_settling, 1);
        // Still growing: waits again.
        write(dir.path(), A01, "xx");
        let second = scanner.poll(SystemTime::now()).unwrap();
        assert!(second.work.is_empty());
        // Unchanged for one poll: ready.
        let third = scanner.poll(SystemTime::now()).unwrap();
        assert_eq!(paths(&third), [A01]);
    }

    #[test]
    fn the_snapshot_survives_a_round_trip_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), A01, "x");
        let mut scanner = scanner(dir.path());
        let poll = scanner.poll(SystemTime::now()).unwrap();
        scanner.finish(
            &poll.work[0],
            Finished::Published {
                event: EventType::InpatientAdmitted,
                cancels: None,
            },
        );
        let delta = scanner.take_delta().unwrap().expect("something changed");
        assert_eq!(delta.shard_count(), 1);
        assert_eq!(delta.entries()[0].0, shard_key(shard_of("7770012")));
        assert_eq!(scanner.take_delta(), Ok(None));
        // Saved in shards and restored from them: the patient folders as they were,
        // the folders above them unknown until the next poll lists them.
        let (mut restored, shards) =
            Snapshot::from_index(&delta.entries().last().unwrap().1).unwrap();
        assert_eq!(shards.len(), SNAPSHOT_SHARDS as usize);
        restored.restore_shard(&delta.entries()[0].1).unwrap();
        let patient =
            |s: &Snapshot| s.root.folders["777"].folders["001"].folders["7770012"].clone();
        assert_eq!(patient(&restored), patient(scanner.snapshot()));
        assert_eq!(restored.root.folders["777"].listed_mtime, None);
        assert_eq!(restored.file_count(), 1);
        let bytes = scanner.snapshot().to_bytes().unwrap();
        let back = Snapshot::from_bytes(&bytes).unwrap();
        assert_eq!(&back, scanner.snapshot());
        assert_eq!(back.file_count(), 1);
        assert_eq!(back.folder_count(), 6);
        assert_eq!(
            published_records(&back),
            [(A01.to_owned(), EventType::InpatientAdmitted, false)]
        );
        assert_eq!(
            Snapshot::from_bytes(br#"{"version":99,"root":{}}"#),
            Err(SnapshotError::Version { found: 99 })
        );
        assert!(matches!(
            Snapshot::from_bytes(b"not json"),
            Err(SnapshotError::Unreadable(_))
        ));
    }

    #[test]
    fn a_deletion_cancels_its_published_twin_once() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), A01, "x");
        let mut scanner = scanner(dir.path());
        let poll = scanner.poll(SystemTime::now()).unwrap();
        scanner.finish(
            &poll.work[0],
            Finished::Published {
                event: EventType::InpatientAdmitted,
                cancels: None,
            },
        );
        std::thread::sleep(Duration::from_millis(30));
        let deleted = A01.replace("_01_1", "_01_0");
        std::fs::rename(dir.path().join(A01), dir.path().join(&deleted)).unwrap();
        let poll = scanner.poll(SystemTime::now()).unwrap();
        assert_eq!(paths(&poll), std::slice::from_ref(&deleted));
        let work = &poll.work[0];
        assert_eq!(work.kind(), WorkKind::Deleted);
        assert_eq!(
            scanner.deletion_plan(work),
            DeletionPlan::Cancel {
                cancels: EventType::InpatientAdmitted
            }
        );
        scanner.finish(
            work,
            Finished::Published {
                event: EventType::InpatientCancelled,
                cancels: Some(EventType::InpatientAdmitted),
            },
        );
        // The A11 written afterwards is not a second cancellation.
        std::thread::sleep(Duration::from_millis(30));
        write(dir.path(), A11, "y");
        let poll = scanner.poll(SystemTime::now()).unwrap();
        assert_eq!(paths(&poll), [A11]);
        assert!(matches!(
            scanner.cancel_plan(&poll.work[0], EventType::InpatientAdmitted),
            CancelPlan::Suppress(_)
        ));
        // The published record is remembered although its file was renamed.
        assert_eq!(
            published_records(scanner.snapshot()),
            [
                (deleted, EventType::InpatientCancelled, false),
                (A01.to_owned(), EventType::InpatientAdmitted, true),
            ]
        );
    }
}
