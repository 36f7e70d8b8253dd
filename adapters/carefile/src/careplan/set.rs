//! Gathering the files of one transmission into one `care.plan` event.
//!
//! A transmission is the files one office sends another under one 14-digit sequence.
//! The hub reads four kinds of transmission, told apart by the files' kinds (a
//! 利用者補足情報 named `000000` goes with the plan tables, one named with a month with
//! the service-use tables of that month):
//!
//! | transmission | complete with                                   | optional |
//! |--------------|-------------------------------------------------|----------|
//! | plan         | 第1表 `UP1KYO`, 第2表 `UP2KYO`, 利用者補足情報 `UPHOSOKU_000000` | 第3表 `UP3KYO` |
//! | usage        | 第6表 `UPPLAN`, 第7表 `UPSIKYU`, 利用者補足情報 `UPHOSOKU_<month>` | – |
//! | actual       | 第6表 実績 `UPJSK`                                 | 利用者補足情報 |
//! | deletion     | the one `DLT…` file                              | – |
//!
//! The event: type `care.plan`; `source` the sending office; `time` the sequence (when
//! the sender made the files) in Japan; the patient from 利用者補足情報 (identified as
//! `urn:renkei:ltc-insured:<保険者番号>` / 被保険者番号); the receiving office as
//! `recipient` and the care-manager office as `care_office` in `data.facilities`;
//! `data.care` the transmission and every file's content, keyed by kind; the message
//! id `careplan_<transmission>[_<month>]_<sender>_<receiver>_<sequence>`, stable for a
//! resend; `raw_sha256` the SHA-256 of the manifest, one line `<file name> <SHA-256 of
//! the file>\n` per file in name order.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use renkei_sdk::{
    CanonicalEvent, EventData, EventType, FacilityRole, Identifier, Insurance, LtcInsurance,
    NormalizeError, Origin, Patient, PersonName, RelatedFacility, Sex, SourceFormat, TimeWindow,
    facility_source,
};
use serde_json::{Map, Value};

use super::name::{CarePlanFileKind, DeletionTarget};
use super::{CarePlanContent, CarePlanFile, UserSupplement};
use crate::form::ltc_insured_system;
use crate::text::canonical_name;

/// What a transmission carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransmissionKind {
    /// The care plan: 第1表, 第2表 (, 第3表) and 利用者補足情報.
    Plan,
    /// The service-use plan of a month: 第6表, 第7表 and 利用者補足情報.
    Usage,
    /// The service record of a month: 第6表 実績.
    Actual,
    /// A deletion.
    Deletion(DeletionTarget),
}

impl TransmissionKind {
    /// The kind of transmission a file belongs to.
    pub fn of(file: &CarePlanFile) -> Self {
        match &file.name.kind {
            CarePlanFileKind::PlanTable1
            | CarePlanFileKind::PlanTable2
            | CarePlanFileKind::PlanTable3 => TransmissionKind::Plan,
            CarePlanFileKind::UserSupplement if file.name.target_month.is_none() => {
                TransmissionKind::Plan
            }
            CarePlanFileKind::UserSupplement
            | CarePlanFileKind::UsageTable6Plan
            | CarePlanFileKind::UsageTable7 => TransmissionKind::Usage,
            CarePlanFileKind::UsageTable6Actual => TransmissionKind::Actual,
            CarePlanFileKind::Deletion(target) => TransmissionKind::Deletion(target.clone()),
        }
    }

    /// `plan`, `usage`, `actual` or `deletion`.
    pub fn name(&self) -> &'static str {
        match self {
            TransmissionKind::Plan => "plan",
            TransmissionKind::Usage => "usage",
            TransmissionKind::Actual => "actual",
            TransmissionKind::Deletion(_) => "deletion",
        }
    }

    /// The kinds of file the transmission is complete with.
    pub fn required(&self) -> Vec<CarePlanFileKind> {
        match self {
            TransmissionKind::Plan => vec![
                CarePlanFileKind::PlanTable1,
                CarePlanFileKind::PlanTable2,
                CarePlanFileKind::UserSupplement,
            ],
            TransmissionKind::Usage => vec![
                CarePlanFileKind::UsageTable6Plan,
                CarePlanFileKind::UsageTable7,
                CarePlanFileKind::UserSupplement,
            ],
            TransmissionKind::Actual => vec![CarePlanFileKind::UsageTable6Actual],
            TransmissionKind::Deletion(target) => {
                vec![CarePlanFileKind::Deletion(target.clone())]
            }
        }
    }

    /// Whether the care-manager office is the receiver (it sends everything but the
    /// service record, which the service office sends back).
    fn care_office_receives(&self) -> bool {
        matches!(
            self,
            TransmissionKind::Actual | TransmissionKind::Deletion(DeletionTarget::UsageActual)
        )
    }
}

