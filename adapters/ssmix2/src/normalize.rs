//! One SS-MIX2 record file to (at most) one canonical event.
//!
//! The content is HL7 v2.5 (ISO-2022-JP in practice) and is read by
//! [`renkei_hl7v2::Hl7Normalizer`]; this layer adds what the storage knows:
//!
//! 1. the path: the folders must agree with the file name ([`StorageName::parse_path`]);
//! 2. the data type: folders that are not ADT, and ADT triggers the hub does not
//!    publish, give no event (see [`crate::datatype`]);
//! 3. the condition flag: a deleted record (`0` or `2`) gives no event when read alone;
//! 4. `MSH-9` must be a trigger of the data type (`ADT^A01` or `ADT^A11` in `ADT-22` …);
//! 5. `PID-3` must hold the patient id of the file name: a misfiled message would reach
//!    the wrong care team;
//! 6. `MSH-4` (the hospital, as the HL7 normaliser reads it) must be the facility the
//!    storage is configured for, when one is configured;
//!
//! and then marks the event `origin.format = "ss-mix2"`.
//!
//! [`Ssmix2Normalizer::deletion_of`] builds the cancellation that a published record
//! becomes when its condition flag turns deleted.

use chrono::{DateTime, FixedOffset};
use renkei_hl7v2::{Hl7Normalizer, MshHeader};
use renkei_sdk::{
    CanonicalEvent, EventType, NormalizeError, Normalizer, SourceFormat, TimeWindow,
    local_patient_id_system,
};

use crate::datatype::{AdtDataType, adt_data_type};
use crate::name::StorageName;

/// Suffix of `origin.message_id` for the cancellation of a record whose condition flag
/// turned deleted: `<MSH-10 of the record>:deleted`, distinct from the record's own id
/// and the same on every resend.
pub const DELETION_MESSAGE_ID_SUFFIX: &str = ":deleted";

/// Why a record file gives no event. None of these is an error: the storage holds
/// much the hub does not publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The data type is not ADT (an order, a result, a diagnosis …).
    NotAdt {
        /// The data type, e.g. `OMP-01`.
        data_type: String,
    },
    /// An ADT data type none of whose triggers the hub publishes (e.g. `ADT-21`).
    NotPublished {
        /// The data type.
        data_type: String,
    },
    /// A trigger the folder may hold but the hub does not publish (e.g. `A23`).
    TriggerNotPublished {
        /// The trigger event.
        trigger: String,
    },
    /// The condition flag says deleted (`0` or `2`).
    Deleted,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NotAdt { data_type } => {
                write!(f, "data type {data_type} is not ADT")
            }
            SkipReason::NotPublished { data_type } => {
                write!(f, "the hub publishes none of the events of {data_type}")
            }
            SkipReason::TriggerNotPublished { trigger } => {
                write!(f, "the hub does not publish ADT^{trigger}")
            }
            SkipReason::Deleted => f.write_str("the record's condition flag says deleted"),
        }
    }
}

/// What one record file gives.
#[derive(Debug, Clone, PartialEq)]
pub enum FileVerdict {
    /// An event to publish.
    Event(Box<CanonicalEvent>),
    /// Nothing, for this reason.
    Skipped(SkipReason),
}

/// Normalises SS-MIX2 record files. Stateless and cheap to share; the pairing of
/// deletions with what was published is the poller's ([`crate::scan`]).
#[derive(Debug, Clone, Default)]
pub struct Ssmix2Normalizer {
    hl7: Hl7Normalizer,
    window: TimeWindow,
    facility: Option<String>,
}

impl Ssmix2Normalizer {
    /// A normaliser accepting times in the default [`TimeWindow`], for any facility.
    pub fn new() -> Self {
        Self::default()
    }

    /// A normaliser accepting times in `window` only.
    pub fn with_time_window(window: TimeWindow) -> Self {
        Self {
            hl7: Hl7Normalizer::with_time_window(window),
            window,
            facility: None,
        }
    }

