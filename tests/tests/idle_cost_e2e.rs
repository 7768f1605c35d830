//! The operator's idle cost, measured where it lands: at the apiserver. With a handful
//! of idle bots, a minute passes without a single write request to the objects the
//! operator manages (its own counters could miss a write; `apiserver_request_total`
//! cannot). Own test binary, so no other test's bots write meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Operator;
use common::bots::*;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::apply_yaml;

/// Resources (with subresource) the operator writes; kube-controller-manager's
/// `statefulsets/status` and the node's `pods/status` are not the operator's.
const OPERATOR_RESOURCES: [(&str, &str); 8] = [
    ("statefulsets", ""),
    ("configmaps", ""),
    ("services", ""),
    ("networkpolicies", ""),
    ("secrets", ""),
    ("persistentvolumeclaims", ""),
    ("tradingbots", ""),
    ("tradingbots", "status"),
];

fn label<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    line.find(&key)
        .map(|i| &line[i + key.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// Write requests (server-side apply, PATCH, PUT, and POST of Secrets) per resource, from the apiserver's own
/// `apiserver_request_total`. DELETE is left out: the operator's RBAC grants no delete
/// verb at all, and kube-controller-manager's namespace controller deletes whole
/// collections while earlier tests' namespaces are torn down.
async fn apiserver_writes(client: &kube::Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("apiserver_request_total{") {
            continue;
        }
        let verb = label(line, "verb");
        if !matches!(
            verb,
            "POST" | "PUT" | "PATCH" | "APPLY" | "CREATE" | "UPDATE"
        ) {
            continue;
        }
        let (resource, sub) = (label(line, "resource"), label(line, "subresource"));
        if !OPERATOR_RESOURCES.contains(&(resource, sub)) {
            continue;
        }
        // The operator creates only token Secrets (POST); kube-controller-manager
        // POSTs a `kube-root-ca.crt` ConfigMap into every namespace any test creates.
        if verb == "POST" && resource != "secrets" {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(format!("{verb} {resource}/{sub}")).or_default() += value;
    }
    out
}

#[tokio::test]
async fn idle_bots_cause_no_write_requests_at_the_apiserver() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-idle-cost", &[]).await;
    let names = ["idle-a", "idle-b", "idle-c", "idle-d"];
    for name in names {
        apply_yaml(
            &e.cluster.client,
            Some(e.ns.name()),
            &bot_yaml(name, "  paused: true\n"),
        )
        .await
        .unwrap();
    }
    for name in names {
        wait_bot(
            &e,
            name,
            "Paused",
            |b| {
                phase(b) == Some(TradingBotPhase::Paused)
                    && condition(b, "MarketDataHealthy").as_deref() == Some("True")
            },
            &op,
        )
        .await;
    }
    // Settle: wait until no TradingBot changed for three poll intervals.
    let deadline = Instant::now() + DEADLINE;
    let mut last = Vec::new();
    loop {
        let now: Vec<_> = bots(&e)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|b| b.metadata.resource_version)
            .collect();
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "the idle bots never settled");
        last = now;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let polls = op.metric("iq720_operator_reconciliations_total").await;
    let before = apiserver_writes(&e.cluster.client).await;
    // The measurement window: one minute of idle bots (60 polls each).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = apiserver_writes(&e.cluster.client).await;
    let reconciles = op.metric("iq720_operator_reconciliations_total").await - polls;
    let mut grew = Vec::new();
    for (k, v) in &after {
        let delta = v - before.get(k).copied().unwrap_or(0.0);
        if delta > 0.0 {
            grew.push(format!("{k}: +{delta}"));
        }
    }
    println!(
        "BENCH idle-cost: {} idle bots, {reconciles} reconciles in 60 s, write requests at the apiserver: {}",
        names.len(),
        if grew.is_empty() {
            "0".to_string()
        } else {
            grew.join(", ")
        }
    );
    assert!(
        reconciles >= 4.0 * 30.0,
        "the bots must still be polled ({reconciles} reconciles)"
    );
    assert!(
        grew.is_empty(),
        "idle bots caused write requests at the apiserver: {grew:?}"
    );
    teardown(e).await;
}
