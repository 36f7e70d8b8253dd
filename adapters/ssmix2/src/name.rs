//! Where a record sits in SS-MIX2 standardized storage, and what its file name says.
//!
//! A record of patient `0000512001` admitted on 12 May 2025 is stored as
//!
//! ```text
//! 000/051/0000512001/20250512/ADT-22/0000512001_20250512_ADT-22_999999999999999_20250512093512456_01_1
//! ^^^ ^^^ ^^^^^^^^^^ ^^^^^^^^ ^^^^^^ patient id, 診療日, データ種別, オーダNo (15 digits),
//!  |   |   |          |        |     発生日時 (17 digits, yyyyMMddHHmmssfff), 診療科 or `-`,
//!  |   |   |          |        |     コンディションフラグ (1 valid, 0 or 2 deleted)
//!  |   |   |          |        データ種別 folder
//!  |   |   |          診療日 folder (`-` for data without a date, such as ADT-00)
//!  |   |   patient folder
//!  |   characters 4-6 of the patient id
//!  characters 1-3 of the patient id
//! ```
//!
//! The file name has no extension. [`StorageName::parse`] reads a file name;
//! [`StorageName::parse_path`] reads a path relative to the storage root and checks that
//! the folders agree with the name, so a misfiled record is refused before anything
//! reads its content.
//!
//! Patient ids shorter than six characters: the two prefix folders are taken from the
//! id padded on the left with `0` to six characters (`12345` lives under
//! `012/345/12345/`). The guideline's wording for such ids could not be checked here;
//! ids of six characters or more (every id of the conformance set, e.g. `7770012` under
//! `777/001/`) follow the plain rule. [`prefix_folders`] is the one place to change.
//!
//! Errors never repeat the patient id: it is patient data, and errors reach logs, the
//! rejected-input store and the audit log.

use chrono::{NaiveDate, NaiveDateTime};

/// Characters of a patient id taken at most (SS-MIX2 ids are short, mostly 10 digits).
pub const MAX_PATIENT_ID_CHARS: usize = 64;
/// Characters of a データ種別 or 診療科 code taken at most.
pub const MAX_CODE_CHARS: usize = 16;
/// Digits of an オーダNo.
pub const ORDER_NUMBER_DIGITS: usize = 15;
/// Digits of a 発生日時 (`yyyyMMddHHmmssfff`).
pub const OCCURRED_AT_DIGITS: usize = 17;

/// The コンディションフラグ, the last part of a file name: whether the record is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionFlag {
    /// `0`: deleted.
    Deleted,
    /// `1`: valid.
    Valid,
    /// `2`: deleted as well (kept apart from `0` only so a name can be written back).
    Deleted2,
}

impl ConditionFlag {
    /// The flag of its character, `0`, `1` or `2`.
    pub fn from_char(c: char) -> Option<Self> {
        match c {
            '0' => Some(Self::Deleted),
            '1' => Some(Self::Valid),
            '2' => Some(Self::Deleted2),
            _ => None,
        }
    }

    /// Its character in a file name.
    pub fn as_char(self) -> char {
        match self {
            Self::Deleted => '0',
            Self::Valid => '1',
            Self::Deleted2 => '2',
        }
    }

    /// `0` or `2`: the record was deleted.
    pub fn is_deleted(self) -> bool {
        !matches!(self, Self::Valid)
    }
}

/// A part of an SS-MIX2 file name, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
    /// 患者ID.
    PatientId,
    /// 診療日.
    ConsultationDate,
    /// データ種別.
    DataType,
    /// オーダNo.
    OrderNumber,
    /// 発生日時.
    OccurredAt,
    /// 診療科.
    Department,
    /// コンディションフラグ.
    ConditionFlag,
}

impl std::fmt::Display for NamePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NamePart::PatientId => "patient id (患者ID)",
            NamePart::ConsultationDate => "診療日",
            NamePart::DataType => "データ種別",
            NamePart::OrderNumber => "オーダNo",
            NamePart::OccurredAt => "発生日時",
            NamePart::Department => "診療科",
            NamePart::ConditionFlag => "コンディションフラグ",
        })
    }
}

/// A folder of the storage tree, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// The first level: characters 1-3 of the patient id.
    PatientIdPrefix,
    /// The second level: characters 4-6 of the patient id.
    PatientIdMiddle,
    /// The third level: the patient id.
    Patient,
    /// The fourth level: 診療日 or `-`.
    ConsultationDate,
    /// The fifth level: データ種別.
    DataType,
}

