//! The FHIR R4 receiver: a source (`type = "fhir"`) that takes message Bundles at
//! `POST /fhir/$process-message` and document Bundles at `POST /fhir/Bundle`.
//!
//! Each sending facility presents its own source key (`Authorization: Bearer …`,
//! made with `renkei admin create-source-key --facility CODE`) and may publish only as
//! that facility: a Bundle whose sender is another facility is refused `403`. A
//! Bundle is answered `200` (a message, or a document resent unchanged) or `201` (a new
//! document) only once its event is durable on the bus; every refusal is an
//! `OperationOutcome` naming the FHIRPath at fault:
//!
//! | status | when |
//! |---|---|
//! | 400 | not UTF-8 JSON, not a Bundle, a Bundle that is neither a message nor a document, or one posted to the other endpoint |
//! | 401 | no key, or an unknown or revoked one |
//! | 403 | the Bundle's facility is not the key's |
//! | 413 | the body is larger than `max_body_bytes` |
//! | 415 | the content type is not `application/fhir+json` (or `application/json`) |
//! | 422 | a well-formed Bundle the hub cannot turn into an event |
//! | 503 | the hub cannot take it now (bus or database); send it again (`Retry-After`) |
//!
//! Refused Bundles (400, 403, 422) are kept by the hub with their bytes and reason, as
//! every refused input is (`renkei rejected`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use renkei_sdk::source::{RunningSource, Source, SourceContext, SourceCredentials, SourceError};
use renkei_sdk::{
    CanonicalEvent, IngestOutcome, IngestSink, InputSource, NormalizeError, Normalizer,
    ReceivedInput, TimeWindow,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{FhirNormalizer, classify, operation_outcome};

/// The source kind's `type`.
pub const KIND: &str = "fhir";

/// Settings of a FHIR receiver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirReceiverConfig {
    /// Where senders connect, e.g. `0.0.0.0:8090`.
    pub listen: SocketAddr,
    /// Largest accepted body; a larger one is answered `413`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}

/// The FHIR receiver source kind.
pub struct FhirReceiver;

#[async_trait::async_trait]
impl Source for FhirReceiver {
    const KIND: &'static str = KIND;
    type Config = FhirReceiverConfig;

    fn check(&self, config: &FhirReceiverConfig) -> Result<(), SourceError> {
        if config.max_body_bytes < 1024 {
            return Err(SourceError::config(
                "max_body_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }

    async fn build(
        &self,
        config: FhirReceiverConfig,
        context: SourceContext,
    ) -> Result<RunningSource, SourceError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                SourceError::Start(format!(
                    "cannot listen for FHIR on {} (listen): {e}",
                    config.listen
                ))
            })?;
        tracing::info!(source = %context.name, addr = %config.listen, "FHIR receiver ready");
        let state = Receiver {
            name: context.name.clone(),
            sink: context.sink.clone(),
            credentials: context.credentials.clone(),
            window: context.time_window,
            max_body_bytes: config.max_body_bytes,
        };
        let app = router(state);
        let shutdown = context.shutdown;
        Ok(Box::pin(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| SourceError::Failed(format!("the FHIR receiver failed: {e}")))
        }))
    }
}

/// What every request needs.
#[derive(Clone)]
struct Receiver {
    name: String,
    sink: Arc<dyn IngestSink>,
    credentials: Arc<dyn SourceCredentials>,
    window: TimeWindow,
    max_body_bytes: usize,
}

/// Which Bundle an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Message,
    Document,
}

fn router(state: Receiver) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route("/fhir/$process-message", post(message))
        .route("/fhir/Bundle", post(document))
        // The body is read whole below, under the receiver's own limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// An `OperationOutcome` with one issue.
fn outcome(severity: &str, code: &str, diagnostics: &str, expression: Option<&str>) -> Value {
    let mut issue = json!({
        "severity": severity,
        "code": code,
        "diagnostics": diagnostics,
    });
    if let Some(path) = expression {
        issue["expression"] = json!([path]);
    }
    json!({ "resourceType": "OperationOutcome", "issue": [issue] })
}

fn answer(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    response
}

fn refusal(error: &NormalizeError) -> Response {
    let status = StatusCode::from_u16(classify(error).http_status())
        .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    answer(status, &operation_outcome(error))
}

