//! The two care forms — 入院時情報提供書 and 退院・退所情報記録書 — as columns, and the
//! canonical event one filled-in form becomes, whether it came as a CSV row or as JSON.

use chrono::NaiveDate;
use renkei_sdk::{
    CanonicalEvent, EventData, EventType, FacilityRole, Identifier, Insurance, LtcInsurance,
    NormalizeError, Origin, Patient, PersonName, RelatedFacility, RelatedPerson, Sex, SourceFormat,
    TimeWindow, facility_source,
};
use serde_json::{Map, Value};

use crate::text::{
    ascii_digits, canonical_name, compact_date, is_digits, iso, iso_date, japan_midnight,
};

/// Prefix of the identifier system of a long-term-care insured person: the 6-digit
/// 保険者番号 follows, and the value is the 10-digit 被保険者番号 (unique per insurer).
pub const LTC_INSURED_SYSTEM_PREFIX: &str = "urn:renkei:ltc-insured:";

/// The identifier system of a person insured by the long-term-care insurer
/// `insurer_number` (`urn:renkei:ltc-insured:<保険者番号>`).
pub fn ltc_insured_system(insurer_number: &str) -> String {
    format!("{LTC_INSURED_SYSTEM_PREFIX}{insurer_number}")
}

/// A care form layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CareLayout {
    /// 入院時情報提供書 (`NYUIN`, 26 columns): from the care-manager office to the hospital.
    AdmissionInfo,
    /// 退院・退所情報記録書 (`TAIIN`, 46 columns): what the care manager learned from the
    /// hospital or facility before discharge.
    DischargeInfo,
}

impl CareLayout {
    /// Both layouts.
    pub const ALL: [CareLayout; 2] = [CareLayout::AdmissionInfo, CareLayout::DischargeInfo];

    /// The file name prefix: `NYUIN` or `TAIIN`.
    pub fn prefix(self) -> &'static str {
        match self {
            CareLayout::AdmissionInfo => "NYUIN",
            CareLayout::DischargeInfo => "TAIIN",
        }
    }

    /// The form's Japanese title.
    pub fn title(self) -> &'static str {
        match self {
            CareLayout::AdmissionInfo => "入院時情報提供書",
            CareLayout::DischargeInfo => "退院・退所情報記録書",
        }
    }

    /// The `form` name of the JSON form and of `data.care.form`.
    pub fn form(self) -> &'static str {
        match self {
            CareLayout::AdmissionInfo => "renkei.admission_info",
            CareLayout::DischargeInfo => "renkei.discharge_info",
        }
    }

    /// The form in an error's words: `admission information`, `discharge information`.
    fn subject(self) -> &'static str {
        match self {
            CareLayout::AdmissionInfo => "admission information",
            CareLayout::DischargeInfo => "discharge information",
        }
    }

    /// The event type a filled-in form becomes.
    pub fn event_type(self) -> EventType {
        match self {
            CareLayout::AdmissionInfo => EventType::CareAdmissionInfo,
            CareLayout::DischargeInfo => EventType::CareDischargeInfo,
        }
    }

    /// The columns, in order: the CSV header and the JSON keys.
    pub fn columns(self) -> &'static [Column] {
        match self {
            CareLayout::AdmissionInfo => &ADMISSION_INFO,
            CareLayout::DischargeInfo => &DISCHARGE_INFO,
        }
    }

    /// The key of the column whose date is the event's time (入院日, 記入日).
    fn time_key(self) -> &'static str {
        match self {
            CareLayout::AdmissionInfo => "admission_date",
            CareLayout::DischargeInfo => "record_date",
        }
    }

    /// The key of the hospital (or facility) code.
    fn hospital_key(self) -> &'static str {
        "hospital_code"
    }
}

