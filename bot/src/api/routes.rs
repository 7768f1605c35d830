//! Route handlers.

use super::{ApiError, AppState};
use crate::feed::failover::Role;
use crate::runner::{Bot, wall_ms};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iq720_contract::maintenance::HEADER_ARCHIVE_SHA256;
use iq720_contract::report::ReportPeriod;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// Run blocking work (locks, SQLite) off the async workers.
pub(super) async fn blocking<T, F>(bot: &AppState, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Bot) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let bot = bot.clone();
    tokio::task::spawn_blocking(move || f(&bot))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// Parse a JSON body; an empty body parses as `{}`. Body read failures (e.g. over the
/// 2 MiB limit) become JSON errors with their status.
pub(super) fn parse_body<T: DeserializeOwned>(
    body: &Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "bad_request"
            };
            return Err(ApiError::new(status, code, e.body_text()));
        }
    };
    let slice: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(slice)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad_request("bad percent-encoding in query"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not UTF-8"))
}

fn parse_query(q: Option<String>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut map = BTreeMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{k}` (allowed: {})",
                allowed.join(", ")
            )));
        }
        map.insert(k, percent_decode(v)?);
    }
    Ok(map)
}

/// Parse a time as RFC 3339 or integer milliseconds since the epoch.
fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    v.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "`{field}` must be RFC 3339 (e.g. 2026-01-02T03:04:05Z) or ms since epoch"
            ))
        })
}

/// `GET /healthz`: the process answers, the engine loop iterated recently, and its
/// iterations are not failing one after another (see [`crate::runner::IterationHealth`]).
/// During the shutdown drain the engine loop has ended on purpose: 200 with status
/// `draining`, so a liveness probe does not kill the process while the operator closes
/// its positions.
pub async fn healthz(State(bot): State<AppState>) -> Response {
    let age = bot.loop_age();
    let timeout = bot.loop_timeout();
    let health = &bot.iteration_health;
    let (status, reason) = if bot.is_draining() {
        ("draining", None)
    } else if age > timeout {
        (
            "engine loop stuck",
            Some(format!(
                "the engine loop has not completed an iteration for {:.1}s (limit {:.1}s)",
                age.as_secs_f64(),
                timeout.as_secs_f64()
            )),
        )
    } else if let Some(u) = health.unhealthy() {
        (
            "engine iterations failing",
            Some(format!(
                "{} consecutive engine iterations failed (limit {}); last error: {}",
                u.failures,
                health.threshold(),
                u.last_error
            )),
        )
    } else {
        ("ok", None)
    };
    let body = json!({
        "status": status,
        "reason": reason,
        "engineLoopAgeSeconds": age.as_secs_f64(),
        "consecutiveFailedIterations": health.consecutive_failures(),
        "lastIterationError": health.last_error(),
    });
    let code = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /readyz`: market data fresh (or pinned by `marketData.use`: a pinned stale
/// source is reported, `checks.marketDataPinned`, and does not make the bot unready,
/// so that the operator keeps talking to it and can report and lift the pin), database
/// writable, not restoring, not shutting down (during the shutdown drain the bot no
/// longer trades, so it is not ready).
pub async fn readyz(State(bot): State<AppState>) -> Response {
    let res = blocking(&bot, |bot| {
        let (feed, pinned) = bot.feed_state().unwrap_or((false, false));
        let db = bot.store.probe_write(wall_ms());
        let restoring = bot.restoring.load(Ordering::Relaxed);
        Ok(((feed, pinned), db.map_err(|e| e.to_string()), restoring))
    })
    .await;
    let ((feed, pinned), db, restoring) = match res {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let draining = bot.is_draining();
    let fault = crate::chaos::fault() == Some(crate::chaos::Fault::Unhealthy);
    let ready = (feed || pinned) && db.is_ok() && !restoring && !draining && !fault;
    let body = json!({
        "ready": ready,
        "checks": {
            "marketDataFresh": feed,
            "marketDataPinned": pinned,
            "databaseWritable": db.is_ok(),
            "databaseError": db.err(),
            "restoring": restoring,
            "draining": draining,
            "fault": fault,
        }
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(bot): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        bot.metrics.render(),
    )
        .into_response()
}

/// `GET /api/v1/status`.
pub async fn status(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(blocking(&bot, |b| Ok(b.status()?)).await?))
}

/// `GET /api/v1/positions`.
pub async fn positions(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(blocking(&bot, |b| Ok(b.positions()?)).await?))
}

/// `GET /api/v1/trades?since=&limit=&open=`.
pub async fn trades(
    State(bot): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(q, &["since", "limit", "open"])?;
    let since = q
        .get("since")
        .map(|v| parse_time("since", v))
        .transpose()?
        .unwrap_or(0);
    let limit = match q.get("limit") {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request("`limit` must be an integer between 1 and 10000")
            })?,
        None => 1000,
    };
    let open_only = match q.get("open").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("`open` must be true or false")),
    };
    let rows = blocking(&bot, move |b| {
        Ok(b.store.trades(since, limit, open_only)?)
    })
    .await?;
    Ok(Json(json!({ "trades": rows, "count": rows.len() })))
}

