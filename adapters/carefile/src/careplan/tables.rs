//! The content of each care-plan file kind, item by item (`No.` is the item number of
//! the standard's layout; item `No.n` is column `n`).
//!
//! Items whose meaning the hub does not map yet are kept, when not empty, in each
//! record's `unmapped` (`"No.18": "2196"`), so nothing the sender wrote is lost.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use renkei_sdk::NormalizeError;
use serde::Serialize;

use crate::text::{ascii_digits, compact_date, is_digits};

/// A code with its meaning, where the hub knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coded {
    /// The code as written, e.g. `22`.
    pub code: String,
    /// Its meaning, e.g. `要介護2`; `None` for a code the hub does not know.
    pub label: Option<&'static str>,
}

/// A period of two dates, either open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    /// The first day.
    pub start: Option<NaiveDate>,
    /// The last day.
    pub end: Option<NaiveDate>,
}

/// 要介護状態区分 codes (介護保険 interface code table).
pub fn care_level_label(code: &str) -> Option<&'static str> {
    Some(match code {
        "01" => "非該当",
        "06" => "事業対象者",
        "11" => "経過的要介護",
        "12" => "要支援1",
        "13" => "要支援2",
        "21" => "要介護1",
        "22" => "要介護2",
        "23" => "要介護3",
        "24" => "要介護4",
        "25" => "要介護5",
        _ => return None,
    })
}

fn plan_category_label(code: &str) -> Option<&'static str> {
    Some(match code {
        "11" => "初回",
        "12" => "紹介",
        "21" => "継続",
        _ => return None,
    })
}

fn certification_status_label(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "申請中",
        "2" => "認定済",
        _ => return None,
    })
}

fn living_support_reason_label(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "一人暮らし",
        "2" => "家族等が障害、疾病等",
        "3" => "その他",
        _ => return None,
    })
}

fn sex_label(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "男",
        "2" => "女",
        _ => return None,
    })
}

/// The cells of one row, read item by item; errors name the row and the item.
pub(crate) struct Cells<'a> {
    pub row: usize,
    pub cells: &'a [std::borrow::Cow<'a, str>],
}

/// How an item is shown in errors and whether its value may be repeated there.
#[derive(Clone, Copy)]
pub(crate) struct Item {
    pub no: usize,
    pub name: &'static str,
    pub personal: bool,
}

pub(crate) const fn item(no: usize, name: &'static str) -> Item {
    Item {
        no,
        name,
        personal: false,
    }
}

const fn personal(no: usize, name: &'static str) -> Item {
    Item {
        no,
        name,
        personal: true,
    }
}

