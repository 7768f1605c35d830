//! End-to-end tests of version rollouts on the real local cluster with real bot
//! processes. The node agent's image map stands one bot binary in for several image
//! tags: `:0.2.0` is the bot reporting version 0.2.0 (`--report-version`), and
//! `:0.2.0-broken` also has the test/chaos switch `--fault unhealthy` (its `/readyz`
//! never passes, so its pod never becomes Ready). An upgrade to the good version
//! passes the health gate with the open positions kept; an upgrade to the broken one
//! is rolled back automatically, recorded in `status.rollout.failedVersion` and not
//! retried; an emergency stop in the middle of a rollout wins at once. Each test prints
//! `BENCH rollout ...` lines with the measured times.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::bots::*;
use common::{Operator, backups, bot_api};
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::{RolloutResult, RolloutStep, TradingBotPhase};
use iq720_tests::poll_until;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{Api, ResourceExt};
use serde_json::json;

const REPO: &str = "ghcr.io/iq720/iq720-bot";
/// A release that migrates the database one schema version forward and fails its
/// health gate.
const MIGRATING: &str = "0.3.0-migrating";
/// Another image repository serving the same 0.1.0 release.
const MIRROR: &str = "mirror.local/iq720-bot";

/// Maps the good and the broken test versions to the bot binary.
fn map_versions(e: &Env) {
    let bot = common::workspace_binary("iq720-bot", "iq720-bot");
    e.cluster
        .map_image(
            &format!("{REPO}:0.2.0"),
            &bot,
            &["--report-version", "0.2.0"],
        )
        .unwrap();
    e.cluster
        .map_image(
            &format!("{REPO}:0.2.0-broken"),
            &bot,
            &["--report-version", "0.2.0-broken", "--fault", "unhealthy"],
        )
        .unwrap();
    e.cluster
        .map_image(&format!("{MIRROR}:0.1.0"), &bot, &[])
        .unwrap();
    e.cluster
        .map_image(
            &format!("{REPO}:{MIGRATING}"),
            &bot,
            &[
                "--report-version",
                MIGRATING,
                "--schema-ahead",
                "--fault",
                "unhealthy",
            ],
        )
        .unwrap();
}

/// A bot that holds `maxPositions` positions it will not exit on its own soon (wide
/// stop-loss, an RSI exit that rarely fires), so the count survives a rollout.
fn extra(health_timeout: &str) -> String {
    format!(
        "  risk: {{maxPositions: 2, stopLoss: {{percent: 50}}}}\n  update: {{healthTimeout: {health_timeout}, preUpdateBackup: false, autoRollback: true}}\n"
    )
}

fn rollout(b: &TradingBot) -> iq720_crds::trading_bot::RolloutStatus {
    b.status
        .as_ref()
        .and_then(|s| s.rollout.clone())
        .unwrap_or_default()
}

/// The bot runs 0.1.0 and trades.
fn running_stable(b: &TradingBot) -> bool {
    current_version(b).as_deref() == Some("0.1.0") && phase(b) == Some(TradingBotPhase::Running)
}

fn current_version(b: &TradingBot) -> Option<String> {
    b.status.as_ref().and_then(|s| s.current_version.clone())
}

async fn pod_image_uid(e: &Env, name: &str) -> Option<(String, String, bool)> {
    let pod = bot_pod(e, name).await?;
    let image = pod.spec.as_ref()?.containers.first()?.image.clone()?;
    let uid = pod.metadata.uid.clone()?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some((image, uid, ready))
}