/// `GET /api/v1/performance`.
pub async fn performance(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    let v = blocking(&bot, |b| {
        let now = wall_ms();
        let midnight = now - now.rem_euclid(86_400_000);
        let conn = b.store.reader()?;
        let today = b.store.stats_since(&conn, midnight)?;
        let week = b.store.stats_since(&conn, now - 7 * 86_400_000)?;
        let all = b.store.stats_since(&conn, i64::MIN)?;
        let core = b.lock()?;
        let e = &core.engine;
        Ok(json!({
            "today": today,
            "last7Days": week,
            "allTime": all,
            "openPositions": e.open_count(),
            "equity": e.equity(),
            "startingBalance": e.starting_balance(),
            "realizedPnl": e.realized_pnl(),
            "pnlPercent": (e.equity() - e.starting_balance()) / e.starting_balance() * 100.0,
            "stakeCurrency": core.config.stake_currency,
        }))
    })
    .await?;
    Ok(Json(v))
}

/// `GET /api/v1/report?period=daily|weekly|monthly[&end=TIME][&format=json|text]`: the
/// performance report over the rolling period that ends at `end` (now by default),
/// computed from the trade history (see [`crate::report`]). `format=text` answers the
/// text the operator stores in the report ConfigMap.
pub async fn report(
    State(bot): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_query(q, &["period", "end", "format"])?;
    let period = q
        .get("period")
        .ok_or_else(|| ApiError::bad_request("`period` is required: daily, weekly or monthly"))
        .and_then(|p| ReportPeriod::parse(p).map_err(|e| ApiError::bad_request(e.to_string())))?;
    let end = q.get("end").map(|v| parse_time("end", v)).transpose()?;
    let text = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return Err(ApiError::bad_request("`format` must be json or text")),
    };
    let report = blocking(&bot, move |b| {
        let live = {
            let core = b.lock()?;
            let e = &core.engine;
            crate::report::Live {
                bot: Some(core.config.name.clone()).filter(|n| !n.is_empty()),
                stake_currency: core.config.stake_currency.clone(),
                starting_balance: e.starting_balance(),
                equity: e.equity(),
                open_positions: e.open_count() as u64,
                now_ms: wall_ms(),
            }
        };
        let conn = b.store.reader()?;
        Ok(crate::report::gather(&conn, period, end, &live)?)
    })
    .await?;
    if text {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.render_text(),
        )
            .into_response());
    }
    Ok(Json(report).into_response())
}