impl Cells<'_> {
    pub fn error(&self, item: Item, reason: String) -> NormalizeError {
        NormalizeError::at(
            format!("row {}, column No.{} ({})", self.row, item.no, item.name),
            reason,
        )
    }

    fn raw(&self, no: usize) -> &str {
        no.checked_sub(1)
            .and_then(|i| self.cells.get(i))
            .map_or("", |c| c.trim())
    }

    fn shown(&self, item: Item) -> String {
        if item.personal {
            String::new()
        } else {
            format!(
                " `{}`",
                self.raw(item.no).chars().take(40).collect::<String>()
            )
        }
    }

    /// The text of an item, `None` when empty.
    pub fn text(&self, item: Item) -> Option<String> {
        Some(self.raw(item.no))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }

    pub fn required_text(&self, item: Item) -> Result<String, NormalizeError> {
        self.text(item)
            .ok_or_else(|| self.error(item, format!("{} is empty; it is required", item.name)))
    }

    /// A `YYYYMMDD` date; empty and `00000000` (not applicable) are `None`.
    pub fn date(&self, item: Item) -> Result<Option<NaiveDate>, NormalizeError> {
        let raw = self.raw(item.no);
        if raw.is_empty() || raw == "00000000" {
            return Ok(None);
        }
        compact_date(raw).map(Some).ok_or_else(|| {
            self.error(
                item,
                format!(
                    "{}{} is not a calendar date (YYYYMMDD)",
                    item.name,
                    self.shown(item)
                ),
            )
        })
    }

    pub fn required_date(&self, item: Item) -> Result<NaiveDate, NormalizeError> {
        self.date(item)?
            .ok_or_else(|| self.error(item, format!("{} is empty; it is required", item.name)))
    }

    /// A whole number (amounts, units, counts); empty is `None`.
    pub fn number(&self, item: Item) -> Result<Option<i64>, NormalizeError> {
        let raw = self.raw(item.no);
        if raw.is_empty() {
            return Ok(None);
        }
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(
                item,
                format!("{}{} is not a whole number", item.name, self.shown(item)),
            ));
        }
        raw.parse().map(Some).map_err(|_| {
            self.error(
                item,
                format!("{}{} is not a whole number", item.name, self.shown(item)),
            )
        })
    }

    pub fn required_number(&self, item: Item) -> Result<i64, NormalizeError> {
        self.number(item)?
            .ok_or_else(|| self.error(item, format!("{} is empty; it is required", item.name)))
    }

    /// A decimal written as digits with at most one `.` (unit prices such as `11.40`),
    /// kept as written.
    pub fn decimal(&self, item: Item) -> Result<Option<String>, NormalizeError> {
        let raw = self.raw(item.no);
        if raw.is_empty() {
            return Ok(None);
        }
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, "0"));
        let ok = |part: &str| {
            !part.is_empty() && part.len() <= 12 && part.bytes().all(|b| b.is_ascii_digit())
        };
        if ok(whole) && ok(fraction) {
            Ok(Some(raw.to_owned()))
        } else {
            Err(self.error(
                item,
                format!("{}{} is not a decimal number", item.name, self.shown(item)),
            ))
        }
    }

    /// Exactly `len` digits; empty is `None`.
    pub fn digits(&self, item: Item, len: usize) -> Result<Option<String>, NormalizeError> {
        let raw = self.raw(item.no);
        if raw.is_empty() {
            return Ok(None);
        }
        if is_digits(raw, len) {
            Ok(Some(raw.to_owned()))
        } else {
            Err(self.error(
                item,
                format!("{}{} is not {len} digits", item.name, self.shown(item)),
            ))
        }
    }

    pub fn required_digits(&self, item: Item, len: usize) -> Result<String, NormalizeError> {
        self.digits(item, len)?
            .ok_or_else(|| self.error(item, format!("{} is empty; it is required", item.name)))
    }

    /// An `HHMM` time as `HH:MM`; `9999` (時間表示なし) and empty are `None`.
    pub fn time(&self, item: Item) -> Result<Option<String>, NormalizeError> {
        let raw = self.raw(item.no);
        if raw.is_empty() || raw == "9999" {
            return Ok(None);
        }
        let valid = is_digits(raw, 4)
            && raw
                .get(..2)
                .and_then(|h| h.parse::<u8>().ok())
                .is_some_and(|h| h <= 24)
            && raw
                .get(2..)
                .and_then(|m| m.parse::<u8>().ok())
                .is_some_and(|m| m <= 59);
        match (valid, raw.get(..2), raw.get(2..)) {
            (true, Some(h), Some(m)) => Ok(Some(format!("{h}:{m}"))),
            _ => Err(self.error(
                item,
                format!(
                    "{}{} is not a time (HHMM, or 9999 for none)",
                    item.name,
                    self.shown(item)
                ),
            )),
        }
    }

    /// A code and its meaning.
    pub fn coded(&self, item: Item, label: fn(&str) -> Option<&'static str>) -> Option<Coded> {
        self.text(item).map(|code| {
            let normal = ascii_digits(&code);
            Coded {
                label: label(&normal),
                code,
            }
        })
    }

    /// The non-empty cells of the items not in `mapped`, keyed `No.n`.
    pub fn unmapped(&self, mapped: &[usize]) -> BTreeMap<String, String> {
        self.cells
            .iter()
            .enumerate()
            .map(|(i, cell)| (i + 1, cell.trim()))
            .filter(|(no, cell)| !cell.is_empty() && !mapped.contains(no))
            .map(|(no, cell)| (format!("No.{no}"), cell.to_owned()))
            .collect()
    }
}

/// Items 1–3 of every kind.
pub(crate) const CSV_VERSION: Item = item(1, "CSVバージョン");
pub(crate) const INSURER: Item = item(2, "保険者番号");
pub(crate) const INSURED: Item = personal(3, "被保険者番号");