/// What identifies one transmission.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransmissionKey {
    /// The 14-digit sequence the files share.
    pub file_seq: String,
    /// 送信元の事業所番号.
    pub sender_office: String,
    /// 送信先の事業所番号.
    pub receiver_office: String,
    /// What it carries.
    pub kind: TransmissionKind,
    /// The month, for the usage and actual tables.
    pub target_month: Option<String>,
}

impl TransmissionKey {
    /// The transmission `file` belongs to.
    pub fn of(file: &CarePlanFile) -> Self {
        TransmissionKey {
            file_seq: file.name.file_seq.clone(),
            sender_office: file.name.sender_office.clone(),
            receiver_office: file.name.receiver_office.clone(),
            kind: TransmissionKind::of(file),
            target_month: file.name.target_month.clone(),
        }
    }

    /// The event's message id (see the module docs).
    pub fn message_id(&self) -> String {
        let month = self
            .target_month
            .as_deref()
            .map(|m| format!("_{m}"))
            .unwrap_or_default();
        let kind = match &self.kind {
            TransmissionKind::Deletion(target) => CarePlanFileKind::Deletion(target.clone())
                .token()
                .to_ascii_lowercase(),
            other => other.name().to_owned(),
        };
        format!(
            "careplan_{kind}{month}_{}_{}_{}",
            self.sender_office, self.receiver_office, self.file_seq
        )
    }
}

impl std::fmt::Display for TransmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} transmission {} from {} to {}",
            self.kind.name(),
            self.file_seq,
            self.sender_office,
            self.receiver_office
        )?;
        if let Some(month) = &self.target_month {
            write!(f, " for {month}")?;
        }
        Ok(())
    }
}

/// Whether a transmission can become its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransmissionStatus {
    /// Every required file is there.
    Complete,
    /// These kinds of file have not arrived yet.
    Incomplete {
        /// The missing kinds.
        missing: Vec<CarePlanFileKind>,
    },
}

/// The files of care-plan transmissions as they arrive, until each is complete.
///
/// Pure and in memory: the caller (a file-drop source) decides how long to wait for a
/// transmission's other files and reports [`CarePlanSet::pending`] ones that never
/// complete.
#[derive(Debug, Clone, Default)]
pub struct CarePlanSet {
    window: TimeWindow,
    transmissions: BTreeMap<TransmissionKey, Vec<CarePlanFile>>,
}

impl CarePlanSet {
    /// An empty set accepting times in the default [`TimeWindow`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set accepting times in `window` (the sequence, which becomes the event
    /// time, and the birth date are checked against it).
    pub fn with_time_window(window: TimeWindow) -> Self {
        Self {
            window,
            transmissions: BTreeMap::new(),
        }
    }

    /// Reads a file ([`CarePlanFile::parse`]) and adds it.
    pub fn add_file(
        &mut self,
        file_name: &str,
        raw: &[u8],
    ) -> Result<TransmissionKey, NormalizeError> {
        self.add(CarePlanFile::parse(file_name, raw)?)
    }

    /// Adds a file to its transmission and returns the transmission's key. The same file
    /// again (same name and bytes) changes nothing; another file of a kind the
    /// transmission already has, or about another care recipient, is refused.
    pub fn add(&mut self, file: CarePlanFile) -> Result<TransmissionKey, NormalizeError> {
        self.window
            .check("the time in the file name", file.name.created_at)
            .map_err(|reason| NormalizeError::at(file.file_name.clone(), reason))?;
        if let CarePlanContent::UserSupplement(UserSupplement {
            birth_date: Some(birth),
            ..
        }) = &file.content
        {
            self.window
                .check_past_date("生年月日", *birth)
                .map_err(|reason| {
                    NormalizeError::at(
                        format!("{}, row 1, column No.8 (生年月日)", file.file_name),
                        reason,
                    )
                })?;
        }
        let key = TransmissionKey::of(&file);
        let files = self.transmissions.entry(key.clone()).or_default();
        if let Some(same) = files.iter().find(|f| f.name.kind == file.name.kind) {
            if same.file_name == file.file_name && same.raw_sha256 == file.raw_sha256 {
                return Ok(key);
            }
            return Err(NormalizeError::at(
                file.file_name.clone(),
                format!(
                    "{key} already has a {} ({}); a transmission holds one of each kind",
                    file.name.kind, same.file_name
                ),
            ));
        }
        if let Some(other) = files.first()
            && (other.insurer_number != file.insurer_number
                || other.insured_number != file.insured_number)
        {
            return Err(NormalizeError::at(
                file.file_name.clone(),
                format!(
                    "the file is about another care recipient (保険者番号, 被保険者番号) than {} of the same transmission",
                    other.file_name
                ),
            ));
        }
        files.push(file);
        Ok(key)
    }

