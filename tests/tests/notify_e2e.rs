//! Webhook notifications (the runbook's `notify_admin.py` and `test_alerts.py`)
//! against a real operator, real bots and a local HTTP receiver standing in for a
//! chat or paging webhook: an emergency stop is notified, a failing receiver is
//! retried with backoff, a hung receiver never delays the stop, the test annotation
//! sends one notification per value, and the webhook URL (a credential) appears in no
//! log, Event or status.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Operator;
use common::bots::*;
use iq720_crds::TradingBot;
use iq720_tests::{apply_yaml, poll_until};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Part of the webhook path that stands for the token a real webhook URL carries.
const URL_TOKEN: &str = "T0KEN-in-the-webhook-url-9f3a";

/// How the receiver answers each request, in order; `None` hangs (never answers).
/// When the script runs out it answers 200.
struct Receiver {
    addr: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    async fn start(script: Vec<Option<u16>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = bodies.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut sock).await else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                    let answer = script.lock().unwrap().pop_front().unwrap_or(Some(200));
                    match answer {
                        Some(code) => {
                            let resp = format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                });
            }
        });
        Receiver { addr, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/{URL_TOKEN}", self.addr)
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, n: usize, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.bodies().into_iter().filter(|b| pred(b)).count();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {got} of {n} requests; received {:?}",
                self.bodies()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads one HTTP/1.1 request and returns its body.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[end + 4..end + 4 + len].to_vec());
        }
    }
}

async fn webhook_secret(e: &Env, url: &str) {
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: iq720-notify}}\nstringData:\n  url: \"{url}\"\n"
        ),
    )
    .await
    .unwrap();
}

async fn stop(e: &Env, bot: &str) -> Instant {
    let api: Api<TradingBot> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let at = Instant::now();
    api.patch(
        bot,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"emergencyStop": true}})),
    )
    .await
    .unwrap();
    at
}

fn is_stop(b: &serde_json::Value, bot: &str) -> bool {
    b["reason"] == "EmergencyStopRequested" && b["name"] == bot && b["kind"] == "TradingBot"
}

/// The URL token is in no operator log line, Event or TradingBot status.
async fn assert_url_kept_secret(e: &Env, op: &Operator) {
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(
        !log.contains(URL_TOKEN),
        "the webhook URL leaked into the operator log"
    );
    let events: Api<Event> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    for ev in events.list(&ListParams::default()).await.unwrap() {
        let text = serde_json::to_string(&ev).unwrap();
        assert!(
            !text.contains(URL_TOKEN),
            "the webhook URL leaked into an Event"
        );
    }
    let bots: Api<TradingBot> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    for b in bots.list(&ListParams::default()).await.unwrap() {
        let text = serde_json::to_string(&b.status).unwrap();
        assert!(
            !text.contains(URL_TOKEN),
            "the webhook URL leaked into a status"
        );
    }
}

/// A counter of the operator's /metrics with one label value.
async fn counter(op: &Operator, name: &str, label: &str) -> u64 {
    let text = iq720_tests::http::get(&op.metrics_addr, "/metrics")
        .await
        .unwrap()
        .text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn operator_counter(op: &Operator, result: &str) -> u64 {
    counter(
        op,
        "iq720_operator_notifications_total",
        &format!("result=\"{result}\""),
    )
    .await
}

async fn reconciles(op: &Operator) -> u64 {
    counter(
        op,
        "iq720_operator_reconciliations_total",
        "controller=\"tradingbot\"",
    )
    .await
}

#[tokio::test]
async fn emergency_stop_is_notified_and_a_failing_webhook_is_retried() {
    let e = env().await;
    // two server errors, then success: the notification arrives on the third try
    let rx = Receiver::start(vec![Some(503), Some(500)]).await;
    webhook_secret(&e, &rx.url()).await;
    let op = Operator::start(
        &e.kubeconfig,
        e.ns.name(),
        "notify-a",
        &["--notify-secret", "iq720-notify"],
    )
    .await;
    apply_running(&e, "nfy", "", &op).await;
    stop(&e, "nfy").await;
    rx.wait_for("emergency stop notification (after 2 failures)", 3, |b| {
        is_stop(b, "nfy")
    })
    .await;
    let first = rx.bodies().into_iter().find(|b| is_stop(b, "nfy")).unwrap();
    assert_eq!(first["severity"], "Warning");
    assert_eq!(first["namespace"], e.ns.name());
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("closing every position"),
        "{first}"
    );
    poll_until(
        "notifications_total{result=sent} counts the delivery",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (operator_counter(&op, "sent").await >= 1).then_some(()) },
    )
    .await
    .unwrap();
    // routine Events (pod started, config reloads...) are not notified
    assert!(
        rx.bodies()
            .iter()
            .all(|b| b["reason"] == "EmergencyStopRequested"),
        "only incidents are sent: {:?}",
        rx.bodies()
    );
    assert_url_kept_secret(&e, &op).await;
}

