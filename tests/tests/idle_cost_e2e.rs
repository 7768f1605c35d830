//! The operator's idle cost, measured where it lands: at the apiserver. With a handful
//! of idle bots, a minute passes without a single write request to the objects the
//! operator manages (its own counters could miss a write; `apiserver_request_total`
//! cannot). Own test binary, so no other test's bots write meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::Operator;
use common::bots::*;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::apply_yaml;
use iq720_tests::harness::apiserver_metrics::{apiserver_writes, describe, operator_writes};

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
    let before = apiserver_writes(&e.cluster.client).await.unwrap();
    // The measurement window: one minute of idle bots (60 polls each).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = apiserver_writes(&e.cluster.client).await.unwrap();
    let reconciles = op.metric("iq720_operator_reconciliations_total").await - polls;
    let grew = operator_writes(&before, &after);
    println!(
        "BENCH idle-cost: {} idle bots, {reconciles} reconciles in 60 s, write requests at the apiserver: {}",
        names.len(),
        describe(&grew)
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
