//! The Grafana dashboard (charts/iq720-operator/dashboards/iq720.json) against what a
//! live system serves. A dashboard whose query names a metric nobody emits shows "No
//! data" forever and nobody notices, so every metric and label name of every query is
//! compared with a real scrape: a real bot's `/metrics` and the operator's `/metrics`,
//! after the bot has traded, answered its API (also with a wrong token), been backed up
//! to MinIO and emergency-stopped, and after the operator has failed a reconcile (its
//! RoleBinding taken away for a moment). Metrics that exist only once something
//! happened (a labelled counter appears at its first increment) are therefore present.
//! The structure is checked too: valid JSON, every panel has a query, the fleet view
//! covers phases, PnL, win rate, open positions, trades/min and failovers, the per-bot
//! view selects `$bot`, and the chart's ConfigMap carries the same JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::bots::*;
use common::{Operator, bot_api};
use iq720_crds::BackupSchedule;
use iq720_crds::backup_schedule::BackupResult;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, poll_until, repo_root, s3_bucket};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Series Prometheus makes itself for every target (not on any `/metrics`).
const SYNTHETIC_METRICS: [&str; 1] = ["up"];
/// Labels Prometheus attaches to every scraped series (target labels; `bot` is set by
/// the chart's PodMonitor from the pod label `trading.iq720.io/bot`).
const TARGET_LABELS: [&str; 8] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "bot",
    "service",
    "endpoint",
    "container",
];

fn dashboard() -> Value {
    let path = repo_root().join("charts/iq720-operator/dashboards/iq720.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included, with the title of the row it is under.
fn panels(d: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut row = String::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            row = p["title"].as_str().unwrap_or_default().to_string();
            for inner in p["panels"].as_array().into_iter().flatten() {
                out.push((row.clone(), inner.clone()));
            }
        } else {
            out.push((row.clone(), p.clone()));
        }
    }
    out
}

/// The PromQL expressions of a panel.
fn exprs(panel: &Value) -> Vec<String> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .map(str::to_string)
        .collect()
}

/// The queries of the template variables, as PromQL selectors plus the label whose
/// values they list (`label_values(SELECTOR, LABEL)`).
fn variable_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query is not label_values(...): {q}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push((selector.trim().to_string(), label.trim().to_string()));
    }
    out
}

