//! The ADT data types (データ種別) of SS-MIX2 standardized storage, the HL7 trigger
//! events each folder holds, and which of them the hub publishes.
//!
//! From the table of the guideline (標準化ストレージ 構成の説明と構築ガイドライン,
//! 「標準化ストレージ格納データ」): a cancel message is stored in the folder of the
//! event it cancels.
//!
//! | データ種別 | 種別名称 | triggers | published as |
//! |---|---|---|---|
//! | ADT-00 | 患者基本情報の更新 / 削除 | A08 / A23 | A08 `patient.updated`; A23 not published |
//! | ADT-01 | 担当医の変更 / 取消 | A54 / A55 | not published |
//! | ADT-12 | 外来診察の受付 | A04 | `outpatient.registered` |
//! | ADT-21 | 入院予定 / 取消 | A14 / A27 | not published |
//! | ADT-22 | 入院実施 / 取消 | A01 / A11 | `inpatient.admitted` / `inpatient.cancelled` |
//! | ADT-31 | 外出泊実施 / 取消 | A21 / A52 | not published |
//! | ADT-32 | 外出泊帰院実施 / 取消 | A22 / A53 | not published |
//! | ADT-41 | 転科・転棟(転室・転床)予定 / 取消 | A15 / A26 | not published |
//! | ADT-42 | 転科・転棟(転室・転床)実施 / 取消 | A02 / A12 | `inpatient.transferred` / `inpatient.cancelled` |
//! | ADT-51 | 退院予定 / 取消 | A16 / A25 | not published |
//! | ADT-52 | 退院実施 / 取消 | A03 / A13 | `inpatient.discharged` / `inpatient.cancelled` |
//! | ADT-61 | アレルギー情報の登録／更新 | A60 | not published |
//!
//! "Not published" triggers have no canonical event type of v1 (plans, leaves of
//! absence, attending-doctor changes, allergies, patient deletion): their records are
//! skipped, not refused. Folders whose data type publishes nothing are never read by
//! the poller; every other data type (OMP-01 prescriptions, OML-11 results …) is not
//! ADT and is skipped the same way.

/// One trigger event an ADT folder may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtTrigger {
    /// The HL7 trigger event (`MSH-9.2`), e.g. `A01`.
    pub trigger: &'static str,
    /// What it records, in the guideline's words.
    pub meaning: &'static str,
    /// Whether the hub publishes it (the HL7 normaliser maps it to a canonical event).
    pub published: bool,
}

/// One ADT data type (データ種別) of standardized storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtDataType {
    /// The folder name and file-name part, e.g. `ADT-22`.
    pub code: &'static str,
    /// The triggers its folder holds: the event first, then its cancel when it has one.
    pub triggers: &'static [AdtTrigger],
}

impl AdtDataType {
    /// The entry of `trigger` (case-insensitive), when this folder may hold it.
    pub fn trigger(&self, trigger: &str) -> Option<&'static AdtTrigger> {
        self.triggers
            .iter()
            .find(|t| t.trigger.eq_ignore_ascii_case(trigger))
    }

    /// Whether any of its triggers is published: the poller reads only such folders.
    pub fn is_published(&self) -> bool {
        self.triggers.iter().any(|t| t.published)
    }

    /// Its triggers as `A01, A11`, for errors.
    pub fn trigger_list(&self) -> String {
        self.triggers
            .iter()
            .map(|t| t.trigger)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

const fn published(trigger: &'static str, meaning: &'static str) -> AdtTrigger {
    AdtTrigger {
        trigger,
        meaning,
        published: true,
    }
}

const fn kept(trigger: &'static str, meaning: &'static str) -> AdtTrigger {
    AdtTrigger {
        trigger,
        meaning,
        published: false,
    }
}

/// Every ADT data type of standardized storage.
pub const ADT_DATA_TYPES: [AdtDataType; 12] = [
    AdtDataType {
        code: "ADT-00",
        triggers: &[
            published("A08", "患者基本情報の更新"),
            kept("A23", "患者基本情報の削除"),
        ],
    },
    AdtDataType {
        code: "ADT-01",
        triggers: &[kept("A54", "担当医の変更"), kept("A55", "担当医の取消")],
    },
    AdtDataType {
        code: "ADT-12",
        triggers: &[published("A04", "外来診察の受付")],
    },
    AdtDataType {
        code: "ADT-21",
        triggers: &[kept("A14", "入院予定"), kept("A27", "入院予定の取消")],
    },
    AdtDataType {
        code: "ADT-22",
        triggers: &[
            published("A01", "入院実施"),
            published("A11", "入院実施の取消"),
        ],
    },
    AdtDataType {
        code: "ADT-31",
        triggers: &[kept("A21", "外出泊実施"), kept("A52", "外出泊実施の取消")],
    },
    AdtDataType {
        code: "ADT-32",
        triggers: &[
            kept("A22", "外出泊帰院実施"),
            kept("A53", "外出泊帰院実施の取消"),
        ],
    },
    AdtDataType {
        code: "ADT-41",
        triggers: &[
            kept("A15", "転科・転棟(転室・転床)予定"),
            kept("A26", "転科・転棟(転室・転床)予定の取消"),
        ],
    },
    AdtDataType {
        code: "ADT-42",
        triggers: &[
            published("A02", "転科・転棟(転室・転床)実施"),
            published("A12", "転科・転棟(転室・転床)実施の取消"),
        ],
    },
    AdtDataType {
        code: "ADT-51",
        triggers: &[kept("A16", "退院予定"), kept("A25", "退院予定の取消")],
    },
    AdtDataType {
        code: "ADT-52",
        triggers: &[
            published("A03", "退院実施"),
            published("A13", "退院実施の取消"),
        ],
    },
    AdtDataType {
        code: "ADT-61",
        triggers: &[kept("A60", "アレルギー情報の登録／更新")],
    },
];

/// The ADT data type of a folder or file-name part, e.g. `ADT-22`.
pub fn adt_data_type(code: &str) -> Option<&'static AdtDataType> {
    ADT_DATA_TYPES.iter().find(|t| t.code == code)
}

/// Whether the poller reads folders of this data type.
pub fn is_polled(code: &str) -> bool {
    adt_data_type(code).is_some_and(AdtDataType::is_published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_trigger_is_one_the_hl7_normaliser_maps() {
        for data_type in ADT_DATA_TYPES {
            for trigger in data_type.triggers {
                assert_eq!(
                    trigger.published,
                    renkei_hl7v2::HANDLED_TRIGGERS.contains(&trigger.trigger),
                    "{} {}",
                    data_type.code,
                    trigger.trigger
                );
            }
        }
    }

    #[test]
    fn only_folders_with_published_events_are_polled() {
        let polled: Vec<&str> = ADT_DATA_TYPES
            .iter()
            .map(|t| t.code)
            .filter(|c| is_polled(c))
            .collect();
        assert_eq!(polled, ["ADT-00", "ADT-12", "ADT-22", "ADT-42", "ADT-52"]);
        assert!(!is_polled("OMP-01"));
        assert!(!is_polled("ADT-99"));
        assert_eq!(
            adt_data_type("ADT-22").map(|t| t.trigger_list()).as_deref(),
            Some("A01, A11")
        );
    }
}