/// `GET /api/v1/config`.
pub async fn get_config(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cfg = blocking(&bot, |b| Ok(b.config()?)).await?;
    Ok(Json(
        serde_json::to_value(cfg).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// `PATCH /api/v1/config`: JSON merge patch of hot-reloadable fields.
pub async fn patch_config(
    State(bot): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let patch: Value = parse_body(&body)?;
    let cfg = blocking(&bot, move |b| Ok(b.patch_config(&patch)?)).await?;
    Ok(Json(
        serde_json::to_value(cfg).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// `POST /api/v1/trading/pause`.
pub async fn pause(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(blocking(&bot, |b| Ok(b.pause()?)).await?))
}

/// `POST /api/v1/trading/resume`.
pub async fn resume(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(blocking(&bot, |b| Ok(b.resume()?)).await?))
}

/// `POST /api/v1/emergency/close-all`.
pub async fn close_all(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    warn!(target: "trading", "emergency close-all requested");
    let report = bot.close_all().await.map_err(ApiError::internal)?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// `GET /api/v1/datasource`.
pub async fn get_datasource(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(blocking(&bot, |b| Ok(b.datasource()?)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasourcePut {
    active: Option<String>,
    #[serde(default)]
    stalled: BTreeMap<String, bool>,
}

/// `PUT /api/v1/datasource`: `{"active": "primary"|"backup", "stalled": {"primary": true}}`.
pub async fn put_datasource(
    State(bot): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DatasourcePut = parse_body(&body)?;
    let active = req
        .active
        .as_deref()
        .map(|a| {
            Role::parse(a).ok_or_else(|| {
                ApiError::bad_request(format!("`active` must be primary or backup, not `{a}`"))
            })
        })
        .transpose()?;
    let mut stalled = Vec::new();
    for (k, v) in &req.stalled {
        let role = Role::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`stalled` keys must be primary or backup, not `{k}`"
            ))
        })?;
        stalled.push((role, *v));
    }
    if active.is_none() && stalled.is_empty() {
        return Err(ApiError::bad_request(
            "body must set `active` and/or `stalled`",
        ));
    }
    Ok(Json(
        blocking(&bot, move |b| Ok(b.set_datasource(active, &stalled)?)).await?,
    ))
}

/// `POST /api/v1/backup`: stream a `tar.gz` backup archive.
pub async fn backup(State(bot): State<AppState>) -> Result<Response, ApiError> {
    let (file, manifest, written) = blocking(&bot, |b| {
        let db = b.store.path().to_path_buf();
        let work = db
            .parent()
            .map(|p| p.join(".backup-work"))
            .unwrap_or_else(std::env::temp_dir);
        let out = work.join(format!(
            "backup-{}.tar.gz",
            jiff::Timestamp::now().as_nanosecond()
        ));
        let (manifest, written) = crate::backup::create_archive(&db, &out, &work)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let file = std::fs::File::open(&out).map_err(|e| ApiError::internal(e.to_string()))?;
        // Unlink now: the open handle keeps the data readable and nothing is left behind.
        let _ = std::fs::remove_file(&out);
        Ok((file, manifest, written))
    })
    .await?;
    info!(
        schema_version = manifest.schema_version,
        size = manifest.files.first().map(|f| f.size).unwrap_or(0),
        "backup streamed"
    );
    let len = file.metadata().map(|m| m.len()).ok();
    let file = tokio::fs::File::from_std(file);
    let stream = futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        // 1 MiB reads: each read is a hop to the blocking pool, so small reads (64 KiB)
        // made the bot, not the network, the limit of a backup's upload.
        let mut buf = vec![0u8; 1024 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let name = format!("iq720-backup-{}.tar.gz", jiff::Timestamp::now().as_second());
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(f) = manifest.files.first()
        && let Ok(v) = HeaderValue::from_str(&f.sha256)
    {
        h.insert("x-iq720-db-sha256", v);
    }
    // The archive's own checksum: the operator stores it as object metadata when the
    // upload starts and completes the upload only if the bytes it sent match.
    if let Ok(v) = HeaderValue::from_str(&written.sha256) {
        h.insert(HEADER_ARCHIVE_SHA256, v);
    }
    h.insert(
        "x-iq720-schema-version",
        HeaderValue::from(manifest.schema_version),
    );
    Ok(resp)
}

/// `POST /api/v1/maintenance/vacuum`.
pub async fn vacuum(State(bot): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (before, after) = blocking(&bot, |b| Ok(b.store.vacuum()?)).await?;
    info!(before, after, "database vacuumed");
    Ok(Json(json!({"bytesBefore": before, "bytesAfter": after})))
}

/// `POST /api/v1/maintenance/prune`: `{"olderThanDays": N, "dryRun": false}`, or the
/// selection of a trade-history archive (`{"cutoffMs", "maxTradeId", "expectedRows"}`,
/// see [`iq720_contract::maintenance::PruneRequest`]); answers with the pruned rows as
/// JSON lines. A selection that no longer matches `expectedRows` is refused with 409
/// `prune_mismatch` and deletes nothing.
pub async fn prune(
    State(bot): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use iq720_contract::maintenance::{HEADER_PRUNED_ROWS, PRUNE_MISMATCH_CODE, PruneRequest};
    let req: PruneRequest = parse_body(&body)?;
    let sel = match (req.older_than_days, req.cutoff_ms) {
        (Some(days), None) if days >= 1 => {
            crate::store::PruneSelection::before(wall_ms() - i64::from(days) * 86_400_000)
        }
        (None, Some(cutoff_ms)) => crate::store::PruneSelection {
            cutoff_ms,
            max_trade_id: req.max_trade_id,
        },
        _ => {
            return Err(ApiError::bad_request(
                "either `olderThanDays` (integer ≥ 1) or `cutoffMs` is required, not both",
            ));
        }
    };
    if sel.cutoff_ms > wall_ms() - 86_400_000 {
        return Err(ApiError::bad_request(
            "the cutoff must be at least one day in the past",
        ));
    }
    let dry = req.dry_run;
    let expected = req.expected_rows;
    let rows = blocking(&bot, move |b| {
        b.store
            .prune_selected(&sel, expected, dry)
            .map_err(|e| match e {
                crate::store::StoreError::PruneMismatch { .. } => {
                    ApiError::new(StatusCode::CONFLICT, PRUNE_MISMATCH_CODE, e.to_string())
                }
                other => other.into(),
            })
    })
    .await?;
    info!(rows = rows.len(), cutoff_ms = sel.cutoff_ms, max_trade_id = ?sel.max_trade_id, dry_run = dry, "prune");
    let mut text = String::new();
    for r in &rows {
        text.push_str(&r.to_string());
        text.push('\n');
    }
    let mut resp = (StatusCode::OK, text).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(HEADER_PRUNED_ROWS, HeaderValue::from(rows.len()));
    h.insert(
        "x-iq720-dry-run",
        HeaderValue::from_static(if dry { "true" } else { "false" }),
    );
    Ok(resp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::api::auth::TokenStore;
    use crate::config::Config;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    fn health(bot: &AppState) -> StatusCode {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(healthz(State(bot.clone()))).status()
    }

    #[test]
    fn healthz_fails_while_the_engine_loop_is_stuck_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_yaml(&format!(
            "pairs: [A/B]\nmarketData: {{tickRate: 100}}\ndataDir: {}\n",
            dir.path().join("data").display()
        ))
        .unwrap();
        let bot = Bot::new(cfg, Arc::new(TokenStore::new(&dir.path().join("tokens")))).unwrap();
        let engine = bot.spawn_engine().unwrap();
        assert_eq!(health(&bot), StatusCode::OK);
        // Hold the engine lock from another thread: the loop cannot iterate.
        let release = Arc::new(AtomicBool::new(false));
        let (b2, r2) = (bot.clone(), release.clone());
        let holder = std::thread::spawn(move || {
            let _guard = b2.lock().unwrap();
            while !r2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let deadline = Instant::now() + bot.loop_timeout() + Duration::from_secs(5);
        while health(&bot) == StatusCode::OK {
            assert!(Instant::now() < deadline, "healthz never failed");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(health(&bot), StatusCode::SERVICE_UNAVAILABLE);
        release.store(true, Ordering::Relaxed);
        holder.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while health(&bot) != StatusCode::OK {
            assert!(Instant::now() < deadline, "healthz never recovered");
            std::thread::sleep(Duration::from_millis(20));
        }
        bot.shutdown.store(true, Ordering::Relaxed);
        engine.join().unwrap();
    }

    async fn body_json(resp: Response) -> Value {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn draining_ends_the_engine_loop_keeps_healthz_ok_and_readyz_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_yaml(&format!(
            "pairs: [A/B]\nmarketData: {{tickRate: 100}}\ndataDir: {}\n",
            dir.path().join("data").display()
        ))
        .unwrap();
        let bot = Bot::new(cfg, Arc::new(TokenStore::new(&dir.path().join("tokens")))).unwrap();
        let engine = bot.spawn_engine().unwrap();
        bot.draining.store(true, Ordering::Relaxed);
        // The loop ends on its own (shutdown is not set).
        engine.join().unwrap();
        assert!(!bot.shutdown.load(Ordering::Relaxed));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let health = rt.block_on(healthz(State(bot.clone())));
        assert_eq!(health.status(), StatusCode::OK);
        let h = rt.block_on(body_json(health));
        assert_eq!(h["status"], "draining", "{h}");
        assert!(h["reason"].is_null(), "{h}");
        let ready = rt.block_on(readyz(State(bot.clone())));
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = rt.block_on(body_json(ready));
        assert_eq!(r["ready"], false, "{r}");
        assert_eq!(r["checks"]["draining"], true, "{r}");
        assert_eq!(r["checks"]["databaseWritable"], true, "{r}");
    }
}
