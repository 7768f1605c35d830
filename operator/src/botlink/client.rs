//! HTTP client for a bot's control API (`/api/v1/*`, bearer token).
//!
//! The token is held in memory only and never logged or put in an error message.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
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
    /// The bot's answer was not the JSON expected.
    #[error("bot sent an invalid answer to {path}: {message}")]
    Decode {
        /// Request path.
        path: String,
        /// What was wrong.
        message: String,
    },
}

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
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
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
        let uri = format!("{}{}", endpoint.base, path);
        let payload = match body {
            Some(v) => Bytes::from(v.to_string()),
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
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| BotApiError::Decode {
                path: path.to_string(),
                message: e.to_string(),
            })?
        };
        if status != StatusCode::OK {
            let message = json
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_string();
            return Err(BotApiError::Status {
                status: status.as_u16(),
                path: path.to_string(),
                message,
            });
        }
        Ok(json)
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self, ep: &BotEndpoint) -> Result<Value, BotApiError> {
        self.call(ep, Method::GET, "/api/v1/status", None, None)
            .await
    }

    /// `GET /api/v1/performance`.
    pub async fn performance(&self, ep: &BotEndpoint) -> Result<Value, BotApiError> {
        self.call(ep, Method::GET, "/api/v1/performance", None, None)
            .await
    }

    /// `GET /api/v1/config`.
    pub async fn config(&self, ep: &BotEndpoint) -> Result<Value, BotApiError> {
        self.call(ep, Method::GET, "/api/v1/config", None, None)
            .await
    }

    /// `PATCH /api/v1/config` with a JSON merge patch of hot-reloadable fields.
    pub async fn patch_config(
        &self,
        ep: &BotEndpoint,
        patch: &Value,
    ) -> Result<Value, BotApiError> {
        self.call(ep, Method::PATCH, "/api/v1/config", Some(patch), None)
            .await
    }

    /// `POST /api/v1/trading/pause`.
    pub async fn pause(&self, ep: &BotEndpoint) -> Result<Value, BotApiError> {
        self.call(ep, Method::POST, "/api/v1/trading/pause", None, None)
            .await
    }

    /// `POST /api/v1/trading/resume` (clears a pause and a halt).
    pub async fn resume(&self, ep: &BotEndpoint) -> Result<Value, BotApiError> {
        self.call(ep, Method::POST, "/api/v1/trading/resume", None, None)
            .await
    }

    /// `POST /api/v1/emergency/close-all`, waiting up to `deadline` for the fills.
    pub async fn close_all(
        &self,
        ep: &BotEndpoint,
        deadline: Duration,
    ) -> Result<Value, BotApiError> {
        self.call(
            ep,
            Method::POST,
            "/api/v1/emergency/close-all",
            None,
            Some(deadline),
        )
        .await
    }

    /// Calls close-all and confirms the bot is flat and halted. Returns the number of
    /// positions it closed; [`BotApiError::NotFlat`] when the bot still reports open
    /// positions or is not halted afterwards.
    pub async fn close_all_confirmed(
        &self,
        ep: &BotEndpoint,
        deadline: Duration,
    ) -> Result<i32, BotApiError> {
        let report = self.close_all(ep, deadline).await?;
        let closed = report
            .get("positions")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0);
        let status = self.status(ep).await?;
        let open = status
            .get("openPositions")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        let halted = status
            .get("halted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if open != 0 || !halted {
            return Err(BotApiError::NotFlat { open, halted });
        }
        Ok(i32::try_from(closed).unwrap_or(i32::MAX))
    }
}
