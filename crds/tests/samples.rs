//! Every sample in config/samples parses into the API types and passes the CEL rules.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use iq720_crds::{BackupSchedule, MaintenanceWindow, TradingBot};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde::Deserialize;
use serde_json::Value;

fn samples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = Value::deserialize(doc).unwrap();
                out.push((path.display().to_string(), value));
            }
        }
    }
    out
}

fn check<K: CustomResourceExt + serde::de::DeserializeOwned>(file: &str, value: &Value) {
    serde_json::from_value::<K>(value.clone())
        .unwrap_or_else(|e| panic!("{file}: does not parse: {e}"));
    let schema = iq720_crds::generate::open_api_schema(&K::crd());
    if let Err(errs) = Validator::new().validate(&schema, value, None) {
        panic!("{file}: rejected by CEL: {errs}");
    }
}

#[test]
fn samples_are_valid() {
    let all = samples();
    let mut kinds: Vec<String> = Vec::new();
    for (file, value) in &all {
        let kind = value["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "TradingBot" => check::<TradingBot>(file, value),
            "BackupSchedule" => check::<BackupSchedule>(file, value),
            "MaintenanceWindow" => check::<MaintenanceWindow>(file, value),
            "Secret" => {}
            other => panic!("{file}: unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    for kind in ["TradingBot", "BackupSchedule", "MaintenanceWindow"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "config/samples has no {kind}"
        );
    }
}

#[test]
fn sample_bot_is_paper_trading() {
    let (_, bot) = samples()
        .into_iter()
        .find(|(_, v)| v["kind"] == "TradingBot")
        .unwrap();
    let bot: TradingBot = serde_json::from_value(bot).unwrap();
    assert_eq!(bot.spec.mode, iq720_crds::trading_bot::TradingMode::Paper);
    assert!(!bot.spec.emergency_stop);
}