/// 居宅サービス計画書(1) 第1表 (`UP1KYO`, 28 items, one row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanTable1 {
    /// No.4 作成年月日.
    pub created_on: NaiveDate,
    /// No.5 利用者郵便番号.
    pub user_postal_code: Option<String>,
    /// No.6 利用者住所1.
    pub user_address_1: Option<String>,
    /// No.7 利用者住所2.
    pub user_address_2: Option<String>,
    /// No.8 居宅サービス計画作成者氏名.
    pub planner_name: Option<String>,
    /// No.9 居宅介護支援事業者・事業所名.
    pub office_name: Option<String>,
    /// No.10 事業所郵便番号.
    pub office_postal_code: Option<String>,
    /// No.11 事業所所在地1.
    pub office_address_1: Option<String>,
    /// No.12 事業所所在地2.
    pub office_address_2: Option<String>,
    /// No.13 介護支援事業者コード.
    pub office_code: Option<String>,
    /// No.14 居宅サービス計画作成（変更）日: with the insurer and insured numbers, the
    /// key that links 第1表, 第2表 and 利用者補足情報.
    pub plan_date: NaiveDate,
    /// No.15 初回居宅サービス計画作成日.
    pub first_plan_date: Option<NaiveDate>,
    /// No.16 計画書区分 (11 初回, 12 紹介, 21 継続 …).
    pub plan_category: Option<Coded>,
    /// No.17 認定状況区分 (1 申請中, 2 認定済).
    pub certification_status: Option<Coded>,
    /// No.18 認定日.
    pub certified_on: Option<NaiveDate>,
    /// No.19–20 認定の有効期間.
    pub certification_period: Period,
    /// No.21 要介護状態区分.
    pub care_level: Option<Coded>,
    /// No.22 利用者及び家族の生活に対する意向 (課題分析の結果).
    pub user_and_family_wishes: Option<String>,
    /// No.23 介護認定審査会の意見及びサービスの種類の指定.
    pub certification_board_opinion: Option<String>,
    /// No.24 総合的な援助の方針.
    pub overall_policy: Option<String>,
    /// No.25 生活援助中心型の算定理由 (1 一人暮らし, 2 家族等が障害、疾病等, 3 その他).
    pub living_support_reason: Option<Coded>,
    /// No.26 生活援助中心型の算定理由 (その他).
    pub living_support_reason_other: Option<String>,
    /// No.27 更新業者コード.
    pub updated_by: Option<String>,
    /// Items not mapped yet (No.28 識別子 …).
    pub unmapped: BTreeMap<String, String>,
}

impl PlanTable1 {
    pub(crate) fn read(row: &Cells<'_>) -> Result<Self, NormalizeError> {
        Ok(PlanTable1 {
            created_on: row.required_date(item(4, "作成年月日"))?,
            user_postal_code: row.text(personal(5, "利用者郵便番号")),
            user_address_1: row.text(personal(6, "利用者住所1")),
            user_address_2: row.text(personal(7, "利用者住所2")),
            planner_name: row.text(item(8, "居宅サービス計画作成者氏名")),
            office_name: row.text(item(9, "居宅介護支援事業者・事業所名")),
            office_postal_code: row.text(item(10, "事業所郵便番号")),
            office_address_1: row.text(item(11, "事業所所在地1")),
            office_address_2: row.text(item(12, "事業所所在地2")),
            office_code: row.digits(item(13, "介護支援事業者コード"), 10)?,
            plan_date: row.required_date(item(14, "居宅サービス計画作成（変更）日"))?,
            first_plan_date: row.date(item(15, "初回居宅サービス計画作成日"))?,
            plan_category: row.coded(item(16, "計画書区分"), plan_category_label),
            certification_status: row.coded(item(17, "認定状況区分"), certification_status_label),
            certified_on: row.date(item(18, "認定日"))?,
            certification_period: Period {
                start: row.date(item(19, "認定有効期間開始"))?,
                end: row.date(item(20, "認定有効期間終了"))?,
            },
            care_level: row.coded(item(21, "要介護状態区分"), care_level_label),
            user_and_family_wishes: row.text(item(22, "利用者及び家族の生活に対する意向")),
            certification_board_opinion: row.text(item(23, "介護認定審査会の意見")),
            overall_policy: row.text(item(24, "総合的な援助の方針")),
            living_support_reason: row.coded(
                item(25, "生活援助中心型の算定理由"),
                living_support_reason_label,
            ),
            living_support_reason_other: row.text(item(26, "算定理由その他")),
            updated_by: row.digits(item(27, "更新業者コード"), 10)?,
            unmapped: row.unmapped(&[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                24, 25, 26, 27,
            ]),
        })
    }
}