/// What a column holds, and so how its cells are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Free text (choices from a list are text too; several are separated by 「、」).
    Text,
    /// A calendar date: `YYYYMMDD` in CSV, `YYYY-MM-DD` in JSON; `YYYY-MM-DD` in the event.
    Date,
    /// Exactly this many ASCII digits (insurer, insured and facility numbers).
    Digits(usize),
    /// 性別: `1` (男) or `2` (女).
    Sex,
    /// CSVバージョン: `1` or `1.<minor>`.
    Version,
}

/// One column of a care form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The CSV header, e.g. `被保険者番号`.
    pub header: &'static str,
    /// The key in the JSON form and in `data.care`, e.g. `insured_number`.
    pub key: &'static str,
    /// What the column holds.
    pub kind: ColumnKind,
    /// Why the form cannot be accepted without it, for a required column.
    pub required: Option<&'static str>,
    /// The value identifies the person (name, number, birth date, phone): errors never
    /// repeat it.
    pub personal: bool,
}

const fn text(header: &'static str, key: &'static str) -> Column {
    Column {
        header,
        key,
        kind: ColumnKind::Text,
        required: None,
        personal: false,
    }
}

const fn date(header: &'static str, key: &'static str) -> Column {
    Column {
        kind: ColumnKind::Date,
        ..text(header, key)
    }
}

const fn personal(column: Column) -> Column {
    Column {
        personal: true,
        ..column
    }
}

const fn required(column: Column, why: &'static str) -> Column {
    Column {
        required: Some(why),
        ..column
    }
}

const fn digits(header: &'static str, key: &'static str, len: usize) -> Column {
    Column {
        kind: ColumnKind::Digits(len),
        ..text(header, key)
    }
}

const WHO: &str = "the care recipient cannot be identified or routed";
const VERSION: Column = required(
    Column {
        kind: ColumnKind::Version,
        ..text("CSVバージョン", "version")
    },
    "it tells the hub how to read the row",
);
const INSURER: Column = required(digits("保険者番号", "insurer_number", 6), WHO);
const INSURED: Column = required(personal(digits("被保険者番号", "insured_number", 10)), WHO);
const NAME: Column = required(
    personal(text("利用者氏名", "name")),
    "the receiver cannot confirm who the care recipient is",
);
const KANA: Column = personal(text("フリガナ", "name_kana"));
const BIRTH: Column = personal(date("生年月日", "birth_date"));
const SEX: Column = Column {
    kind: ColumnKind::Sex,
    ..text("性別", "sex")
};
const OFFICE: Column = required(
    digits("介護支援事業所番号", "care_office_code", 10),
    "the care-manager office the information comes from is unknown",
);
const HOSPITAL_WHY: &str = "the hospital or facility the information concerns is unknown";

/// 入院時情報提供書: the 26 columns, with the JSON keys of the README.
static ADMISSION_INFO: [Column; 26] = [
    VERSION,
    INSURER,
    INSURED,
    NAME,
    KANA,
    BIRTH,
    SEX,
    required(date("入院日", "admission_date"), "the event has no date"),
    required(digits("医療機関コード", "hospital_code", 10), HOSPITAL_WHY),
    text("要介護度", "care_level"),
    date("認定有効期間開始", "certification_start"),
    date("認定有効期間終了", "certification_end"),
    text("自己負担割合", "copayment_ratio"),
    text("障害高齢者自立度", "independence_bedridden"),
    text("認知症高齢者自立度", "independence_dementia"),
    text("移動", "mobility"),
    text("食事", "eating"),
    text("排泄", "toileting"),
    text("服薬管理", "medication_management"),
    text("医療処置", "medical_procedures"),
    personal(text("キーパーソン氏名", "key_person_name")),
    text("キーパーソン続柄", "key_person_relationship"),
    personal(text("キーパーソン電話", "key_person_phone")),
    OFFICE,
    text("ケアマネジャー氏名", "care_manager_name"),
    text("ケアマネ電話", "care_manager_phone"),
];

