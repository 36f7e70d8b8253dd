//! SS-MIX2 standardized storage for Renkei: a poller that publishes a hospital's ADT
//! records (admissions, transfers, discharges, outpatient registrations, patient
//! updates and their cancellations) from its SS-MIX2 標準化ストレージ.
//!
//! - [`name`]: the storage tree and file-name rules ([`StorageName`]): a record's
//!   folders must agree with its name.
//! - [`datatype`]: the ADT data types (`ADT-00` … `ADT-61`), the triggers each folder
//!   holds and which the hub publishes.
//! - [`normalize`]: [`Ssmix2Normalizer`], one record file to at most one canonical
//!   event, through [`renkei_hl7v2::Hl7Normalizer`], checking `MSH-9` against the data
//!   type, `PID-3` against the patient id of the name and `MSH-4` against the facility.
//! - [`scan`]: [`Scanner`], which finds new and deleted records by comparing folder
//!   modification times with a saved [`Snapshot`] rather than reading the tree again.
//! - [`source`]: [`Ssmix2Source`], the `ss-mix2` source kind (`[sources.<name>]` with
//!   `type = "ss-mix2"`).
//!
//! # The condition flag
//!
//! A record's name ends in its コンディションフラグ: `1` valid, `0` or `2` deleted.
//! Each published record is cancelled at most once:
//!
//! - a deleted record seen for the first time publishes nothing;
//! - a published record that turns deleted (a file of the same name but the flag
//!   appears, whether or not the old name stays) becomes one `inpatient.cancelled`
//!   naming what it cancels, with `origin.message_id` `<MSH-10>:deleted`;
//! - a cancel message (A11, A12, A13, stored in the folder of the event it cancels)
//!   is published as the HL7 normaliser reads it, and cancels the latest published
//!   record of the type it cancels in the same folder, no later than itself (by
//!   発生日時);
//! - whichever of the two comes first is the one cancellation: the other publishes
//!   nothing. When both are ready in the same poll the cancel message is taken, and a
//!   deletion waits while its folder has files still being written;
//! - a cancel message with no published record to pair it with (its record was
//!   deleted before the poller saw it, as in the conformance set's `777/001/7770012`)
//!   is published: it is a valid record.
//!
//! The key of a record is its file name without the flag
//! ([`StorageName::record_key`]); the snapshot remembers per record the type it
//! published and whether its cancellation was published, even after its file is
//! renamed away.
//!
//! ```
//! use renkei_ssmix2::{StorageName, Ssmix2Normalizer};
//!
//! let path = "000/051/0000512001/20250512/OMP-01/\
//!             0000512001_20250512_OMP-01_000000000012345_20250512101500000_01_1";
//! let name = StorageName::parse_path(path).unwrap();
//! assert_eq!(name.data_type(), "OMP-01");
//! // A prescription is not ADT: no event, and no error.
//! assert_eq!(Ssmix2Normalizer::new().normalize_file(path, b"MSH|..."), Ok(None));
//! ```

pub mod datatype;
pub mod name;
pub mod normalize;
pub mod scan;
pub mod source;

pub use datatype::{ADT_DATA_TYPES, AdtDataType, AdtTrigger, adt_data_type};
pub use name::{ConditionFlag, NameError, StorageName};
pub use normalize::{FileVerdict, SkipReason, Ssmix2Normalizer};
pub use scan::{
    CancelPlan, DeletionPlan, Finished, Poll, PollStats, SNAPSHOT_KEY, ScanError, Scanner,
    Snapshot, SnapshotDelta, SnapshotError, Work, WorkKind,
};
pub use source::{KIND, PollSummary, Ssmix2Config, Ssmix2Poller, Ssmix2Source};

/// How logs name a storage path: its folders and file names hold the patient id, which
/// never goes into a log, so a log line carries a short digest of the path instead
/// (`sha256:1a2b3c4d5e6f`); `renkei rejected` and the audit log keep the path itself.
pub fn log_ref(path: impl AsRef<std::path::Path>) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(path.as_ref().to_string_lossy().as_bytes());
    format!("sha256:{}", hex::encode(&digest[..6]))
}