/// One service line of 第2表: a service under a goal under a need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanTable2Line {
    /// No.6 課題NO.
    pub need_no: i64,
    /// No.7 生活全般の解決すべき課題(ニーズ) (inherited from the line above with the same
    /// 課題NO when the file leaves it blank, as the printed form does).
    pub need: Option<String>,
    /// No.8 援助目標NO.
    pub goal_no: i64,
    /// No.9 長期目標 (inherited like `need`, by 課題NO and 援助目標NO).
    pub long_term_goal: Option<String>,
    /// No.10 短期目標 (inherited).
    pub short_term_goal: Option<String>,
    /// No.11 長期目標の期間 (inherited).
    pub long_term_period: Option<String>,
    /// No.12 短期目標の期間 (inherited).
    pub short_term_period: Option<String>,
    /// No.13 援助内容NO.
    pub service_no: i64,
    /// No.14 サービス内容.
    pub service: Option<String>,
    /// No.15 保険対象区分 (`Y` covered by the insurance, `N` not).
    pub insurance_flag: Option<String>,
    /// No.16 サービス種別.
    pub service_kind: Option<String>,
    /// No.17 サービス事業者コード.
    pub provider_code: Option<String>,
    /// No.18 サービス事業所名 (or who provides it, e.g. 長女).
    pub provider_name: Option<String>,
    /// No.19 頻度.
    pub frequency: Option<String>,
    /// No.20 期間.
    pub period: Option<String>,
    /// No.21 更新業者コード.
    pub updated_by: Option<String>,
    /// Items not mapped yet (No.22 識別子 …).
    pub unmapped: BTreeMap<String, String>,
}

/// 居宅サービス計画書(2) 第2表 (`UP2KYO`, 22 items, one row per service line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanTable2 {
    /// No.4 居宅計画書作成年月日.
    pub created_on: NaiveDate,
    /// No.5 居宅サービス計画作成（変更）日 (the link key).
    pub plan_date: NaiveDate,
    /// Distinct 課題NO.
    pub need_count: usize,
    /// Distinct (課題NO, 援助目標NO).
    pub goal_count: usize,
    /// The service lines, in file order.
    pub lines: Vec<PlanTable2Line>,
}

impl PlanTable2 {
    pub(crate) fn read(rows: &[Cells<'_>]) -> Result<Self, NormalizeError> {
        let created = item(4, "居宅計画書作成年月日");
        let plan = item(5, "居宅サービス計画作成（変更）日");
        let mut created_on = None;
        let mut plan_date = None;
        let mut lines: Vec<PlanTable2Line> = Vec::with_capacity(rows.len());
        for row in rows {
            let this_created = row.required_date(created)?;
            let this_plan = row.required_date(plan)?;
            for (seen, this, what) in [
                (&mut created_on, this_created, created),
                (&mut plan_date, this_plan, plan),
            ] {
                match seen {
                    Some(first) if *first != this => {
                        return Err(row.error(
                            what,
                            format!(
                                "{} differs from the first row's: a 第2表 file holds one plan",
                                what.name
                            ),
                        ));
                    }
                    _ => *seen = Some(this),
                }
            }
            let need_no = row.required_number(item(6, "課題NO"))?;
            let goal_no = row.required_number(item(8, "援助目標NO"))?;
            let same_need = lines.iter().rev().find(|l| l.need_no == need_no);
            let same_goal = lines
                .iter()
                .rev()
                .find(|l| l.need_no == need_no && l.goal_no == goal_no);
            let inherit = |value: Option<String>, from: Option<&Option<String>>| {
                value.or_else(|| from.cloned().flatten())
            };
            let line = PlanTable2Line {
                need_no,
                need: inherit(row.text(item(7, "課題")), same_need.map(|l| &l.need)),
                goal_no,
                long_term_goal: inherit(
                    row.text(item(9, "長期目標")),
                    same_goal.or(same_need).map(|l| &l.long_term_goal),
                ),
                short_term_goal: inherit(
                    row.text(item(10, "短期目標")),
                    same_goal.map(|l| &l.short_term_goal),
                ),
                long_term_period: inherit(
                    row.text(item(11, "長期目標期間")),
                    same_goal.or(same_need).map(|l| &l.long_term_period),
                ),
                short_term_period: inherit(
                    row.text(item(12, "短期目標期間")),
                    same_goal.map(|l| &l.short_term_period),
                ),
                service_no: row.required_number(item(13, "援助内容NO"))?,
                service: row.text(item(14, "サービス内容")),
                insurance_flag: row.text(item(15, "保険対象区分")),
                service_kind: row.text(item(16, "サービス種別")),
                provider_code: row.digits(item(17, "サービス事業者コード"), 10)?,
                provider_name: row.text(item(18, "サービス事業所名")),
                frequency: row.text(item(19, "頻度")),
                period: row.text(item(20, "期間")),
                updated_by: row.digits(item(21, "更新業者コード"), 10)?,
                unmapped: row.unmapped(&[
                    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                ]),
            };
            lines.push(line);
        }
        let (Some(created_on), Some(plan_date)) = (created_on, plan_date) else {
            return Err(NormalizeError::at("row 1", "a 第2表 file holds no row"));
        };
        let mut needs: Vec<i64> = lines.iter().map(|l| l.need_no).collect();
        needs.sort_unstable();
        needs.dedup();
        let mut goals: Vec<(i64, i64)> = lines.iter().map(|l| (l.need_no, l.goal_no)).collect();
        goals.sort_unstable();
        goals.dedup();
        Ok(PlanTable2 {
            created_on,
            plan_date,
            need_count: needs.len(),
            goal_count: goals.len(),
            lines,
        })
    }
}

/// A file kind the hub recognises but does not map item by item yet (第3表, and the
/// rows of deletion files): the link items, then every other non-empty item by `No.`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenericRecord {
    /// No.4 (第3表: 週間サービス計画表作成年月日; deletions: 削除対象年月 or 計画作成日).
    pub key: Option<String>,
    /// No.5 onwards, non-empty, keyed `No.n`.
    pub items: BTreeMap<String, String>,
}

