//! The one error shape of the API, `{"error": "…"}`, for the handlers' own refusals and
//! for every rejection of the framework: a body that is not JSON or not the expected
//! document, a missing JSON content type, a body over the route's limit, a bad query or
//! path parameter, an unknown route or method. Each message names what is wrong.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, naming the parameter or field at fault, and what to do.
    pub error: String,
}

/// An API error: a status and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message sent as `error`.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => ApiError::new(StatusCode::CONFLICT, msg),
            StoreError::Rejected(msg) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "admin API: store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; try again",
                )
            }
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "admin API: corrupt data");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "stored data could not be read",
                )
            }
        }
    }
}

/// The body limit of a route, put in the request's extensions beside axum's
/// `DefaultBodyLimit` so a refusal can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// Largest body accepted, in bytes.
    pub bytes: usize,
    /// The setting that sets it, if one does.
    pub setting: Option<&'static str>,
}

fn json_rejection(rejection: JsonRejection, limit: Option<BodyLimit>) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON, with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the body is not the expected document: {}",
                e.body_text().trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: "
                )
            ),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = match limit {
                Some(BodyLimit {
                    bytes,
                    setting: Some(setting),
                }) => format!(
                    "the body is larger than the {bytes} bytes this route accepts (raise {setting})"
                ),
                Some(BodyLimit {
                    bytes,
                    setting: None,
                }) => format!("the body is larger than the {bytes} bytes this route accepts"),
                None => "the body is larger than this route accepts".to_owned(),
            };
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
        }
        other => ApiError::new(
            other.status(),
            format!("cannot read the body: {}", other.body_text()),
        ),
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().copied();
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection, limit)),
        }
    }
}

/// `axum::extract::Query` whose rejections are [`ApiError`]s naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request(format!(
                    "invalid query parameter: {}",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                )))
            }
            Err(other) => Err(ApiError::new(other.status(), other.body_text())),
        }
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s naming the parameter.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::bad_request(format!(
                    "invalid path parameter: {}",
                    e.body_text().trim_start_matches("Invalid URL: ")
                )))
            }
            Err(other) => Err(ApiError::new(other.status(), other.body_text())),
        }
    }
}

/// The answer for a path no route has.
pub async fn no_such_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}; GET /openapi.json lists every route",
            uri.path()
        ),
    )
}

/// The answer for a route called with a method it does not have (axum adds `Allow`).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}; the `Allow` header lists the methods it takes",
            uri.path()
        ),
    )
}

/// A last guard: any error response that is not JSON yet (one a layer or the framework
/// wrote as plain text) is rewritten to the JSON shape, keeping its status and headers.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
    };
    let body = match serde_json::to_vec(&ErrorBody { error: text }) {
        Ok(body) => body,
        Err(_) => return (parts.status, "").into_response(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}