impl std::fmt::Display for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Folder::PatientIdPrefix => "first (patient id characters 1-3)",
            Folder::PatientIdMiddle => "second (patient id characters 4-6)",
            Folder::Patient => "patient",
            Folder::ConsultationDate => "診療日",
            Folder::DataType => "データ種別",
        })
    }
}

/// Why a path or file name is not an SS-MIX2 record's. Never holds the patient id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not six parts below the storage root.
    #[error(
        "the path has {found} parts below the storage root where an SS-MIX2 record has 6: \
         <patient id 1-3>/<patient id 4-6>/<patient id>/<診療日 or ->/<データ種別>/<file name>"
    )]
    PathShape {
        /// How many parts it has.
        found: usize,
    },
    /// Not seven `_`-separated parts.
    #[error(
        "the file name has {found} parts separated by `_` where an SS-MIX2 file name has 7: \
         <patient id>_<診療日>_<データ種別>_<オーダNo>_<発生日時>_<診療科>_<コンディションフラグ>"
    )]
    NameShape {
        /// How many parts it has.
        found: usize,
    },
    /// One part of the file name is malformed.
    #[error("the {part} of the file name {problem}")]
    Part {
        /// Which part.
        part: NamePart,
        /// What is wrong with it.
        problem: String,
    },
    /// A folder says something else than the file name.
    #[error("the {folder} folder does not agree with the file name: {problem}")]
    Folder {
        /// Which folder.
        folder: Folder,
        /// What disagrees.
        problem: String,
    },
}

impl NameError {
    fn part(part: NamePart, problem: impl Into<String>) -> Self {
        Self::Part {
            part,
            problem: problem.into(),
        }
    }

    /// Where the problem is, as a [`NormalizeError`](renkei_sdk::NormalizeError) names it.
    pub fn location(&self) -> &'static str {
        match self {
            NameError::PathShape { .. } | NameError::Folder { .. } => "path",
            NameError::NameShape { .. } | NameError::Part { .. } => "file name",
        }
    }
}

impl From<NameError> for renkei_sdk::NormalizeError {
    fn from(error: NameError) -> Self {
        renkei_sdk::NormalizeError::at(error.location(), error.to_string())
    }
}

/// A value shown in an error only when it looks like what it should be (digits, codes);
/// anything else is described by its length, since it could be misplaced patient data.
fn shown(value: &str) -> String {
    if !value.is_empty()
        && value.len() <= 20
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        format!("`{value}`")
    } else {
        format!("a value of {} characters", value.chars().count())
    }
}

/// The parsed name of one record file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StorageName {
    file_name: String,
    patient_id: String,
    consultation_date: Option<NaiveDate>,
    data_type: String,
    order_number: String,
    occurred_at: NaiveDateTime,
    department: Option<String>,
    condition: ConditionFlag,
}

impl StorageName {
    /// Reads a file name. Never panics, whatever the string.
    pub fn parse(file_name: &str) -> Result<Self, NameError> {
        let parts: Vec<&str> = file_name.split('_').collect();
        let [
            patient_id,
            date,
            data_type,
            order_number,
            occurred_at,
            department,
            flag,
        ] = parts.as_slice()
        else {
            return Err(NameError::NameShape { found: parts.len() });
        };

        let id_chars = patient_id.chars().count();
        if id_chars == 0 || id_chars > MAX_PATIENT_ID_CHARS {
            return Err(NameError::part(
                NamePart::PatientId,
                format!(
                    "has {id_chars} characters; an SS-MIX2 patient id has 1 to {MAX_PATIENT_ID_CHARS}"
                ),
            ));
        }
        if !patient_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(NameError::part(
                NamePart::PatientId,
                "holds characters other than ASCII letters and digits",
            ));
        }

        let consultation_date = match *date {
            "-" => None,
            digits => Some(parse_date(digits).ok_or_else(|| {
                NameError::part(
                    NamePart::ConsultationDate,
                    format!("is {}, neither `-` nor a date YYYYMMDD", shown(digits)),
                )
            })?),
        };