    /// Refuses records whose hospital (`MSH-4`) is not `facility_code`: the storage is
    /// one hospital's, and a record of another would be published under a wrong source.
    pub fn for_facility(mut self, facility_code: impl Into<String>) -> Self {
        self.facility = Some(facility_code.into());
        self
    }

    /// The event of the record at `relative_path` (below the storage root,
    /// `/`-separated), `None` when the file is not one the hub publishes.
    pub fn normalize_file(
        &self,
        relative_path: &str,
        raw: &[u8],
    ) -> Result<Option<CanonicalEvent>, NormalizeError> {
        Ok(match self.read_file(relative_path, raw)? {
            FileVerdict::Event(event) => Some(*event),
            FileVerdict::Skipped(_) => None,
        })
    }

    /// [`normalize_file`](Self::normalize_file), saying why a file gives no event.
    pub fn read_file(
        &self,
        relative_path: &str,
        raw: &[u8],
    ) -> Result<FileVerdict, NormalizeError> {
        let name = StorageName::parse_path(relative_path)?;
        self.read_record(&name, raw)
    }

    /// The verdict on a record whose path was already checked.
    pub fn read_record(
        &self,
        name: &StorageName,
        raw: &[u8],
    ) -> Result<FileVerdict, NormalizeError> {
        let data_type = match data_type_of(name) {
            Ok(data_type) => data_type,
            Err(reason) => return Ok(FileVerdict::Skipped(reason)),
        };
        if name.condition().is_deleted() {
            return Ok(FileVerdict::Skipped(SkipReason::Deleted));
        }
        self.event_of(name, data_type, raw)
    }

    /// The cancellation of a published record whose condition flag turned deleted:
    /// `inpatient.cancelled`, cancelling the type the record's content gives, at
    /// `observed_at` (when the poller first saw the deleted name: SS-MIX2 keeps no time
    /// of deletion). `None` when no canonical event undoes what the record published
    /// (a patient update, or a cancel message itself).
    pub fn deletion_of(
        &self,
        name: &StorageName,
        raw: &[u8],
        observed_at: DateTime<FixedOffset>,
    ) -> Result<Option<CanonicalEvent>, NormalizeError> {
        if !name.condition().is_deleted() {
            return Err(NormalizeError::at(
                "file name",
                "the コンディションフラグ is 1 (valid): the record is not deleted",
            ));
        }
        let data_type = match data_type_of(name) {
            Ok(data_type) => data_type,
            Err(_) => return Ok(None),
        };
        let record = match self.event_of(name, data_type, raw)? {
            FileVerdict::Event(event) => *event,
            FileVerdict::Skipped(_) => return Ok(None),
        };
        let Some(cancels) = cancellable(record.event_type) else {
            return Ok(None);
        };
        self.window
            .check("the time the deletion was seen", observed_at)
            .map_err(|problem| NormalizeError::at("file name", problem))?;
        let mut data = record.data;
        data.cancels = Some(cancels);
        data.origin.message_id.push_str(DELETION_MESSAGE_ID_SUFFIX);
        Ok(Some(CanonicalEvent::new(
            record.source,
            EventType::InpatientCancelled,
            observed_at,
            data,
        )))
    }

