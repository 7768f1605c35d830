//! The operator's idle cost, measured where it lands: at the apiserver. With a handful
//! of idle bots, a minute passes without a single write request to the objects the
//! operator manages (its own counters could miss a write; `apiserver_request_total`
//! cannot). Own test binary, so no other test's bots write meanwhile. Reads too: the
//! operator reads its own kinds (TradingBots, MaintenanceWindows, BackupSchedules)
//! from its watches' stores, so an idle minute brings (almost) no GET or LIST of
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::Operator;
use common::bots::*;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::apply_yaml;
use iq720_tests::harness::apiserver_metrics::{
    apiserver_reads, apiserver_writes, describe, operator_reads, operator_writes,
};

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
    let reads_before = apiserver_reads(&e.cluster.client).await.unwrap();
    // The measurement window: one minute of idle bots (60 polls each).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = apiserver_writes(&e.cluster.client).await.unwrap();
    let reads_after = apiserver_reads(&e.cluster.client).await.unwrap();
    let reconciles = op.metric("iq720_operator_reconciliations_total").await - polls;
    let grew = operator_writes(&before, &after);
    let read = operator_reads(&reads_before, &reads_after);
    println!(
        "BENCH idle-cost: {} idle bots, {reconciles} reconciles in 60 s, write requests at the apiserver: {}; GET/LIST of the operator's kinds: {}",
        names.len(),
        describe(&grew),
        describe(&read)
    );
    // A read per reconcile would be one per poll; a few may be kube-controller-
    // manager's namespace controller cleaning up an earlier test's namespace (it lists
    // every kind while a namespace terminates).
    let reads: f64 = read.values().sum();
    assert!(
        reads < reconciles / 4.0,
        "idle bots made the operator read its kinds from the apiserver ({reads} in {reconciles} reconciles): {read:?}"
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
