//! The admin API against real PostgreSQL and RabbitMQ, through its router (tower
//! `oneshot`): its answers are the ones the OpenAPI document promises, every refusal
//! is JSON naming what is wrong, and a large region's export applies back.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use renkei_hub::api::{self, ApiOptions, ApiState};
use renkei_hub::bus::amqp::AmqpBus;
use renkei_hub::store::DeliveryStatus;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::harness::{TestDb, bus_settings, delete_topology};

struct Api {
    db: TestDb,
    bus: Arc<AmqpBus>,
    key: String,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Api {
    async fn new() -> anyhow::Result<Self> {
        let db = TestDb::new().await?;
        let bus = Arc::new(AmqpBus::connect(&bus_settings(), &[Duration::from_secs(1)]).await?);
        let key = api::new_api_key();
        db.store
            .create_api_key("it", &api::api_key_hash(&key))
            .await?;
        Ok(Self { db, bus, key })
    }

    fn router(&self, options: ApiOptions) -> axum::Router {
        let store = self.db.store.clone();
        api::router(
            ApiState {
                admin: store.clone(),
                deliveries: store.clone(),
                bus: self.bus.clone(),
                ingest: Arc::new(renkei_hub::ingest::Ingestor::new(
                    store,
                    self.bus.clone(),
                    Duration::from_secs(10),
                )),
                time_window: renkei_sdk::TimeWindow::default(),
            },
            options,
        )
    }

    async fn call(
        &self,
        router: &axum::Router,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = router.clone().oneshot(request.body(body.into())?).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await?
            .to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn finish(self) -> anyhow::Result<()> {
        delete_topology(self.bus.topology()).await?;
        self.db.drop_db().await
    }
}

const OPTIONS: ApiOptions = ApiOptions {
    max_body_bytes: 64 * 1024 * 1024,
};

/// A request (method, URI, content type, body) and the status and the words its
/// refusal must carry.
type Case<'a> = (Method, String, Option<&'a str>, String, StatusCode, &'a str);

#[tokio::test]
async fn every_refusal_is_json_naming_what_is_wrong() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let router = api.router(OPTIONS);
    let event = uuid::Uuid::now_v7();
    let json = Some("application/json");
    let big_replay = format!(
        "{{\"deliveries\": [{}]}}",
        vec![format!("\"{event}\""); 60_000].join(",")
    );
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/registry/apply".into(),
            None,
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            Method::POST,
            "/v1/registry/apply".into(),
            Some("text/plain"),
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            Method::POST,
            "/v1/registry/apply".into(),
            json,
            "{".into(),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            Method::POST,
            "/v1/registry/apply".into(),
            json,
            r#"{"facilities": 5}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "facilities",
        ),
        (
            Method::POST,
            "/v1/registry/apply".into(),
            json,
            r#"{"nurses": []}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "nurses",
        ),
        (
            Method::POST,
            "/v1/deliveries/replay".into(),
            json,
            r#"{"deliveries": ["x"]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "deliveries",
        ),
        (
            Method::POST,
            "/v1/deliveries/replay".into(),
            None,
            r#"{"deliveries": []}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            Method::POST,
            "/v1/deliveries/replay".into(),
            json,
            big_replay,
            StatusCode::PAYLOAD_TOO_LARGE,
            "2097152 bytes",
        ),
        (
            Method::GET,
            "/v1/deliveries?status=AAA".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "status: unknown variant `AAA`",
        ),
        (
            Method::GET,
            "/v1/deliveries?limit=0".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/v1/deliveries?limit=1001".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/v1/deliveries?limit=ten".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/v1/deliveries?event_id=nope".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "event_id",
        ),
        (
            Method::GET,
            "/v1/events/nope?reason=audit".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            Method::GET,
            format!("/v1/events/{event}"),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (
            Method::GET,
            format!("/v1/events/{event}?reason="),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (
            Method::GET,
            format!("/v1/events/{event}?reason=%E3%80%80"),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (
            Method::GET,
            format!("/v1/events/{event}?reason=a%0Ab"),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (
            Method::GET,
            format!("/v1/events/{event}?reason=a%00b"),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (
            Method::GET,
            format!("/v1/events/{event}?reason=audit"),
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "no routed event",
        ),
        (
            Method::GET,
            "/v1/registry?reason=".into(),
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (
            Method::GET,
            "/v1/nowhere".into(),
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "no route GET /v1/nowhere",
        ),
        (
            Method::DELETE,
            "/v1/registry".into(),
            None,
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "does not take DELETE",
        ),
        (
            Method::PUT,
            "/healthz".into(),
            None,
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "does not take PUT",
        ),
    ];
    for (method, uri, content_type, body, status, names) in cases {
        let what = format!("{method} {uri} ({content_type:?})");
        let answer = api.call(&router, method, &uri, content_type, body).await?;
        assert_eq!(
            answer.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(
            answer
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{what}"
        );
        let error = answer.json();
        let message = error["error"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{what}: {error}");
        assert_eq!(
            error.as_object().map(|o| o.len()),
            Some(1),
            "{what}: only `error`: {error}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                answer.headers.contains_key(header::ALLOW),
                "{what}: no Allow header"
            );
        }
    }
    api.finish().await
}

#[tokio::test]
async fn a_missing_key_is_refused_on_every_route_that_needs_one() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let router = api.router(OPTIONS);
    let doc = serde_json::to_value(api::openapi(&OPTIONS))?;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let uri = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
            let method = Method::from_bytes(method.to_uppercase().as_bytes())?;
            let request = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .body(Body::empty())?;
            let response = router.clone().oneshot(request).await?;
            let expected = if op.get("security").is_some() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            // Every documented route is routed: a key check or an answer, never 404/405.
            assert_eq!(response.status(), expected, "{method} {uri}");
            checked += 1;
        }
    }
    assert_eq!(checked, 11);
    api.finish().await
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let options = ApiOptions {
        max_body_bytes: 123_456,
    };
    let router = api.router(options);
    let answer = api
        .call(&router, Method::GET, "/openapi.json", None, Body::empty())
        .await?;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::to_value(api::openapi(&options))?);
    assert_eq!(answer.json()["openapi"], "3.1.0");
    api.finish().await
}

#[tokio::test]
async fn the_status_filter_takes_every_status() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let router = api.router(OPTIONS);
    for status in DeliveryStatus::ALL {
        let uri = format!("/v1/deliveries?status={}&limit=1000", status.as_str());
        let answer = api
            .call(&router, Method::GET, &uri, None, Body::empty())
            .await?;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert_eq!(answer.json(), json!({ "deliveries": [] }), "{uri}");
    }
    // A participant id no participant can have (PostgreSQL cannot store a NUL).
    let answer = api
        .call(
            &router,
            Method::GET,
            "/v1/deliveries?participant_id=a%00b",
            None,
            Body::empty(),
        )
        .await?;
    assert_eq!(answer.status, StatusCode::OK);
    api.finish().await
}

/// A region of `patients` patients, each with a hospital id, a care manager and a
/// consent: what an export of a real region carries.
fn region(patients: usize) -> Value {
    let patient = |i: usize| {
        json!({
            "id": format!("patient-{i:06}"),
            "identifiers": [{ "facility": "1319999999", "value": format!("K{i:08}") }],
        })
    };
    json!({
        "facilities": [
            { "code": "1319999999", "name": "さくら総合病院", "kind": "hospital" },
            { "code": "1379999999", "name": "あおば居宅介護支援事業所", "kind": "care_management" },
        ],
        "participants": [
            { "id": "aoba-care", "facility": "1379999999", "name": "あおば居宅介護支援事業所" },
        ],
        "patients": (0..patients).map(patient).collect::<Vec<_>>(),
        "care_relationships": (0..patients).map(|i| json!({
            "patient": format!("patient-{i:06}"),
            "participant": "aoba-care",
            "role": "care_manager",
            "valid_from": "2025-04-01",
        })).collect::<Vec<_>>(),
        "consents": (0..patients).map(|i| json!({
            "id": format!("consent-{i:06}"),
            "patient": format!("patient-{i:06}"),
            "scope": "blanket",
            "basis": "written",
            "valid_from": "2025-04-01T00:00:00+09:00",
        })).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn an_export_of_a_20000_patient_region_applies_back() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let router = api.router(OPTIONS);
    let document = serde_json::to_vec(&region(20_000))?;
    assert!(
        document.len() > 2 * 1024 * 1024,
        "larger than the old 2 MiB limit: {}",
        document.len()
    );
    let applied = api
        .call(
            &router,
            Method::POST,
            "/v1/registry/apply",
            Some("application/json"),
            document,
        )
        .await?;
    assert_eq!(
        applied.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&applied.body)
    );

    let export = api
        .call(
            &router,
            Method::GET,
            "/v1/registry?reason=backup",
            None,
            Body::empty(),
        )
        .await?;
    assert_eq!(export.status, StatusCode::OK);
    println!(
        "export of a 20,000-patient region: {} bytes",
        export.body.len()
    );
    assert!(
        export.body.len() < OPTIONS.max_body_bytes / 4,
        "{}",
        export.body.len()
    );
    let again = api
        .call(
            &router,
            Method::POST,
            "/v1/registry/apply",
            Some("application/json"),
            export.body.clone(),
        )
        .await?;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    let changes = again.json()["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(changes.len(), 2 + 1 + 3 * 20_000);
    assert!(
        changes.iter().all(|c| c["action"] == "unchanged"),
        "applying the export back changes nothing"
    );

    // Over a configured limit: 413 naming the setting, and nothing applied.
    let small = api.router(ApiOptions {
        max_body_bytes: 1024 * 1024,
    });
    let refused = api
        .call(
            &small,
            Method::POST,
            "/v1/registry/apply",
            Some("application/json"),
            export.body,
        )
        .await?;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("1048576 bytes") && message.contains("api.max_body_bytes"),
        "{message}"
    );
    api.finish().await
}