    fn event_of(
        &self,
        name: &StorageName,
        data_type: &AdtDataType,
        raw: &[u8],
    ) -> Result<FileVerdict, NormalizeError> {
        // MSH-9 against the folder first, so a message in the wrong folder is refused
        // for that, not for whatever the HL7 normaliser thinks of it.
        if let Some(header) = MshHeader::parse(raw) {
            let code = header.message_type.trim();
            let trigger = header.trigger_event.trim().to_ascii_uppercase();
            if !code.eq_ignore_ascii_case("ADT") || trigger.is_empty() {
                return Err(misplaced(code, &trigger, data_type));
            }
            match data_type.trigger(&trigger) {
                None => return Err(misplaced(code, &trigger, data_type)),
                Some(entry) if !entry.published => {
                    return Ok(FileVerdict::Skipped(SkipReason::TriggerNotPublished {
                        trigger,
                    }));
                }
                Some(_) => {}
            }
        }
        let mut event = self.hl7.normalize(raw)?;

        let facility = event.source_facility().unwrap_or_default().to_owned();
        if let Some(configured) = &self.facility
            && *configured != facility
        {
            return Err(NormalizeError::at(
                "MSH-4",
                format!(
                    "the record is from facility {facility} (MSH-4) but this storage is configured as facility {configured}'s (facility): \
                     check which hospital's storage the source reads, or the sending system's MSH-4"
                ),
            ));
        }

        let local = local_patient_id_system(&facility);
        let filed_under_its_patient = event
            .data
            .patient
            .identifiers
            .iter()
            .any(|id| id.system == local && id.value == name.patient_id());
        if !filed_under_its_patient {
            return Err(NormalizeError::at(
                "PID-3",
                "PID-3 does not match the patient id of the file name and folders: a misfiled message \
                 would reach the wrong care team, so the record is refused (the ids are patient data \
                 and are not repeated here); the sending system must file it under its own patient",
            ));
        }

        event.data.origin.format = SourceFormat::Ssmix2;
        Ok(FileVerdict::Event(Box::new(event)))
    }
}

/// The ADT data type of a record, or why it gives no event.
fn data_type_of(name: &StorageName) -> Result<&'static AdtDataType, SkipReason> {
    match adt_data_type(name.data_type()) {
        None => Err(SkipReason::NotAdt {
            data_type: name.data_type().to_owned(),
        }),
        Some(data_type) if !data_type.is_published() => Err(SkipReason::NotPublished {
            data_type: name.data_type().to_owned(),
        }),
        Some(data_type) => Ok(data_type),
    }
}

/// What a deleted record's cancellation cancels: the events HL7 cancels with A11, A12
/// and A13.
pub fn cancellable(published: EventType) -> Option<EventType> {
    match published {
        EventType::InpatientAdmitted
        | EventType::InpatientTransferred
        | EventType::InpatientDischarged
        | EventType::OutpatientRegistered => Some(published),
        _ => None,
    }
}

/// A code-like value shown in an error, or a neutral phrase when it does not look like
/// one (it could then be misplaced patient data).
fn shown_code(value: &str) -> String {
    if !value.is_empty()
        && value.len() <= 16
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '^' | '-'))
    {
        format!("`{value}`")
    } else {
        "an unrecognised value".to_owned()
    }
}

