//! End-to-end tests of the operator on the real local cluster with the real bot
//! binary. Each test gets its own namespace and its own operator process, which runs
//! in single-namespace mode with the Helm chart's ServiceAccount (TokenRequest), so
//! the chart's RBAC is proven sufficient.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::bots::*;
use common::{Operator, bot_api};
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, poll_until, wait_for_condition};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

#[tokio::test]
async fn bot_lifecycle_pause_reload_emergency_stop_and_delete() {
    // The chart's default (cluster-wide) RBAC; the other tests use its single-namespace
    // Role. The operator still watches only the test namespace.
    let e = env_with(common::Rbac::ClusterWide).await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-a", &["--leader-election"]).await;
    op.wait_http("/leader", 200).await;
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &bot_yaml("alpha", ""))
        .await
        .unwrap();

    // 1. created → pod runs the real bot → status Running with live numbers
    let b = wait_bot(
        &e,
        "alpha",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    let st = b.status.clone().unwrap();
    assert_eq!(st.current_version.as_deref(), Some("0.1.0"));
    assert!(st.open_positions.is_some() && st.pnl.is_some());
    assert_eq!(condition(&b, "Ready").as_deref(), Some("True"));
    assert_eq!(condition(&b, "InvalidSpec").as_deref(), Some("False"));
    let sts = Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get("alpha")
        .await
        .unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(1));
    let (addr, token) = bot_addr_token(&e, "alpha").await;
    let (code, _) = bot_api(&addr, "wrong-token", "GET", "/api/v1/status", "").await;
    assert_eq!(code, 401, "the bot must refuse a wrong token");
    let pod_uid = bot_pod(&e, "alpha").await.unwrap().metadata.uid.unwrap();

    // 2. pause / resume through the bot API
    merge_patch(&e, "alpha", json!({"paused": true})).await;
    wait_bot(
        &e,
        "alpha",
        "Paused",
        |b| {
            condition(b, "Paused").as_deref() == Some("True")
                && phase(b) == Some(TradingBotPhase::Paused)
        },
        &op,
    )
    .await;
    let (_, s) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(s["paused"], true, "the bot itself must be paused: {s}");
    merge_patch(&e, "alpha", json!({"paused": false})).await;
    wait_bot(
        &e,
        "alpha",
        "resumed",
        |b| condition(b, "Paused").as_deref() == Some("False"),
        &op,
    )
    .await;

    // 3. hot reload: risk and strategy params reach the bot without a restart
    merge_patch(
        &e,
        "alpha",
        json!({"risk": {"maxPositions": 7}, "strategy": {"params": {"rsiPeriod": 15}}}),
    )
    .await;
    let (addr2, token2) = (addr.clone(), token.clone());
    poll_until(
        "hot reload reaches the bot",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let (addr, token) = (addr2.clone(), token2.clone());
            async move {
                let (_, cfg) = bot_api(&addr, &token, "GET", "/api/v1/config", "").await;
                (cfg["risk"]["maxPositions"] == 7 && cfg["strategy"]["params"]["rsiPeriod"] == 15.0)
                    .then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", op.log_text()));
    let pod = bot_pod(&e, "alpha").await.unwrap();
    assert_eq!(
        pod.metadata.uid.as_deref(),
        Some(pod_uid.as_str()),
        "a hot change must not restart the pod"
    );
    assert!(
        events(&e, "alpha")
            .await
            .iter()
            .any(|r| r == "ConfigReloaded")
    );

    // 4. a non-hot change (pairs) rolls the pod
    merge_patch(&e, "alpha", json!({"pairs": ["SOL/USDT"]})).await;
    let client = e.cluster.client.clone();
    let ns = e.ns.name().to_string();
    let old_uid = pod_uid.clone();
    poll_until(
        "pod replaced after a non-hot change",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let (client, ns, old_uid) = (client.clone(), ns.clone(), old_uid.clone());
            async move {
                let pod = Api::<Pod>::namespaced(client, &ns)
                    .get_opt("alpha-0")
                    .await
                    .ok()??;
                let ready = pod
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (pod.metadata.uid.as_deref() != Some(old_uid.as_str()) && ready).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let (addr, token) = bot_addr_token(&e, "alpha").await;
    let (_, s) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(
        s["pairs"],
        json!(["SOL/USDT"]),
        "restarted bot runs the new pairs: {s}"
    );
    let b = wait_bot(
        &e,
        "alpha",
        "Running after restart",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    assert_eq!(condition(&b, "Ready").as_deref(), Some("True"));

    // 5. emergency stop: flat, halted, replicas 0 — with latencies. Wait for open
    // positions first, so that close-all has something to close.
    let with_positions = wait_open_positions(&e, "alpha", &op).await;
    let open_before = with_positions.status.unwrap().open_positions.unwrap();
    let t0 = Instant::now();
    merge_patch(&e, "alpha", json!({"emergencyStop": true})).await;
    let stopped = wait_bot(&e, "alpha", "EmergencyStopped", stop_completed, &op).await;
    let flat_latency = t0.elapsed();
    let es = stopped.status.clone().unwrap().emergency_stop.unwrap();
    assert!(
        !es.positions_may_remain,
        "the bot was reachable: it must be confirmed flat"
    );
    assert_eq!(stopped.status.as_ref().unwrap().open_positions, Some(0));
    assert!(
        es.positions_closed.unwrap_or(0) >= 1,
        "{open_before} position(s) were open before the stop: {es:?}"
    );
    let sets: Api<StatefulSet> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let zero = wait_for_condition(
        &sets,
        "alpha",
        |s: Option<&StatefulSet>| {
            s.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas) == Some(0)
        },
        DEADLINE,
    )
    .await
    .unwrap();
    let zero_latency = t0.elapsed();
    assert_eq!(zero.spec.unwrap().replicas, Some(0));
    wait_pod_gone(&e, "alpha").await;
    let pod_gone_latency = t0.elapsed();
    println!(
        "BENCH emergency-stop: patch->flat+EmergencyStopped {:.0} ms, patch->replicas 0 {:.0} ms, patch->pod gone {:.0} ms, positions closed {:?}",
        flat_latency.as_secs_f64() * 1000.0,
        zero_latency.as_secs_f64() * 1000.0,
        pod_gone_latency.as_secs_f64() * 1000.0,
        es.positions_closed
    );
    wait_events(
        &e,
        "alpha",
        &["EmergencyStopRequested", "PositionsClosed", "ScaledToZero"],
    )
    .await;
    assert!(
        op.metric("iq720_operator_emergency_stops_total{result=\"flat\"}")
            .await
            >= 1.0
    );

    // 6. recovery: clearing the flag brings the bot back halted, then resumed
    merge_patch(&e, "alpha", json!({"emergencyStop": false})).await;
    let b = wait_bot(
        &e,
        "alpha",
        "Running after recovery",
        |b| {
            phase(b) == Some(TradingBotPhase::Running)
                && b.status
                    .as_ref()
                    .is_some_and(|s| s.emergency_stop.is_none())
        },
        &op,
    )
    .await;
    assert_eq!(condition(&b, "EmergencyStopped").as_deref(), Some("False"));
    let (addr, token) = bot_addr_token(&e, "alpha").await;
    let (_, s) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(s["halted"], false, "the recovered bot must be resumed: {s}");
    assert!(events(&e, "alpha").await.iter().any(|r| r == "Resumed"));

    // 7. deletion: the finalizer closes positions before the pod goes away
    bots(&e)
        .delete("alpha", &DeleteParams::default())
        .await
        .unwrap();
    wait_deleted(&e, "alpha", &op).await;
    let reasons = events(&e, "alpha").await;
    assert!(
        reasons.iter().any(|r| r == "PositionsClosed"),
        "deletion must close positions: {reasons:?}"
    );
    assert!(
        !op.log_text().contains(&token),
        "the bot token must never be logged"
    );
    assert!(
        !op.log_text().contains("forbidden"),
        "the chart's RBAC must be sufficient: {}",
        op.log_text()
    );
    teardown(e).await;
}

#[tokio::test]
async fn invalid_spec_gives_a_condition_and_no_hot_loop() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-inv", &[]).await;
    let extra = "  logs: {compressAfter: 30d, deleteAfter: 7d}\n";
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml("broken", extra),
    )
    .await
    .unwrap();
    let b = wait_bot(
        &e,
        "broken",
        "InvalidSpec",
        |b| condition(b, "InvalidSpec").as_deref() == Some("True"),
        &op,
    )
    .await;
    let msg = b
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "InvalidSpec")
        .unwrap()
        .message;
    assert!(
        msg.contains("deleteAfter (7d) must be more whole days"),
        "{msg}"
    );
    assert!(
        Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
            .get_opt("broken")
            .await
            .unwrap()
            .is_none()
    );
    // No hot loop: over an observation window of several poll intervals, neither
    // reconciliations nor status writes keep increasing.
    let r0 = op.metric("iq720_operator_reconciliations_total").await;
    let w0 = op.metric("iq720_operator_status_writes_total").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(op.metric("iq720_operator_reconciliations_total").await - r0 <= 1.0);
    assert_eq!(op.metric("iq720_operator_status_writes_total").await, w0);
    // fixing the spec clears the condition
    merge_patch(&e, "broken", json!({"logs": {"deleteAfter": "60d"}})).await;
    wait_bot(
        &e,
        "broken",
        "valid again",
        |b| condition(b, "InvalidSpec").as_deref() == Some("False"),
        &op,
    )
    .await;
    teardown(e).await;
}

