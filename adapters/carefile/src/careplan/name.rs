//! Care-plan file names: the kind, the target month, the two offices and the 14-digit
//! sequence that files sent together share.
//!
//! `<kind>[_<対象年月 YYYYMM>]_<送信元事業所番号>[_<サービス種類>]_<送信先事業所番号>[_<サービス種類>]_<YYYYMMDDHHMMSS>.CSV`
//! — edition 4.1 writes the two-digit service kinds (`43` 居宅介護支援, `11` 訪問介護 …);
//! earlier editions did not, and both are read.

use chrono::{DateTime, FixedOffset};
use renkei_sdk::NormalizeError;
use serde::Serialize;

use crate::text::{is_digits, is_month, japan_timestamp};

/// What a deletion file (`DLT…`) deletes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionTarget {
    /// `DLT1KYO`: the care plan (第1表, and with it 第2表 and 第3表).
    PlanTables,
    /// `DLTPLAN`: the service-use plan of a month (第6表 予定).
    UsagePlan,
    /// `DLTJSK`: the service record of a month (第6表 実績).
    UsageActual,
    /// Another `DLT…` file (e.g. `DLTYOBO`): the token after `DLT`.
    Other(String),
}

/// The kind of a care-plan file, from its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CarePlanFileKind {
    /// `UP1KYO`: 居宅サービス計画書(1) 第1表.
    PlanTable1,
    /// `UP2KYO`: 居宅サービス計画書(2) 第2表 (needs, goals, services).
    PlanTable2,
    /// `UP3KYO`: 週間サービス計画表 第3表.
    PlanTable3,
    /// `UPPLAN`: 第6表 サービス利用票 (予定).
    UsageTable6Plan,
    /// `UPJSK`: 第6表 サービス利用票 (実績), sent back by the service office.
    UsageTable6Actual,
    /// `UPSIKYU`: 第7表 サービス利用票別表.
    UsageTable7,
    /// `UPHOSOKU`: 利用者補足情報 (the person; sent with 1表・2表 as `000000`, with
    /// 6表・7表 under their month).
    UserSupplement,
    /// `DLT…`: a deletion.
    Deletion(DeletionTarget),
}

impl CarePlanFileKind {
    /// The file name token, e.g. `UP1KYO`, `DLTPLAN`.
    pub fn token(&self) -> String {
        match self {
            CarePlanFileKind::PlanTable1 => "UP1KYO".to_owned(),
            CarePlanFileKind::PlanTable2 => "UP2KYO".to_owned(),
            CarePlanFileKind::PlanTable3 => "UP3KYO".to_owned(),
            CarePlanFileKind::UsageTable6Plan => "UPPLAN".to_owned(),
            CarePlanFileKind::UsageTable6Actual => "UPJSK".to_owned(),
            CarePlanFileKind::UsageTable7 => "UPSIKYU".to_owned(),
            CarePlanFileKind::UserSupplement => "UPHOSOKU".to_owned(),
            CarePlanFileKind::Deletion(DeletionTarget::PlanTables) => "DLT1KYO".to_owned(),
            CarePlanFileKind::Deletion(DeletionTarget::UsagePlan) => "DLTPLAN".to_owned(),
            CarePlanFileKind::Deletion(DeletionTarget::UsageActual) => "DLTJSK".to_owned(),
            CarePlanFileKind::Deletion(DeletionTarget::Other(token)) => format!("DLT{token}"),
        }
    }

