//! The admin HTTP API (axum): registry, delivery log, replay, events, audit
//! verification. Every route but `/healthz` and `/openapi.json` needs an API key
//! (`Authorization: Bearer rk_…`); keys are stored as SHA-256 hashes. Reads of patient
//! data must give a reason (`?reason=`) and are audited (who, when, which patient, why).
//!
//! The OpenAPI document is generated from the handlers and their types
//! (`handlers.rs`), and the router is built from the same items, so the document served
//! at `GET /openapi.json` and the API's behaviour are one. Every error, the framework's
//! rejections included, is JSON `{"error": "…"}` (`error.rs`).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::ChainVerifier;
use crate::bus::Bus;
use crate::store::{AdminStore, DeliveryStore, StoreError};

mod error;
mod handlers;
mod schema;

pub use error::{ApiError, ErrorBody};

/// The body limit of `POST /v1/deliveries/replay` (axum's default): room for some
/// 50,000 delivery ids.
pub const REPLAY_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Registry, log and audit.
    pub admin: Arc<dyn AdminStore>,
    /// Replays.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Hands replayed deliveries to the workers.
    pub bus: Arc<dyn Bus>,
    /// Takes replayed refused inputs through the normal ingest path.
    pub ingest: Arc<dyn renkei_sdk::IngestSink>,
    /// Times the normalisers accept (`ingest.*`), for replayed inputs.
    pub time_window: renkei_sdk::TimeWindow,
}

/// How the API is set up (from `[api]`).
#[derive(Debug, Clone, Copy)]
pub struct ApiOptions {
    /// Largest body of `POST /v1/registry/apply` (`api.max_body_bytes`).
    pub max_body_bytes: usize,
}

/// The authenticated caller, as an audit actor (`admin:<key id>`).
#[derive(Clone, Debug)]
struct Caller(String);

/// The serialized OpenAPI document, served by `GET /openapi.json`.
#[derive(Clone, Debug)]
struct OpenApiJson(Arc<str>);

pub use crate::store::{api_key_hash, new_api_key};

async fn authenticate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(key) = key else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send an API key as `Authorization: Bearer rk_…` (create one with `renkei admin create-api-key`)",
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
        Ok(None) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unknown or revoked API key").into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The document's frame: what the routes' descriptions do not say.
#[derive(OpenApi)]
#[openapi(
    info(title = "Renkei admin API", version = "1"),
    components(schemas(ErrorBody)),
    modifiers(&BearerKey),
    tags(
        (name = "operations", description = "Liveness and this document (no key)"),
        (name = "registry", description = "Facilities, participants, endpoints, subscriptions, patients, care relationships, consents"),
        (name = "deliveries", description = "The delivery log and replays"),
        (name = "rejected", description = "Inputs the hub refused: list, read, replay"),
        (name = "events", description = "Routed canonical events (patient data: audited)"),
        (name = "audit", description = "The hash-chained audit log"),
    ),
)]
struct ApiDoc;

struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key `rk_…`, created with `renkei admin create-api-key --name NAME`",
                    ))
                    .build(),
            ),
        );
    }
}

fn description(options: &ApiOptions) -> String {
    format!(
        "Operate a Renkei hub: registry, delivery log, replay, events, audit verification.\n\n\
         Authenticate with `Authorization: Bearer rk_…` (create a key with \
         `renkei admin create-api-key --name NAME`). Reads of patient data need a `reason` \
         and are audited.\n\n\
         Every error is JSON `{{\"error\": \"…\"}}` naming what is wrong: 400 for a malformed \
         request (a bad query or path parameter, a body that is not JSON), 401 without a \
         valid key, 404 for an unknown route or resource, 405 for a method a route does not \
         take (with `Allow`), 413 for a body over the route's limit, 415 for a body not sent \
         as `application/json`, 422 for a well-formed body that cannot be applied, 409 when it \
         contradicts the database, 503 when the database or broker is unavailable.\n\n\
         Body limits: `POST /v1/registry/apply` accepts up to {} bytes (`api.max_body_bytes`; \
         a region of 20,000 patients exports to about 7.2 MB), `POST /v1/deliveries/replay` \
         up to {REPLAY_MAX_BODY_BYTES} bytes.",
        options.max_body_bytes
    )
}