        if data_type.is_empty()
            || data_type.len() > MAX_CODE_CHARS
            || !data_type
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(NameError::part(
                NamePart::DataType,
                format!(
                    "is {}, not a data type code such as `ADT-22` or `OMP-01`",
                    shown(data_type)
                ),
            ));
        }

        if order_number.len() != ORDER_NUMBER_DIGITS
            || !order_number.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(NameError::part(
                NamePart::OrderNumber,
                format!(
                    "is {}, not {ORDER_NUMBER_DIGITS} digits (`999999999999999` when there is no order)",
                    shown(order_number)
                ),
            ));
        }

        let occurred = parse_occurred_at(occurred_at).ok_or_else(|| {
            NameError::part(
                NamePart::OccurredAt,
                format!(
                    "is {}, not a valid {OCCURRED_AT_DIGITS}-digit time yyyyMMddHHmmssfff",
                    shown(occurred_at)
                ),
            )
        })?;

        let department = match *department {
            "-" => None,
            code if !code.is_empty()
                && code.len() <= MAX_CODE_CHARS
                && code.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Some(code.to_owned())
            }
            other => {
                return Err(NameError::part(
                    NamePart::Department,
                    format!("is {}, neither `-` nor a department code", shown(other)),
                ));
            }
        };

        let mut flag_chars = flag.chars();
        let condition = match (flag_chars.next(), flag_chars.next()) {
            (Some(c), None) => ConditionFlag::from_char(c),
            _ => None,
        }
        .ok_or_else(|| {
            NameError::part(
                NamePart::ConditionFlag,
                format!("is {}, not `0`, `1` or `2`", shown(flag)),
            )
        })?;

        Ok(Self {
            file_name: file_name.to_owned(),
            patient_id: (*patient_id).to_owned(),
            consultation_date,
            data_type: (*data_type).to_owned(),
            order_number: (*order_number).to_owned(),
            occurred_at: occurred,
            department,
            condition,
        })
    }

    /// Reads a path relative to the storage root (`/`-separated, as the poller reports
    /// it) and checks that each folder agrees with the file name.
    pub fn parse_path(relative_path: &str) -> Result<Self, NameError> {
        let parts: Vec<&str> = relative_path.split('/').collect();
        let [prefix, middle, patient, date, data_type, file_name] = parts.as_slice() else {
            return Err(NameError::PathShape { found: parts.len() });
        };
        let name = Self::parse(file_name)?;
        name.check_folders([prefix, middle, patient, date, data_type])?;
        Ok(name)
    }

    /// Checks the five folders above the file against the name.
    pub fn check_folders(&self, folders: [&str; 5]) -> Result<(), NameError> {
        let [prefix, middle, patient, date, data_type] = folders;
        let (expected_prefix, expected_middle) = prefix_folders(&self.patient_id);
        // The patient id is patient data: say which folder disagrees, never the values.
        let patient_problem = "it names another patient id than the file name (the ids are patient data and are not repeated here)";
        if patient != self.patient_id {
            return Err(NameError::Folder {
                folder: Folder::Patient,
                problem: patient_problem.to_owned(),
            });
        }
        if prefix != expected_prefix {
            return Err(NameError::Folder {
                folder: Folder::PatientIdPrefix,
                problem: format!(
                    "it must be the first three characters of the patient id; {patient_problem}"
                ),
            });
        }
        if middle != expected_middle {
            return Err(NameError::Folder {
                folder: Folder::PatientIdMiddle,
                problem: format!(
                    "it must be characters 4 to 6 of the patient id; {patient_problem}"
                ),
            });
        }
        let name_date = self.date_text();
        if date != name_date {
            return Err(NameError::Folder {
                folder: Folder::ConsultationDate,
                problem: format!(
                    "the folder is {} but the file name's 診療日 is `{name_date}`",
                    shown(date)
                ),
            });
        }
        if data_type != self.data_type {
            return Err(NameError::Folder {
                folder: Folder::DataType,
                problem: format!(
                    "the folder is {} but the file name's データ種別 is `{}`",
                    shown(data_type),
                    self.data_type
                ),
            });
        }
        Ok(())
    }

    /// The file name, as read.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// 患者ID.
    pub fn patient_id(&self) -> &str {
        &self.patient_id
    }

    /// 診療日; `None` for `-`.
    pub fn consultation_date(&self) -> Option<NaiveDate> {
        self.consultation_date
    }

    /// データ種別, e.g. `ADT-22`.
    pub fn data_type(&self) -> &str {
        &self.data_type
    }

    /// オーダNo (15 digits; `999999999999999` for ADT records, which have no order).
    pub fn order_number(&self) -> &str {
        &self.order_number
    }

    /// 発生日時, to the millisecond, in the hospital's (Japan) time.
    pub fn occurred_at(&self) -> NaiveDateTime {
        self.occurred_at
    }

    /// 診療科; `None` for `-`.
    pub fn department(&self) -> Option<&str> {
        self.department.as_deref()
    }

    /// コンディションフラグ.
    pub fn condition(&self) -> ConditionFlag {
        self.condition
    }

    /// The file name without its condition flag: what stays the same when a record is
    /// deleted by rewriting its flag.
    pub fn record_key(&self) -> &str {
        // The name ends in `_<one ASCII digit>`, so two bytes off is a char boundary.
        self.file_name
            .get(..self.file_name.len().saturating_sub(2))
            .unwrap_or(&self.file_name)
    }

    /// The 診療日 as it appears in the name and its folder.
    fn date_text(&self) -> String {
        match self.consultation_date {
            Some(date) => date.format("%Y%m%d").to_string(),
            None => "-".to_owned(),
        }
    }

    /// The five folders the record belongs in, root first.
    pub fn folders(&self) -> [String; 5] {
        let (prefix, middle) = prefix_folders(&self.patient_id);
        [
            prefix,
            middle,
            self.patient_id.clone(),
            self.date_text(),
            self.data_type.clone(),
        ]
    }

    /// Where the record belongs, relative to the storage root, `/`-separated.
    pub fn relative_path(&self) -> String {
        let mut path = self.folders().join("/");
        path.push('/');
        path.push_str(&self.file_name);
        path
    }
}

