//! HTTP endpoints of the operator: `/metrics`, `/healthz`, `/readyz`, `/leader`.
//!
//! Why readiness is not leadership: a Deployment's rolling update waits for the new pod
//! to be Ready before it stops an old one. If only the leader were Ready, a new pod
//! could never become Ready while the old pod holds the Lease, and a `helm upgrade`
//! of a one-replica install would hang forever. So `/readyz` says "this process is up
//! and can reach the apiserver" (a standby is ready to take over), and leadership is
//! reported separately by `/leader` and the `iq720_operator_leader` gauge.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::debug;

use super::context::Context;

/// How long `/readyz` waits for the apiserver. Below the chart's probe timeout (3 s),
/// so a slow apiserver shows as "not ready", not as a probe timeout.
pub const APISERVER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The router of the health and metrics server.
pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/leader", get(leader))
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

/// Live while the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

/// Ready when the apiserver answers `GET /version` within [`APISERVER_CHECK_TIMEOUT`],
/// whether or not this replica is the leader.
async fn readyz(State(ctx): State<Context>) -> impl IntoResponse {
    match tokio::time::timeout(APISERVER_CHECK_TIMEOUT, ctx.client.apiserver_version()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            debug!(error = %e, "readyz: apiserver unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "apiserver unreachable")
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "apiserver did not answer in time",
        ),
    }
}

/// 200 `leader` while this replica runs the controllers, 503 `standby` otherwise (for
/// scripts and dashboards; never use it as a readiness probe).
async fn leader(State(ctx): State<Context>) -> impl IntoResponse {
    if ctx.is_leading() {
        (StatusCode::OK, "leader")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "standby")
    }
}