/// The routes, documented: those anyone may call, and those that need a key.
fn routes(options: &ApiOptions) -> (OpenApiRouter<ApiState>, OpenApiRouter<ApiState>) {
    let public = OpenApiRouter::new()
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::openapi_json));
    let limited = |router: OpenApiRouter<ApiState>, limit: error::BodyLimit| {
        router
            .layer(DefaultBodyLimit::max(limit.bytes))
            .layer(Extension(limit))
    };
    let authed = OpenApiRouter::new()
        .routes(routes!(handlers::export_registry))
        .routes(routes!(handlers::list_deliveries))
        .routes(routes!(handlers::get_event))
        .routes(routes!(handlers::list_rejected))
        .routes(routes!(handlers::get_rejected))
        .routes(routes!(handlers::verify_audit))
        .merge(limited(
            OpenApiRouter::new().routes(routes!(handlers::replay_rejected)),
            error::BodyLimit {
                bytes: options.max_body_bytes,
                setting: Some("api.max_body_bytes"),
            },
        ))
        .merge(limited(
            OpenApiRouter::new().routes(routes!(handlers::apply_registry)),
            error::BodyLimit {
                bytes: options.max_body_bytes,
                setting: Some("api.max_body_bytes"),
            },
        ))
        .merge(limited(
            OpenApiRouter::new().routes(routes!(handlers::replay)),
            error::BodyLimit {
                bytes: REPLAY_MAX_BODY_BYTES,
                setting: None,
            },
        ));
    (public, authed)
}

fn frame(options: &ApiOptions) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.description = Some(description(options));
    doc
}

/// The OpenAPI 3.1 document of the API set up with `options`, as `GET /openapi.json`
/// serves it.
pub fn openapi(options: &ApiOptions) -> utoipa::openapi::OpenApi {
    let (public, authed) = routes(options);
    OpenApiRouter::with_openapi(frame(options))
        .merge(public)
        .merge(authed)
        .into_openapi()
}

/// The API's router.
pub fn router(state: ApiState, options: ApiOptions) -> axum::Router {
    let (public, authed) = routes(&options);
    let authed = authed.layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let (router, doc) = OpenApiRouter::with_openapi(frame(&options))
        .merge(public)
        .merge(authed)
        .split_for_parts();
    let doc = match doc.to_json() {
        Ok(json) => json,
        // Serializing plain data cannot fail; serve the error rather than panic.
        Err(e) => serde_json::json!({ "error": format!("the OpenAPI document: {e}") }).to_string(),
    };
    router
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_such_route)
        .layer(Extension(OpenApiJson(doc.into())))
        .layer(middleware::from_fn(error::json_errors))
        .with_state(state)
}