const KEYWORDS: [&str; 24] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "quantile",
];
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric names and label names of a PromQL expression (Grafana variables such as
/// `$__range` or `"$namespace"` allowed). A small scanner, not a regex: strings,
/// label matchers `{...}`, ranges `[...]`, numbers and durations are skipped;
/// an identifier followed by `(` is a function, and `by (...)`-style lists hold labels.
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_string = |i: usize| -> usize {
        let quote = chars[i];
        let mut j = i + 1;
        while j < chars.len() && chars[j] != quote {
            if chars[j] == '\\' {
                j += 1;
            }
            j += 1;
        }
        j + 1
    };
    let ident_at = |i: usize| -> (String, usize) {
        let mut j = i;
        while j < chars.len() && is_part(chars[j]) {
            j += 1;
        }
        (chars[i..j].iter().collect(), j)
    };
    let next_non_space = |mut j: usize| -> Option<(usize, char)> {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        chars.get(j).map(|c| (j, *c))
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '{' {
            // label matchers: NAME OP "value", ...
            i += 1;
            while i < chars.len() && chars[i] != '}' {
                if chars[i] == '"' || chars[i] == '\'' || chars[i] == '`' {
                    i = skip_string(i);
                } else if is_start(chars[i]) {
                    let (name, j) = ident_at(i);
                    labels.insert(name);
                    i = j;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            // a Grafana variable
            let (_, j) = ident_at(i + 1);
            i = j.max(i + 1);
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (is_part(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_start(c) {
            let (word, j) = ident_at(i);
            i = j;
            let next = next_non_space(j);
            if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                if let Some((k, '(')) = next {
                    let close = chars[k..].iter().position(|&c| c == ')').unwrap() + k;
                    let list: String = chars[k + 1..close].iter().collect();
                    for l in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                        labels.insert(l.to_string());
                    }
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&word.as_str()) || matches!(next, Some((_, '('))) {
                // an operator, aggregation or function
            } else {
                metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

#[test]
fn promql_names_finds_metrics_and_labels_and_skips_the_rest() {
    let (m, l) = promql_names(
        r#"histogram_quantile(0.99, sum by (le, controller) (rate(foo_seconds_bucket{job="x", a=~"b|c{1}"}[5m]))) / on(pod) group_left(bot) bar offset 5m and time() - baz:rate5m > 1e-6 unless max without (x)(qux{y!="$namespace"}[$__range])"#,
    );
    let want_m: BTreeSet<String> = ["foo_seconds_bucket", "bar", "baz:rate5m", "qux"]
        .map(String::from)
        .into();
    let want_l: BTreeSet<String> = ["le", "controller", "job", "a", "pod", "bot", "x", "y"]
        .map(String::from)
        .into();
    assert_eq!(m, want_m);
    assert_eq!(l, want_l);
}

/// Label names of every series, by metric name (sample lines of the exposition text).
fn scrape_index(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if let Some(body) = line[end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
        {
            for pair in body.0.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn dashboard_is_valid_json_and_every_panel_has_a_query() {
    let d = dashboard();
    assert_eq!(d["uid"], "iq720-fleet");
    let all = panels(&d);
    assert!(all.len() >= 20, "only {} panels", all.len());
    let mut ids = BTreeSet::new();
    for (_, p) in &all {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate id in {title}"
        );
        let e = exprs(p);
        assert!(!e.is_empty(), "panel '{title}' has no query");
        for x in &e {
            assert!(
                !promql_names(x).0.is_empty(),
                "panel '{title}': no metric in {x}"
            );
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().unwrap(), g["w"].as_i64().unwrap());
        assert!(x + w <= 24 && w > 0, "panel '{title}' is off the grid");
    }
    // The fleet view covers what the issue asks for.
    let fleet: BTreeSet<String> = all
        .iter()
        .filter(|(row, _)| row == "Fleet")
        .flat_map(|(_, p)| exprs(p))
        .flat_map(|e| promql_names(&e).0)
        .collect();
    for m in [
        "iq720_operator_bots",
        "iq720_bot_realized_pnl",
        "iq720_bot_trades_total",
        "iq720_bot_open_positions",
        "iq720_bot_trades_opened_total",
        "iq720_bot_market_data_failovers_total",
    ] {
        assert!(fleet.contains(m), "the fleet view does not show {m}");
    }
    // The per-bot view: every bot query selects the chosen bot.
    let per_bot: Vec<_> = all.iter().filter(|(row, _)| row.contains("$bot")).collect();
    assert!(
        per_bot.len() >= 10,
        "per-bot view has {} panels",
        per_bot.len()
    );
    for (_, p) in per_bot {
        for e in exprs(p) {
            assert!(
                e.contains(r#"bot="$bot""#),
                "per-bot query without bot=\"$bot\": {e}"
            );
        }
    }
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "namespace", "bot"]);
}

#[test]
fn chart_configmap_carries_the_same_dashboard() {
    let rendered = common::helm_template(
        "iq720-system",
        &[
            "grafana.dashboard.enabled=true",
            "grafana.dashboard.namespace=monitoring",
        ],
    );
    let docs: Vec<serde_yaml::Value> = rendered
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str(d).ok())
        .filter(|d: &serde_yaml::Value| d["kind"] == "ConfigMap")
        .collect();
    assert_eq!(docs.len(), 1, "expected one ConfigMap");
    let cm = &docs[0];
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    let json: Value = serde_json::from_str(cm["data"]["iq720.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, dashboard());
    // off by default
    assert!(!common::helm_template("iq720-system", &[]).contains("grafana_dashboard"));
}

fn schedules(e: &Env) -> Api<BackupSchedule> {
    Api::namespaced(e.cluster.client.clone(), e.ns.name())
}

/// A verified backup of every `backup: "yes"` bot to the cluster's MinIO.
async fn backup_once(e: &Env, op: &Operator) {
    let env = &e.cluster.env;
    let (access, secret) = (
        env.var("IQ720_S3_ACCESS_KEY").unwrap(),
        env.var("IQ720_S3_SECRET_KEY").unwrap(),
    );
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: dash-s3}}\nstringData:\n  AWS_ACCESS_KEY_ID: \"{access}\"\n  AWS_SECRET_ACCESS_KEY: \"{secret}\"\n---\napiVersion: trading.iq720.io/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: dash}}\nspec:\n  schedule: \"0 3 * * *\"\n  botSelector: {{matchLabels: {{backup: \"yes\"}}}}\n  destination:\n    bucket: {}\n    prefix: dashboard-e2e/{}\n    endpoint: {}\n    forcePathStyle: true\n    credentialsSecretRef: {{name: dash-s3}}\n",
        s3_bucket(&e.cluster).unwrap(),
        e.ns.name(),
        env.var("IQ720_S3_ENDPOINT").unwrap(),
    );
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &yaml)
        .await
        .unwrap();
    schedules(e)
        .patch(
            "dash",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"trading.iq720.io/backup-now": "1"}}}),
            ),
        )
        .await
        .unwrap();
    let done = iq720_tests::wait_for_condition(
        &schedules(e),
        "dash",
        |s: Option<&BackupSchedule>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|st| st.last_on_demand_request.as_deref() == Some("1"))
        },
        DEADLINE,
    )
    .await
    .unwrap_or_else(|err| panic!("backup: {err}\n{}", op.log_text()));
    assert_eq!(
        done.status.unwrap().last_result,
        Some(BackupResult::Succeeded)
    );
}

/// Scrapes `addr` until every name in `want` is served; returns that scrape.
async fn scrape_until(addr: &str, want: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let res = poll_until(
        &format!("{addr}/metrics serves {want:?}"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let text = iq720_tests::http::get(addr, "/metrics").await.ok()?.text();
            let idx = scrape_index(&text);
            want.iter().all(|m| idx.contains_key(m)).then_some(idx)
        },
    )
    .await;
    if let Ok(idx) = res {
        return idx;
    }
    let text = iq720_tests::http::get(addr, "/metrics")
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    let idx = scrape_index(&text);
    let missing: Vec<_> = want.iter().filter(|m| !idx.contains_key(*m)).collect();
    panic!("{addr}/metrics never served {missing:?}");
}