fn misplaced(code: &str, trigger: &str, data_type: &AdtDataType) -> NormalizeError {
    let shown = if trigger.is_empty() {
        format!("{} without a trigger event", shown_code(code))
    } else {
        shown_code(&format!("{code}^{trigger}"))
    };
    NormalizeError::at(
        "MSH-9",
        format!(
            "the message type is {shown}, which does not belong in a {} folder (it holds ADT {}): \
             the file is misfiled or its data type is wrong",
            data_type.code,
            data_type.trigger_list()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSH: &str = "MSH|^~\\&|HIS|1319999995|GW|RCV|20250601100000||ADT^A01^ADT_A01|M1|P|2.5||||||UNICODE UTF-8";

    fn message(msh: &str, patient: &str) -> Vec<u8> {
        format!(
            "{msh}\rEVN||20250601095500\rPID|1||{patient}^^^^PI||架空^夏男^^^^^L^I||19470801|M\rPV1|1|I|2W^201^4\r"
        )
        .into_bytes()
    }

    const PATH: &str = "777/001/7770012/20250601/ADT-22/7770012_20250601_ADT-22_999999999999999_20250601100000000_01_1";

    #[test]
    fn a_valid_admission_becomes_an_ss_mix2_event() {
        let event = Ssmix2Normalizer::new()
            .for_facility("1319999995")
            .normalize_file(PATH, &message(MSH, "7770012"))
            .unwrap()
            .unwrap();
        assert_eq!(event.event_type, EventType::InpatientAdmitted);
        assert_eq!(event.data.origin.format, SourceFormat::Ssmix2);
        assert_eq!(event.data.origin.message_id, "M1");
    }

    #[test]
    fn a_message_of_another_folder_is_refused_at_msh_9() {
        let discharge = MSH.replace("ADT^A01^ADT_A01", "ADT^A03^ADT_A03");
        let error = Ssmix2Normalizer::new()
            .normalize_file(PATH, &message(&discharge, "7770012"))
            .unwrap_err();
        assert_eq!(error.location.as_deref(), Some("MSH-9"));
        assert!(error.reason.contains("ADT^A03"), "{error}");
        assert!(error.reason.contains("ADT-22"), "{error}");
        let order = MSH.replace("ADT^A01^ADT_A01", "RDE^O11^RDE_O11");
        let error = Ssmix2Normalizer::new()
            .normalize_file(PATH, &message(&order, "7770012"))
            .unwrap_err();
        assert_eq!(error.location.as_deref(), Some("MSH-9"));
    }

    #[test]
    fn triggers_without_a_canonical_event_are_skipped() {
        let path =
            "777/001/7770012/-/ADT-00/7770012_-_ADT-00_999999999999999_20250601100000000_-_1";
        let deletion = MSH.replace("ADT^A01^ADT_A01", "ADT^A23^ADT_A21");
        assert_eq!(
            Ssmix2Normalizer::new()
                .read_file(path, &message(&deletion, "7770012"))
                .unwrap(),
            FileVerdict::Skipped(SkipReason::TriggerNotPublished {
                trigger: "A23".to_owned()
            })
        );
        let plan = "777/001/7770012/20250601/ADT-21/7770012_20250601_ADT-21_999999999999999_20250601100000000_01_1";
        assert!(matches!(
            Ssmix2Normalizer::new().read_file(plan, b"not even HL7"),
            Ok(FileVerdict::Skipped(SkipReason::NotPublished { .. }))
        ));
    }

    #[test]
    fn another_hospital_is_refused_at_msh_4() {
        let error = Ssmix2Normalizer::new()
            .for_facility("1329999999")
            .normalize_file(PATH, &message(MSH, "7770012"))
            .unwrap_err();
        assert_eq!(error.location.as_deref(), Some("MSH-4"));
        assert!(error.reason.contains("1319999995"), "{error}");
        assert!(error.reason.contains("1329999999"), "{error}");
    }

    #[test]
    fn a_deleted_record_becomes_one_cancellation_of_what_it_published() {
        let deleted = PATH.replace("_01_1", "_01_0");
        let name = StorageName::parse_path(&deleted).unwrap();
        let normalizer = Ssmix2Normalizer::new();
        assert_eq!(
            normalizer.normalize_file(&deleted, &message(MSH, "7770012")),
            Ok(None)
        );
        let seen = DateTime::parse_from_rfc3339("2025-06-01T11:31:00+09:00").unwrap();
        let cancel = normalizer
            .deletion_of(&name, &message(MSH, "7770012"), seen)
            .unwrap()
            .unwrap();
        assert_eq!(cancel.event_type, EventType::InpatientCancelled);
        assert_eq!(cancel.data.cancels, Some(EventType::InpatientAdmitted));
        assert_eq!(cancel.time, seen);
        assert_eq!(cancel.data.origin.message_id, "M1:deleted");
        assert_eq!(cancel.data.origin.format, SourceFormat::Ssmix2);
        // A cancel message that is itself deleted undoes nothing the hub can say.
        let a11 = MSH.replace("ADT^A01^ADT_A01", "ADT^A11^ADT_A09");
        assert_eq!(
            normalizer.deletion_of(&name, &message(&a11, "7770012"), seen),
            Ok(None)
        );
    }
}
