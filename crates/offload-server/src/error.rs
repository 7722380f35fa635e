//! [`ApiError`]: every failure of the API as `{"error": {"code", "message",
//! "field"?}}` with its HTTP status, and the extractors that turn malformed
//! requests into one.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use offload::{Error, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answer: the HTTP status, a stable machine-readable `code`, a
/// message for people and, for invalid input, the `field` at fault.
///
/// | status | code | when |
/// | --- | --- | --- |
/// | 400 | `bad_request` | malformed JSON, query or path |
/// | 404 | `not_found` | no such task or route |
/// | 405 | `method_not_allowed` | the route has no such method |
/// | 409 | `conflict` | the task's status does not allow the change |
/// | 409 | `lease_lost` | a remote worker's lease token is no longer live |
/// | 413 | `payload_too_large` | the body is over the limit |
/// | 415 | `unsupported_media_type` | the body is not `application/json` |
/// | 422 | `invalid_input` | well-formed JSON that breaks a rule (names `field`) |
/// | 429 | `quota_exceeded` | a fairness key holds as many waiting tasks as its limit allows (`Retry-After`) |
/// | 503 | `unavailable` | the store cannot be reached; retrying may help |
/// | 500 | `internal` | anything else (details are logged, not sent) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code, e.g. `not_found`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The input field at fault, when one is.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 500: `detail` goes to the server's log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (logged by the server)",
        )
    }

    /// 422 naming the field at fault.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(QUOTA_RETRY_AFTER),
            );
        }
        response
    }
}

/// The `Retry-After` (seconds) of a 429: a hint; the queue drains at the
/// workers' pace, so a client backs off and tries again.
const QUOTA_RETRY_AFTER: &str = "1";

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            Error::Invalid(v) => Self::invalid(v.field, v.message),
            Error::Json(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                e.to_string(),
            ),
            Error::LeaseLost(_) => Self::new(StatusCode::CONFLICT, "lease_lost", e.to_string()),
            Error::Store(StoreError::QuotaExceeded(m)) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", m)
            }
            Error::Store(StoreError::InvalidTransition { .. } | StoreError::Conflict(_)) => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            Error::Store(StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store cannot be reached; retry later",
                )
            }
            other => Self::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let message = r.body_text();
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
            }
            _ => Self::bad_request(message),
        }
    }
}

/// A JSON body whose rejection is an [`ApiError`].
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// A query string whose rejection is an [`ApiError`].
pub(crate) struct QueryArgs<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for QueryArgs<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|r: QueryRejection| ApiError::bad_request(r.body_text()))?;
        Ok(Self(value))
    }
}

/// The answer for a path no route has.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The answer for a method a route does not have.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