#[tokio::test]
async fn idle_bot_causes_no_status_writes() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-idle", &[]).await;
    // paused from the start: no entries, no trades, nothing changes
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml("idle", "  paused: true\n"),
    )
    .await
    .unwrap();
    let b = wait_bot(
        &e,
        "idle",
        "Paused",
        |b| {
            phase(b) == Some(TradingBotPhase::Paused)
                && condition(b, "MarketDataHealthy").as_deref() == Some("True")
        },
        &op,
    )
    .await;
    // Settle: the first polls after start-up may still fill in fields. Wait until the
    // object stays unchanged for two poll intervals, then observe.
    let mut b = b;
    let settle_deadline = Instant::now() + DEADLINE;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = bots(&e).get("idle").await.unwrap();
        if now.metadata.resource_version == b.metadata.resource_version {
            break;
        }
        assert!(
            Instant::now() < settle_deadline,
            "the status of an idle bot never settled"
        );
        b = now;
    }
    let rv = b.metadata.resource_version.clone();
    let writes = op.metric("iq720_operator_status_writes_total").await;
    let polls = op.metric("iq720_operator_reconciliations_total").await;
    tokio::time::sleep(Duration::from_secs(6)).await; // six poll intervals
    assert!(
        op.metric("iq720_operator_reconciliations_total").await >= polls + 3.0,
        "the bot must still be polled"
    );
    let after = bots(&e).get("idle").await.unwrap();
    if after.metadata.resource_version != rv {
        panic!(
            "an idle bot must cause no status write:\nbefore: {}\nafter: {}",
            serde_json::to_string_pretty(&b.status).unwrap(),
            serde_json::to_string_pretty(&after.status).unwrap()
        );
    }
    assert_eq!(
        op.metric("iq720_operator_status_writes_total").await,
        writes,
        "an idle bot must cause no status write"
    );
    let now = bots(&e).get("idle").await.unwrap();
    assert_eq!(
        now.metadata.resource_version, rv,
        "the TradingBot must not have been written"
    );
    teardown(e).await;
}