/// 退院・退所情報記録書: the 46 columns (MHLW 様式例 for 退院・退所加算).
static DISCHARGE_INFO: [Column; 46] = [
    VERSION,
    required(date("記入日", "record_date"), "the event has no date"),
    INSURER,
    INSURED,
    NAME,
    KANA,
    BIRTH,
    SEX,
    OFFICE,
    text("ケアマネジャー氏名", "care_manager_name"),
    required(
        digits("医療機関・施設コード", "hospital_code", 10),
        HOSPITAL_WHY,
    ),
    text("医療機関・施設名", "hospital_name"),
    text("病棟・居室", "ward_room"),
    date("入院(所)日", "admission_date"),
    date("退院(所)予定日", "planned_discharge_date"),
    text("入院原因疾患(入所目的等)", "admission_reason"),
    text("退院(所)時の要介護度", "care_level_at_discharge"),
    text("要介護度区分変更", "care_level_change"),
    text("今後の医学管理医療機関名", "follow_up_institution"),
    text("今後の医学管理方法", "follow_up_method"),
    text("現在治療中の疾患", "current_conditions"),
    text("疾患の状況", "condition_status"),
    text("移動手段", "mobility"),
    text("排泄方法", "toileting"),
    text("入浴方法", "bathing"),
    text("食事形態", "diet_form"),
    text("UDF等の食形態区分", "diet_udf_category"),
    text("嚥下機能(むせ)", "swallowing_choking"),
    text("義歯", "dentures"),
    text("口腔清潔", "oral_hygiene"),
    text("睡眠", "sleep"),
    text("眠剤使用", "sleeping_pills"),
    text("認知・精神", "cognition_mental"),
    text("本人の受け止め・意向", "patient_wishes"),
    text("家族の受け止め・意向", "family_wishes"),
    text("医療処置の内容", "medical_procedures"),
    text("看護の視点", "nursing_viewpoint"),
    text("リハビリの視点", "rehabilitation_viewpoint"),
    text("禁忌事項", "contraindications"),
    text("症状・病状の予後・予測", "prognosis"),
    text("退院に際しての日常生活の阻害要因", "barriers_to_daily_life"),
    text(
        "在宅復帰のために整えなければならない要件",
        "requirements_for_home",
    ),
    date("聞き取り日", "interview_date"),
    text("情報提供者職種", "informant_role"),
    personal(text("情報提供者氏名", "informant_name")),
    text("会議出席", "conference_attended"),
];

/// How the values of a form are written where they came from, so errors can name the
/// place and the expected shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// A CSV row: dates `YYYYMMDD`, errors at `row N, column <header>`.
    Csv {
        /// The 1-based row number.
        row: usize,
    },
    /// The JSON form: dates `YYYY-MM-DD`, errors at `$.<key>`.
    Json,
}

impl Written {
    pub(crate) fn location(self, column: &Column) -> String {
        match self {
            Written::Csv { row } => format!("row {row}, column {}", column.header),
            Written::Json => format!("$.{}", column.key),
        }
    }

    /// The name of the column in an error's words.
    pub(crate) fn name(self, column: &Column) -> String {
        match self {
            Written::Csv { .. } => column.header.to_owned(),
            Written::Json => format!("{} ({})", column.key, column.header),
        }
    }

    fn date_shape(self) -> &'static str {
        match self {
            Written::Csv { .. } => "YYYYMMDD",
            Written::Json => "YYYY-MM-DD",
        }
    }

    pub(crate) fn error(self, column: &Column, reason: String) -> NormalizeError {
        NormalizeError::at(self.location(column), reason)
    }
}

/// The checked values of one filled-in form, one per column (`None` when empty);
/// dates as `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormValues {
    layout: CareLayout,
    written: Written,
    values: Vec<Option<String>>,
}

