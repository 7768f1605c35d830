//! End-to-end tests of the BackupSchedule controller: real bots, the real apiserver,
//! the local cluster's real MinIO, and the operator with the chart's namespaced Role.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::Operator;
use common::backups::wait_schedule_newest_first as wait_schedule;
use common::backups::*;
use common::bots::*;
use iq720_crds::backup_schedule::BackupResult;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{get_object, list_keys, put_object, s3_bucket, s3_client};
use kube::api::{Patch, PatchParams};
use serde_json::json;

const SECRET: &str = "e2e-s3";

/// A Secret with MinIO credentials (`secret_key` None: the real one).
async fn s3_secret(e: &Env, secret_key: Option<&str>) -> String {
    let (access, real) = minio_credentials(e);
    apply_s3_secret(e, SECRET, &access, secret_key.unwrap_or(&real)).await;
    real
}

fn prefix(e: &Env) -> String {
    format!("backup-e2e/{}", e.ns.name())
}

async fn schedule(e: &Env, name: &str, cron: &str, zone: &str, extra: &str) {
    apply_cluster_schedule(e, name, cron, Some(zone), &prefix(e), SECRET, extra).await;
}

async fn cleanup_objects(e: &Env) {
    delete_prefix(e, &prefix(e)).await;
}

#[tokio::test]
async fn on_demand_backup_is_streamed_verified_pruned_and_keeps_secrets_out() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bk", &[]).await;
    let secret = s3_secret(&e, None).await;
    running_bot(&e, "alpha", &op).await;
    schedule(
        &e,
        "nightly",
        "0 3 * * *",
        "Europe/Berlin",
        "  retention: {keepLast: 1}\n",
    )
    .await;
    let s3 = s3_client(&e.cluster).unwrap();
    let bucket = s3_bucket(&e.cluster).unwrap();
    let bot_prefix = format!("{}/{}/alpha/", prefix(&e), e.ns.name());
    // An object under the prefix the operator did not write: never touched.
    let foreign = format!("{bot_prefix}00000000T000000.000Z.tar.gz");
    put_object(&s3, &bucket, &foreign, b"not ours".to_vec())
        .await
        .unwrap();

    // 1. on-demand backup → object with the right key, sha256 in metadata, verified
    backup_now(&e, "nightly", "one").await;
    let s = wait_schedule(
        &e,
        "nightly",
        "first on-demand backup",
        on_demand_done("one"),
        &op,
    )
    .await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.last_result, Some(BackupResult::Succeeded), "{st:#?}");
    assert!(st.next_schedule_time.is_some());
    assert_eq!(st.recent_backups.len(), 1, "{st:#?}");
    let first = st.recent_backups[0].clone();
    assert!(first.verified, "{first:?}");
    assert!(
        first.key.starts_with(&bot_prefix) && first.key.ends_with("Z.tar.gz"),
        "{}",
        first.key
    );
    let body = get_object(&s3, &bucket, &first.key).await.unwrap();
    assert_eq!(body.len() as i64, first.size_bytes);
    assert_eq!(sha256_of(&body), first.sha256);
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(&first.key)
        .send()
        .await
        .unwrap();
    let meta = head.metadata().unwrap();
    assert_eq!(meta.get("iq720-sha256"), Some(&first.sha256));
    assert_eq!(
        meta.get("iq720-managed-by").map(String::as_str),
        Some("iq720-operator")
    );
    assert_eq!(
        bks_condition(&s, "LastBackupSucceeded")
            .map(|c| c.0)
            .as_deref(),
        Some("True")
    );

    // 2. the TradingBot shows it, and the TradingBot controller's own status writes
    //    (pause → phase Paused) keep lastBackup and the condition
    let key = first.key.clone();
    wait_bot(
        &e,
        "alpha",
        "lastBackup on the bot",
        move |b| {
            b.status
                .as_ref()
                .and_then(|s| s.last_backup.as_ref())
                .is_some_and(|l| l.key == key && l.verified)
                && condition(b, "LastBackupSucceeded").as_deref() == Some("True")
        },
        &op,
    )
    .await;
    merge_patch(&e, "alpha", json!({"paused": true})).await;
    let b = wait_bot(
        &e,
        "alpha",
        "Paused",
        |b| phase(b) == Some(TradingBotPhase::Paused),
        &op,
    )
    .await;
    assert_eq!(
        b.status
            .as_ref()
            .and_then(|s| s.last_backup.as_ref())
            .map(|l| l.key.clone()),
        Some(first.key.clone()),
        "the TradingBot controller's status write dropped lastBackup"
    );
    assert_eq!(
        condition(&b, "LastBackupSucceeded").as_deref(),
        Some("True")
    );
    assert_eq!(condition(&b, "Paused").as_deref(), Some("True"));

    // 3. a second on-demand backup: keepLast 1 prunes the first (object and entry),
    //    the foreign object stays
    backup_now(&e, "nightly", "two").await;
    let s = wait_schedule(
        &e,
        "nightly",
        "second on-demand backup",
        on_demand_done("two"),
        &op,
    )
    .await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.last_result, Some(BackupResult::Succeeded), "{st:#?}");
    assert_eq!(st.recent_backups.len(), 1, "{st:#?}");
    let second = st.recent_backups[0].clone();
    assert_ne!(second.key, first.key);
    let mut keys = list_keys(&s3, &bucket, &bot_prefix).await.unwrap();
    keys.sort();
    assert_eq!(keys, vec![foreign.clone(), second.key.clone()]);
    let events = event_texts(&e).await;
    assert!(
        events
            .iter()
            .any(|(_, r, n)| r == "Pruned" && n.contains(&first.key)),
        "{events:?}"
    );
    assert!(
        op.metric("iq720_operator_backups_total{result=\"succeeded\"}")
            .await
            >= 2.0
    );

    // 4. the secret key is nowhere: operator log, Events, statuses
    let bks_json = serde_json::to_string(&schedules(&e).get("nightly").await.unwrap()).unwrap();
    let bot_json = serde_json::to_string(&bots(&e).get("alpha").await.unwrap()).unwrap();
    assert!(
        !op.log_text().contains(&secret),
        "secret in the operator log"
    );
    assert!(
        !format!("{events:?}").contains(&secret),
        "secret in an Event"
    );
    assert!(
        !bks_json.contains(&secret) && !bot_json.contains(&secret),
        "secret in a status"
    );

    cleanup_objects(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn scheduled_backup_fires_at_the_slot() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bk", &[]).await;
    s3_secret(&e, None).await;
    running_bot(&e, "sched", &op).await;
    schedule(&e, "minutely", "* * * * *", "UTC", "").await;
    let s = wait_schedule(
        &e,
        "minutely",
        "a scheduled backup",
        |s| {
            s.status.as_ref().is_some_and(|st| {
                st.last_schedule_time.is_some() && st.last_result == Some(BackupResult::Succeeded)
            })
        },
        &op,
    )
    .await;
    let st = s.status.unwrap();
    let slot = st.last_schedule_time.clone().unwrap().0;
    assert_eq!(
        slot.as_second() % 60,
        0,
        "slot on a minute boundary: {slot}"
    );
    assert!(st.next_schedule_time.as_ref().unwrap().0 > slot);
    assert!(
        st.recent_backups
            .iter()
            .any(|r| r.bot == "sched" && r.verified),
        "{st:#?}"
    );
    assert!(st.last_on_demand_request.is_none());
    cleanup_objects(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn verification_catches_a_corrupted_object() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bk", &[]).await;
    s3_secret(&e, None).await;
    running_bot(&e, "corrupt", &op).await;
    schedule(&e, "unverified", "0 3 * * *", "UTC", "  verify: false\n").await;
    backup_now(&e, "unverified", "a").await;
    let s = wait_schedule(
        &e,
        "unverified",
        "unverified backup",
        on_demand_done("a"),
        &op,
    )
    .await;
    let rec = s.status.unwrap().recent_backups[0].clone();
    assert!(!rec.verified);
    // Corrupt the stored object, keeping its metadata (sha256 included).
    let s3 = s3_client(&e.cluster).unwrap();
    let bucket = s3_bucket(&e.cluster).unwrap();
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(&rec.key)
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key(&rec.key)
        .set_metadata(head.metadata().cloned())
        .body(aws_sdk_s3::primitives::ByteStream::from(
            b"garbage, not a tar.gz".to_vec(),
        ))
        .send()
        .await
        .unwrap();
    // Verification on: the stored backup is verified on the next run and caught.
    schedules(&e)
        .patch(
            "unverified",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"verify": true}})),
        )
        .await
        .unwrap();
    backup_now(&e, "unverified", "b").await;
    let s = wait_schedule(&e, "unverified", "verified run", on_demand_done("b"), &op).await;
    let st = s.status.unwrap();
    let bad = st
        .recent_backups
        .iter()
        .find(|r| r.key == rec.key)
        .expect("corrupt record kept");
    assert!(!bad.verified);
    let err = bad.verification_error.clone().unwrap_or_default();
    assert!(err.contains("sha256"), "{err}");
    assert!(
        st.recent_backups
            .iter()
            .any(|r| r.key != rec.key && r.verified),
        "{st:#?}"
    );
    let events = event_texts(&e).await;
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "VerificationFailed" && n.contains(&rec.key)),
        "{events:?}"
    );
    cleanup_objects(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn wrong_credentials_fail_with_condition_and_warning_and_delete_nothing() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bk", &[]).await;
    let wrong = "definitely-not-the-secret-key-0123456789";
    s3_secret(&e, Some(wrong)).await;
    running_bot(&e, "denied", &op).await;
    let s3 = s3_client(&e.cluster).unwrap();
    let bucket = s3_bucket(&e.cluster).unwrap();
    let existing = format!(
        "{}/{}/denied/20200101T000000.000Z.tar.gz",
        prefix(&e),
        e.ns.name()
    );
    put_object(&s3, &bucket, &existing, b"old".to_vec())
        .await
        .unwrap();
    schedule(
        &e,
        "denied",
        "0 3 * * *",
        "UTC",
        "  retention: {keepLast: 1, maxAge: 1s}\n",
    )
    .await;
    backup_now(&e, "denied", "x").await;
    let s = wait_schedule(&e, "denied", "failed run", on_demand_done("x"), &op).await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.last_result, Some(BackupResult::Failed), "{st:#?}");
    assert!(st.consecutive_failures >= 1);
    let (status, reason, message) = bks_condition(&s, "LastBackupSucceeded").unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains("InvalidAccessKeyId")
            || message.contains("SignatureDoesNotMatch")
            || message.contains("AccessDenied"),
        "{reason}: {message}"
    );
    let events = event_texts(&e).await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "BackupFailed"),
        "{events:?}"
    );
    assert_eq!(
        bot_backup_condition(&e, "denied").await,
        Some(("False".to_string(), "CredentialsInvalid".to_string()))
    );
    assert_eq!(
        get_object(&s3, &bucket, &existing).await.unwrap(),
        b"old".to_vec()
    );
    assert!(!op.log_text().contains(wrong) && !format!("{events:?}").contains(wrong));
    cleanup_objects(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn invalid_cron_and_zone_are_reported_without_a_hot_loop() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bk", &[]).await;
    s3_secret(&e, None).await;
    schedule(&e, "six-fields", "0 0 3 * * *", "UTC", "").await;
    schedule(&e, "bad-zone", "0 3 * * *", "Mars/Olympus", "").await;
    for (name, needle) in [("six-fields", "5 fields"), ("bad-zone", "IANA")] {
        let s = wait_schedule(
            &e,
            name,
            "InvalidSpec",
            |s| bks_condition(s, "InvalidSpec").is_some_and(|c| c.0 == "True"),
            &op,
        )
        .await;
        let (_, _, message) = bks_condition(&s, "InvalidSpec").unwrap();
        assert!(message.contains(needle), "{name}: {message}");
        assert_eq!(
            bks_condition(&s, "Ready").map(|c| c.0).as_deref(),
            Some("False")
        );
        assert!(s.status.unwrap().next_schedule_time.is_none());
    }
    let events = event_texts(&e).await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "InvalidSpec"),
        "{events:?}"
    );
    // No hot loop: the reconcile count stays put while nothing changes.
    let metric = "iq720_operator_reconciliations_total{controller=\"backupschedule\"}";
    let before = op.metric(metric).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // an observation window, not a wait
    let after = op.metric(metric).await;
    assert!(
        after - before <= 1.0,
        "reconciles went from {before} to {after}"
    );
    teardown(e).await;
}
