//! HTTP endpoints of the operator: `/metrics`, `/healthz`, `/readyz`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use super::context::Context;

/// The router of the health and metrics server.
pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Context>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        ctx.metrics.render(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

/// Ready once this replica runs the controllers (it holds the leader Lease). A
/// standby replica is alive but not ready.
async fn readyz(State(ctx): State<Context>) -> impl IntoResponse {
    if ctx.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "standby")
    }
}