#[tokio::test]
async fn a_hung_webhook_never_delays_an_emergency_stop() {
    let e = env().await;
    // the webhook accepts the connection and never answers
    let rx = Receiver::start(vec![None, None, None, None, None, None]).await;
    webhook_secret(&e, &rx.url()).await;
    let op = Operator::start(
        &e.kubeconfig,
        e.ns.name(),
        "notify-b",
        &[
            "--notify-secret",
            "iq720-notify",
            "--notify-format",
            "slack",
        ],
    )
    .await;
    apply_running(&e, "hang", "", &op).await;
    let at = stop(&e, "hang").await;
    let b = wait_bot(
        &e,
        "hang",
        "emergency stop recorded flat",
        |b| {
            b.status
                .as_ref()
                .and_then(|s| s.emergency_stop.as_ref())
                .is_some_and(|s| s.completed_at.is_some() && !s.positions_may_remain)
        },
        &op,
    )
    .await;
    let took = at.elapsed();
    assert!(b.status.is_some());
    // the stop finished although its notification is still waiting for an answer
    rx.wait_for("the stop's notification was attempted", 1, |b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.contains("*EmergencyStopRequested*") && t.contains("/hang`"))
    })
    .await;
    assert!(
        took < Duration::from_secs(10),
        "the stop took {took:?} with a hung webhook"
    );
    assert_eq!(operator_counter(&op, "sent").await, 0);
}

#[tokio::test]
async fn the_test_annotation_sends_one_notification_per_value() {
    let e = env().await;
    let rx = Receiver::start(vec![]).await;
    webhook_secret(&e, &rx.url()).await;
    let op = Operator::start(
        &e.kubeconfig,
        e.ns.name(),
        "notify-c",
        &["--notify-secret", "iq720-notify"],
    )
    .await;
    apply_running(&e, "tst", "", &op).await;
    let api: Api<TradingBot> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let annotate = |v: &'static str| {
        let api = api.clone();
        async move {
            api.patch(
                "tst",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    "trading.iq720.io/test-notification": v}}})),
            )
            .await
            .unwrap();
        }
    };
    let is_test = |b: &serde_json::Value| b["reason"] == "TestNotification" && b["name"] == "tst";
    annotate("1").await;
    rx.wait_for("test notification 1", 1, is_test).await;
    // the same value again (the bot is reconciled every second) sends nothing more;
    // a new value sends one more
    annotate("2").await;
    rx.wait_for("test notification 2", 2, is_test).await;
    // five more reconciles of the bot (polled every second) pass without a third
    let base = reconciles(&op).await;
    poll_until(
        "five more reconciles",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { (reconciles(&op).await >= base + 5).then_some(()) },
    )
    .await
    .unwrap();
    let tests: Vec<_> = rx.bodies().into_iter().filter(|b| is_test(b)).collect();
    assert_eq!(tests.len(), 2, "one per value: {tests:?}");
    assert!(
        tests[1]["message"].as_str().unwrap().contains("=2"),
        "{:?}",
        tests[1]
    );
    assert_url_kept_secret(&e, &op).await;
}