impl GenericRecord {
    pub(crate) fn read(row: &Cells<'_>) -> Self {
        GenericRecord {
            key: row.text(item(4, "No.4")),
            items: row.unmapped(&[1, 2, 3, 4]),
        }
    }
}

/// 週間サービス計画表 第3表 (`UP3KYO`): recognised, kept by item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanTable3 {
    /// No.5 居宅サービス計画作成（変更）日 (the link key), when the file gives it.
    pub plan_date: Option<NaiveDate>,
    /// Every row.
    pub records: Vec<GenericRecord>,
}

impl PlanTable3 {
    pub(crate) fn read(rows: &[Cells<'_>]) -> Result<Self, NormalizeError> {
        let mut plan_date = None;
        for row in rows {
            plan_date = plan_date.or(row.date(item(5, "居宅サービス計画作成（変更）日"))?);
        }
        Ok(PlanTable3 {
            plan_date,
            records: rows.iter().map(GenericRecord::read).collect(),
        })
    }
}

/// One row of 第6表: one service on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// No.8 単位数.
    pub units: Option<i64>,
    /// No.10 サービス提供日.
    pub date: NaiveDate,
    /// No.12 開始時刻 (`HH:MM`; none for 9999 時間表示なし).
    pub start: Option<String>,
    /// No.13 終了時刻.
    pub end: Option<String>,
    /// No.14 回数.
    pub count: Option<i64>,
    /// No.15 サービスコード.
    pub service_code: String,
    /// No.16 TAISコード (福祉用具).
    pub tais_code: Option<String>,
    /// No.18 用具名称.
    pub equipment_name: Option<String>,
    /// No.20 サービス事業者コード.
    pub provider_code: String,
    /// No.21 サービス事業者名.
    pub provider_name: Option<String>,
    /// No.24 更新業者コード.
    pub updated_by: Option<String>,
    /// Items not mapped yet.
    pub unmapped: BTreeMap<String, String>,
}

/// The rows of one service at one time of day, over the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageLine {
    /// サービス事業者コード.
    pub provider_code: String,
    /// サービス事業者名.
    pub provider_name: Option<String>,
    /// サービスコード.
    pub service_code: String,
    /// 単位数 (of the first row).
    pub units: Option<i64>,
    /// 開始時刻.
    pub start: Option<String>,
    /// 終了時刻.
    pub end: Option<String>,
    /// TAISコード.
    pub tais_code: Option<String>,
    /// 用具名称.
    pub equipment_name: Option<String>,
    /// How many rows.
    pub records: usize,
    /// The days, in file order.
    pub dates: Vec<NaiveDate>,
}