    /// The kind a file name token names, if any.
    pub fn from_token(token: &str) -> Option<Self> {
        let upper = token.to_ascii_uppercase();
        Some(match upper.as_str() {
            "UP1KYO" => CarePlanFileKind::PlanTable1,
            "UP2KYO" => CarePlanFileKind::PlanTable2,
            "UP3KYO" => CarePlanFileKind::PlanTable3,
            "UPPLAN" => CarePlanFileKind::UsageTable6Plan,
            "UPJSK" => CarePlanFileKind::UsageTable6Actual,
            "UPSIKYU" => CarePlanFileKind::UsageTable7,
            "UPHOSOKU" => CarePlanFileKind::UserSupplement,
            "DLT1KYO" => CarePlanFileKind::Deletion(DeletionTarget::PlanTables),
            "DLTPLAN" => CarePlanFileKind::Deletion(DeletionTarget::UsagePlan),
            "DLTJSK" => CarePlanFileKind::Deletion(DeletionTarget::UsageActual),
            other => {
                let rest = other
                    .strip_prefix("DLT")
                    .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))?;
                CarePlanFileKind::Deletion(DeletionTarget::Other(rest.to_owned()))
            }
        })
    }

    /// A short English name, as `data.care` keys the file's content: `plan_table1`,
    /// `usage_table7`, `user_supplement`, `deletion` ….
    pub fn name(&self) -> &'static str {
        match self {
            CarePlanFileKind::PlanTable1 => "plan_table1",
            CarePlanFileKind::PlanTable2 => "plan_table2",
            CarePlanFileKind::PlanTable3 => "plan_table3",
            CarePlanFileKind::UsageTable6Plan => "usage_table6_plan",
            CarePlanFileKind::UsageTable6Actual => "usage_table6_actual",
            CarePlanFileKind::UsageTable7 => "usage_table7",
            CarePlanFileKind::UserSupplement => "user_supplement",
            CarePlanFileKind::Deletion(_) => "deletion",
        }
    }

    /// The form's Japanese title, e.g. `居宅サービス計画書(1) 第1表`.
    pub fn label(&self) -> &'static str {
        match self {
            CarePlanFileKind::PlanTable1 => "居宅サービス計画書(1) 第1表",
            CarePlanFileKind::PlanTable2 => "居宅サービス計画書(2) 第2表",
            CarePlanFileKind::PlanTable3 => "週間サービス計画表 第3表",
            CarePlanFileKind::UsageTable6Plan => "第6表 サービス利用票 (予定)",
            CarePlanFileKind::UsageTable6Actual => "第6表 サービス利用票 (実績)",
            CarePlanFileKind::UsageTable7 => "第7表 サービス利用票別表",
            CarePlanFileKind::UserSupplement => "利用者補足情報",
            CarePlanFileKind::Deletion(_) => "削除",
        }
    }

    /// Whether the name carries a target month: required (`Some(true)`), forbidden
    /// (`Some(false)`) or optional (`None`).
    fn month_in_name(&self) -> Option<bool> {
        match self {
            CarePlanFileKind::PlanTable1
            | CarePlanFileKind::PlanTable2
            | CarePlanFileKind::PlanTable3 => Some(false),
            CarePlanFileKind::UsageTable6Plan
            | CarePlanFileKind::UsageTable6Actual
            | CarePlanFileKind::UsageTable7
            | CarePlanFileKind::UserSupplement => Some(true),
            CarePlanFileKind::Deletion(_) => None,
        }
    }
}

impl std::fmt::Display for CarePlanFileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.token(), self.label())
    }
}

/// A care-plan file name, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarePlanFileName {
    /// What the file holds.
    pub kind: CarePlanFileKind,
    /// 対象年月 `YYYYMM`; `None` for the plan tables and for a 利用者補足情報 sent with
    /// them (`000000`).
    pub target_month: Option<String>,
    /// 送信元の事業所番号.
    pub sender_office: String,
    /// 送信元のサービス種類 (edition 4.1), e.g. `43` 居宅介護支援.
    pub sender_service_kind: Option<String>,
    /// 送信先の事業所番号.
    pub receiver_office: String,
    /// 送信先のサービス種類 (edition 4.1), e.g. `11` 訪問介護.
    pub receiver_service_kind: Option<String>,
    /// The 14-digit `YYYYMMDDHHMMSS` that the files of one transmission share.
    pub file_seq: String,
    /// `file_seq` as a time in Japan.
    pub created_at: DateTime<FixedOffset>,
}

