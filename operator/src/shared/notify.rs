//! Webhook notifications (the runbook's `notify_admin.py`): the events an on-call
//! person must hear about — an emergency stop, positions possibly left open, a failed
//! or unverifiable backup, a rolled-back update, an overdue key rotation — are also
//! POSTed to a webhook, as generic JSON or in Slack's incoming-webhook format.
//!
//! Why hooked on Events: every such incident is already published as a Kubernetes
//! Event through [`crate::shared::context::Context::event`], so the notification
//! policy is one list of Event reasons ([`NOTIFY_REASONS`]) and no controller calls
//! the notifier itself.
//!
//! Why a queue: a webhook may be slow or down. Reconciles only put a notification on a
//! bounded queue (`try_send`, never awaited); one worker task sends them with retries
//! and exponential backoff. A full queue drops the notification and counts it, rather
//! than ever holding up an emergency stop.
//!
//! Why the URL is read at send time from a Secret: a webhook URL is a credential
//! (Slack's carries its token). It is never logged, put in an Event or in status; a
//! rotated Secret is picked up by the next notification without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::metrics::Metrics;

/// Event reasons that are also sent as notifications.
pub const NOTIFY_REASONS: &[&str] = &[
    "EmergencyStopRequested",
    "PositionsMayRemainOpen",
    "BackupFailed",
    "VerificationFailed",
    "DrillFailed",
    "RolloutFailed",
    "RolledBack",
    "AutoUpdatesHalted",
    "KeyRotationOverdue",
    TEST_REASON,
];

/// Reason of a test notification (the `trading.iq720.io/test-notification`
/// annotation).
pub const TEST_REASON: &str = "TestNotification";

/// How many notifications may wait for the worker before new ones are dropped.
const QUEUE: usize = 256;
/// Attempts per notification (the first plus retries).
const ATTEMPTS: u32 = 6;
/// Backoff before the first retry; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Timeout of one POST.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Body layout of the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"source", "severity", "reason", "kind", "namespace", "name", "message", "time"}`.
    Generic,
    /// Slack incoming webhook: `{"text": ...}` (also understood by Mattermost, Rocket.Chat).
    Slack,
}

/// Where notifications go: a Secret holding the webhook URL, and the body format.
#[derive(Debug, Clone)]
pub struct Target {
    /// Namespace of the Secret (the operator's).
    pub namespace: String,
    /// Name of the Secret.
    pub secret: String,
    /// Key in the Secret whose value is the webhook URL.
    pub key: String,
    /// Body format.
    pub format: Format,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `Warning` or `Normal`.
    pub severity: &'static str,
    /// The Event reason.
    pub reason: String,
    /// Kind of the object concerned.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What happened (the Event note).
    pub message: String,
}

impl Notification {
    /// The request body in `format`.
    pub fn body(&self, format: Format, at: jiff::Timestamp) -> serde_json::Value {
        match format {
            Format::Generic => json!({
                "source": "iq720-operator",
                "severity": self.severity,
                "reason": self.reason,
                "kind": self.kind,
                "namespace": self.namespace,
                "name": self.name,
                "message": self.message,
                "time": at.to_string(),
            }),
            Format::Slack => {
                let icon = if self.severity == "Warning" {
                    ":rotating_light:"
                } else {
                    ":information_source:"
                };
                json!({
                    "text": format!(
                        "{icon} *{}* {} `{}/{}`: {}",
                        self.reason, self.kind, self.namespace, self.name, self.message
                    )
                })
            }
        }
    }
}

/// Whether an Event with this reason is also a notification.
pub fn wanted(reason: &str) -> bool {
    NOTIFY_REASONS.contains(&reason)
}

/// The handle reconciles use: cheap to clone, never blocks.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Notification>>,
    metrics: Option<Metrics>,
    /// Last test-notification request handled per object uid.
    tests: Arc<Mutex<HashMap<String, String>>>,
}

impl Notifier {
    /// No webhook configured: every notification is ignored.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the worker that sends to `target` (needs a Tokio runtime).
    pub fn start(client: Client, metrics: Metrics, target: Target) -> Result<Self, rustls::Error> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = Worker {
            client,
            metrics: metrics.clone(),
            target,
            http: HttpClient::builder(TokioExecutor::new()).build(https_connector()?),
        };
        tokio::spawn(worker.run(rx));
        Ok(Self {
            tx: Some(tx),
            metrics: Some(metrics),
            tests: Arc::default(),
        })
    }

    /// Whether `value` is a new test-notification request of object `uid` (and
    /// remembers it). Always false when no webhook is configured.
    pub fn first_request(&self, uid: &str, value: &str) -> bool {
        if self.tx.is_none() {
            return false;
        }
        let Ok(mut seen) = self.tests.lock() else {
            return false;
        };
        if seen.get(uid).is_some_and(|v| v == value) {
            return false;
        }
        seen.insert(uid.to_string(), value.to_string());
        true
    }

    /// Queues a notification; a full queue drops it (counted as `dropped`).
    pub fn send(&self, n: Notification) {
        let Some(tx) = &self.tx else {
            return;
        };
        if tx.try_send(n).is_err()
            && let Some(m) = &self.metrics
        {
            m.notifications.with_label_values(&["dropped"]).inc();
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An http(s) connector trusting the system's root certificates (none found: https
/// webhooks fail with a TLS error, http ones still work).
fn https_connector() -> Result<Connector, rustls::Error> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "no system root certificates; https webhooks will fail");
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    Ok(builder.https_or_http().enable_http1().build())
}

