//! The routes' handlers, each with its OpenAPI description (`#[utoipa::path]`): the
//! document is generated from these and from the request and response types below,
//! and the router is built from the same items, so the two cannot drift.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::schema::{ChangeSchema, RegistryDocumentSchema};
use super::{ApiState, Caller, OpenApiJson};
use crate::audit::AuditEntry;
use crate::registry::document::{Change, RegistryDocument};
use crate::store::{DeliveryFilter, DeliveryStatus, DeliverySummary};
use axum::extract::State;

/// Blank characters a reason may not consist of alone (besides control characters).
fn is_blank(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{00a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// Why patient data is read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadReason {
    /// Why patient data is read (one line of text); written to the audit log with who
    /// read what and when.
    #[param(
        required = true,
        value_type = String,
        min_length = 1,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    reason: Option<String>,
}

#[cfg(test)]
impl ReadReason {
    pub fn new(reason: &str) -> Self {
        Self {
            reason: Some(reason.to_owned()),
        }
    }

    pub fn missing() -> Self {
        Self { reason: None }
    }
}

/// The reason given, trimmed; a 400 naming `reason` when it is missing, blank or holds
/// control characters.
pub fn reason(q: &ReadReason) -> Result<&str, ApiError> {
    let Some(reason) = q.reason.as_deref() else {
        return Err(ApiError::bad_request(
            "reading patient data needs a reason: add `?reason=…` (it is written to the audit log)",
        ));
    };
    if reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "reason: must be one line of text, without control characters",
        ));
    }
    let trimmed = reason.trim_matches(is_blank);
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(
            "reason: must not be blank; say why patient data is read (it is written to the audit log)",
        ));
    }
    Ok(trimmed)
}

/// Liveness: the process is up (it checks neither the database nor the broker).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The text `ok`", body = String, content_type = "text/plain")),
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object)),
)]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        doc.0.as_ref().to_owned(),
    )
        .into_response()
}

/// Export the registry (secrets masked). Lists patients: needs a `reason`, audited.
#[utoipa::path(
    get,
    path = "/v1/registry",
    tag = "registry",
    security(("bearer" = [])),
    params(ReadReason),
    responses(
        (status = 200, description = "The registry as a document", body = RegistryDocumentSchema),
        (status = 400, description = "`reason` is missing, blank or not one line of text", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn export_registry(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ReadReason>,
) -> Result<axum::Json<RegistryDocument>, ApiError> {
    let reason = reason(&q)?.to_owned();
    let doc = state.admin.export_registry().await?;
    state
        .admin
        .audit(vec![AuditEntry::new(&caller.0, "read", "registry").detail(
            serde_json::json!({
                "resource": "registry",
                "patients": doc.patients.len(),
                "reason": reason,
            }),
        )])
        .await?;
    Ok(axum::Json(doc))
}

/// What applying a document changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplyResponse {
    /// One entry per resource the document lists.
    #[schema(value_type = Vec<ChangeSchema>)]
    pub changes: Vec<Change>,
}

/// Apply a registry document (idempotent create-or-update, in one transaction). The
/// body limit is `api.max_body_bytes` (see the description above).
#[utoipa::path(
    post,
    path = "/v1/registry/apply",
    tag = "registry",
    security(("bearer" = [])),
    request_body(content = RegistryDocumentSchema, content_type = "application/json"),
    responses(
        (status = 200, description = "What changed", body = ApplyResponse),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 409, description = "The document contradicts the database (e.g. a reference to a resource that does not exist); nothing was changed", body = ErrorBody),
        (status = 413, description = "The body is larger than `api.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "The document is invalid (the message names the field); nothing was changed", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn apply_registry(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(mut doc): Json<RegistryDocument>,
) -> Result<axum::Json<ApplyResponse>, ApiError> {
    // Over the API, secrets come in the body; `env:` references would read the
    // server's environment, which an API caller must not be able to probe.
    if doc
        .endpoints
        .iter()
        .flat_map(|e| &e.secrets)
        .any(|s| s.starts_with("env:"))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "endpoint secrets given over the API must be whsec_ values, not env: references",
        ));
    }
    doc.resolve_secrets(|_| None)
        .and_then(|()| doc.validate())
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let changes = state.admin.apply_registry(&doc, &caller.0).await?;
    Ok(axum::Json(ApplyResponse { changes }))
}

/// Filters of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this event's deliveries.
    event_id: Option<Uuid>,
    /// Only this participant's deliveries.
    participant_id: Option<String>,
    /// Only deliveries in this state.
    #[param(inline)]
    status: Option<DeliveryStatus>,
    /// At most this many (newest first).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u16>,
}

/// Largest `limit` of the delivery log.
pub const MAX_DELIVERIES_LIMIT: u16 = 1000;

/// A list's `limit` (default 100), or a 400 naming it when out of range.
fn list_limit(limit: Option<u16>) -> Result<u16, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_DELIVERIES_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_DELIVERIES_LIMIT}, not {limit}"
        )));
    }
    Ok(limit)
}

