//! HTTP API (axum): health, readiness and metrics without auth; `/api/v1/*` with a bearer
//! token. Errors are JSON `{"error": {"code", "message"}}`.

pub mod auth;
pub mod maintenance;
pub mod routes;
pub mod security;

use crate::runner::{Bot, ControlError};
use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::warn;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// Build an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400 bad request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 500 internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotHotReloadable(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "field_not_hot_reloadable",
                e.to_string(),
            ),
            ControlError::InvalidConfig(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                e.to_string(),
            ),
            ControlError::Switch(_) => ApiError::new(
                StatusCode::CONFLICT,
                "datasource_switch_refused",
                e.to_string(),
            ),
            ControlError::Store(_) | ControlError::Poisoned => ApiError::internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

/// Shared handler state.
pub type AppState = Arc<Bot>;

/// The static routes, used as the metrics `route` label (anything else is `other`).
const ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/status",
    "/api/v1/positions",
    "/api/v1/trades",
    "/api/v1/performance",
    "/api/v1/config",
    "/api/v1/trading/pause",
    "/api/v1/trading/resume",
    "/api/v1/emergency/close-all",
    "/api/v1/datasource",
    "/api/v1/backup",
    "/api/v1/maintenance/vacuum",
    "/api/v1/maintenance/prune",
    "/api/v1/maintenance/prune/archive",
    "/api/v1/maintenance/logs",
    "/api/v1/maintenance/logs/archive",
    "/api/v1/security",
];

async fn count_requests(State(bot): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other");
    let method = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let resp = next.run(req).await;
    bot.metrics
        .http_requests_total
        .with_label_values(&[route, method, resp.status().as_str()])
        .inc();
    resp
}

async fn require_token(State(bot): State<AppState>, req: Request, next: Next) -> Response {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or(""));
    let verdict = match auth_header {
        None => Err("missing"),
        Some(h) => match h.strip_prefix("Bearer ").map(str::trim) {
            None | Some("") => Err("malformed"),
            Some(token) => match bot.tokens.identify(token) {
                Some(id) => Ok(id),
                None if bot.tokens.is_empty() => Err("no_tokens_configured"),
                None => Err("invalid"),
            },
        },
    };
    let now = jiff::Timestamp::now();
    if let Err(reason) = verdict {
        bot.metrics
            .auth_failures_total
            .with_label_values(&[reason])
            .inc();
        bot.tokens.audit().failure(reason, now);
        warn!(
            target: "security",
            event = "auth_failure",
            reason,
            remote = %remote,
            method = %req.method(),
            path = %req.extensions().get::<OriginalUri>().map(|u| u.0.path().to_string()).unwrap_or_default(),
            "API authentication failed"
        );
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            match reason {
                "missing" => "missing Authorization: Bearer <token> header",
                "malformed" => "Authorization header must be `Bearer <token>`",
                _ => "invalid token",
            },
        )
        .into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if let Ok(id) = &verdict {
        bot.tokens.audit().used(id, now);
        bot.metrics
            .token_last_used
            .with_label_values(&[id.as_str()])
            .set(now.as_millisecond() as f64 / 1000.0);
    }
    let resp = next.run(req).await;
    bot.note_api_request();
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Build the router.
pub fn router(bot: AppState) -> Router {
    use routes::*;
    let api = Router::new()
        .route("/status", get(status))
        .route("/positions", get(positions))
        .route("/trades", get(trades))
        .route("/performance", get(performance))
        .route("/report", get(report))
        .route("/config", get(get_config).patch(patch_config))
        .route("/trading/pause", post(pause))
        .route("/trading/resume", post(resume))
        .route("/emergency/close-all", post(close_all))
        .route("/datasource", get(get_datasource).put(put_datasource))
        .route("/backup", post(backup))
        .route("/maintenance/vacuum", post(vacuum))
        .route("/maintenance/prune", post(prune))
        .route(
            "/maintenance/prune/archive",
            post(maintenance::prune_archive),
        )
        .route("/maintenance/logs", post(maintenance::logs))
        .route("/maintenance/logs/archive", post(maintenance::logs_archive))
        .route("/security", get(security::security))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(bot.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(bot.clone(), count_requests))
        .with_state(bot)
}