/// The two folders above a patient's folder: characters 1-3 and 4-6 of the patient id,
/// the id padded on the left with `0` to six characters first when it is shorter.
pub fn prefix_folders(patient_id: &str) -> (String, String) {
    let padded: Vec<char> = if patient_id.chars().count() >= 6 {
        patient_id.chars().take(6).collect()
    } else {
        let id: Vec<char> = patient_id.chars().collect();
        std::iter::repeat_n('0', 6 - id.len()).chain(id).collect()
    };
    (
        padded.iter().take(3).collect(),
        padded.iter().skip(3).take(3).collect(),
    )
}

fn parse_date(digits: &str) -> Option<NaiveDate> {
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

fn parse_occurred_at(digits: &str) -> Option<NaiveDateTime> {
    if digits.len() != OCCURRED_AT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = NaiveDateTime::parse_from_str(digits.get(..14)?, "%Y%m%d%H%M%S").ok()?;
    let millis: i64 = digits.get(14..)?.parse().ok()?;
    seconds.checked_add_signed(chrono::Duration::milliseconds(millis))
}

/// Whether a directory entry's name is a writer's work file, never a record: hidden
/// (`.name`), an editor's or copier's leftover (`name~`, `~name`), or any name with a
/// dot (`name.tmp`, `name.part`): SS-MIX2 names have no extension, so a writer that
/// writes under a temporary name and renames it when done is never read half-written.
pub fn is_work_file(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('~') || name.ends_with('~') || name.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "0000512001_20250512_ADT-22_999999999999999_20250512093512456_01_1";
    const PATH: &str = "000/051/0000512001/20250512/ADT-22/0000512001_20250512_ADT-22_999999999999999_20250512093512456_01_1";

    #[test]
    fn reads_every_part_of_a_name() {
        let name = StorageName::parse(NAME).unwrap();
        assert_eq!(name.patient_id(), "0000512001");
        assert_eq!(
            name.consultation_date(),
            NaiveDate::from_ymd_opt(2025, 5, 12)
        );
        assert_eq!(name.data_type(), "ADT-22");
        assert_eq!(name.order_number(), "999999999999999");
        assert_eq!(
            name.occurred_at()
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string(),
            "2025-05-12 09:35:12.456"
        );
        assert_eq!(name.department(), Some("01"));
        assert_eq!(name.condition(), ConditionFlag::Valid);
        assert_eq!(
            name.record_key(),
            "0000512001_20250512_ADT-22_999999999999999_20250512093512456_01"
        );
        assert_eq!(name.relative_path(), PATH);
        assert_eq!(StorageName::parse_path(PATH).unwrap(), name);

        let static_data =
            StorageName::parse("0000512001_-_ADT-00_999999999999999_20250512083015123_-_0")
                .unwrap();
        assert_eq!(static_data.consultation_date(), None);
        assert_eq!(static_data.department(), None);
        assert!(static_data.condition().is_deleted());
        assert_eq!(
            static_data.relative_path(),
            "000/051/0000512001/-/ADT-00/0000512001_-_ADT-00_999999999999999_20250512083015123_-_0"
        );
    }

    #[test]
    fn prefix_folders_are_characters_one_to_six_of_the_id() {
        assert_eq!(
            prefix_folders("7770012"),
            ("777".to_owned(), "001".to_owned())
        );
        assert_eq!(
            prefix_folders("0000512001"),
            ("000".to_owned(), "051".to_owned())
        );
        assert_eq!(
            prefix_folders("123456"),
            ("123".to_owned(), "456".to_owned())
        );
        // Shorter ids are padded on the left with zeros.
        assert_eq!(
            prefix_folders("12345"),
            ("012".to_owned(), "345".to_owned())
        );
        assert_eq!(prefix_folders("7"), ("000".to_owned(), "007".to_owned()));
        assert!(StorageName::parse_path(
            "012/345/12345/20250601/ADT-22/12345_20250601_ADT-22_999999999999999_20250601100000000_01_1"
        )
        .is_ok());
    }

    #[test]
    fn folders_that_disagree_are_named_without_the_patient_id() {
        let cases = [
            (
                "001/051/0000512001/20250512/ADT-22",
                Folder::PatientIdPrefix,
            ),
            (
                "000/052/0000512001/20250512/ADT-22",
                Folder::PatientIdMiddle,
            ),
            ("000/051/0000512009/20250512/ADT-22", Folder::Patient),
            (
                "000/051/0000512001/20250513/ADT-22",
                Folder::ConsultationDate,
            ),
            ("000/051/0000512001/-/ADT-22", Folder::ConsultationDate),
            ("000/051/0000512001/20250512/ADT-52", Folder::DataType),
        ];
        for (folders, wanted) in cases {
            let path = format!("{folders}/{NAME}");
            match StorageName::parse_path(&path) {
                Err(NameError::Folder { folder, problem }) => {
                    assert_eq!(folder, wanted, "{path}");
                    assert!(!problem.contains("0000512"), "{problem}");
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        assert_eq!(
            StorageName::parse_path(NAME),
            Err(NameError::PathShape { found: 1 })
        );
    }

    #[test]
    fn malformed_parts_are_named() {
        let cases = [
            ("a_b", None),
            (
                "0000512001_20251332_ADT-22_999999999999999_20250512093512456_01_1",
                Some(NamePart::ConsultationDate),
            ),
            (
                "0000512001_20250512_adt-22_999999999999999_20250512093512456_01_1",
                Some(NamePart::DataType),
            ),
            (
                "0000512001_20250512_ADT-22_99999999999999_20250512093512456_01_1",
                Some(NamePart::OrderNumber),
            ),
            (
                "0000512001_20250512_ADT-22_999999999999999_20250512253512456_01_1",
                Some(NamePart::OccurredAt),
            ),
            (
                "0000512001_20250512_ADT-22_999999999999999_20250512093512456__1",
                Some(NamePart::Department),
            ),
            (
                "0000512001_20250512_ADT-22_999999999999999_20250512093512456_01_3",
                Some(NamePart::ConditionFlag),
            ),
            (
                "架空_20250512_ADT-22_999999999999999_20250512093512456_01_1",
                Some(NamePart::PatientId),
            ),
        ];
        for (text, wanted) in cases {
            let error = StorageName::parse(text).err();
            match (error, wanted) {
                (Some(NameError::Part { part, problem }), Some(wanted)) => {
                    assert_eq!(part, wanted, "{text}: {problem}");
                    assert!(!problem.contains("架空"), "{problem}");
                }
                (Some(NameError::NameShape { .. }), None) => {}
                (other, _) => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn work_files_are_recognised() {
        for name in [
            ".0000512001_x",
            "0000512001_20250512_ADT-22_999999999999999_20250512093512456_01_1.tmp",
            "0000512001_20250512_ADT-22_999999999999999_20250512093512456_01_1~",
            "~lock",
        ] {
            assert!(is_work_file(name), "{name}");
        }
        assert!(!is_work_file(NAME));
    }
}
