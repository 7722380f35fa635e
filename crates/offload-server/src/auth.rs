//! Access control: `Authorization: Bearer ofl_…` tokens with roles.
//!
//! While the store holds no token the API is open — unless the server was
//! started exposed (a non-loopback address without `--insecure`): then a
//! token is always needed, so deleting the last token locks the API
//! instead of opening it. Once one token exists, every route but
//! `/healthz`, `/readyz` and the OpenAPI document needs a valid token (401
//! otherwise) whose role allows the route (403 otherwise). Verified tokens
//! are cached for [`CACHE_TTL`], so a deleted token stops working within
//! that time on other servers (at once on the server that deleted it); an
//! open event stream ends within about that time too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use offload::{Client, Permission, TokenInfo};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// How long a verified token (and "are there tokens at all") is trusted
/// without asking the store again.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached tokens; the cache is cleared when full.
const CACHE_MAX: usize = 10_000;

/// Who made a request, as handlers and the audit log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The token, or `None` when the API is open (no token exists).
    pub(crate) token: Option<TokenInfo>,
}

impl Caller {
    /// The audit log's "who": the token id, or `anonymous`.
    pub(crate) fn actor(&self) -> String {
        match &self.token {
            Some(t) => format!("token:{}", t.id),
            None => "anonymous".to_owned(),
        }
    }
}

/// The token check shared by every route.
#[derive(Clone)]
pub(crate) struct Auth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth")
    }
}

struct Inner {
    client: Client,
    /// Verified tokens by the SHA-256 of the whole presented token (a
    /// lookup by digest reveals nothing about the secret), with the time
    /// they were verified.
    verified: Mutex<HashMap<[u8; 32], (TokenInfo, Instant)>>,
    /// Whether the store holds a token, and when that was read.
    required: Mutex<Option<(bool, Instant)>>,
    /// Tokens are needed even while the store holds none.
    always_required: bool,
    /// Bumped by [`Auth::forget`]: a lookup that started before it does
    /// not fill the cache.
    generation: AtomicU64,
}

impl Auth {
    pub(crate) fn new(client: Client, always_required: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                verified: Mutex::new(HashMap::new()),
                required: Mutex::new(None),
                always_required,
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Forgets cached tokens (after a token was made or deleted here).
    pub(crate) fn forget(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.inner.verified).clear();
        *lock(&self.inner.required) = None;
    }

    async fn required(&self) -> Result<bool, ApiError> {
        if self.inner.always_required {
            return Ok(true);
        }
        if let Some((required, at)) = *lock(&self.inner.required)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(required);
        }
        let required = !self.inner.client.tokens().await?.is_empty();
        *lock(&self.inner.required) = Some((required, Instant::now()));
        Ok(required)
    }

    async fn check(&self, presented: &str) -> Result<Option<TokenInfo>, ApiError> {
        if offload::token_id(presented).is_none() {
            return Ok(None);
        }
        let key: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some((info, at)) = lock(&self.inner.verified).get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(info.clone()));
        }
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let found = self.inner.client.authenticate(presented).await?;
        if let Some(info) = &found
            && self.inner.generation.load(Ordering::SeqCst) == generation
        {
            let mut cache = lock(&self.inner.verified);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (info.clone(), Instant::now()));
        }
        Ok(found)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a route needs, by method and route pattern; `None`: open to all.
pub(crate) fn permission(method: &Method, route: &str) -> Option<Permission> {
    if matches!(route, "/healthz" | "/readyz" | crate::OPENAPI_PATH) {
        return None;
    }
    if route.starts_with("/v1/tokens")
        || route.starts_with("/v1/audit")
        || route.starts_with("/v1/webhooks")
    {
        return Some(Permission::Admin);
    }
    let p = match (method.as_str(), route) {
        ("POST", "/v1/tasks" | "/v1/groups") => Permission::Enqueue,
        ("POST", "/v1/tasks/{id}/abort" | "/v1/groups/{id}/abort") => Permission::Abort,
        ("POST", "/v1/lease")
        | ("POST", "/v1/tasks/{id}/heartbeat")
        | ("POST", "/v1/tasks/{id}/progress")
        | ("POST", "/v1/tasks/{id}/complete")
        | ("POST", "/v1/tasks/{id}/fail") => Permission::Work,
        ("GET" | "HEAD", _) => Permission::Read,
        _ => Permission::Manage,
    };
    Some(p)
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"offload\""),
    );
    response
}

/// The middleware: checks the bearer token against the route's
/// permission and hands the [`Caller`] to the handler.
pub(crate) async fn middleware(
    State(auth): State<Auth>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let Some(needed) = permission(request.method(), &route) else {
        request.extensions_mut().insert(Caller { token: None });
        return next.run(request).await;
    };
    let presented = match request.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let text = value.to_str().ok().and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
            match text {
                Some(t) => Some(t.to_owned()),
                None => {
                    return unauthorized("the Authorization header must read `Bearer <token>`");
                }
            }
        }
    };
    let required = match auth.required().await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let caller = match presented {
        None if !required => Caller { token: None },
        None => {
            return unauthorized(
                "this server needs an API token: send `Authorization: Bearer <token>`",
            );
        }
        Some(token) => match auth.check(&token).await {
            Ok(Some(info)) => Caller { token: Some(info) },
            Ok(None) => {
                return unauthorized("the API token is not valid (unknown, deleted or mistyped)");
            }
            Err(e) => return e.into_response(),
        },
    };
    if let Some(token) = &caller.token
        && !token.role.allows(needed)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {} has role {}, which may not {}",
                token.id,
                token.role,
                describe(needed)
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn describe(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Enqueue => "enqueue tasks",
        Permission::Abort => "abort tasks",
        Permission::Work => "lease and run tasks",
        Permission::Manage => "change, retry or delete tasks",
        Permission::Admin => "manage tokens, webhooks or the audit log",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_the_document_are_open_and_everything_else_is_not() {
        assert_eq!(permission(&Method::GET, "/healthz"), None);
        assert_eq!(permission(&Method::GET, "/readyz"), None);
        assert_eq!(permission(&Method::GET, crate::OPENAPI_PATH), None);
        assert_eq!(permission(&Method::GET, "/metrics"), Some(Permission::Read));
        assert_eq!(
            permission(&Method::POST, "/v1/tasks"),
            Some(Permission::Enqueue)
        );
        assert_eq!(
            permission(&Method::GET, "/v1/tasks"),
            Some(Permission::Read)
        );
        assert_eq!(
            permission(&Method::DELETE, "/v1/tasks/{id}"),
            Some(Permission::Manage)
        );
        assert_eq!(
            permission(&Method::PATCH, "/v1/tasks/{id}"),
            Some(Permission::Manage)
        );
        assert_eq!(
            permission(&Method::POST, "/v1/tasks/{id}/retry"),
            Some(Permission::Manage)
        );
        assert_eq!(
            permission(&Method::POST, "/v1/tasks/{id}/abort"),
            Some(Permission::Abort)
        );
        assert_eq!(
            permission(&Method::POST, "/v1/lease"),
            Some(Permission::Work)
        );
        assert_eq!(
            permission(&Method::GET, "/v1/audit"),
            Some(Permission::Admin)
        );
        assert_eq!(
            permission(&Method::GET, "/v1/tokens"),
            Some(Permission::Admin)
        );
    }
}