/// 第6表 サービス利用票 (`UPPLAN` 予定, `UPJSK` 実績; 25 items, one row per service
/// and day). It carries every office's services for the user, not only the receiver's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageTable6 {
    /// No.4 作成年月日.
    pub created_on: NaiveDate,
    /// No.5 対象年月 `YYYYMM`.
    pub target_month: String,
    /// No.6 プラン担当業者コード.
    pub planner_office_code: Option<String>,
    /// No.7 担当者名.
    pub planner_name: Option<String>,
    /// Every row.
    pub records: Vec<UsageRecord>,
    /// Distinct (事業者, サービスコード, 開始, 終了), in order of first appearance.
    pub lines: Vec<UsageLine>,
    /// Rows of the office the file is addressed to.
    pub records_for_receiver: usize,
}

impl UsageTable6 {
    pub(crate) fn read(rows: &[Cells<'_>], receiver: &str) -> Result<Self, NormalizeError> {
        let created = item(4, "作成年月日");
        let month = item(5, "対象年月");
        let mut head: Option<(NaiveDate, String)> = None;
        let mut planner = (None, None);
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let created_on = row.required_date(created)?;
            let target_month = row.required_digits(month, 6)?;
            match &head {
                Some((c, _)) if *c != created_on => {
                    return Err(row.error(
                        created,
                        "作成年月日 differs from the first row's".to_owned(),
                    ));
                }
                Some((_, m)) if *m != target_month => {
                    return Err(row.error(
                        month,
                        "対象年月 differs from the first row's: one file holds one month"
                            .to_owned(),
                    ));
                }
                Some(_) => {}
                None => head = Some((created_on, target_month.clone())),
            }
            if planner.0.is_none() {
                planner = (
                    row.digits(item(6, "プラン担当業者コード"), 10)?,
                    row.text(item(7, "担当者名")),
                );
            }
            let date_item = item(10, "サービス提供日");
            let date = row.required_date(date_item)?;
            let in_month = target_month.get(..4).and_then(|y| y.parse::<i32>().ok())
                == Some(date.year())
                && target_month.get(4..).and_then(|m| m.parse::<u32>().ok()) == Some(date.month());
            if !in_month {
                return Err(row.error(
                    date_item,
                    format!(
                        "サービス提供日 {} is not in the 対象年月 {target_month}",
                        date.format("%Y%m%d")
                    ),
                ));
            }
            records.push(UsageRecord {
                units: row.number(item(8, "単位数"))?,
                date,
                start: row.time(item(12, "開始時刻"))?,
                end: row.time(item(13, "終了時刻"))?,
                count: row.number(item(14, "回数"))?,
                service_code: row.required_text(item(15, "サービスコード"))?,
                tais_code: row.text(item(16, "TAISコード")),
                equipment_name: row.text(item(18, "用具名称")),
                provider_code: row.required_digits(item(20, "サービス事業者コード"), 10)?,
                provider_name: row.text(item(21, "サービス事業者名")),
                updated_by: row.digits(item(24, "更新業者コード"), 10)?,
                unmapped: row.unmapped(&[
                    1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 15, 16, 18, 20, 21, 24,
                ]),
            });
        }
        let Some((created_on, target_month)) = head else {
            return Err(NormalizeError::at("row 1", "a 第6表 file holds no row"));
        };
        let mut lines: Vec<UsageLine> = Vec::new();
        for record in &records {
            let same = |l: &&mut UsageLine| {
                l.provider_code == record.provider_code
                    && l.service_code == record.service_code
                    && l.start == record.start
                    && l.end == record.end
            };
            match lines.iter_mut().find(same) {
                Some(line) => {
                    line.records += 1;
                    line.dates.push(record.date);
                }
                None => lines.push(UsageLine {
                    provider_code: record.provider_code.clone(),
                    provider_name: record.provider_name.clone(),
                    service_code: record.service_code.clone(),
                    units: record.units,
                    start: record.start.clone(),
                    end: record.end.clone(),
                    tais_code: record.tais_code.clone(),
                    equipment_name: record.equipment_name.clone(),
                    records: 1,
                    dates: vec![record.date],
                }),
            }
        }
        Ok(UsageTable6 {
            created_on,
            target_month,
            planner_office_code: planner.0,
            planner_name: planner.1,
            records_for_receiver: records
                .iter()
                .filter(|r| r.provider_code == receiver)
                .count(),
            records,
            lines,
        })
    }
}