/// Why one POST failed (the URL is never part of it).
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("webhook Secret: {0}")]
    Secret(String),
    #[error("webhook URL is not a valid http(s) URL")]
    Url,
    #[error("webhook unreachable: {0}")]
    Unreachable(String),
    #[error("webhook answered {0}")]
    Status(u16),
    #[error("webhook did not answer within {0:?}")]
    Timeout(Duration),
}

impl SendError {
    /// Whether trying again may help.
    fn retryable(&self) -> bool {
        match self {
            SendError::Status(code) => *code == 429 || *code >= 500,
            SendError::Url => false,
            _ => true,
        }
    }
}

struct Worker {
    client: Client,
    metrics: Metrics,
    target: Target,
    http: HttpClient<Connector, Full<Bytes>>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Notification>) {
        while let Some(n) = rx.recv().await {
            let result = self.deliver(&n).await;
            let label = if result.is_ok() { "sent" } else { "failed" };
            self.metrics.notifications.with_label_values(&[label]).inc();
            if let Err(e) = result {
                warn!(reason = %n.reason, namespace = %n.namespace, name = %n.name, error = %e, "notification not delivered");
            }
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.post(n).await {
                Ok(()) => {
                    debug!(reason = %n.reason, attempt, "notification delivered");
                    return Ok(());
                }
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    debug!(reason = %n.reason, attempt, error = %e, "notification failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn url(&self) -> Result<http::Uri, SendError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.target.namespace);
        let secret = api
            .get_opt(&self.target.secret)
            .await
            .map_err(|e| SendError::Secret(format!("cannot read {}: {e}", self.target.secret)))?
            .ok_or_else(|| SendError::Secret(format!("{} not found", self.target.secret)))?;
        let raw = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&self.target.key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| {
                SendError::Secret(format!(
                    "{} has no key {}",
                    self.target.secret, self.target.key
                ))
            })?;
        let uri: http::Uri = raw.trim().parse().map_err(|_| SendError::Url)?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => Ok(uri),
            _ => Err(SendError::Url),
        }
    }

    async fn post(&self, n: &Notification) -> Result<(), SendError> {
        let uri = self.url().await?;
        let body = n
            .body(self.target.format, jiff::Timestamp::now())
            .to_string();
        let req = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "iq720-operator")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| SendError::Url)?;
        let resp = tokio::time::timeout(POST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| SendError::Timeout(POST_TIMEOUT))?
            // the connector's error can name the host, never the path or query
            .map_err(|e| SendError::Unreachable(error_kind(&e)))?;
        let code = resp.status().as_u16();
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(SendError::Status(code))
        }
    }
}

/// A connection error without the URL (whose path may carry a token).
fn error_kind(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stop() -> Notification {
        Notification {
            severity: "Warning",
            reason: "EmergencyStopRequested".into(),
            kind: "TradingBot".into(),
            namespace: "trading".into(),
            name: "btc".into(),
            message: "spec.emergencyStop is true".into(),
        }
    }

    #[test]
    fn generic_body_names_the_object_and_reason() {
        let at: jiff::Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let b = stop().body(Format::Generic, at);
        assert_eq!(b["reason"], "EmergencyStopRequested");
        assert_eq!(b["namespace"], "trading");
        assert_eq!(b["name"], "btc");
        assert_eq!(b["severity"], "Warning");
        assert_eq!(b["time"], "2026-11-25T12:00:00Z");
    }

    #[test]
    fn slack_body_is_one_text_field() {
        let at = jiff::Timestamp::UNIX_EPOCH;
        let b = stop().body(Format::Slack, at);
        let text = b["text"].as_str().unwrap();
        assert!(text.contains("*EmergencyStopRequested*"), "{text}");
        assert!(text.contains("`trading/btc`"), "{text}");
        assert_eq!(b.as_object().unwrap().len(), 1);
    }

    #[test]
    fn only_incidents_are_notified() {
        assert!(wanted("EmergencyStopRequested"));
        assert!(wanted("BackupFailed"));
        assert!(wanted(TEST_REASON));
        assert!(!wanted("BackupSucceeded"));
        assert!(!wanted("ConfigReloaded"));
    }

    #[test]
    fn client_errors_are_not_retried_but_server_errors_are() {
        assert!(!SendError::Status(404).retryable());
        assert!(!SendError::Url.retryable());
        assert!(SendError::Status(503).retryable());
        assert!(SendError::Status(429).retryable());
        assert!(SendError::Timeout(POST_TIMEOUT).retryable());
    }

    #[tokio::test]
    async fn a_disabled_notifier_ignores_everything() {
        Notifier::disabled().send(stop());
    }
}