impl FormValues {
    /// Checks `cells` (one per column, as read, `None` when absent) against `layout`.
    pub fn check(
        layout: CareLayout,
        written: Written,
        cells: Vec<Option<String>>,
        window: &TimeWindow,
    ) -> Result<Self, NormalizeError> {
        let columns = layout.columns();
        let mut values = Vec::with_capacity(columns.len());
        for (column, cell) in columns.iter().zip(cells) {
            let cell = cell.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
            values.push(check_cell(layout, column, written, cell)?);
        }
        let form = FormValues {
            layout,
            written,
            values,
        };
        form.check_plausible(window)?;
        Ok(form)
    }

    /// The value of the column `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.layout
            .columns()
            .iter()
            .position(|c| c.key == key)
            .and_then(|i| self.values.get(i))
            .and_then(|v| v.as_deref())
    }

    fn column(&self, key: &str) -> Option<&'static Column> {
        self.layout.columns().iter().find(|c| c.key == key)
    }

    fn date(&self, key: &str) -> Option<NaiveDate> {
        self.get(key).and_then(iso_date)
    }

    /// The event time and the birth date lie in the hub's window.
    fn check_plausible(&self, window: &TimeWindow) -> Result<(), NormalizeError> {
        let time_key = self.layout.time_key();
        if let (Some(column), Some(date)) = (self.column(time_key), self.date(time_key)) {
            let time = japan_midnight(date).ok_or_else(|| {
                self.written.error(
                    column,
                    format!("{} has no midnight in Japan", self.written.name(column)),
                )
            })?;
            window
                .check(&self.written.name(column), time)
                .map_err(|reason| self.written.error(column, reason))?;
        }
        if let (Some(column), Some(date)) = (self.column("birth_date"), self.date("birth_date")) {
            window
                .check_past_date(&self.written.name(column), date)
                .map_err(|reason| self.written.error(column, reason))?;
        }
        Ok(())
    }

    /// Every column as `data.care`: `form`, then one member per column key (`null` when
    /// empty).
    fn care(&self) -> Value {
        let mut care = Map::new();
        care.insert("form".to_owned(), Value::from(self.layout.form()));
        for (column, value) in self.layout.columns().iter().zip(&self.values) {
            care.insert(
                column.key.to_owned(),
                value.clone().map_or(Value::Null, Value::String),
            );
        }
        Value::Object(care)
    }

    /// A value that must be there (a required column); an error naming it otherwise.
    fn require(&self, key: &str) -> Result<&str, NormalizeError> {
        match (self.get(key), self.column(key)) {
            (Some(value), _) => Ok(value),
            (None, Some(column)) => Err(self
                .written
                .error(column, format!("{} is empty", self.written.name(column)))),
            (None, None) => Err(NormalizeError::whole(format!(
                "the {} layout has no column `{key}`",
                self.layout.prefix()
            ))),
        }
    }

    /// The canonical event of this form; `raw_sha256` is the digest of the whole file
    /// (computed once for all its rows).
    pub fn into_event(
        self,
        format: SourceFormat,
        message_id: String,
        raw_sha256: String,
    ) -> Result<CanonicalEvent, NormalizeError> {
        let layout = self.layout;
        let insurer = self.require("insurer_number")?.to_owned();
        let insured = self.require("insured_number")?.to_owned();
        let office = self.require("care_office_code")?.to_owned();
        let hospital = self.require(layout.hospital_key())?.to_owned();
        let time_key = layout.time_key();
        let time = self
            .date(time_key)
            .and_then(japan_midnight)
            .ok_or_else(|| match self.column(time_key) {
                Some(column) => self
                    .written
                    .error(column, format!("{} is empty", self.written.name(column))),
                None => NormalizeError::whole("the form has no date"),
            })?;
        let care_level = match layout {
            CareLayout::AdmissionInfo => self.get("care_level"),
            CareLayout::DischargeInfo => self.get("care_level_at_discharge"),
        };
        let name = PersonName {
            kanji: self.get("name").map(canonical_name),
            kana: self.get("name_kana").map(canonical_name),
        };
        let key_person = RelatedPerson {
            name: self.get("key_person_name").map(canonical_name),
            relationship: self.get("key_person_relationship").map(str::to_owned),
            phone: self.get("key_person_phone").map(str::to_owned),
        };
        let patient = Patient {
            identifiers: vec![Identifier {
                system: ltc_insured_system(&insurer),
                value: insured.clone(),
            }],
            name: Some(name).filter(|n| n.kanji.is_some() || n.kana.is_some()),
            birth_date: self.date("birth_date"),
            sex: match self.get("sex") {
                Some("1") => Some(Sex::Male),
                Some("2") => Some(Sex::Female),
                _ => None,
            },
            insurance: Some(Insurance {
                medical: None,
                ltc: Some(LtcInsurance {
                    insurer_number: Some(insurer),
                    insured_number: Some(insured),
                    care_level: care_level.map(ascii_digits),
                }),
            }),
            address: None,
            phone: None,
            key_person: Some(key_person).filter(|k| *k != RelatedPerson::default()),
        };
        let facilities = vec![
            RelatedFacility {
                role: FacilityRole::Hospital,
                code: hospital,
                name: self.get("hospital_name").map(str::to_owned),
            },
            RelatedFacility {
                role: FacilityRole::CareOffice,
                code: office.clone(),
                name: None,
            },
        ];
        let data = EventData {
            patient,
            encounter: None,
            document: None,
            cancels: None,
            care: Some(self.care()),
            facilities,
            replaces: None,
            origin: Origin {
                format,
                sending_system: None,
                facility: Some(office.clone()),
                message_id,
                raw_sha256,
                assumed_charset: None,
            },
        };
        Ok(CanonicalEvent::new(
            facility_source(&office),
            layout.event_type(),
            time,
            data,
        ))
    }
}