#[tokio::test]
async fn every_dashboard_query_uses_metrics_a_live_bot_and_operator_serve() {
    let d = dashboard();
    // (expression, where it is used) for every panel and variable query
    let mut queries: Vec<(String, String)> = panels(&d)
        .into_iter()
        .flat_map(|(_, p)| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            exprs(&p).into_iter().map(move |e| (e, title.clone()))
        })
        .collect();
    let mut variable_labels = Vec::new();
    for (selector, label) in variable_queries(&d) {
        variable_labels.push((selector.clone(), label));
        queries.push((selector, "variable".into()));
    }
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|(e, _)| promql_names(e).0)
        .filter(|m| !SYNTHETIC_METRICS.contains(&m.as_str()))
        .collect();
    let (bot_want, op_want): (BTreeSet<String>, BTreeSet<String>) = used
        .iter()
        .cloned()
        .partition(|m| m.starts_with("iq720_bot_"));
    assert!(
        op_want.iter().all(|m| m.starts_with("iq720_operator_")),
        "metrics of neither the bot nor the operator: {op_want:?}"
    );
    assert!(
        bot_want.len() >= 10 && op_want.len() >= 5,
        "{bot_want:?} {op_want:?}"
    );

    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-dashboard", &[]).await;
    let bot = bot_yaml("dash", "").replace(
        "metadata: {name: dash}",
        "metadata: {name: dash, labels: {backup: \"yes\"}}",
    );
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &bot)
        .await
        .unwrap();
    wait_bot(
        &e,
        "dash",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    backup_once(&e, &op).await;

    // The bot's API as a client uses it, once with a wrong token.
    let (addr, token) = bot_addr_token(&e, "dash").await;
    let (status, _) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(status, 200);
    let (status, _) = bot_api(&addr, "wrong-token", "GET", "/api/v1/status", "").await;
    assert_eq!(status, 401);
    let bot_scrape = scrape_until(&addr, &bot_want).await;

    // A failed reconcile: the operator's RoleBinding taken away while an emergency stop
    // needs the apiserver, then given back; the stop then completes.
    let bindings: Api<RoleBinding> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let binding_name = "iq720-iq720-operator";
    let mut binding = bindings.get(binding_name).await.unwrap();
    bindings
        .delete(binding_name, &DeleteParams::default())
        .await
        .unwrap();
    merge_patch(&e, "dash", json!({"emergencyStop": true})).await;
    let errors = poll_until(
        "a reconcile error is counted",
        DEADLINE,
        Duration::from_millis(200),
        || async {
            let n = op.metric("iq720_operator_reconcile_errors_total").await;
            (n > 0.0).then_some(n)
        },
    )
    .await;
    binding.metadata.resource_version = None;
    binding.metadata.uid = None;
    binding.metadata.creation_timestamp = None;
    binding.metadata.managed_fields = None;
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    errors.unwrap_or_else(|err| panic!("{err}\n{}", op.log_text()));
    wait_bot(&e, "dash", "emergency stop completed", stop_completed, &op).await;
    let op_scrape = scrape_until(&op.metrics_addr, &op_want).await;

    // Every metric exists; every label a query names exists on one of its metrics
    // (or is a label Prometheus attaches to every target).
    let mut problems = Vec::new();
    let labels_of = |m: &str| -> BTreeSet<String> {
        bot_scrape
            .get(m)
            .or_else(|| op_scrape.get(m))
            .cloned()
            .unwrap_or_default()
    };
    for (expr, where_) in &queries {
        let (metrics, labels) = promql_names(expr);
        for m in &metrics {
            let served = SYNTHETIC_METRICS.contains(&m.as_str())
                || bot_scrape.contains_key(m)
                || op_scrape.contains_key(m);
            if !served {
                problems.push(format!("{where_}: metric {m} is not served ({expr})"));
            }
        }
        let known: BTreeSet<String> = metrics.iter().flat_map(|m| labels_of(m)).collect();
        for l in labels {
            if !known.contains(&l) && !TARGET_LABELS.contains(&l.as_str()) {
                problems.push(format!(
                    "{where_}: label {l} is on none of {metrics:?} ({expr})"
                ));
            }
        }
    }
    for (selector, label) in &variable_labels {
        let (metrics, _) = promql_names(selector);
        if !TARGET_LABELS.contains(&label.as_str())
            && !metrics.iter().any(|m| labels_of(m).contains(label))
        {
            problems.push(format!("variable label {label} is on none of {metrics:?}"));
        }
    }
    println!(
        "dashboard: {} queries, {} metric names checked against live scrapes ({} bot, {} operator series names)",
        queries.len(),
        used.len(),
        bot_scrape.len(),
        op_scrape.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    teardown(e).await;
}
