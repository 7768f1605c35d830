//! End-to-end tests of restores from backups: the bootstrap restore of
//! `TradingBot.spec.restore` (disaster recovery: bot and volume deleted, recreated
//! from its newest verified backup with the same trade history), a restore that must
//! not overwrite a volume holding a database, a new bot waiting for a verified backup,
//! and restore drills (`BackupSchedule.spec.restoreDrill`). Real bots, the real
//! apiserver, the local cluster's real MinIO, the operator with the chart's Role.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::backups::*;
use common::bots::*;
use common::{Operator, bot_api};
use iq720_crds::backup_schedule::DrillResult;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, poll_until, s3_bucket, s3_client};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

const SECRET: &str = "e2e-s3";

/// A Secret with the real MinIO credentials; returns the secret key (to look for it
/// where it must not be).
async fn s3_secret(e: &Env) -> String {
    let (access, secret) = minio_credentials(e);
    apply_s3_secret(e, SECRET, &access, &secret).await;
    secret
}

fn prefix(e: &Env) -> String {
    format!("restore-e2e/{}", e.ns.name())
}

async fn schedule(e: &Env, name: &str, extra: &str) {
    apply_cluster_schedule(e, name, "0 3 * * *", None, &prefix(e), SECRET, extra).await;
}

/// Takes an on-demand backup and returns its verified record's key.
async fn verified_backup(
    e: &Env,
    bks: &str,
    bot: &str,
    value: &'static str,
    op: &Operator,
) -> String {
    annotate(e, bks, "trading.iq720.io/backup-now", value).await;
    let s = wait_schedule(e, bks, "on-demand backup", on_demand_done(value), op).await;
    let st = s.status.unwrap();
    let rec = st
        .recent_backups
        .iter()
        .find(|r| r.bot == bot && r.verified)
        .unwrap_or_else(|| panic!("no verified backup of {bot}: {st:#?}"));
    rec.key.clone()
}

