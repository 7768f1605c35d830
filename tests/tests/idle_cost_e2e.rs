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

use common::bots::*;
use common::{Operator, bot_metrics};
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
    let created = apiserver_writes(&e.cluster.client).await.unwrap();
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
    // Each new bot's StatefulSet is applied once: read back with the apiserver's
    // defaults in its claim templates it is still the one built (the old code
    // applied every new StatefulSet a second time, changing nothing).
    let settled = apiserver_writes(&e.cluster.client).await.unwrap();
    let sts_applies: f64 = operator_writes(&created, &settled)
        .iter()
        .filter(|(k, _)| k.resource == "statefulsets" && k.subresource.is_empty())
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(
        sts_applies,
        names.len() as f64,
        "StatefulSet writes while {} new bots started: {}",
        names.len(),
        describe(&operator_writes(&created, &settled))
    );
    let (addr, _) = bot_addr_token(&e, names[0]).await;
    let bot_before = bot_metrics(&addr).await;
    let polls = op.metric("iq720_operator_reconciliations_total").await;
    let before = apiserver_writes(&e.cluster.client).await.unwrap();
    let reads_before = apiserver_reads(&e.cluster.client).await.unwrap();
    // The measurement window: one minute of idle bots (60 polls each).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = apiserver_writes(&e.cluster.client).await.unwrap();
    let reads_after = apiserver_reads(&e.cluster.client).await.unwrap();
    let reconciles = op.metric("iq720_operator_reconciliations_total").await - polls;
    let bot_after = bot_metrics(&addr).await;
    let served = |route: &str| {
        let count = |m: &std::collections::BTreeMap<String, f64>| -> f64 {
            m.iter()
                .filter(|(k, _)| {
                    k.starts_with("iq720_bot_http_requests_total{")
                        && k.contains(&format!("route=\"{route}\""))
                })
                .map(|(_, v)| v)
                .sum()
        };
        count(&bot_after) - count(&bot_before)
    };
    let (status_reads, performance_reads) =
        (served("/api/v1/status"), served("/api/v1/performance"));
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
    // The win rate is a figure written at most every `--status-figures-interval`
    // (60 s by default): an idle bot is asked for it about once a minute, not at
    // every poll (1 s here), while its status is still read at every poll.
    println!(
        "BENCH idle-cost: bot {} served {status_reads} status and {performance_reads} performance requests in 60 s",
        names[0]
    );
    assert!(
        status_reads >= 30.0,
        "the bot's status must be read at every poll ({status_reads} in 60 s)"
    );
    assert!(
        performance_reads <= 2.0,
        "the bot's /performance was read {performance_reads} times in 60 s of idle polling"
    );
    teardown(e).await;
}