/// Checks one cell; dates come back as `YYYY-MM-DD`.
fn check_cell(
    layout: CareLayout,
    column: &Column,
    written: Written,
    cell: Option<String>,
) -> Result<Option<String>, NormalizeError> {
    let name = written.name(column);
    let Some(value) = cell else {
        return match (column.required, written) {
            (Some(why), Written::Csv { .. }) => {
                Err(written.error(column, format!("{name} is empty: {why}")))
            }
            (Some(why), Written::Json) => Err(written.error(
                column,
                format!("the {} has no {name}: {why}", layout.subject()),
            )),
            (None, _) => Ok(None),
        };
    };
    let shown = |value: &str| {
        if column.personal {
            String::new()
        } else {
            format!(" `{}`", value.chars().take(40).collect::<String>())
        }
    };
    match column.kind {
        ColumnKind::Text => Ok(Some(value)),
        ColumnKind::Date => {
            let date = match written {
                Written::Csv { .. } => compact_date(&value),
                Written::Json => iso_date(&value),
            };
            match date {
                Some(date) => Ok(Some(iso(date))),
                None if column.personal => Err(written.error(
                    column,
                    format!("{name} is not a calendar date ({})", written.date_shape()),
                )),
                None => Err(written.error(
                    column,
                    format!(
                        "{name} is {}, which is not a calendar date ({})",
                        value.chars().take(40).collect::<String>(),
                        written.date_shape()
                    ),
                )),
            }
        }
        ColumnKind::Digits(len) if is_digits(&value, len) => Ok(Some(value)),
        ColumnKind::Digits(len) => Err(written.error(
            column,
            format!("{name}{} is not {len} digits", shown(&value)),
        )),
        ColumnKind::Sex if value == "1" || value == "2" => Ok(Some(value)),
        ColumnKind::Sex => Err(written.error(
            column,
            format!("{name}{} is neither 1 (男) nor 2 (女)", shown(&value)),
        )),
        ColumnKind::Version
            if value == "1"
                || value.strip_prefix("1.").is_some_and(|minor| {
                    !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())
                }) =>
        {
            Ok(Some(value))
        }
        ColumnKind::Version => Err(written.error(
            column,
            format!(
                "{name}{} is not a version of this layout the hub reads (1.x)",
                shown(&value)
            ),
        )),
    }
}