async fn template_image(e: &Env, name: &str) -> String {
    let sts = Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get(name)
        .await
        .unwrap();
    sts.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

/// Starts an operator and a bot at 0.1.0 holding two positions.
async fn bot_with_positions(e: &Env, name: &str, health_timeout: &str) -> Operator {
    map_versions(e);
    let op = Operator::start(&e.kubeconfig, e.ns.name(), &format!("op-{name}"), &[]).await;
    apply_running(e, name, &extra(health_timeout), &op).await;
    wait_bot(
        e,
        name,
        "two open positions and a stable version",
        |b| {
            b.status.as_ref().and_then(|s| s.open_positions) == Some(2)
                && rollout(b).stable_version.as_deref() == Some("0.1.0")
        },
        &op,
    )
    .await;
    op
}

#[tokio::test]
async fn upgrade_to_a_good_version_passes_the_gate_and_keeps_positions() {
    let e = env().await;
    let op = bot_with_positions(&e, "good", "60s").await;
    let (addr, token) = bot_addr_token(&e, "good").await;
    let (_, before) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    let positions_before = before["openPositions"].as_u64().unwrap();
    assert_eq!(before["version"], "0.1.0");
    let (_, old_uid, _) = pod_image_uid(&e, "good").await.unwrap();

    let t0 = Instant::now();
    merge_patch(&e, "good", json!({"version": "0.2.0"})).await;
    let upgrading = wait_bot(
        &e,
        "good",
        "phase Upgrading",
        |b| phase(b) == Some(TradingBotPhase::Upgrading),
        &op,
    )
    .await;
    assert_eq!(condition(&upgrading, "Upgrading").as_deref(), Some("True"));
    let done = wait_bot(
        &e,
        "good",
        "rollout succeeded",
        |b| {
            rollout(b)
                .history
                .first()
                .is_some_and(|h| h.result == RolloutResult::Succeeded)
        },
        &op,
    )
    .await;
    let rollout_time = t0.elapsed();
    let r = rollout(&done);
    assert_eq!(r.stable_version.as_deref(), Some("0.2.0"));
    assert!(r.active.is_none() && r.failed_version.is_none());
    let gate_ms = r.history[0].gate_ms.unwrap();
    assert_eq!(condition(&done, "Upgrading").as_deref(), Some("False"));
    let running = wait_bot(
        &e,
        "good",
        "running 0.2.0 and trading again",
        |b| {
            current_version(b).as_deref() == Some("0.2.0")
                && phase(b) == Some(TradingBotPhase::Running)
        },
        &op,
    )
    .await;
    let up = running
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Upgrading")
        .unwrap();
    assert_eq!(up.reason, "UpToDate");
    // A new pod runs the new image, and it manages the same positions.
    let (image, new_uid, _) = pod_image_uid(&e, "good").await.unwrap();
    assert_eq!(image, format!("{REPO}:0.2.0"));
    assert_ne!(new_uid, old_uid, "the pod was replaced");
    let (addr, token) = bot_addr_token(&e, "good").await;
    let (_, after) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(after["version"], "0.2.0");
    assert_eq!(
        after["openPositions"].as_u64().unwrap(),
        positions_before,
        "the open positions survive the rollout"
    );
    let reasons = events(&e, "good").await;
    for r in ["RolloutStarted", "RolloutRolling", "RolloutSucceeded"] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
    assert!(
        reasons.iter().any(|x| x == "Paused"),
        "entries were halted before the roll: {reasons:?}"
    );
    println!(
        "BENCH rollout good-upgrade total_s={:.1} gate_after_roll_s={:.1} positions={positions_before}",
        rollout_time.as_secs_f64(),
        gate_ms as f64 / 1000.0
    );
    teardown(e).await;
}

#[tokio::test]
async fn upgrade_to_a_broken_version_is_rolled_back_and_not_retried() {
    let e = env().await;
    let op = bot_with_positions(&e, "broken", "45s").await;
    let rollbacks_before = op.metric("iq720_operator_rollbacks_total").await;
    let t0 = Instant::now();
    merge_patch(&e, "broken", json!({"version": "0.2.0-broken"})).await;
    wait_bot(
        &e,
        "broken",
        "the broken version rolled out (health gate running)",
        |b| {
            rollout(b)
                .active
                .is_some_and(|a| a.step == RolloutStep::HealthGate)
        },
        &op,
    )
    .await;
    poll_until(
        "the broken pod started",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let e = &e;
            async move {
                let (image, _, _) = pod_image_uid(e, "broken").await?;
                image.ends_with(":0.2.0-broken").then_some(())
            }
        },
    )
    .await
    .unwrap();
    let rolled = wait_bot(
        &e,
        "broken",
        "rolled back",
        |b| rollout(b).failed_version.as_deref() == Some("0.2.0-broken"),
        &op,
    )
    .await;
    let decided = t0.elapsed();
    let r = rollout(&rolled);
    assert_eq!(r.history[0].result, RolloutResult::RolledBack);
    assert!(
        r.failure_reason.as_ref().unwrap().contains("healthTimeout"),
        "{:?}",
        r.failure_reason
    );
    assert_eq!(r.stable_version.as_deref(), Some("0.1.0"));
    assert_eq!(r.consecutive_rollbacks, 1);
    // Back on 0.1.0, healthy and trading; spec.version still says the broken one.
    let back = wait_bot(&e, "broken", "running 0.1.0 again", running_stable, &op).await;
    let healthy_again = t0.elapsed();
    assert_eq!(
        back.spec.version, "0.2.0-broken",
        "the spec is never rewritten"
    );
    let up = back
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Upgrading")
        .unwrap();
    assert_eq!(
        (up.status.as_str(), up.reason.as_str()),
        ("False", "RolledBack")
    );
    assert_eq!(template_image(&e, "broken").await, format!("{REPO}:0.1.0"));
    assert!(events(&e, "broken").await.iter().any(|r| r == "RolledBack"));
    assert_eq!(
        op.metric("iq720_operator_rollbacks_total").await,
        rollbacks_before + 1.0
    );
    // Not retried: for 20 s no pod and no template with the failed version, no rollout.
    let watch_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < watch_until {
        if let Some((image, _, _)) = pod_image_uid(&e, "broken").await {
            assert!(
                !image.ends_with("-broken"),
                "the failed version was retried"
            );
        }
        assert_eq!(template_image(&e, "broken").await, format!("{REPO}:0.1.0"));
        let b = bots(&e).get("broken").await.unwrap();
        assert!(
            rollout(&b).active.is_none(),
            "no new rollout: {:?}",
            rollout(&b)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A new spec.version (here: the stable one) moves on and clears the failure.
    merge_patch(&e, "broken", json!({"version": "0.1.0"})).await;
    wait_bot(
        &e,
        "broken",
        "failure cleared",
        |b| {
            rollout(b).failed_version.is_none()
                && condition(b, "Upgrading").as_deref() == Some("False")
        },
        &op,
    )
    .await;
    println!(
        "BENCH rollout broken-upgrade rollback_decided_s={:.1} healthy_on_previous_s={:.1} health_timeout_s=45",
        decided.as_secs_f64(),
        healthy_again.as_secs_f64()
    );
    teardown(e).await;
}

#[tokio::test]
async fn emergency_stop_during_a_rollout_wins_at_once() {
    let e = env().await;
    let op = bot_with_positions(&e, "estop", "300s").await;
    merge_patch(&e, "estop", json!({"version": "0.2.0-broken"})).await;
    wait_bot(
        &e,
        "estop",
        "health gate running",
        |b| {
            rollout(b)
                .active
                .is_some_and(|a| a.step == RolloutStep::HealthGate)
        },
        &op,
    )
    .await;
    let t0 = Instant::now();
    merge_patch(&e, "estop", json!({"emergencyStop": true})).await;
    let stopped = wait_bot(&e, "estop", "EmergencyStopped", stop_completed, &op).await;
    let stop_time = t0.elapsed();
    wait_pod_gone(&e, "estop").await;
    let gone = t0.elapsed();
    let sts = Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get("estop")
        .await
        .unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(0));
    // The stop did not wait for the 300 s health gate, and nothing was rolled back.
    assert!(stop_time < Duration::from_secs(60), "{stop_time:?}");
    assert!(rollout(&stopped).failed_version.is_none());
    assert!(!events(&e, "estop").await.iter().any(|r| r == "RolledBack"));
    println!(
        "BENCH rollout emergency-stop-mid-rollout stopped_s={:.1} pod_gone_s={:.1}",
        stop_time.as_secs_f64(),
        gone.as_secs_f64()
    );
    teardown(e).await;
}

/// MinIO credentials and a BackupSchedule `nightly` selecting bots labelled backup=yes.
async fn backup_schedule(e: &Env) {
    let (access, secret) = backups::minio_credentials(e);
    backups::apply_s3_secret(e, "e2e-s3", &access, &secret).await;
    let prefix = format!("rollout-e2e/{}", e.ns.name());
    backups::apply_cluster_schedule(e, "nightly", "0 3 * * *", None, &prefix, "e2e-s3", "").await;
}

/// Labels a bot so that the `nightly` schedule selects it.
async fn select_for_backup(e: &Env, name: &str) {
    bots(e)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"backup": "yes"}}})),
        )
        .await
        .unwrap();
}