impl CarePlanFileName {
    /// Reads a file name (a path is fine: only its last component is read).
    pub fn parse(file_name: &str) -> Result<Self, NormalizeError> {
        let name = crate::names::base_name(file_name);
        let stem = match name.rsplit_once('.') {
            Some((stem, ext)) if ext.eq_ignore_ascii_case("csv") => stem,
            _ => {
                return Err(NormalizeError::whole(
                    "a care-plan file name ends in .CSV (UP1KYO_…_<YYYYMMDDHHMMSS>.CSV)",
                ));
            }
        };
        let mut tokens = stem.split('_');
        let token = tokens.next().unwrap_or_default();
        let kind = CarePlanFileKind::from_token(token).ok_or_else(|| {
            NormalizeError::whole(
                "the file name does not start with a care-plan file kind (UP1KYO, UP2KYO, UP3KYO, UPPLAN, UPJSK, UPSIKYU, UPHOSOKU or DLT…)",
            )
        })?;
        let mut rest: Vec<&str> = tokens.collect();
        let wrong = |what: &str| {
            NormalizeError::whole(format!(
                "the file name of a {kind} does not follow <kind>{}_<送信元事業所番号 10 digits>[_<サービス種類 2 digits>]_<送信先事業所番号 10 digits>[_<サービス種類>]_<YYYYMMDDHHMMSS>.CSV: {what}",
                match kind.month_in_name() {
                    Some(true) => "_<対象年月 YYYYMM>",
                    Some(false) => "",
                    None => "[_<対象年月 YYYYMM>]",
                }
            ))
        };
        let month = match (kind.month_in_name(), rest.first()) {
            (Some(false), _) => None,
            (_, Some(first)) if is_digits(first, 6) => {
                let month = (*first).to_owned();
                rest.remove(0);
                Some(month)
            }
            (Some(true), _) => return Err(wrong("the target month is missing")),
            (None, _) => None,
        };
        let target_month = match month {
            Some(m) if m == "000000" && kind == CarePlanFileKind::UserSupplement => None,
            Some(m) if is_month(&m) => Some(m),
            Some(_) => return Err(wrong("the target month is not a month (YYYYMM)")),
            None => None,
        };
        let (sender, sender_kind, receiver, receiver_kind, seq) = match rest.as_slice() {
            [sender, sender_kind, receiver, receiver_kind, seq]
                if is_digits(sender_kind, 2) && is_digits(receiver_kind, 2) =>
            {
                (
                    *sender,
                    Some((*sender_kind).to_owned()),
                    *receiver,
                    Some((*receiver_kind).to_owned()),
                    *seq,
                )
            }
            [sender, receiver, seq] => (*sender, None, *receiver, None, *seq),
            _ => return Err(wrong("it has the wrong number of parts")),
        };
        if !is_digits(sender, 10) || !is_digits(receiver, 10) {
            return Err(wrong("an office number is not 10 digits"));
        }
        let created_at = japan_timestamp(seq)
            .ok_or_else(|| wrong("the last part is not a YYYYMMDDHHMMSS time"))?;
        Ok(CarePlanFileName {
            kind,
            target_month,
            sender_office: sender.to_owned(),
            sender_service_kind: sender_kind,
            receiver_office: receiver.to_owned(),
            receiver_service_kind: receiver_kind,
            file_seq: seq.to_owned(),
            created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edition_4_1_names_and_older_ones_are_read() {
        let name = CarePlanFileName::parse(
            "UPHOSOKU_000000_1379999999_43_1379999998_11_20250425093000.CSV",
        );
        let name = name.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name.kind, CarePlanFileKind::UserSupplement);
        assert_eq!(name.target_month, None);
        assert_eq!(name.sender_service_kind.as_deref(), Some("43"));
        let old = CarePlanFileName::parse("UPPLAN_201912_0300000100_0300000005_20191025200201.CSV")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.target_month.as_deref(), Some("201912"));
        assert_eq!(old.receiver_office, "0300000005");
        assert_eq!(old.receiver_service_kind, None);
        let deletion =
            CarePlanFileName::parse("DLTJSK_202505_1379999998_1379999999_20250601120000.CSV")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            deletion.kind,
            CarePlanFileKind::Deletion(DeletionTarget::UsageActual)
        );
        assert_eq!(
            CarePlanFileKind::from_token("DLTYOBO"),
            Some(CarePlanFileKind::Deletion(DeletionTarget::Other(
                "YOBO".to_owned()
            )))
        );
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "UP1KYO_1379999999_43_1379999998_11_20250425093000.txt",
            "UPXYZ_1379999999_43_1379999998_11_20250425093000.CSV",
            "UPPLAN_1379999999_43_1379999998_11_20250425100000.CSV",
            "UPPLAN_202513_1379999999_43_1379999998_11_20250425100000.CSV",
            "UP1KYO_137999999_43_1379999998_11_20250425093000.CSV",
            "UP1KYO_1379999999_43_1379999998_11_20250425996000.CSV",
        ] {
            assert!(CarePlanFileName::parse(bad).is_err(), "{bad}");
        }
    }
}