/// The delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesResponse {
    /// Newest first.
    pub deliveries: Vec<DeliverySummary>,
}

/// The delivery log, newest first.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    security(("bearer" = [])),
    params(DeliveryQuery),
    responses(
        (status = 200, description = "Deliveries", body = DeliveriesResponse),
        (status = 400, description = "A query parameter is invalid (the message names it)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn list_deliveries(
    State(state): State<ApiState>,
    Query(q): Query<DeliveryQuery>,
) -> Result<axum::Json<DeliveriesResponse>, ApiError> {
    let limit = list_limit(q.limit)?;
    // No participant id holds a NUL (the database cannot store one): nothing matches.
    if q.participant_id
        .as_deref()
        .is_some_and(|p| p.contains('\0'))
    {
        return Ok(axum::Json(DeliveriesResponse {
            deliveries: Vec::new(),
        }));
    }
    let filter = DeliveryFilter {
        event_id: q.event_id,
        participant_id: q.participant_id,
        status: q.status,
        limit: Some(i64::from(limit)),
    };
    let deliveries = state.admin.list_deliveries(&filter).await?;
    Ok(axum::Json(DeliveriesResponse { deliveries }))
}

/// Deliveries to replay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Delivery ids; those not dead are left as they are.
    pub deliveries: Vec<Uuid>,
}

/// What a replay queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResponse {
    /// The deliveries moved back to pending and queued (the dead ones among those asked).
    pub replayed: Vec<Uuid>,
}

/// Replay dead deliveries: each is moved back to pending and queued for the workers.
#[utoipa::path(
    post,
    path = "/v1/deliveries/replay",
    tag = "deliveries",
    security(("bearer" = [])),
    request_body(content = ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The deliveries queued again", body = ReplayResponse),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "The body is not a replay request (the message names the field)", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database or the broker is unavailable; deliveries not queued are dead again, replay them later", body = ErrorBody),
    ),
)]
pub async fn replay(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<ReplayRequest>,
) -> Result<axum::Json<ReplayResponse>, ApiError> {
    let replayed = crate::delivery::replay(
        state.deliveries.as_ref(),
        state.bus.as_ref(),
        &body.deliveries,
        &caller.0,
    )
    .await
    .map_err(|e| match e {
        crate::delivery::ReplayError::Store(e) => ApiError::from(e),
        broker => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, broker.to_string()),
    })?;
    Ok(axum::Json(ReplayResponse { replayed }))
}

/// The event of `GET /v1/events/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventPath {
    /// The event id.
    id: Uuid,
}

/// A routed canonical event. Patient data: needs a `reason`, audited.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    security(("bearer" = [])),
    params(EventPath, ReadReason),
    responses(
        (status = 200, description = "The canonical event v1 (CloudEvents 1.0 structured JSON)", body = Object),
        (status = 400, description = "`id` is not a UUID, or `reason` is missing, blank or not one line of text", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 404, description = "No routed event has this id", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn get_event(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(EventPath { id }): Path<EventPath>,
    Query(q): Query<ReadReason>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let reason = reason(&q)?.to_owned();
    let Some((patient, body)) = state.admin.event(id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no routed event {id}"),
        ));
    };
    state
        .admin
        .audit(vec![
            AuditEntry::new(&caller.0, "read", "event")
                .event(id)
                .patient(patient.as_deref())
                .detail(serde_json::json!({ "resource": "event", "reason": reason })),
        ])
        .await?;
    Ok(axum::Json(body))
}

/// The audit chain's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: u64,
    /// No break found.
    pub intact: bool,
    /// Every break found, in words.
    pub breaks: Vec<String>,
}

/// Verify the audit hash chain (every row, page by page).
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What verification found", body = AuditReport),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn verify_audit(
    State(state): State<ApiState>,
) -> Result<axum::Json<AuditReport>, ApiError> {
    let (rows, breaks) = super::verify_chain(state.admin.as_ref()).await?;
    Ok(axum::Json(AuditReport {
        rows,
        intact: breaks.is_empty(),
        breaks: breaks.iter().map(ToString::to_string).collect(),
    }))
}

/// Filters of the refused inputs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RejectedQuery {
    /// Only those of this source (its name, e.g. `mllp`).
    source: Option<String>,
    /// Only those received at or after this time (RFC 3339).
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only those replayed (`true`) or not yet (`false`).
    replayed: Option<bool>,
    /// At most this many (newest first).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u16>,
}

/// Refused inputs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedResponse {
    /// Newest first.
    pub rejected: Vec<crate::store::RejectedSummary>,
}