/// Starts an operator and a bot at 0.1.0 (`extra` appended to its spec) and waits until
/// 0.1.0 is recorded as the stable release.
async fn stable_bot(e: &Env, name: &str, extra: &str) -> Operator {
    map_versions(e);
    let op = Operator::start(&e.kubeconfig, e.ns.name(), &format!("op-{name}"), &[]).await;
    apply_running(e, name, extra, &op).await;
    wait_bot(
        e,
        name,
        "stable version recorded",
        |b| rollout(b).stable_version.as_deref() == Some("0.1.0"),
        &op,
    )
    .await;
    op
}

/// [`stable_bot`] that the `nightly` schedule backs up before each rollout
/// (`preUpdateBackup`), with this health timeout.
async fn backed_up_bot(e: &Env, name: &str, health_timeout: &str) -> Operator {
    backup_schedule(e).await;
    let extra = format!("  update: {{healthTimeout: {health_timeout}, preUpdateBackup: true}}\n");
    let op = stable_bot(e, name, &extra).await;
    select_for_backup(e, name).await;
    op
}

#[tokio::test]
async fn a_schema_migrating_version_is_rolled_back_with_the_database_restored() {
    let e = env().await;
    let op = backed_up_bot(&e, "mig", "30s").await;
    let (addr, token) = bot_addr_token(&e, "mig").await;
    let (_, before) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(before["schemaVersion"], 1, "{before}");

    let t0 = Instant::now();
    merge_patch(&e, "mig", json!({"version": MIGRATING})).await;
    let rolled = wait_bot(
        &e,
        "mig",
        "rolled back",
        |b| rollout(b).failed_version.as_deref() == Some(MIGRATING),
        &op,
    )
    .await;
    let decided = t0.elapsed();
    let r = rollout(&rolled);
    let key = r.history[0]
        .backup_key
        .clone()
        .expect("the pre-update backup in the history");
    let restore = r.rollback_restore.expect("rollbackRestore recorded");
    assert_eq!(
        (restore.backup_schedule.as_str(), restore.key.as_str()),
        ("nightly", key.as_str())
    );
    // The stable version cannot open the migrated database: it runs again only because
    // its pod restored the pre-update backup first.
    wait_bot(
        &e,
        "mig",
        "running 0.1.0 again on the restored database",
        running_stable,
        &op,
    )
    .await;
    let running_again = t0.elapsed();
    let (addr, token) = bot_addr_token(&e, "mig").await;
    let (_, after) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(after["schemaVersion"], 1, "{after}");
    let sts = Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get("mig")
        .await
        .unwrap();
    let init = sts
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .init_containers
        .unwrap();
    let args = init[0].args.clone().unwrap();
    assert!(
        args.contains(&"--if-schema-too-new".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&key), "{args:?}");
    assert!(
        events(&e, "mig")
            .await
            .iter()
            .any(|r| r == "RollbackRestoresDatabase")
    );
    println!(
        "BENCH rollout migrating-upgrade rollback_decided_s={:.1} running_on_restored_db_s={:.1} health_timeout_s=30",
        decided.as_secs_f64(),
        running_again.as_secs_f64()
    );
    teardown(e).await;
}