fn unavailable(why: &str) -> Response {
    let mut response = answer(
        StatusCode::SERVICE_UNAVAILABLE,
        &outcome(
            "error",
            "transient",
            &format!("the hub cannot take this now ({why}); send it again"),
            None,
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// The bearer key of a request.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

fn fhir_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/fhir+json" || v == "application/json")
}

async fn message(
    State(receiver): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    receive(receiver, peer, headers, body, Expect::Message).await
}

async fn document(
    State(receiver): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    receive(receiver, peer, headers, body, Expect::Document).await
}

async fn receive(
    receiver: Receiver,
    peer: SocketAddr,
    headers: HeaderMap,
    body: axum::body::Body,
    expect: Expect,
) -> Response {
    let Some(key) = bearer(&headers) else {
        return unauthorized("no source key: send `Authorization: Bearer <key>`");
    };
    let facility = match receiver.credentials.facility_of(key).await {
        Ok(Some(facility)) => facility,
        Ok(None) => return unauthorized("the source key is unknown or revoked"),
        Err(e) => return unavailable(&e),
    };
    if !fhir_json(&headers) {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &outcome(
                "error",
                "not-supported",
                "send the Bundle as `Content-Type: application/fhir+json`",
                None,
            ),
        );
    }
    let raw: Bytes = match axum::body::to_bytes(body, receiver.max_body_bytes).await {
        Ok(raw) => raw,
        Err(_) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                &outcome(
                    "error",
                    "too-costly",
                    &format!(
                        "the body is larger than this receiver takes ({} bytes)",
                        receiver.max_body_bytes
                    ),
                    None,
                ),
            );
        }
    };
    let source = InputSource {
        adapter: receiver.name.clone(),
        peer: peer.to_string(),
    };
    let normalized = FhirNormalizer::with_time_window(receiver.window)
        .normalize(&raw)
        .and_then(|event| fits(event, expect));
    let (normalized, forbidden) = match normalized {
        Ok(event) => match sender_facility(&event) {
            Some(claimed) if claimed == facility => (Ok(event), false),
            claimed => (
                Err(NormalizeError::at(
                    "Bundle",
                    format!(
                        "this key publishes as facility {facility}, and the Bundle's sender is {}: \
                         use that facility's own key",
                        claimed.unwrap_or("no facility")
                    ),
                )),
                true,
            ),
        },
        Err(error) => (Err(error), false),
    };
    let document = matches!(expect, Expect::Document);
    let input = ReceivedInput {
        source,
        raw: bytes::Bytes::copy_from_slice(&raw),
        normalized,
    };
    match receiver.sink.ingest(input).await {
        IngestOutcome::Accepted {
            event_id,
            duplicate,
        } => {
            let status = if document && !duplicate {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let said = if duplicate {
                format!("already accepted as event {event_id}; not published again")
            } else {
                format!("accepted as event {event_id}")
            };
            let mut response = answer(
                status,
                &outcome("information", "informational", &said, None),
            );
            if let Ok(value) = HeaderValue::from_str(&event_id.to_string()) {
                response.headers_mut().insert("renkei-event-id", value);
            }
            response
        }
        IngestOutcome::Rejected(error) if forbidden => answer(
            StatusCode::FORBIDDEN,
            &outcome("error", "forbidden", &error.reason, Some("Bundle")),
        ),
        IngestOutcome::Rejected(error) => refusal(&error),
        IngestOutcome::Unavailable(why) => unavailable(&why),
    }
}

fn unauthorized(why: &str) -> Response {
    let mut response = answer(
        StatusCode::UNAUTHORIZED,
        &outcome("error", "login", why, None),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A message posted as a document, or a document as a message, is refused naming
/// `Bundle.type`.
fn fits(event: CanonicalEvent, expect: Expect) -> Result<CanonicalEvent, NormalizeError> {
    let is_document = event.data.document.is_some();
    match (expect, is_document) {
        (Expect::Message, true) => Err(NormalizeError::at(
            "Bundle.type",
            "a document Bundle goes to POST /fhir/Bundle, not $process-message",
        )),
        (Expect::Document, false) => Err(NormalizeError::at(
            "Bundle.type",
            "a message Bundle goes to POST /fhir/$process-message, not /fhir/Bundle",
        )),
        _ => Ok(event),
    }
}

/// The facility the Bundle comes from.
fn sender_facility(event: &CanonicalEvent) -> Option<&str> {
    event
        .data
        .origin
        .facility
        .as_deref()
        .or_else(|| event.source_facility())
}
