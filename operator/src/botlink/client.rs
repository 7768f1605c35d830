//! HTTP client for a bot's control API (`/api/v1/*`, bearer token).
//!
//! Answers are decoded into the contract's types ([`iq720_contract::api`]), the same
//! types the bot's tests decode its real answers into, so a field the operator relies
//! on cannot silently go missing: a bot that stops sending it is a
//! [`BotApiError::Decode`], never a default of zero. Errors are told apart by variant
//! and HTTP status or the bot's error code, never by message text.
//!
//! The token is held in memory only and never logged or put in an error message.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use iq720_contract::api::{
    CloseAllResponse, ConfigResponse, ErrorResponse, PauseResponse, PerformanceResponse,
    ResumeResponse, SecurityResponse, StatusResponse,
};
use iq720_contract::report::{PerformanceReport, ReportPeriod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Failure talking to a bot.
#[derive(Debug, thiserror::Error)]
pub enum BotApiError {
    /// The bot could not be reached (no pod IP, connection refused, timeout).
    #[error("bot unreachable: {0}")]
    Unreachable(String),
    /// The bot answered with an error status.
    #[error("bot answered {status} to {path}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Request path.
        path: String,
        /// Machine-readable code from the bot's JSON error body (e.g.
        /// `invalid_config`), empty when the body had none.
        code: String,
        /// Error message from the bot's JSON error body.
        message: String,
    },
    /// After close-all the bot still reports open positions or is not halted.
    #[error("after close-all the bot reports {open} open position(s), halted={halted}")]
    NotFlat {
        /// Open positions the bot still reports.
        open: i64,
        /// Whether the bot reports itself halted.
        halted: bool,
    },
    /// The bot's answer was not the JSON expected: not JSON, or not the contract's
    /// type for that endpoint (a missing or mistyped field).
    #[error("bot sent an invalid answer to {path}: {message}")]
    Decode {
        /// Request path.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The request body could not be encoded as JSON.
    #[error("cannot encode the request to {path}: {message}")]
    Encode {
        /// Request path.
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// How long a connection to a bot stays open unused: longer than the gaps between the
/// calls of one reconcile (milliseconds), far shorter than any poll interval. Each
/// open connection holds a socket, its buffers and its task (about 30 KiB in a heap
/// profile); at 1,000 bots polled every 10 s, 2 s kept about 200–400 of them open,
/// 250 ms about 25–50 (the pool closes idle connections at checks one timeout
/// apart, so an idle connection lives up to twice the timeout). 90 ms is the pool's
/// shortest check period: about 10–20 open between polls.
const IDLE_CONNECTION: Duration = Duration::from_millis(90);

/// A client for the control API of bots, shared by all reconciles.
#[derive(Clone)]
pub struct BotApi {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Address and credentials of one bot.
#[derive(Clone)]
pub struct BotEndpoint {
    /// `http://IP:PORT`.
    pub base: String,
    /// Bearer token (secret).
    pub token: String,
}

impl std::fmt::Debug for BotEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotEndpoint")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl BotApi {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        // Idle connections close after IDLE_CONNECTION: the calls of one reconcile
        // share a connection, but none is kept open between polls (at 1,000 bots a
        // kept-alive connection per bot cost 1,000 sockets, tasks and buffers).
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_CONNECTION)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { client, timeout }
    }

    /// Sends one request and decodes the JSON answer.
    pub async fn call(
        &self,
        endpoint: &BotEndpoint,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, BotApiError> {
        self.request(endpoint, method, path, body, timeout).await
    }

    /// Sends one request without a body and returns the answer's headers and its body
    /// unread, as a stream of frames, for answers too large to hold in memory (the
    /// backup archive of `POST /api/v1/backup`). `timeout` bounds only the wait for the response
    /// head; the caller bounds reading the body. A non-200 answer is read (it is a
    /// small JSON error) and returned as [`BotApiError::Status`].
    pub async fn call_stream(
        &self,
        endpoint: &BotEndpoint,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<(http::HeaderMap, hyper::body::Incoming), BotApiError> {
        let uri = format!("{}{}", endpoint.base, path);
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", endpoint.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| BotApiError::Unreachable(format!("bad request for {path}: {e}")))?;
        let deadline = timeout.unwrap_or(self.timeout);
        let response = tokio::time::timeout(deadline, self.client.request(request))
            .await
            .map_err(|_| BotApiError::Unreachable(format!("{path} timed out after {deadline:?}")))?
            .map_err(|e| BotApiError::Unreachable(format!("{path}: {e}")))?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        if status == StatusCode::OK {
            return Ok((parts.headers, body));
        }
        let bytes = tokio::time::timeout(deadline, body.collect())
            .await
            .map_err(|_| BotApiError::Unreachable(format!("{path} body timed out")))?
            .map_err(|e| BotApiError::Unreachable(format!("{path} body: {e}")))?
            .to_bytes();
        let (code, message) = match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (String::new(), "no message".to_string()),
        };
        Err(BotApiError::Status {
            status: status.as_u16(),
            path: path.to_string(),
            code,
            message,
        })
    }

    /// Sends one request with an optional JSON body and decodes the answer as `T`.
    async fn request<B, T>(
        &self,
        endpoint: &BotEndpoint,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<T, BotApiError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let uri = format!("{}{}", endpoint.base, path);
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| BotApiError::Encode {
                path: path.to_string(),
                message: e.to_string(),
            })?),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", endpoint.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| BotApiError::Unreachable(format!("bad request for {path}: {e}")))?;
        let deadline = timeout.unwrap_or(self.timeout);
        let response = tokio::time::timeout(deadline, self.client.request(request))
            .await
            .map_err(|_| BotApiError::Unreachable(format!("{path} timed out after {deadline:?}")))?
            .map_err(|e| BotApiError::Unreachable(format!("{path}: {e}")))?;
        let status = response.status();
        let bytes = tokio::time::timeout(deadline, response.into_body().collect())
            .await
            .map_err(|_| BotApiError::Unreachable(format!("{path} body timed out")))?
            .map_err(|e| BotApiError::Unreachable(format!("{path} body: {e}")))?
            .to_bytes();
        if status != StatusCode::OK {
            let (code, message) = match serde_json::from_slice::<ErrorResponse>(&bytes) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (String::new(), "no message".to_string()),
            };
            return Err(BotApiError::Status {
                status: status.as_u16(),
                path: path.to_string(),
                code,
                message,
            });
        }
        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(text).map_err(|e| BotApiError::Decode {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self, ep: &BotEndpoint) -> Result<StatusResponse, BotApiError> {
        self.request::<Value, _>(ep, Method::GET, "/api/v1/status", None, None)
            .await
    }

    /// `GET /api/v1/performance`.
    pub async fn performance(&self, ep: &BotEndpoint) -> Result<PerformanceResponse, BotApiError> {
        self.request::<Value, _>(ep, Method::GET, "/api/v1/performance", None, None)
            .await
    }

    /// `GET /api/v1/report?period=P`: the performance report over the period that ends
    /// now, computed by the bot from its trade history.
    pub async fn report(
        &self,
        ep: &BotEndpoint,
        period: ReportPeriod,
    ) -> Result<PerformanceReport, BotApiError> {
        let path = format!("/api/v1/report?period={period}");
        self.request::<Value, _>(ep, Method::GET, &path, None, None)
            .await
    }

    /// `GET /api/v1/security`: the bot's authentication audit (token ids, never values).
    pub async fn security(&self, ep: &BotEndpoint) -> Result<SecurityResponse, BotApiError> {
        self.request::<Value, _>(ep, Method::GET, "/api/v1/security", None, None)
            .await
    }

    /// `GET /api/v1/config` (the hot-reloadable part of the bot's configuration).
    pub async fn config(&self, ep: &BotEndpoint) -> Result<ConfigResponse, BotApiError> {
        self.request::<Value, _>(ep, Method::GET, "/api/v1/config", None, None)
            .await
    }

    /// `PATCH /api/v1/config` with a JSON merge patch of hot-reloadable fields (an
    /// [`iq720_contract::api::ConfigPatch`] or its JSON form).
    pub async fn patch_config<P: Serialize + ?Sized>(
        &self,
        ep: &BotEndpoint,
        patch: &P,
    ) -> Result<ConfigResponse, BotApiError> {
        self.request(ep, Method::PATCH, "/api/v1/config", Some(patch), None)
            .await
    }

    /// `POST /api/v1/trading/pause`.
    pub async fn pause(&self, ep: &BotEndpoint) -> Result<PauseResponse, BotApiError> {
        self.request::<Value, _>(ep, Method::POST, "/api/v1/trading/pause", None, None)
            .await
    }

    /// `POST /api/v1/trading/resume` (clears a pause and a halt).
    pub async fn resume(&self, ep: &BotEndpoint) -> Result<ResumeResponse, BotApiError> {
        self.request::<Value, _>(ep, Method::POST, "/api/v1/trading/resume", None, None)
            .await
    }

    /// `POST /api/v1/emergency/close-all`, waiting up to `deadline` for the fills.
    pub async fn close_all(
        &self,
        ep: &BotEndpoint,
        deadline: Duration,
    ) -> Result<CloseAllResponse, BotApiError> {
        self.request::<Value, _>(
            ep,
            Method::POST,
            "/api/v1/emergency/close-all",
            None,
            Some(deadline),
        )
        .await
    }

    /// `POST /api/v1/maintenance/vacuum`: returns the database size in bytes before and
    /// after.
    pub async fn vacuum(
        &self,
        ep: &BotEndpoint,
        deadline: Duration,
    ) -> Result<(u64, u64), BotApiError> {
        let v: Value = self
            .request::<Value, _>(
                ep,
                Method::POST,
                "/api/v1/maintenance/vacuum",
                None,
                Some(deadline),
            )
            .await?;
        let field = |k: &str| {
            v[k].as_u64().ok_or_else(|| BotApiError::Decode {
                path: "/api/v1/maintenance/vacuum".into(),
                message: format!("missing `{k}`"),
            })
        };
        Ok((field("bytesBefore")?, field("bytesAfter")?))
    }

    /// `POST /api/v1/maintenance/prune`: deletes closed trades older than
    /// `older_than_days`; returns how many rows it deleted. The answer (the deleted rows
    /// as JSON lines) is counted, not kept.
    pub async fn prune(
        &self,
        ep: &BotEndpoint,
        older_than_days: u32,
        deadline: Duration,
    ) -> Result<u64, BotApiError> {
        let path = "/api/v1/maintenance/prune";
        let body = serde_json::json!({ "olderThanDays": older_than_days, "dryRun": false });
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{}", ep.base, path))
            .header(header::AUTHORIZATION, format!("Bearer {}", ep.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| BotApiError::Unreachable(format!("bad request for {path}: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| BotApiError::Unreachable(format!("{path}: {e}")))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| BotApiError::Unreachable(format!("{path} body: {e}")))?
                .to_bytes();
            Ok::<_, BotApiError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| {
                BotApiError::Unreachable(format!("{path} timed out after {deadline:?}"))
            })??;
        if status != StatusCode::OK {
            let (code, message) = match serde_json::from_slice::<ErrorResponse>(&bytes) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (String::new(), "no message".to_string()),
            };
            return Err(BotApiError::Status {
                status: status.as_u16(),
                path: path.to_string(),
                code,
                message,
            });
        }
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64)
    }

    /// Calls close-all and confirms the bot is flat and halted. Returns the number of
    /// positions it closed; [`BotApiError::NotFlat`] when the close-all answer or a
    /// fresh `/status` still reports open positions, or the bot is not halted.
    pub async fn close_all_confirmed(
        &self,
        ep: &BotEndpoint,
        deadline: Duration,
    ) -> Result<i32, BotApiError> {
        let report = self.close_all(ep, deadline).await?;
        let closed = report.positions.len();
        let status = self.status(ep).await?;
        confirm_flat(&report, &status)?;
        Ok(i32::try_from(closed).unwrap_or(i32::MAX))
    }

    /// `POST path` with a JSON body; returns the answer's headers and its body unread
    /// (an archive stream: `/api/v1/maintenance/prune/archive`,
    /// `/api/v1/maintenance/logs/archive`). `timeout` bounds only the wait for the
    /// response head. A non-200 answer is returned as [`BotApiError::Status`].
    pub async fn post_stream<B: Serialize + ?Sized>(
        &self,
        endpoint: &BotEndpoint,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<(http::HeaderMap, hyper::body::Incoming), BotApiError> {
        let payload = serde_json::to_vec(body).map_err(|e| BotApiError::Encode {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{}", endpoint.base, path))
            .header(header::AUTHORIZATION, format!("Bearer {}", endpoint.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| BotApiError::Unreachable(format!("bad request for {path}: {e}")))?;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| BotApiError::Unreachable(format!("{path} timed out after {timeout:?}")))?
            .map_err(|e| BotApiError::Unreachable(format!("{path}: {e}")))?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        if status == StatusCode::OK {
            return Ok((parts.headers, body));
        }
        let bytes = tokio::time::timeout(timeout, body.collect())
            .await
            .map_err(|_| BotApiError::Unreachable(format!("{path} body timed out")))?
            .map_err(|e| BotApiError::Unreachable(format!("{path} body: {e}")))?
            .to_bytes();
        let (code, message) = match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (String::new(), "no message".to_string()),
        };
        Err(BotApiError::Status {
            status: status.as_u16(),
            path: path.to_string(),
            code,
            message,
        })
    }

    /// `POST /api/v1/maintenance/prune` with an archive's selection (or
    /// `olderThanDays`); returns the rows deleted. A selection that no longer matches
    /// `expectedRows` is [`BotApiError::Status`] 409 `prune_mismatch` (nothing deleted).
    pub async fn prune_selected(
        &self,
        ep: &BotEndpoint,
        req: &iq720_contract::maintenance::PruneRequest,
        deadline: Duration,
    ) -> Result<u64, BotApiError> {
        let path = iq720_contract::maintenance::PRUNE_PATH;
        let (headers, body) = self.post_stream(ep, path, req, deadline).await?;
        let bytes = tokio::time::timeout(deadline, body.collect())
            .await
            .map_err(|_| BotApiError::Unreachable(format!("{path} body timed out")))?
            .map_err(|e| BotApiError::Unreachable(format!("{path} body: {e}")))?
            .to_bytes();
        let lines = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        match headers
            .get(iq720_contract::maintenance::HEADER_PRUNED_ROWS)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            Some(n) if n != lines => Err(BotApiError::Decode {
                path: path.to_string(),
                message: format!("the header says {n} rows pruned but the body lists {lines}"),
            }),
            _ => Ok(lines),
        }
    }

    /// `POST /api/v1/maintenance/logs`: deletes rotated log files; returns what went.
    pub async fn clean_logs(
        &self,
        ep: &BotEndpoint,
        req: &iq720_contract::maintenance::LogCleanupRequest,
        deadline: Duration,
    ) -> Result<iq720_contract::maintenance::LogCleanupResponse, BotApiError> {
        self.request(
            ep,
            Method::POST,
            iq720_contract::maintenance::LOGS_PATH,
            Some(req),
            Some(deadline),
        )
        .await
    }
}

/// Whether a close-all answer and the status read after it show a flat, halted bot.
fn confirm_flat(report: &CloseAllResponse, status: &StatusResponse) -> Result<(), BotApiError> {
    let open = status.open_positions.max(report.open_positions);
    let halted = status.halted && report.halted;
    if open != 0 || !halted {
        return Err(BotApiError::NotFlat {
            open: i64::try_from(open).unwrap_or(i64::MAX),
            halted,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn status(open: u64, halted: bool) -> StatusResponse {
        serde_json::from_value(json!({"version": "1", "paused": false, "halted": halted,
            "haltReason": null, "openPositions": open, "realizedPnl": 0.0,
            "activeMarketData": "primary", "marketData": {"fresh": true}}))
        .unwrap()
    }

    fn report(open: u64) -> CloseAllResponse {
        serde_json::from_value(
            json!({"halted": true, "haltReason": "x", "alreadyFlat": false,
            "canceledOrders": 0, "positions": [], "openPositions": open}),
        )
        .unwrap()
    }

    #[test]
    fn flat_only_when_both_answers_say_so() {
        assert!(confirm_flat(&report(0), &status(0, true)).is_ok());
        assert!(matches!(
            confirm_flat(&report(0), &status(2, true)),
            Err(BotApiError::NotFlat {
                open: 2,
                halted: true
            })
        ));
        assert!(matches!(
            confirm_flat(&report(1), &status(0, true)),
            Err(BotApiError::NotFlat { open: 1, .. })
        ));
        assert!(matches!(
            confirm_flat(&report(0), &status(0, false)),
            Err(BotApiError::NotFlat { halted: false, .. })
        ));
    }
}