#[tokio::test]
async fn pre_update_backup_is_verified_before_the_roll() {
    let e = env().await;
    let op = backed_up_bot(&e, "bk", "60s").await;
    let t0 = Instant::now();
    merge_patch(&e, "bk", json!({"version": "0.2.0"})).await;
    let backing = wait_bot(
        &e,
        "bk",
        "backing up",
        |b| {
            rollout(b)
                .active
                .is_some_and(|a| a.step == RolloutStep::BackingUp)
        },
        &op,
    )
    .await;
    let id = rollout(&backing).active.unwrap().id;
    let done = wait_bot(
        &e,
        "bk",
        "rollout succeeded",
        |b| {
            rollout(b)
                .history
                .first()
                .is_some_and(|h| h.result == RolloutResult::Succeeded)
        },
        &op,
    )
    .await;
    let total = t0.elapsed();
    let record = rollout(&done).history[0].clone();
    let key = record
        .backup_key
        .clone()
        .expect("backup key in the history");
    // The schedule was asked with the rollout's id and verified that very backup.
    let bks = Api::<iq720_crds::BackupSchedule>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get("nightly")
        .await
        .unwrap();
    assert_eq!(
        bks.annotations().get("trading.iq720.io/backup-now"),
        Some(&id)
    );
    let st = bks.status.unwrap();
    assert_eq!(st.last_on_demand_request.as_deref(), Some(id.as_str()));
    let b = st
        .recent_backups
        .iter()
        .find(|b| b.key == key)
        .expect("the backup is in the schedule's status");
    assert!(b.verified && b.bot == "bk");
    // Verified before the roll: it completed no later than the pod was rolled.
    let rolled_ms = record.finished_at.0.as_millisecond() - record.gate_ms.unwrap();
    assert!(
        b.completed_at.0.as_millisecond() <= rolled_ms + 1000,
        "backup {} after the roll at {rolled_ms}",
        b.completed_at.0
    );
    let reasons = events(&e, "bk").await;
    for r in [
        "PreUpdateBackupRequested",
        "PreUpdateBackupVerified",
        "RolloutSucceeded",
    ] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
    println!(
        "BENCH rollout with-pre-update-backup total_s={:.1} gate_after_roll_s={:.1}",
        total.as_secs_f64(),
        record.gate_ms.unwrap() as f64 / 1000.0
    );
    teardown(e).await;
}

