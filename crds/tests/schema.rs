//! Schema-level tests of the generated CRDs: descriptions, defaults, names, columns.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use iq720_crds::generate::all_crds;
use iq720_crds::trading_bot::{StopLossKind, StrategyName, TradingMode};
use iq720_crds::{BackupSchedule, MaintenanceWindow, TradingBot};
use kube::CustomResourceExt;
use serde_json::Value;

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    iq720_crds::generate::open_api_schema(crd)
}

/// Collects the paths of properties that have no description.
fn missing_descriptions(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let p = format!("{path}.{name}");
            let has = prop
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !has {
                out.push(p.clone());
            }
            missing_descriptions(prop, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        missing_descriptions(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        missing_descriptions(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_spec_and_status_field_has_a_description() {
    for crd in all_crds() {
        let schema = schema_of(&crd);
        let mut missing = Vec::new();
        for top in ["spec", "status"] {
            let sub = &schema["properties"][top];
            assert!(sub.is_object(), "{} has no {top}", crd.spec.names.kind);
            missing_descriptions(sub, top, &mut missing);
        }
        assert!(
            missing.is_empty(),
            "{}: fields without a description (kubectl explain would be empty): {missing:?}",
            crd.spec.names.kind
        );
        let top = schema["description"].as_str().unwrap_or_default();
        assert!(
            !top.contains("Auto-generated"),
            "{} needs a real description",
            crd.spec.names.kind
        );
    }
}

#[test]
fn names_short_names_and_category() {
    let expect = [
        (TradingBot::crd(), "tradingbots", "tb"),
        (BackupSchedule::crd(), "backupschedules", "bks"),
        (MaintenanceWindow::crd(), "maintenancewindows", "mw"),
    ];
    for (crd, plural, short) in expect {
        assert_eq!(crd.spec.group, "trading.iq720.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(
            crd.spec.names.short_names.clone().unwrap(),
            vec![short.to_string()]
        );
        assert_eq!(
            crd.spec.names.categories.clone().unwrap(),
            vec!["iq720".to_string()]
        );
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources.as_ref().unwrap().status.is_some(),
            "{plural} needs a status subresource"
        );
    }
}

fn columns(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Vec<String> {
    crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

#[test]
fn printer_columns() {
    assert_eq!(
        columns(&TradingBot::crd()),
        [
            "Phase",
            "Version",
            "Wanted",
            "Mode",
            "Positions",
            "WinRate",
            "PnL",
            "Age"
        ]
    );
    assert_eq!(
        columns(&BackupSchedule::crd()),
        ["Schedule", "Last Backup", "Last Result", "Age"]
    );
    assert_eq!(
        columns(&MaintenanceWindow::crd()),
        ["Schedule", "Duration", "Active", "Next", "Age"]
    );
}

#[test]
fn minimal_trading_bot_gets_safe_defaults() {
    let spec: iq720_crds::TradingBotSpec =
        serde_json::from_value(serde_json::json!({"version": "0.1.0", "pairs": ["BTC/USDT"]}))
            .unwrap();
    assert_eq!(
        spec.mode,
        TradingMode::Paper,
        "default mode must be paper, never live"
    );
    assert!(!spec.paused && !spec.emergency_stop);
    assert_eq!(spec.exchange.name, "paper");
    assert_eq!(spec.strategy.name, StrategyName::RsiMacdBollinger);
    assert_eq!(spec.risk.max_positions, 3);
    assert_eq!(spec.risk.stop_loss.kind, StopLossKind::Fixed);
    assert_eq!(spec.logs.compress_after, "7d");
    assert_eq!(spec.logs.delete_after, "30d");
    assert_eq!(spec.api_keys.rotation_interval, "90d");
    assert_eq!(spec.market_data.stale_after, "30s");
    assert!(spec.update.pre_update_backup && spec.update.auto_rollback);
    assert_eq!(spec.storage.size, "1Gi");
    assert_eq!(spec.image.repository, "ghcr.io/iq720/iq720-bot");
}

#[test]
fn schema_defaults_match_serde_defaults() {
    // The apiserver applies schema defaults; the operator applies serde defaults.
    // They must agree, or a stored object and a freshly parsed one would differ.
    let schema = schema_of(&TradingBot::crd());
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["mode"]["default"], "paper");
    assert_eq!(spec["paused"]["default"], false);
    assert_eq!(spec["emergencyStop"]["default"], false);
    let parsed: iq720_crds::TradingBotSpec =
        serde_json::from_value(serde_json::json!({"version": "1.0.0", "pairs": ["ETH/USDT"]}))
            .unwrap();
    let risk_default: iq720_crds::trading_bot::RiskSpec =
        serde_json::from_value(spec["risk"]["default"].clone()).unwrap();
    assert_eq!(risk_default, parsed.risk);
    let logs_default: iq720_crds::trading_bot::LogsSpec =
        serde_json::from_value(spec["logs"]["default"].clone()).unwrap();
    assert_eq!(logs_default, parsed.logs);
    let enum_values = spec["mode"]["enum"].as_array().unwrap();
    assert_eq!(
        enum_values,
        &vec![Value::from("paper"), Value::from("live")]
    );
}

#[test]
fn status_never_carries_secret_material() {
    for crd in all_crds() {
        let status = serde_json::to_string(&schema_of(&crd)["properties"]["status"])
            .unwrap()
            .to_lowercase();
        for word in ["token\"", "secretkey", "apisecret", "password"] {
            assert!(
                !status.contains(word),
                "{} status schema mentions {word}",
                crd.spec.names.kind
            );
        }
    }
}