/// One row of 第7表.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageTable7Row {
    /// No.6 事業所名.
    pub office_name: Option<String>,
    /// No.7 事業所コード (`9999999999` on the grand-total row).
    pub office_code: Option<String>,
    /// No.8 サービス内容/種類.
    pub service_name: Option<String>,
    /// No.9 サービスコード (`999999` on the grand-total row; `<種類>AAAA`-style on
    /// subtotals).
    pub service_code: Option<String>,
    /// No.13 単位数.
    pub units: Option<i64>,
    /// No.14 割引後率.
    pub discount_rate: Option<i64>,
    /// No.15 割引後単位数.
    pub discounted_units: Option<i64>,
    /// No.16 回数.
    pub count: Option<i64>,
    /// No.17 サービス単位数.
    pub service_units: Option<i64>,
    /// No.21 区分支給限度基準を超える単位数.
    pub area_limit_excess_units: Option<i64>,
    /// No.22 区分支給限度基準内単位数.
    pub area_limit_units: Option<i64>,
    /// No.23 単位数単価 (as written, e.g. `11.40`).
    pub unit_price: Option<String>,
    /// No.24 費用総額.
    pub total_cost: Option<i64>,
    /// No.25 給付率.
    pub benefit_rate: Option<i64>,
    /// No.26 保険請求額.
    pub insurance_claim: Option<i64>,
    /// No.28 利用者負担 (保険対象分).
    pub user_charge_insured: Option<i64>,
    /// No.29 利用者負担 (全額負担分).
    pub user_charge_full: Option<i64>,
    /// No.36 更新業者コード.
    pub updated_by: Option<String>,
    /// Items not mapped yet (No.18, No.34 …).
    pub unmapped: BTreeMap<String, String>,
}

/// 第7表 サービス利用票別表 (`UPSIKYU`, 37 items): one row per service, subtotal rows,
/// and a grand-total row (excluded from `lines`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageTable7 {
    /// No.4 作成年月日.
    pub created_on: NaiveDate,
    /// No.5 対象年月.
    pub target_month: String,
    /// The service rows.
    pub lines: Vec<UsageTable7Row>,
    /// Subtotal rows (サービスコード of a service kind and four letters, e.g. `11AAAA`).
    pub subtotals: Vec<UsageTable7Row>,
    /// The grand-total row (事業所コード `9999999999` or サービスコード `999999`).
    pub grand_total: Option<UsageTable7Row>,
}

