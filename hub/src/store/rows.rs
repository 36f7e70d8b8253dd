//! Reading rows back into the store's types, once for every backend: the columns are
//! named alike on each, and sqlx decodes each column's type per database.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use std::collections::HashMap;

use super::{DeliveryJob, DeliverySummary, RejectedSummary, StoreError, corrupt};
use crate::audit::{AuditEntry, AuditRow};
use crate::registry::{CareRelationship, Consent, Endpoint, Facility, Participant, Subscription};

/// A column type the database of `R` can decode.
pub(crate) trait Column<'r, R: Row>: Decode<'r, R::Database> + Type<R::Database> {}
impl<'r, R: Row, T: Decode<'r, R::Database> + Type<R::Database>> Column<'r, R> for T {}

/// An audit entry from `actor, action, outcome, patient_id, event_id, participant_id`
/// and `detail` (JSON text).
pub(crate) fn audit_entry<'r, R>(row: &'r R) -> Result<AuditEntry, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
    Uuid: Column<'r, R>,
{
    let detail: String = row.try_get("detail")?;
    Ok(AuditEntry {
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        outcome: row.try_get("outcome")?,
        patient_id: row.try_get("patient_id")?,
        event_id: row.try_get("event_id")?,
        participant_id: row.try_get("participant_id")?,
        detail: serde_json::from_str(&detail).map_err(|e| corrupt("audit detail", e))?,
    })
}

/// A chained audit row: the entry's columns and `seq, at, prev_hash, hash`.
pub(crate) fn audit_row<'r, R>(row: &'r R) -> Result<AuditRow, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
    i64: Column<'r, R>,
    Uuid: Column<'r, R>,
    DateTime<Utc>: Column<'r, R>,
    Vec<u8>: Column<'r, R>,
{
    Ok(AuditRow {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        entry: audit_entry(row)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// A refused input's row, without its bytes (`raw_bytes` is their length).
pub(crate) fn rejected_summary<'r, R>(row: &'r R) -> Result<RejectedSummary, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
    i64: Column<'r, R>,
    Uuid: Column<'r, R>,
    DateTime<Utc>: Column<'r, R>,
{
    Ok(RejectedSummary {
        id: row.try_get("id")?,
        source: row.try_get("adapter")?,
        peer: row.try_get("peer")?,
        received_at: row.try_get("received_at")?,
        location: row.try_get("location")?,
        reason: row.try_get("reason")?,
        raw_sha256: row.try_get("raw_sha256")?,
        raw_bytes: row.try_get("raw_bytes")?,
        replayed_at: row.try_get("replayed_at")?,
        replayed_event: row.try_get("replayed_event")?,
    })
}

/// A row of the delivery log.
pub(crate) fn delivery_summary<'r, R>(row: &'r R) -> Result<DeliverySummary, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
    i64: Column<'r, R>,
    i32: Column<'r, R>,
    Uuid: Column<'r, R>,
    DateTime<Utc>: Column<'r, R>,
{
    Ok(DeliverySummary {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        participant_id: row.try_get("participant_id")?,
        endpoint_name: row.try_get("endpoint_name")?,
        sequence: row.try_get("sequence")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A facility from `code, name, kind`.
pub(crate) fn facility<'r, R>(row: &'r R) -> Result<Facility, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
{
    Ok(Facility {
        code: row.try_get("code")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
    })
}

/// A participant from `id, facility_code, name`.
pub(crate) fn participant<'r, R>(row: &'r R) -> Result<Participant, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
{
    Ok(Participant {
        id: row.try_get("id")?,
        facility: row.try_get("facility_code")?,
        name: row.try_get("name")?,
    })
}

/// A care relationship from `patient_id, participant_id, role, valid_from, valid_until`.
pub(crate) fn care_relationship<'r, R>(row: &'r R) -> Result<CareRelationship, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
    NaiveDate: Column<'r, R>,
{
    Ok(CareRelationship {
        patient: row.try_get("patient_id")?,
        participant: row.try_get("participant_id")?,
        role: row.try_get("role")?,
        valid_from: row.try_get("valid_from")?,
        valid_until: row.try_get("valid_until")?,
    })
}

/// An event from `patient_id` and `body` (JSON text).
pub(crate) fn event<'r, R>(row: &'r R) -> Result<(Option<String>, serde_json::Value), StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
{
    let body: String = row.try_get("body")?;
    Ok((
        row.try_get("patient_id")?,
        serde_json::from_str(&body).map_err(|e| corrupt("events.body", e))?,
    ))
}

/// The patients (`patient_id`, where set) of some rows.
pub(crate) fn patients_of<'r, R>(rows: &'r [R]) -> Result<Vec<String>, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
{
    let mut patients = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(patient) = row.try_get::<Option<String>, _>("patient_id")? {
            patients.push(patient);
        }
    }
    Ok(patients)
}

/// A delivery job from the columns of the delivery, its event, participant and
/// endpoint; `secrets` decoded by the backend, the patient's consents from `consents`.
pub(crate) fn delivery_job<'r, R>(
    row: &'r R,
    secrets: Vec<String>,
    consents: &HashMap<String, Vec<Consent>>,
) -> Result<DeliveryJob, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
    i64: Column<'r, R>,
    i32: Column<'r, R>,
    bool: Column<'r, R>,
    Uuid: Column<'r, R>,
    DateTime<Utc>: Column<'r, R>,
{
    let patient_id: Option<String> = row.try_get("patient_id")?;
    Ok(DeliveryJob {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        body: row.try_get::<String, _>("body")?.into_bytes(),
        sequence: row.try_get("sequence")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        participant_id: row.try_get("participant_id")?,
        facility: row.try_get("facility_code")?,
        consents: patient_id
            .as_ref()
            .and_then(|p| consents.get(p).cloned())
            .unwrap_or_default(),
        patient_id,
        url: row.try_get("url")?,
        secrets,
        endpoint_enabled: row.try_get("enabled")?,
    })
}

/// An endpoint as exported: its URL's credentials and its `secrets` secrets masked.
pub(crate) fn masked_endpoint<'r, R>(row: &'r R, secrets: usize) -> Result<Endpoint, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
    bool: Column<'r, R>,
{
    Ok(Endpoint {
        participant: row.try_get("participant_id")?,
        name: row.try_get("name")?,
        url: crate::registry::masked_url(&row.try_get::<String, _>("url")?),
        secrets: vec!["whsec_********".to_owned(); secrets],
        enabled: row.try_get("enabled")?,
    })
}

/// A subscription, with its lists decoded by the backend.
pub(crate) fn subscription<'r, R>(
    row: &'r R,
    event_types: Vec<String>,
    source_facilities: Vec<String>,
) -> Result<Subscription, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Column<'r, R>,
{
    Ok(Subscription {
        participant: row.try_get("participant_id")?,
        name: row.try_get("name")?,
        endpoint: row.try_get("endpoint_name")?,
        event_types,
        source_facilities,
    })
}