    /// Whether the transmission `key` is complete; `None` for a transmission the set
    /// holds no file of.
    pub fn status(&self, key: &TransmissionKey) -> Option<TransmissionStatus> {
        let files = self.transmissions.get(key)?;
        let missing: Vec<CarePlanFileKind> = key
            .kind
            .required()
            .into_iter()
            .filter(|kind| !files.iter().any(|f| f.name.kind == *kind))
            .collect();
        Some(if missing.is_empty() {
            TransmissionStatus::Complete
        } else {
            TransmissionStatus::Incomplete { missing }
        })
    }

    /// Every transmission still waiting for files, with what it misses.
    pub fn pending(&self) -> Vec<(TransmissionKey, Vec<CarePlanFileKind>)> {
        self.transmissions
            .keys()
            .filter_map(|key| match self.status(key) {
                Some(TransmissionStatus::Incomplete { missing }) => Some((key.clone(), missing)),
                _ => None,
            })
            .collect()
    }

    /// The event of the transmission `key`, removing its files from the set, when it is
    /// complete; `None` while it is not (see [`CarePlanSet::status`]). An error when the
    /// files disagree with one another (link keys, months); the files are removed then
    /// too, since waiting longer cannot fix them.
    pub fn take_event(
        &mut self,
        key: &TransmissionKey,
    ) -> Option<Result<CanonicalEvent, NormalizeError>> {
        if self.status(key)? != TransmissionStatus::Complete {
            return None;
        }
        let files = self.transmissions.remove(key)?;
        Some(build_event(key, files))
    }

    /// The events of every complete transmission, removing their files.
    pub fn take_complete(
        &mut self,
    ) -> Vec<(TransmissionKey, Result<CanonicalEvent, NormalizeError>)> {
        let complete: Vec<TransmissionKey> = self
            .transmissions
            .keys()
            .filter(|key| self.status(key) == Some(TransmissionStatus::Complete))
            .cloned()
            .collect();
        complete
            .into_iter()
            .filter_map(|key| self.take_event(&key).map(|event| (key, event)))
            .collect()
    }
}

