//! End-to-end test of the declarative market-data switch (`spec.marketData.use`) on the
//! real local cluster, with the real operator and the real bot binary:
//!
//! - `use: backup` on a running bot is applied through the bot's config reload (same
//!   pod UID): `status.activeMarketData` becomes the backup, `MarketDataHealthy` True
//!   with reason `Pinned`;
//! - the pinned backup stalls (the bot's test hook): no failover, `MarketDataHealthy`
//!   False with reason `PinnedSourceStale` and a message that says what helps;
//! - `use: auto` again: the bot fails over to the fresh primary, `MarketDataHealthy`
//!   True (`Fresh`), still the same pod;
//! - `use: backup` without a backup source is refused at admission.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::bots::*;
use common::{Operator, bot_api};
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::TradingBotPhase;
use serde_json::json;

/// (status, reason, message) of `MarketDataHealthy`.
fn health(b: &TradingBot) -> Option<(String, String, String)> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "MarketDataHealthy")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn active(b: &TradingBot) -> Option<String> {
    b.status.as_ref()?.active_market_data.clone()
}

async fn pod_uid(e: &Env, name: &str) -> String {
    bot_pod(e, name)
        .await
        .and_then(|p| p.metadata.uid)
        .expect("bot pod uid")
}

#[tokio::test]
async fn market_data_use_pins_the_running_bot_without_a_restart() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-marketdata", &[]).await;
    let name = "md-pin";
    let yaml = bot_yaml(name, "").replace(
        "marketData: {staleAfter: 5s}",
        "marketData: {staleAfter: 5s, backup: {type: simulator, seed: 7}}",
    );
    assert!(yaml.contains("backup:"), "bot_yaml changed: {yaml}");
    iq720_tests::apply_yaml(&e.cluster.client, Some(e.ns.name()), &yaml)
        .await
        .unwrap();
    wait_bot(
        &e,
        name,
        "Running on the primary",
        |b| phase(b) == Some(TradingBotPhase::Running) && active(b).as_deref() == Some("primary"),
        &op,
    )
    .await;
    let uid = pod_uid(&e, name).await;

    // pin to the backup
    merge_patch(&e, name, json!({"marketData": {"use": "backup"}})).await;
    let b = wait_bot(
        &e,
        name,
        "activeMarketData backup, MarketDataHealthy Pinned",
        |b| {
            active(b).as_deref() == Some("backup")
                && health(b).is_some_and(|(s, r, _)| s == "True" && r == "Pinned")
        },
        &op,
    )
    .await;
    println!("pinned: {:?}", health(&b));
    assert_eq!(pod_uid(&e, name).await, uid, "the pin restarted the pod");
    let (addr, token) = bot_addr_token(&e, name).await;
    let (status, ds) = bot_api(&addr, &token, "GET", "/api/v1/datasource", "").await;
    assert_eq!(status, 200, "{ds}");
    assert_eq!(
        (&ds["active"], &ds["selection"], &ds["use"]),
        (&json!("backup"), &json!("pinned"), &json!("backup")),
        "{ds}"
    );
    assert!(
        !event_notes_with_reason(&e, name, "ConfigReloaded")
            .await
            .is_empty(),
        "no ConfigReloaded Event for the pin"
    );

    // the pinned backup stalls: not healthy, with the reason, and no failover
    let (status, body) = bot_api(
        &addr,
        &token,
        "PUT",
        "/api/v1/datasource",
        r#"{"stalled": {"backup": true}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let b = wait_bot(
        &e,
        name,
        "MarketDataHealthy False PinnedSourceStale",
        |b| health(b).is_some_and(|(s, r, _)| s == "False" && r == "PinnedSourceStale"),
        &op,
    )
    .await;
    let (_, _, message) = health(&b).unwrap();
    assert!(
        message.contains("backup source backup")
            && message.contains("set spec.marketData.use to auto"),
        "{message}"
    );
    assert_eq!(
        active(&b).as_deref(),
        Some("backup"),
        "failed over while pinned"
    );
    println!("pinned and stale: {message}");

    // back to auto: the stale backup fails over to the fresh primary, same pod
    merge_patch(&e, name, json!({"marketData": {"use": "auto"}})).await;
    wait_bot(
        &e,
        name,
        "activeMarketData primary, MarketDataHealthy Fresh",
        |b| {
            active(b).as_deref() == Some("primary")
                && health(b).is_some_and(|(s, r, _)| s == "True" && r == "Fresh")
        },
        &op,
    )
    .await;
    assert_eq!(pod_uid(&e, name).await, uid, "use: auto restarted the pod");
    let (_, ds) = bot_api(&addr, &token, "GET", "/api/v1/datasource", "").await;
    assert_eq!(ds["use"], "auto", "{ds}");

    // admission: pinning to a backup that does not exist
    let bad = bot_yaml("md-nobackup", "").replace(
        "marketData: {staleAfter: 5s}",
        "marketData: {staleAfter: 5s, use: backup}",
    );
    let err = iq720_tests::apply_yaml(&e.cluster.client, Some(e.ns.name()), &bad)
        .await
        .expect_err("use: backup without a backup was admitted");
    assert!(
        format!("{err:#}").contains("marketData.use: backup needs marketData.backup"),
        "{err:#}"
    );
    teardown(e).await;
}