#[tokio::test]
async fn an_image_repository_change_is_a_rollout_through_the_gate() {
    let e = env().await;
    let extra = "  update: {healthTimeout: 60s, preUpdateBackup: false}\n";
    let op = stable_bot(&e, "mirror", extra).await;
    let t0 = Instant::now();
    bots(&e)
        .patch(
            "mirror",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"image": {"repository": MIRROR}}})),
        )
        .await
        .unwrap();
    let release = format!("{MIRROR}:0.1.0");
    let done = wait_bot(
        &e,
        "mirror",
        "the repository change passed the gate",
        |b| {
            rollout(b)
                .history
                .first()
                .is_some_and(|h| h.result == RolloutResult::Succeeded)
        },
        &op,
    )
    .await;
    let took = t0.elapsed();
    let r = rollout(&done);
    assert_eq!(
        (
            r.history[0].from_version.as_str(),
            r.history[0].to_version.as_str()
        ),
        ("0.1.0", release.as_str())
    );
    assert_eq!(r.stable_version.as_deref(), Some(release.as_str()));
    assert_eq!(template_image(&e, "mirror").await, release);
    let (image, _, _) = pod_image_uid(&e, "mirror").await.unwrap();
    assert_eq!(image, release);
    assert!(
        events(&e, "mirror")
            .await
            .iter()
            .any(|r| r == "RolloutStarted")
    );
    println!(
        "BENCH rollout image-repository-change total_s={:.1}",
        took.as_secs_f64()
    );
    teardown(e).await;
}