/// Verifies the whole audit chain, page by page: rows checked and every break found.
pub async fn verify_chain(
    store: &dyn AdminStore,
) -> Result<(u64, Vec<crate::audit::ChainBreak>), StoreError> {
    // Chain what is pending, then read the head: rows appended while verifying are
    // beyond it and ignored.
    crate::store::seal_all(store).await?;
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
#[allow(clippy::unwrap_used)] // A failed unwrap on a fixture is a test failure.
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use crate::registry::document::{Change, ChangeAction, RegistryDocument};
    use crate::registry::{
        CareRelationship, Consent, ConsentBasis, ConsentScope, Endpoint, Facility, Participant,
        PatientIdentifier, PatientRecord, Subscription,
    };

    const OPTIONS: ApiOptions = ApiOptions {
        max_body_bytes: 64 * 1024 * 1024,
    };

    fn document() -> Value {
        serde_json::to_value(openapi(&OPTIONS)).unwrap_or_default()
    }

    /// A validator for `value` against the document's component `name`.
    fn component_validator(name: &str) -> jsonschema::Validator {
        let doc = document();
        let root = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": doc["components"],
        });
        jsonschema::draft202012::new(&root).unwrap()
    }

    fn assert_valid(name: &str, value: &Value) {
        let validator = component_validator(name);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name} does not match {value:#}: {errors:#?}"
        );
    }

    #[test]
    fn every_operation_documents_the_errors_it_can_answer() {
        let doc = document();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        let mut operations = 0;
        for (path, item) in &paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                operations += 1;
                let responses = &op["responses"];
                let has = |status: &str| responses.get(status).is_some();
                let secured = op.get("security").is_some();
                if secured {
                    assert!(has("401"), "{method} {path}: 401 not documented");
                    assert!(has("503"), "{method} {path}: 503 not documented");
                }
                if op.get("parameters").is_some() {
                    assert!(has("400"), "{method} {path}: 400 not documented");
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(has(status), "{method} {path}: {status} not documented");
                    }
                }
                for (status, response) in responses.as_object().into_iter().flatten() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}: errors are JSON ErrorBody"
                        );
                    }
                }
            }
        }
        assert_eq!(operations, 11, "every route is documented: {paths:#?}");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn the_description_names_the_configured_body_limit() {
        let doc = serde_json::to_value(openapi(&ApiOptions {
            max_body_bytes: 12_345_678,
        }))
        .unwrap_or_default();
        let description = doc["info"]["description"].as_str().unwrap_or_default();
        assert!(
            description.contains("12345678 bytes (`api.max_body_bytes`"),
            "{description}"
        );
    }

    #[test]
    fn optional_delivery_fields_are_nullable_and_the_status_an_enum() {
        let row = crate::store::DeliverySummary {
            id: uuid::Uuid::now_v7(),
            event_id: uuid::Uuid::now_v7(),
            event_type: "inpatient.admitted".into(),
            participant_id: "sakura".into(),
            endpoint_name: "main".into(),
            sequence: 1,
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let value = serde_json::to_value(&row).unwrap_or_default();
        assert!(value["last_error"].is_null() && value["next_attempt_at"].is_null());
        assert_valid("DeliverySummary", &value);
        for status in crate::store::DeliveryStatus::ALL {
            let mut v = value.clone();
            v["status"] = json!(status.as_str());
            assert_valid("DeliverySummary", &v);
        }
        let mut unknown = value.clone();
        unknown["status"] = json!("AAA");
        assert!(!component_validator("DeliverySummary").is_valid(&unknown));
        let doc = document();
        let status = doc["paths"]["/v1/deliveries"]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "status")
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = crate::store::DeliveryStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(status["schema"]["enum"], json!(names), "{status:#}");
    }

    #[test]
    fn the_reason_pattern_is_the_check_the_handlers_make() {
        let doc = document();
        let reason = doc["paths"]["/v1/events/{id}"]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "reason")
            .cloned()
            .unwrap_or_default();
        assert_eq!(reason["required"], true);
        assert_eq!(reason["schema"]["minLength"], 1);
        let validator = jsonschema::draft202012::new(&reason["schema"]).unwrap();
        for sample in [
            "",
            " ",
            "   ",
            "\u{3000}",
            "\u{a0} \u{2003}",
            "\u{feff}",
            "a",
            " discharge conference ",
            "退院前カンファレンス",
            "\u{3000}退院\u{3000}",
            "line\nbreak",
            "tab\there",
            "nul\0",
            "\u{85}next line",
            "del\u{7f}",
            "x\u{9f}",
            "emoji 🏥",
        ] {
            let q = handlers::ReadReason::new(sample);
            let accepted = handlers::reason(&q).is_ok();
            assert_eq!(
                validator.is_valid(&json!(sample)),
                accepted,
                "{sample:?}: the document says one thing, the handler does another"
            );
        }
        assert!(handlers::reason(&handlers::ReadReason::missing()).is_err());
    }

    /// Every registry type, every field set: a struct literal here stops compiling when
    /// a field is added, and the schema check fails when the mirror in `schema.rs` has
    /// not followed.
    fn full_registry() -> RegistryDocument {
        let day = chrono::NaiveDate::from_ymd_opt(2025, 4, 1).unwrap_or_default();
        let at = chrono::DateTime::from_timestamp(1_743_465_600, 0).unwrap_or_default();
        RegistryDocument {
            facilities: vec![Facility {
                code: "1319999999".into(),
                name: "Sakura Hospital".into(),
                kind: "hospital".into(),
            }],
            participants: vec![Participant {
                id: "sakura-care".into(),
                facility: "1319999999".into(),
                name: "Sakura care office".into(),
            }],
            endpoints: vec![Endpoint {
                participant: "sakura-care".into(),
                name: "main".into(),
                url: "https://care.example/hook".into(),
                secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
                enabled: false,
            }],
            subscriptions: vec![Subscription {
                participant: "sakura-care".into(),
                name: "admissions".into(),
                endpoint: "main".into(),
                event_types: vec!["inpatient.admitted".into()],
                source_facilities: vec!["1319999999".into()],
            }],
            patients: vec![PatientRecord {
                id: "p-1".into(),
                identifiers: vec![
                    PatientIdentifier {
                        system: Some("urn:example".into()),
                        facility: None,
                        value: "1".into(),
                    },
                    PatientIdentifier {
                        system: None,
                        facility: Some("1319999999".into()),
                        value: "K-1".into(),
                    },
                ],
            }],
            care_relationships: vec![CareRelationship {
                patient: "p-1".into(),
                participant: "sakura-care".into(),
                role: "care_manager".into(),
                valid_from: day,
                valid_until: Some(day),
            }],
            consents: vec![
                Consent {
                    id: "c-1".into(),
                    patient: "p-1".into(),
                    scope: ConsentScope::Blanket,
                    facilities: vec!["1319999999".into()],
                    basis: ConsentBasis::Written,
                    valid_from: at,
                    valid_until: Some(at),
                    withdrawn_at: Some(at),
                },
                Consent {
                    id: "c-2".into(),
                    patient: "p-1".into(),
                    scope: ConsentScope::Facilities,
                    facilities: vec!["1319999999".into()],
                    basis: ConsentBasis::OralRecorded,
                    valid_from: at,
                    valid_until: None,
                    withdrawn_at: None,
                },
            ],
        }
    }

    #[test]
    fn the_registry_schema_matches_the_registry_types() -> Result<(), serde_json::Error> {
        let full = serde_json::to_value(full_registry())?;
        assert_valid("RegistryDocument", &full);
        // What the schema allows, the type reads back.
        let read: RegistryDocument = serde_json::from_value(full.clone())?;
        assert_eq!(read, full_registry());
        // Only what the schema requires, and nulls where it allows them.
        let minimal = json!({
            "facilities": [{ "code": "1319999999", "name": "S", "kind": "clinic" }],
            "endpoints": [{ "participant": "a", "name": "m", "url": "https://x.example", "secrets": [] }],
            "patients": [{ "id": "p", "identifiers": [{ "value": "1", "system": null, "facility": "1319999999" }] }],
            "care_relationships": [{ "patient": "p", "participant": "a", "role": "r", "valid_from": "2025-04-01", "valid_until": null }],
            "consents": [{ "id": "c", "patient": "p", "scope": "blanket", "basis": "written", "valid_from": "2025-04-01T00:00:00+09:00", "withdrawn_at": null }],
        });
        assert_valid("RegistryDocument", &minimal);
        let _: RegistryDocument = serde_json::from_value(minimal)?;
        // A field the type refuses, the schema refuses too.
        let mut unknown = full.clone();
        unknown["facilities"][0]["beds"] = json!(300);
        assert!(serde_json::from_value::<RegistryDocument>(unknown.clone()).is_err());
        assert!(!component_validator("RegistryDocument").is_valid(&unknown));
        Ok(())
    }

    #[test]
    fn the_change_schema_matches_what_apply_returns() {
        for kind in [
            "facility",
            "participant",
            "endpoint",
            "subscription",
            "patient",
            "care_relationship",
            "consent",
        ] {
            for action in [
                ChangeAction::Created,
                ChangeAction::Updated,
                ChangeAction::Unchanged,
            ] {
                let change = Change {
                    kind,
                    key: "k".into(),
                    action,
                };
                assert_valid("Change", &serde_json::to_value(&change).unwrap_or_default());
            }
        }
    }

    #[test]
    fn healthz_is_documented_as_the_plain_text_it_returns() {
        let doc = document();
        let documented: Vec<String> =
            doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"]
                .as_object()
                .map(|content| content.keys().cloned().collect())
                .unwrap_or_default();
        let response = "ok".into_response();
        let returned = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next());
        assert_eq!(returned, Some("text/plain"));
        assert_eq!(documented, ["text/plain"]);
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