/// The plan date (居宅サービス計画作成（変更）日) every file of a plan transmission
/// carries must be the same.
fn check_links(key: &TransmissionKey, files: &[CarePlanFile]) -> Result<(), NormalizeError> {
    if key.kind != TransmissionKind::Plan {
        return Ok(());
    }
    let mut first: Option<(&str, chrono::NaiveDate)> = None;
    for file in files {
        let plan_date = match &file.content {
            CarePlanContent::PlanTable1(t) => Some(t.plan_date),
            CarePlanContent::PlanTable2(t) => Some(t.plan_date),
            CarePlanContent::PlanTable3(t) => t.plan_date,
            CarePlanContent::UserSupplement(s) => s.plan_date,
            _ => None,
        };
        let Some(date) = plan_date else { continue };
        match first {
            None => first = Some((&file.file_name, date)),
            Some((name, seen)) if seen != date => {
                return Err(NormalizeError::at(
                    file.file_name.clone(),
                    format!(
                        "居宅サービス計画作成（変更）日 {} differs from {} in {name}: the files of one plan share it (with the insurer and insured numbers it links them)",
                        date.format("%Y%m%d"),
                        seen.format("%Y%m%d")
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn build_event(
    key: &TransmissionKey,
    mut files: Vec<CarePlanFile>,
) -> Result<CanonicalEvent, NormalizeError> {
    files.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    check_links(key, &files)?;
    let Some(first) = files.first() else {
        return Err(NormalizeError::whole(format!("{key} holds no file")));
    };
    let created_at: DateTime<FixedOffset> = first.name.created_at;
    let insurer = first.insurer_number.clone();
    let insured = first.insured_number.clone();
    let supplement = files.iter().find_map(|f| match &f.content {
        CarePlanContent::UserSupplement(s) => Some(s),
        _ => None,
    });
    let table1 = files.iter().find_map(|f| match &f.content {
        CarePlanContent::PlanTable1(t) => Some(t),
        _ => None,
    });
    let care_level = supplement
        .and_then(|s| s.care_level.as_ref())
        .or_else(|| table1.and_then(|t| t.care_level.as_ref()))
        .map(|c| c.label.map_or_else(|| c.code.clone(), str::to_owned));
    let name = supplement.map(|s| PersonName {
        kanji: s.name.as_deref().map(canonical_name),
        kana: s.name_kana.as_deref().map(canonical_name),
    });
    let patient = Patient {
        identifiers: vec![Identifier {
            system: ltc_insured_system(&insurer),
            value: insured.clone(),
        }],
        name: name.filter(|n| n.kanji.is_some() || n.kana.is_some()),
        birth_date: supplement.and_then(|s| s.birth_date),
        sex: supplement
            .and_then(|s| s.sex.as_ref())
            .and_then(|s| match s.code.as_str() {
                "1" => Some(Sex::Male),
                "2" => Some(Sex::Female),
                _ => None,
            }),
        insurance: Some(Insurance {
            medical: None,
            ltc: Some(LtcInsurance {
                insurer_number: Some(insurer),
                insured_number: Some(insured),
                care_level,
            }),
        }),
        address: None,
        phone: None,
        key_person: None,
    };
    let care_office = if key.kind.care_office_receives() {
        &key.receiver_office
    } else {
        &key.sender_office
    };
    let facilities = vec![
        RelatedFacility {
            role: FacilityRole::Recipient,
            code: key.receiver_office.clone(),
            name: None,
        },
        RelatedFacility {
            role: FacilityRole::CareOffice,
            code: care_office.clone(),
            name: None,
        },
    ];
    let mut care = Map::new();
    care.insert("form".to_owned(), Value::from("careplan"));
    care.insert("transmission".to_owned(), Value::from(key.kind.name()));
    if let TransmissionKind::Deletion(target) = &key.kind {
        care.insert(
            "deletes".to_owned(),
            serde_json::to_value(target).unwrap_or(Value::Null),
        );
    }
    care.insert("file_seq".to_owned(), Value::from(key.file_seq.as_str()));
    care.insert(
        "created_at".to_owned(),
        Value::from(created_at.to_rfc3339()),
    );
    care.insert(
        "csv_version".to_owned(),
        Value::from(first.csv_version.as_str()),
    );
    care.insert(
        "sender_office".to_owned(),
        Value::from(key.sender_office.as_str()),
    );
    care.insert(
        "sender_service_kind".to_owned(),
        first
            .name
            .sender_service_kind
            .clone()
            .map_or(Value::Null, Value::String),
    );
    care.insert(
        "receiver_office".to_owned(),
        Value::from(key.receiver_office.as_str()),
    );
    care.insert(
        "receiver_service_kind".to_owned(),
        first
            .name
            .receiver_service_kind
            .clone()
            .map_or(Value::Null, Value::String),
    );
    care.insert(
        "target_month".to_owned(),
        key.target_month.clone().map_or(Value::Null, Value::String),
    );
    let mut manifest = String::new();
    let mut listed = Vec::with_capacity(files.len());
    for file in &files {
        manifest.push_str(&format!("{} {}\n", file.file_name, file.raw_sha256));
        listed.push(serde_json::json!({
            "name": file.file_name,
            "kind": file.name.kind.token(),
            "label": file.name.kind.label(),
            "record_count": file.record_count,
            "column_count": file.column_count,
            "raw_sha256": file.raw_sha256,
        }));
        care.insert(file.name.kind.name().to_owned(), file.content_json());
    }
    care.insert("files".to_owned(), Value::Array(listed));
    let data = EventData {
        patient,
        encounter: None,
        document: None,
        cancels: None,
        care: Some(Value::Object(care)),
        facilities,
        replaces: None,
        origin: Origin {
            format: SourceFormat::Csv,
            sending_system: None,
            facility: Some(key.sender_office.clone()),
            message_id: key.message_id(),
            raw_sha256: Origin::sha256_hex(manifest.as_bytes()),
            assumed_charset: None,
        },
    };
    Ok(CanonicalEvent::new(
        facility_source(&key.sender_office),
        EventType::CarePlan,
        created_at,
        data,
    ))
}