#[tokio::test]
async fn killed_operator_converges_after_restart() {
    let e = env().await;
    let mut op = Operator::start(&e.kubeconfig, e.ns.name(), "op-kill", &[]).await;
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml("phoenix", ""),
    )
    .await
    .unwrap();
    // kill it as soon as it has started to act (the StatefulSet exists)
    let sets: Api<StatefulSet> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    wait_for_condition(
        &sets,
        "phoenix",
        |s: Option<&StatefulSet>| s.is_some(),
        DEADLINE,
    )
    .await
    .unwrap();
    op.child.start_kill().unwrap();
    op.child.wait().await.unwrap();
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-kill-2", &[]).await;
    let b = wait_bot(
        &e,
        "phoenix",
        "Running after restart",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    assert_eq!(condition(&b, "Ready").as_deref(), Some("True"));
    let pods: Api<Pod> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let all = pods
        .list(&ListParams::default().labels("trading.iq720.io/bot=phoenix"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1, "never two pods of one bot");
    teardown(e).await;
}

#[tokio::test]
async fn standby_operator_takes_over_when_the_leader_dies() {
    let e = env().await;
    let args = [
        "--leader-election",
        "--lease-duration",
        "4s",
        "--lease-renew-every",
        "1s",
    ];
    let mut a = Operator::start(&e.kubeconfig, e.ns.name(), "leader-a", &args).await;
    a.wait_http("/leader", 200).await;
    let b = Operator::start(&e.kubeconfig, e.ns.name(), "leader-b", &args).await;
    // b is alive and ready, but standing by
    b.wait_http("/readyz", 200).await;
    let r = iq720_tests::http::get(&b.metrics_addr, "/leader")
        .await
        .unwrap();
    assert_eq!(r.status, 503, "the second replica must stand by");
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml("ha", "  paused: true\n"),
    )
    .await
    .unwrap();
    wait_bot(
        &e,
        "ha",
        "reconciled by the leader",
        |b| phase(b).is_some(),
        &a,
    )
    .await;
    assert_eq!(
        b.metric("iq720_operator_reconciliations_total").await,
        0.0,
        "the standby must not act"
    );
    let killed = Instant::now();
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    b.wait_http("/leader", 200).await;
    let takeover = killed.elapsed();
    println!(
        "BENCH leader-takeover: {:.1} s (lease 4 s)",
        takeover.as_secs_f64()
    );
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    merge_patch(&e, "ha", json!({"paused": false})).await;
    wait_bot(
        &e,
        "ha",
        "new leader acts",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &b,
    )
    .await;
    teardown(e).await;
}