/// The ids of every trade the bot's API lists.
async fn trade_ids(e: &Env, bot: &str) -> BTreeSet<i64> {
    let (addr, token) = bot_addr_token(e, bot).await;
    let (status, body) = bot_api(&addr, &token, "GET", "/api/v1/trades?limit=10000", "").await;
    assert_eq!(status, 200, "{body}");
    body["trades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

/// Waits until the bot's API lists at least `n` trades (other than `except`).
async fn wait_trades(e: &Env, bot: &str, n: usize, except: &BTreeSet<i64>) -> BTreeSet<i64> {
    let started = Instant::now();
    loop {
        let ids = trade_ids(e, bot).await;
        if ids.difference(except).count() >= n {
            return ids;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "bot {bot} did not trade: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn restore_result(b: &iq720_crds::TradingBot) -> Option<String> {
    b.status.as_ref()?.restore.as_ref()?.result.clone()
}

async fn paused(e: &Env, name: &str, op: &Operator) {
    merge_patch(e, name, json!({"paused": true})).await;
    wait_bot(
        e,
        name,
        "Paused",
        |b| phase(b) == Some(TradingBotPhase::Paused),
        op,
    )
    .await;
}

async fn cleanup_objects(e: &Env) {
    delete_prefix(e, &prefix(e)).await;
}

async fn event_notes(e: &Env) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|ev| {
            format!(
                "{} {}",
                ev.reason.unwrap_or_default(),
                ev.note.unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn disaster_recovery_restores_the_same_trade_history_into_a_new_volume() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-rs", &[]).await;
    let secret = s3_secret(&e).await;
    schedule(&e, "nightly", "").await;
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &labelled("alpha", ""))
        .await
        .unwrap();
    wait_bot(
        &e,
        "alpha",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    wait_trades(&e, "alpha", 2, &BTreeSet::new()).await;
    // Paused: no new entries, so the trade ids are fixed from here on.
    paused(&e, "alpha", &op).await;
    let before = trade_ids(&e, "alpha").await;
    let key = verified_backup(&e, "nightly", "alpha", "dr-1", &op).await;

    // Disaster: the bot and its volume are gone.
    bots(&e)
        .delete("alpha", &DeleteParams::default())
        .await
        .unwrap();
    wait_deleted(&e, "alpha", &op).await;
    wait_pod_gone(&e, "alpha").await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    pvcs.delete("data-alpha-0", &DeleteParams::default())
        .await
        .unwrap();
    poll_until("PVC gone", DEADLINE, Duration::from_millis(200), || {
        let pvcs = pvcs.clone();
        async move {
            pvcs.get_opt("data-alpha-0")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await
    .unwrap();

    // Recovery: the same bot with spec.restore, the newest verified backup by default.
    let started = Instant::now();
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &labelled(
            "alpha",
            "  paused: true\n  restore:\n    backupScheduleRef: {name: nightly}\n",
        ),
    )
    .await
    .unwrap();
    let restored = wait_bot(
        &e,
        "alpha",
        "restored and running",
        |b| {
            restore_result(b).as_deref() == Some("Restored")
                && phase(b) == Some(TradingBotPhase::Paused)
        },
        &op,
    )
    .await;
    let took = started.elapsed();
    let rs = restored.status.as_ref().unwrap().restore.clone().unwrap();
    assert_eq!(rs.key, key, "the newest verified backup is pinned");
    assert_eq!(condition(&restored, "Restored").as_deref(), Some("True"));
    let after = trade_ids(&e, "alpha").await;
    assert_eq!(after, before, "the restored bot has the same trade history");
    eprintln!(
        "BENCH restore: recreate->restored+ready {:.1} s, restore step {} ms, {} trades",
        took.as_secs_f64(),
        rs.duration_ms.unwrap_or_default(),
        after.len()
    );

    // The init container got the credentials by reference only.
    let pod = bot_pod(&e, "alpha").await.unwrap();
    let spec = serde_json::to_string(&pod.spec).unwrap();
    assert!(spec.contains("secretKeyRef"), "{spec}");
    assert!(!spec.contains(&secret), "secret in the pod spec");
    let st = serde_json::to_string(&bots(&e).get("alpha").await.unwrap().status).unwrap();
    assert!(!st.contains(&secret));
    assert!(!event_notes(&e).await.iter().any(|n| n.contains(&secret)));
    assert!(!op.log_text().contains(&secret));
    let init_log = iq720_tests::pod_log(
        &e.cluster,
        e.ns.name(),
        &pod.metadata.name.clone().unwrap(),
        "restore",
    )
    .await
    .unwrap_or_default();
    assert!(
        !init_log.contains(&secret),
        "secret in the init container log"
    );

    // A later backup does not change what the pod restores: the key stays pinned.
    verified_backup(&e, "nightly", "alpha", "dr-2", &op).await;
    let sts: Api<StatefulSet> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let args = sts
        .get("alpha")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .init_containers
        .unwrap()[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&key), "{args:?}");
    let pinned = bots(&e)
        .get("alpha")
        .await
        .unwrap()
        .status
        .unwrap()
        .restore
        .unwrap();
    assert_eq!(pinned.key, key);

    cleanup_objects(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn a_restore_never_overwrites_a_volume_that_holds_a_database() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-rs2", &[]).await;
    s3_secret(&e).await;
    schedule(&e, "nightly", "").await;
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &labelled("beta", ""))
        .await
        .unwrap();
    wait_bot(
        &e,
        "beta",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    wait_trades(&e, "beta", 1, &BTreeSet::new()).await;
    paused(&e, "beta", &op).await;
    let in_backup = trade_ids(&e, "beta").await;
    verified_backup(&e, "nightly", "beta", "nb-1", &op).await;
    // After the backup the bot trades on: its volume now differs from the backup.
    merge_patch(&e, "beta", json!({"paused": false})).await;
    let newer = wait_trades(&e, "beta", 1, &in_backup).await;
    paused(&e, "beta", &op).await;
    let before = trade_ids(&e, "beta").await;
    assert!(
        before.len() > in_backup.len(),
        "{before:?} vs {in_backup:?}"
    );

    // spec.restore on the existing bot: the pod rolls with the restore step, which
    // finds a database and leaves it alone.
    merge_patch(
        &e,
        "beta",
        json!({"restore": {"backupScheduleRef": {"name": "nightly"}}}),
    )
    .await;
    let b = wait_bot(
        &e,
        "beta",
        "restore skipped",
        |b| {
            restore_result(b).as_deref() == Some("SkippedNotEmpty")
                && phase(b) == Some(TradingBotPhase::Paused)
        },
        &op,
    )
    .await;
    assert_eq!(condition(&b, "Restored").as_deref(), Some("False"));
    let pod = bot_pod(&e, "beta").await.unwrap();
    assert!(
        pod.spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .is_some_and(|c| c[0].name == "restore"),
        "the pod ran the restore step"
    );
    let log = iq720_tests::pod_log(
        &e.cluster,
        e.ns.name(),
        &pod.metadata.name.clone().unwrap(),
        "restore",
    )
    .await
    .unwrap();
    assert!(log.contains("never overwrites"), "{log}");
    let after = trade_ids(&e, "beta").await;
    assert!(
        after.is_superset(&before) && newer.difference(&in_backup).all(|id| after.contains(id)),
        "the database was overwritten: before {before:?}, after {after:?}"
    );

    cleanup_objects(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn a_new_bot_waits_for_a_verified_backup_and_drills_record_results() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-rs3", &[]).await;
    let secret = s3_secret(&e).await;
    schedule(&e, "nightly", "  restoreDrill: {everyNthBackup: 1}\n").await;

    // 1. No verified backup of `gamma` yet: it is created with zero replicas.
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml(
            "gamma",
            "  paused: true\n  restore:\n    backupScheduleRef: {name: nightly}\n",
        ),
    )
    .await
    .unwrap();
    let g = wait_bot(
        &e,
        "gamma",
        "waiting for a backup",
        |b| {
            b.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Restored" && c.reason == "NoVerifiedBackup")
            })
        },
        &op,
    )
    .await;
    assert!(g.status.unwrap().restore.is_none());
    let sts: Api<StatefulSet> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    poll_until("gamma StatefulSet at 0", DEADLINE, Duration::from_millis(200), || {
        let sts = sts.clone();
        async move { (sts.get_opt("gamma").await.ok()??.spec?.replicas == Some(0)).then_some(()) }
    })
    .await
    .unwrap();
    assert!(bot_pod(&e, "gamma").await.is_none());

    // 2. A drill after every backup: it restores the backup in a throwaway pod and
    //    records the row counts, which match the bot's trades at backup time.
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &labelled("delta", ""))
        .await
        .unwrap();
    wait_bot(
        &e,
        "delta",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    wait_trades(&e, "delta", 1, &BTreeSet::new()).await;
    paused(&e, "delta", &op).await;
    let trades = trade_ids(&e, "delta").await;
    let key = verified_backup(&e, "nightly", "delta", "d-1", &op).await;
    let s = wait_schedule(
        &e,
        "nightly",
        "drill recorded",
        |s| {
            s.status.as_ref().is_some_and(|st| {
                st.drills
                    .iter()
                    .any(|d| d.bot == "delta" && d.last_drill.is_some())
            })
        },
        &op,
    )
    .await;
    let st = s.status.unwrap();
    let d = st.drills.iter().find(|d| d.bot == "delta").unwrap();
    let drill = d.last_drill.clone().unwrap();
    assert_eq!(drill.result, DrillResult::Succeeded, "{drill:#?}");
    assert_eq!(drill.key, key);
    assert_eq!(
        drill.row_counts.get("trades").copied(),
        Some(trades.len() as i64),
        "{drill:#?}"
    );
    assert_eq!(d.backups_since_drill, 0);
    assert!(drill.duration_ms.is_some());
    eprintln!(
        "BENCH restore drill: {} ms in the pod, {:.1} s start to finish, rows {:?}",
        drill.duration_ms.unwrap_or_default(),
        (drill.completed_at.0.as_millisecond() - drill.started_at.0.as_millisecond()) as f64
            / 1000.0,
        drill.row_counts
    );
    // The throwaway pod is gone.
    let pods: Api<Pod> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    poll_until(
        "drill pods deleted",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let pods = pods.clone();
            async move {
                let items = pods
                    .list(&ListParams::default().labels("trading.iq720.io/restore-drill"))
                    .await
                    .ok()?
                    .items;
                items.is_empty().then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Seconds and many reconciles later, `gamma` still waits: no pod, no volume (a pod
    // would have created an empty database that then blocks the restore).
    assert!(
        bot_pod(&e, "gamma").await.is_none(),
        "gamma started without a backup"
    );
    assert_eq!(
        sts.get("gamma").await.unwrap().spec.unwrap().replicas,
        Some(0)
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    assert!(pvcs.get_opt("data-gamma-0").await.unwrap().is_none());

    // 3. `gamma` (not selected by the schedule, so it never gets a backup of its own)
    //    is given `delta`'s backup by key and starts, restored.
    merge_patch(&e, "gamma", json!({"restore": {"key": key}})).await;
    wait_bot(
        &e,
        "gamma",
        "gamma restored from a key",
        |b| restore_result(b).as_deref() == Some("Restored"),
        &op,
    )
    .await;
    wait_bot(
        &e,
        "gamma",
        "gamma Paused",
        |b| phase(b) == Some(TradingBotPhase::Paused),
        &op,
    )
    .await;
    assert_eq!(
        trade_ids(&e, "gamma").await,
        trades,
        "gamma has delta's trades from the backup"
    );

    // 4. A drill of a corrupted object records a failure.
    let s3 = s3_client(&e.cluster).unwrap();
    let bucket = s3_bucket(&e.cluster).unwrap();
    let obj = s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let meta = obj.metadata().cloned().unwrap_or_default();
    let mut put =
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(
                b"corrupted".to_vec(),
            ));
    for (k, v) in meta {
        put = put.metadata(k, v);
    }
    put.send().await.unwrap();
    annotate(&e, "nightly", "trading.iq720.io/drill-now", "c-1").await;
    let s = wait_schedule(
        &e,
        "nightly",
        "failed drill recorded",
        |s| {
            s.status.as_ref().is_some_and(|st| {
                st.last_drill_request.as_deref() == Some("c-1")
                    && st.drills.iter().any(|d| {
                        d.bot == "delta"
                            && d.last_drill
                                .as_ref()
                                .is_some_and(|l| l.result == DrillResult::Failed)
                    })
            })
        },
        &op,
    )
    .await;
    let st = s.status.unwrap();
    let failed = st
        .drills
        .iter()
        .find(|d| d.bot == "delta")
        .unwrap()
        .last_drill
        .clone()
        .unwrap();
    assert!(
        failed.message.contains("sha256") || failed.message.contains("checksum"),
        "{failed:#?}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "LastDrillSucceeded" && c.status == "False"),
        "{st:#?}"
    );
    let notes = event_notes(&e).await;
    assert!(
        notes.iter().any(|n| n.starts_with("DrillFailed")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("DrillSucceeded")),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|n| n.contains(&secret)));
    let drills_failed = op
        .metric("iq720_operator_restore_drills_total{result=\"failed\"}")
        .await;
    assert!(drills_failed >= 1.0, "{drills_failed}");

    cleanup_objects(&e).await;
    teardown(e).await;
}