/// Inputs the hub refused, newest first (no bytes: see `GET /v1/rejected/{id}`).
#[utoipa::path(
    get,
    path = "/v1/rejected",
    tag = "rejected",
    security(("bearer" = [])),
    params(RejectedQuery),
    responses(
        (status = 200, description = "Refused inputs", body = RejectedResponse),
        (status = 400, description = "A query parameter is invalid (the message names it)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn list_rejected(
    State(state): State<ApiState>,
    Query(q): Query<RejectedQuery>,
) -> Result<axum::Json<RejectedResponse>, ApiError> {
    let limit = list_limit(q.limit)?;
    // No source name holds a NUL (the database cannot store one): nothing matches.
    if q.source.as_deref().is_some_and(|s| s.contains('\0')) {
        return Ok(axum::Json(RejectedResponse {
            rejected: Vec::new(),
        }));
    }
    let filter = crate::store::RejectedFilter {
        source: q.source,
        since: q.since.map(|t| t.to_utc()),
        replayed: q.replayed,
        limit: Some(i64::from(limit)),
    };
    let rejected = state.admin.list_rejected(&filter).await?;
    Ok(axum::Json(RejectedResponse { rejected }))
}

/// The refused input of `GET /v1/rejected/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RejectedPath {
    /// The refused input's id.
    id: Uuid,
}

/// A refused input with its bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedDetail {
    /// Everything but the bytes.
    #[serde(flatten)]
    pub summary: crate::store::RejectedSummary,
    /// The bytes exactly as received, base64.
    pub raw_base64: String,
}

/// One refused input with its bytes. Patient data: needs a `reason`, audited.
#[utoipa::path(
    get,
    path = "/v1/rejected/{id}",
    tag = "rejected",
    security(("bearer" = [])),
    params(RejectedPath, ReadReason),
    responses(
        (status = 200, description = "The refused input", body = RejectedDetail),
        (status = 400, description = "`id` is not a UUID, or `reason` is missing, blank or not one line of text", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 404, description = "No refused input has this id", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn get_rejected(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(RejectedPath { id }): Path<RejectedPath>,
    Query(q): Query<ReadReason>,
) -> Result<axum::Json<RejectedDetail>, ApiError> {
    use base64::Engine;
    let reason = reason(&q)?.to_owned();
    let Some(kept) = state.admin.rejected_input(id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no refused input {id}"),
        ));
    };
    state
        .admin
        .audit(vec![
            AuditEntry::new(&caller.0, "read", "rejected_input").detail(serde_json::json!({
                "resource": "rejected_input",
                "rejected_input": id,
                "reason": reason,
            })),
        ])
        .await?;
    Ok(axum::Json(RejectedDetail {
        raw_base64: base64::engine::general_purpose::STANDARD.encode(&kept.raw),
        summary: kept.summary,
    }))
}

/// A replay's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedReplayResponse {
    /// The events the input became.
    pub events: Vec<Uuid>,
}

/// Send a refused input through the normal path again: as kept (empty body) or fixed
/// (the corrected bytes as the body, `application/octet-stream`). Accepted once: it is
/// then marked replayed. Refused again, it is kept as a new refused input.
#[utoipa::path(
    post,
    path = "/v1/rejected/{id}/replay",
    tag = "rejected",
    security(("bearer" = [])),
    params(RejectedPath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The fixed input; empty to replay it as kept"),
    responses(
        (status = 200, description = "Accepted: the events it became", body = RejectedReplayResponse),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 404, description = "No refused input has this id", body = ErrorBody),
        (status = 409, description = "It was replayed before (the message names the event)", body = ErrorBody),
        (status = 413, description = "The body is larger than `api.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "A body not sent as `application/octet-stream`", body = ErrorBody),
        (status = 422, description = "Refused again (the message says why); kept as a new refused input", body = ErrorBody),
        (status = 500, description = "Stored data could not be read", body = ErrorBody),
        (status = 503, description = "The database or the bus is unavailable; try again", body = ErrorBody),
    ),
)]
pub async fn replay_rejected(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(RejectedPath { id }): Path<RejectedPath>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<RejectedReplayResponse>, ApiError> {
    use crate::ingest::replay::ReplayOutcome;
    let octets = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/octet-stream"));
    if !body.is_empty() && !octets {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the fixed input as `Content-Type: application/octet-stream` (or no body to replay it as kept)",
        ));
    }
    let fixed = (!body.is_empty()).then(|| body.to_vec());
    let outcome = crate::ingest::replay::replay_rejected(
        state.admin.as_ref(),
        state.ingest.as_ref(),
        id,
        fixed,
        &state.time_window,
        &caller.0,
    )
    .await?;
    match outcome {
        ReplayOutcome::Accepted { events } => Ok(axum::Json(RejectedReplayResponse { events })),
        ReplayOutcome::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no refused input {id}"),
        )),
        ReplayOutcome::AlreadyReplayed { event } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{id} was replayed before{}",
                event.map(|e| format!(", as event {e}")).unwrap_or_default()
            ),
        )),
        ReplayOutcome::Refused(error) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("refused again (kept with the new reason): {error}"),
        )),
        ReplayOutcome::Unavailable(why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the hub cannot take it now ({why}); try again"),
        )),
    }
}