impl UsageTable7 {
    pub(crate) fn read(rows: &[Cells<'_>]) -> Result<Self, NormalizeError> {
        let created = item(4, "作成年月日");
        let month = item(5, "対象年月");
        let mut head: Option<(NaiveDate, String)> = None;
        let mut table = (Vec::new(), Vec::new(), None);
        for row in rows {
            let created_on = row.required_date(created)?;
            let target_month = row.required_digits(month, 6)?;
            match &head {
                Some((c, _)) if *c != created_on => {
                    return Err(row.error(
                        created,
                        "作成年月日 differs from the first row's".to_owned(),
                    ));
                }
                Some((_, m)) if *m != target_month => {
                    return Err(row.error(
                        month,
                        "対象年月 differs from the first row's: one file holds one month"
                            .to_owned(),
                    ));
                }
                Some(_) => {}
                None => head = Some((created_on, target_month.clone())),
            }
            let record = UsageTable7Row {
                office_name: row.text(item(6, "事業所名")),
                office_code: row.digits(item(7, "事業所コード"), 10)?,
                service_name: row.text(item(8, "サービス内容/種類")),
                service_code: row.text(item(9, "サービスコード")),
                units: row.number(item(13, "単位数"))?,
                discount_rate: row.number(item(14, "割引後率"))?,
                discounted_units: row.number(item(15, "割引後単位数"))?,
                count: row.number(item(16, "回数"))?,
                service_units: row.number(item(17, "サービス単位数"))?,
                area_limit_excess_units: row.number(item(21, "区分支給限度基準を超える単位数"))?,
                area_limit_units: row.number(item(22, "区分支給限度基準内単位数"))?,
                unit_price: row.decimal(item(23, "単位数単価"))?,
                total_cost: row.number(item(24, "費用総額"))?,
                benefit_rate: row.number(item(25, "給付率"))?,
                insurance_claim: row.number(item(26, "保険請求額"))?,
                user_charge_insured: row.number(item(28, "利用者負担(保険対象分)"))?,
                user_charge_full: row.number(item(29, "利用者負担(全額負担分)"))?,
                updated_by: row.digits(item(36, "更新業者コード"), 10)?,
                unmapped: row.unmapped(&[
                    1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 21, 22, 23, 24, 25, 26, 28, 29,
                    36,
                ]),
            };
            let code = record.service_code.as_deref().unwrap_or_default();
            let grand = record.office_code.as_deref() == Some("9999999999") || code == "999999";
            let subtotal = code.len() == 6
                && code
                    .get(..2)
                    .is_some_and(|k| k.bytes().all(|b| b.is_ascii_digit()))
                && code
                    .get(2..)
                    .is_some_and(|t| t.bytes().all(|b| b.is_ascii_uppercase()));
            if grand {
                if table.2.is_some() {
                    return Err(row.error(
                        item(7, "事業所コード"),
                        "a second grand-total row (事業所コード 9999999999): a 第7表 has one"
                            .to_owned(),
                    ));
                }
                table.2 = Some(record);
            } else if subtotal {
                table.1.push(record);
            } else {
                table.0.push(record);
            }
        }
        let Some((created_on, target_month)) = head else {
            return Err(NormalizeError::at("row 1", "a 第7表 file holds no row"));
        };
        Ok(UsageTable7 {
            created_on,
            target_month,
            lines: table.0,
            subtotals: table.1,
            grand_total: table.2,
        })
    }
}

/// 利用者補足情報 (`UPHOSOKU`, 63 items, one row): the person the files are about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSupplement {
    /// No.4 居宅サービス計画作成（変更）日 (the link key to 第1表; `00000000`, not
    /// applicable, when sent with 第6表・第7表).
    pub plan_date: Option<NaiveDate>,
    /// No.5 フリガナ (as written, often half-width).
    pub name_kana: Option<String>,
    /// No.6 氏名.
    pub name: Option<String>,
    /// No.7 性別 (1 男, 2 女).
    pub sex: Option<Coded>,
    /// No.8 生年月日.
    pub birth_date: Option<NaiveDate>,
    /// No.9 郵便番号.
    pub postal_code: Option<String>,
    /// No.10 住所1.
    pub address_1: Option<String>,
    /// No.11 住所2.
    pub address_2: Option<String>,
    /// No.12 電話番号.
    pub phone: Option<String>,
    /// No.13 認定日.
    pub certified_on: Option<NaiveDate>,
    /// No.14–15 限度額適用期間.
    pub limit_period: Period,
    /// No.18 要介護状態区分.
    pub care_level: Option<Coded>,
    /// No.19 区分支給限度基準額 (単位).
    pub limit_units: Option<i64>,
    /// No.63 対象年月 (`000000` with 第1表・第2表).
    pub target_month: Option<String>,
    /// Items not mapped yet.
    pub unmapped: BTreeMap<String, String>,
}

impl UserSupplement {
    pub(crate) fn read(row: &Cells<'_>) -> Result<Self, NormalizeError> {
        Ok(UserSupplement {
            plan_date: row.date(item(4, "居宅サービス計画作成（変更）日"))?,
            name_kana: row.text(personal(5, "フリガナ")),
            name: row.text(personal(6, "氏名")),
            sex: row.coded(item(7, "性別"), sex_label),
            birth_date: row.date(personal(8, "生年月日"))?,
            postal_code: row.text(personal(9, "郵便番号")),
            address_1: row.text(personal(10, "住所1")),
            address_2: row.text(personal(11, "住所2")),
            phone: row.text(personal(12, "電話番号")),
            certified_on: row.date(item(13, "認定日"))?,
            limit_period: Period {
                start: row.date(item(14, "限度額適用期間開始"))?,
                end: row.date(item(15, "限度額適用期間終了"))?,
            },
            care_level: row.coded(item(18, "要介護状態区分"), care_level_label),
            limit_units: row.number(item(19, "区分支給限度基準額"))?,
            target_month: row.digits(item(63, "対象年月"), 6)?,
            unmapped: row.unmapped(&[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18, 19, 63,
            ]),
        })
    }
}
