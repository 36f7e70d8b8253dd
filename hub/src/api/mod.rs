//! The admin HTTP API (axum): registry, delivery log, replay, events, audit
//! verification. Every route but `/healthz` and `/openapi.json` needs an API key
//! (`Authorization: Bearer rk_…`); keys are stored as SHA-256 hashes. Reads of patient
//! data must give a reason (`?reason=`) and are audited (who, when, which patient, why).

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::audit::{AuditEntry, ChainVerifier};
use crate::bus::Bus;
use crate::registry::document::RegistryDocument;
use crate::store::{AdminStore, DeliveryFilter, DeliveryStore, StoreError};

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every route, as `(method, OpenAPI path)`; a test keeps it and the document in step.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/openapi.json"),
    ("get", "/v1/registry"),
    ("post", "/v1/registry/apply"),
    ("get", "/v1/deliveries"),
    ("post", "/v1/deliveries/replay"),
    ("get", "/v1/events/{id}"),
    ("get", "/v1/audit/verify"),
];

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Registry, log and audit.
    pub admin: Arc<dyn AdminStore>,
    /// Replays.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Hands replayed deliveries to the workers.
    pub bus: Arc<dyn Bus>,
}

/// The authenticated caller, as an audit actor (`admin:<key id>`).
#[derive(Clone, Debug)]
struct Caller(String);

/// An API error: a status and a message saying what to do.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => ApiError(StatusCode::CONFLICT, msg),
            StoreError::Rejected(msg) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, msg),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "admin API: store unavailable");
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; try again".into(),
                )
            }
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "admin API: corrupt data");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "stored data could not be read".into(),
                )
            }
        }
    }
}

/// The hash under which an API key is stored.
pub fn api_key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new random API key, `rk_<43 base64url characters>`.
pub fn new_api_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "rk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

async fn authenticate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(key) = key else {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "send an API key as `Authorization: Bearer rk_…` (create one with `renkei admin create-api-key`)".into(),
        )
        .into_response();
    };
    match state.admin.find_api_key(&api_key_hash(key)).await {
        Ok(Some(id)) => {
            request
                .extensions_mut()
                .insert(Caller(format!("admin:{id}")));
            next.run(request).await
        }
        Ok(None) => ApiError(
            StatusCode::UNAUTHORIZED,
            "unknown or revoked API key".into(),
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The API's router.
pub fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/v1/registry", get(export_registry))
        .route("/v1/registry/apply", post(apply_registry))
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/replay", post(replay))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/audit/verify", get(verify_audit))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
        )
        .merge(authed)
        .with_state(state)
}

#[derive(Deserialize)]
struct ReadReason {
    reason: Option<String>,
}

fn require_reason(q: &ReadReason) -> Result<&str, ApiError> {
    q.reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "reading patient data needs a reason: add `?reason=…` (it is written to the audit log)".into(),
            )
        })
}

async fn export_registry(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ReadReason>,
) -> Result<Json<RegistryDocument>, ApiError> {
    let reason = require_reason(&q)?.to_owned();
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
    Ok(Json(doc))
}

async fn apply_registry(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(mut doc): Json<RegistryDocument>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Over the API, secrets come in the body; `env:` references would read the
    // server's environment, which an API caller must not be able to probe.
    if doc
        .endpoints
        .iter()
        .flat_map(|e| &e.secrets)
        .any(|s| s.starts_with("env:"))
    {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "endpoint secrets given over the API must be whsec_ values, not env: references".into(),
        ));
    }
    doc.resolve_secrets(|_| None)
        .and_then(|()| doc.validate())
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let changes = state.admin.apply_registry(&doc, &caller.0).await?;
    Ok(Json(serde_json::json!({ "changes": changes })))
}

async fn list_deliveries(
    State(state): State<ApiState>,
    Query(filter): Query<DeliveryFilter>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deliveries = state.admin.list_deliveries(&filter).await?;
    Ok(Json(serde_json::json!({ "deliveries": deliveries })))
}

#[derive(Deserialize)]
struct ReplayRequest {
    deliveries: Vec<Uuid>,
}

async fn replay(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<ReplayRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let replayed = crate::delivery::replay(
        state.deliveries.as_ref(),
        state.bus.as_ref(),
        &body.deliveries,
        &caller.0,
    )
    .await
    .map_err(|e| match e {
        crate::delivery::ReplayError::Store(e) => ApiError::from(e),
        broker => ApiError(StatusCode::SERVICE_UNAVAILABLE, broker.to_string()),
    })?;
    Ok(Json(serde_json::json!({ "replayed": replayed })))
}

async fn get_event(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
    Query(q): Query<ReadReason>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = require_reason(&q)?.to_owned();
    let Some((patient, body)) = state.admin.event(id).await? else {
        return Err(ApiError(
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
    Ok(Json(body))
}

async fn verify_audit(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let report = verify_chain(state.admin.as_ref()).await?;
    Ok(Json(serde_json::json!({
        "rows": report.0,
        "intact": report.1.is_empty(),
        "breaks": report.1.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

/// Verifies the whole audit chain, page by page: rows checked and every break found.
pub async fn verify_chain(
    store: &dyn AdminStore,
) -> Result<(u64, Vec<crate::audit::ChainBreak>), StoreError> {
    // Chain what is pending, then read the head: rows appended while verifying are
    // beyond it and ignored.
    store.seal_audit().await?;
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let rows = store.audit_rows(after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in rows.iter().filter(|r| r.seq <= head_seq) {
            verifier.push(row);
        }
        if after >= head_seq {
            break;
        }
    }
    let rows = verifier.rows;
    Ok((rows, verifier.finish(head_seq, &head_hash)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_lists_every_route() -> Result<(), serde_json::Error> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON)?;
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        for (method, path) in ROUTES {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is not in openapi.json"
            );
        }
        let documented: usize = paths
            .values()
            .filter_map(|p| p.as_object())
            .map(|p| p.len())
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "openapi.json documents a route the API does not have"
        );
        Ok(())
    }

    #[test]
    fn healthz_is_documented_as_the_plain_text_it_returns() -> Result<(), serde_json::Error> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON)?;
        let documented: Vec<&String> =
            doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"]
                .as_object()
                .map(|content| content.keys().collect())
                .unwrap_or_default();
        // The handler answers with a `&'static str`, as `router` does for `/healthz`.
        let response = "ok".into_response();
        let returned = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next());
        assert_eq!(returned, Some("text/plain"));
        assert_eq!(documented, ["text/plain"]);
        Ok(())
    }

    #[test]
    fn api_keys_are_random_and_hash_stably() {
        let a = new_api_key();
        assert!(a.starts_with("rk_") && a.len() == 46);
        assert_ne!(a, new_api_key());
        assert_eq!(api_key_hash(&a), api_key_hash(&a));
        assert_eq!(api_key_hash(&a).len(), 32);
    }
}