#[tokio::test]
async fn emergency_stop_of_an_unreachable_bot_still_scales_to_zero() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-unreach", &[]).await;
    // an image the node cannot run: the bot never answers
    let extra = "  image: {repository: registry.invalid/no-such-bot}\n";
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml("ghost", extra),
    )
    .await
    .unwrap();
    // Not a silent `Starting`: the container's reason is reported (issue 8, item 12).
    let b = wait_bot(
        &e,
        "ghost",
        "Failed with the container's reason",
        |b| phase(b) == Some(TradingBotPhase::Failed),
        &op,
    )
    .await;
    let ready = b
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready.reason, "PodFailing");
    assert!(ready.message.contains("ImagePull"), "{}", ready.message);
    assert!(
        events(&e, "ghost")
            .await
            .iter()
            .any(|r| r == "BotPodFailing")
    );
    merge_patch(&e, "ghost", json!({"emergencyStop": true})).await;
    let b = wait_bot(&e, "ghost", "EmergencyStopped", stop_completed, &op).await;
    let st = b.status.clone().unwrap();
    assert!(
        st.emergency_stop.unwrap().positions_may_remain,
        "an unreachable bot cannot be confirmed flat"
    );
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == "EmergencyStopped")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "PositionsMayRemainOpen")
    );
    let sts = Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get("ghost")
        .await
        .unwrap();
    assert_eq!(
        sts.spec.unwrap().replicas,
        Some(0),
        "trading must end halted: scaled to zero anyway"
    );
    wait_events(&e, "ghost", &["PositionsMayRemainOpen"]).await;
    assert!(
        op.metric("iq720_operator_emergency_stops_total{result=\"positions_may_remain\"}")
            .await
            >= 1.0
    );
    teardown(e).await;
}
