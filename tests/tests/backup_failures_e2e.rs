//! End-to-end tests of the BackupSchedule controller's failure, retention and suspend
//! behaviour: real bots, the real apiserver, the operator with the chart's namespaced
//! Role, and real MinIO (a private server for the test that stops MinIO mid-upload, so
//! the cluster's shared MinIO is never stopped).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::Operator;
use common::backups::wait_schedule_newest_first as wait_schedule;
use common::backups::*;
use common::bots::*;
use iq720_crds::BackupSchedule;
use iq720_crds::backup_schedule::BackupResult;
use iq720_tests::{
    PrivateMinio, ThrottledRelay, get_object, list_keys, multipart_uploads, poll_until, put_object,
    repo_root, s3_bucket, s3_client,
};
use serde_json::json;
use support::*;

/// Helpers of this file (kept apart from `common`, which other tests share).
mod support {
    use super::*;

    pub const SECRET: &str = "e2e-s3";

    /// A Secret with S3 credentials.
    pub async fn s3_secret(e: &Env, access: &str, secret: &str) {
        apply_s3_secret(e, SECRET, access, secret).await;
    }

    /// The cluster's MinIO credentials into the Secret.
    pub async fn shared_s3_secret(e: &Env) {
        let (access, secret) = minio_credentials(e);
        s3_secret(e, &access, &secret).await;
    }

    pub fn prefix(e: &Env) -> String {
        format!("backup-failures-e2e/{}", e.ns.name())
    }

    pub fn bot_prefix(e: &Env, bot: &str) -> String {
        format!("{}/{}/{bot}/", prefix(e), e.ns.name())
    }

    /// A BackupSchedule selecting `backup: "yes"` bots.
    pub async fn schedule(
        e: &Env,
        name: &str,
        cron: &str,
        bucket: &str,
        endpoint: &str,
        extra: &str,
    ) {
        let dest = Destination {
            bucket,
            prefix: &prefix(e),
            endpoint,
            secret: SECRET,
        };
        apply_schedule(e, name, cron, Some("UTC"), &dest, extra).await;
    }

    pub async fn shared_schedule(e: &Env, name: &str, cron: &str, extra: &str) {
        apply_cluster_schedule(e, name, cron, Some("UTC"), &prefix(e), SECRET, extra).await;
    }

    /// Grows the bot's database (its own schema) to `bytes` with synthetic closed
    /// trades (`tests/scripts/seed-trades.py`).
    pub async fn seed(e: &Env, bot: &str, bytes: u64) -> u64 {
        let db = bot_db(e, bot).await;
        poll_until(
            "the bot's database exists",
            DEADLINE,
            Duration::from_millis(200),
            || {
                let db = db.clone();
                async move { db.exists().then_some(()) }
            },
        )
        .await
        .unwrap();
        let out = tokio::process::Command::new("python3")
            .arg(repo_root().join("tests/scripts/seed-trades.py"))
            .arg(&db)
            .arg(bytes.to_string())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "seed-trades.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    pub async fn cleanup_objects(e: &Env) {
        delete_prefix(e, &prefix(e)).await;
    }
}

const PART: u64 = 8 * 1024 * 1024;

/// MinIO killed while the parts of a backup are in flight: the attempt fails with a
/// reason (status, condition, Warning Event), nothing is listed as an object, and
/// after MinIO returns the automatic retry (backoff) takes a verified backup.
#[tokio::test]
async fn minio_stopped_mid_upload_counts_nothing_and_the_retry_recovers() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bkf", &[]).await;
    let work = tempfile::tempdir().unwrap();
    let mut minio = PrivateMinio::start(work.path()).await.unwrap();
    let bucket = "private-e2e";
    minio.create_bucket(bucket).await.unwrap();
    // A slow link (2 MiB/s client → MinIO) so the upload takes seconds.
    let relay = ThrottledRelay::start(&minio.address(), 2 * 1024 * 1024)
        .await
        .unwrap();
    s3_secret(&e, &minio.access_key.clone(), &minio.secret_key.clone()).await;
    running_bot(&e, "big", &op).await;
    // ~48 MiB of trades: an archive of several 8 MiB parts.
    let db_size = seed(&e, "big", 48 * 1024 * 1024).await;
    assert!(db_size >= 48 * 1024 * 1024);
    schedule(
        &e,
        "flaky",
        "0 3 * * *",
        bucket,
        &relay.endpoint(),
        "  retention: {keepLast: 1}\n",
    )
    .await;
    let s3 = minio.client();
    let prefix = bot_prefix(&e, "big");

    backup_now(&e, "flaky", "one").await;
    // Mid-upload: more than one part went through the slow link. (MinIO lists
    // multipart uploads only by exact key, so progress is read off the relay.)
    let before = relay.forwarded();
    poll_until(
        "one and a half parts uploaded",
        DEADLINE,
        Duration::from_millis(50),
        || {
            let relay = &relay;
            async move { (relay.forwarded() - before > PART + PART / 2).then_some(()) }
        },
    )
    .await
    .unwrap();
    minio.kill().await.unwrap();
    let killed_at = std::time::Instant::now();

    let s = wait_schedule(&e, "flaky", "the failed run", on_demand_done("one"), &op).await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.last_result, Some(BackupResult::Failed), "{st:#?}");
    assert_eq!(st.consecutive_failures, 1, "{st:#?}");
    assert!(
        st.recent_backups.iter().all(|r| r.bot != "big"),
        "a cut upload was recorded as a backup: {st:#?}"
    );
    let (status, reason, message) = bks_condition(&s, "LastBackupSucceeded").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BackupFailed")
    );
    assert!(
        message.contains("big") && message.contains("S3"),
        "the condition should name the bot and the S3 failure: {message}"
    );
    let events = event_texts(&e).await;
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "BackupFailed" && n.contains("big")),
        "{events:?}"
    );
    assert_eq!(
        bot_backup_condition(&e, "big").await,
        Some(("False".to_string(), "StorageUnavailable".to_string()))
    );
    assert!(
        op.metric("iq720_operator_backups_total{result=\"s3\"}")
            .await
            >= 1.0
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(25),
        "the failed attempt took {:?}: the upload should fail fast when S3 is gone",
        killed_at.elapsed()
    );

    // MinIO returns (same port, same data): the cut upload is no object.
    minio.resume().await.unwrap();
    assert_eq!(
        list_keys(&s3, bucket, &prefix).await.unwrap(),
        Vec::<String>::new(),
        "a partial archive is listed as an object"
    );
    // The retry (30 s backoff, no new annotation) takes a verified backup.
    let s = wait_schedule(
        &e,
        "flaky",
        "the retry after MinIO returned",
        |s| {
            s.status.as_ref().is_some_and(|st| {
                st.last_result == Some(BackupResult::Succeeded) && st.consecutive_failures == 0
            })
        },
        &op,
    )
    .await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.last_on_demand_request.as_deref(), Some("one"));
    assert!(st.last_run_time.is_some());
    let rec = st
        .recent_backups
        .iter()
        .find(|r| r.bot == "big")
        .cloned()
        .unwrap_or_else(|| panic!("no backup recorded: {st:#?}"));
    assert!(rec.verified, "{rec:?}");
    assert!(rec.size_bytes as u64 > PART, "{rec:?}");
    assert_eq!(
        list_keys(&s3, bucket, &prefix).await.unwrap(),
        vec![rec.key.clone()]
    );
    let body = get_object(&s3, bucket, &rec.key).await.unwrap();
    assert_eq!(body.len() as i64, rec.size_bytes);
    assert_eq!(
        bks_condition(&s, "LastBackupSucceeded")
            .map(|c| c.0)
            .as_deref(),
        Some("True")
    );
    // The cut attempt's key (from the operator's log line about its abort): it never
    // became an object. Its abort ran while MinIO was down, so its incomplete upload
    // may stay listed until a bucket lifecycle rule (AWS) or MinIO's stale-upload
    // expiry reclaims it; it is never listed as an object or counted as a backup.
    let log = op.log_text();
    let cut: Vec<String> = log
        .lines()
        .filter(|l| l.contains("multipart upload"))
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["key"].as_str().map(str::to_string)
        })
        .collect();
    assert!(!cut.is_empty(), "no abort logged for the cut upload");
    for key in &cut {
        assert_ne!(key, &rec.key);
        assert!(
            get_object(&s3, bucket, key).await.is_err(),
            "{key} is an object"
        );
        let left = multipart_uploads(&s3, bucket, key).await.unwrap();
        eprintln!("cut upload {key}: incomplete uploads still listed: {left:?}");
    }
    assert!(
        multipart_uploads(&s3, bucket, &rec.key)
            .await
            .unwrap()
            .is_empty(),
        "the successful upload is still listed as incomplete"
    );
    drop(relay);
    minio.kill().await.unwrap();
    teardown(e).await;
}

/// Retention with maxAge and keepLast 1: an unverified backup older than maxAge is
/// pruned after a new good backup, a younger one beyond keepLast stays, the newest
/// verified backup stays although it is older than maxAge, and an object under the
/// prefix that the operator did not write is untouched.
#[tokio::test]
async fn retention_max_age_prunes_old_keeps_newest_verified_and_foreign() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bkf", &[]).await;
    shared_s3_secret(&e).await;
    running_bot(&e, "aged", &op).await;
    shared_schedule(
        &e,
        "aging",
        "0 3 * * *",
        "  retention: {keepLast: 1, maxAge: 20s}\n",
    )
    .await;
    let s3 = s3_client(&e.cluster).unwrap();
    let bucket = s3_bucket(&e.cluster).unwrap();
    let prefix = bot_prefix(&e, "aged");
    let foreign = format!("{prefix}20000101T000000.000Z.tar.gz");
    put_object(&s3, &bucket, &foreign, b"someone else's".to_vec())
        .await
        .unwrap();

    let newest = |value: &'static str| {
        move |s: &BackupSchedule| {
            on_demand_done(value)(s)
                && s.status.as_ref().unwrap().last_result == Some(BackupResult::Succeeded)
        }
    };
    // v1: verified.
    backup_now(&e, "aging", "v1").await;
    let s = wait_schedule(&e, "aging", "v1", newest("v1"), &op).await;
    let v1 = s.status.unwrap().recent_backups[0].clone();
    assert!(v1.verified);
    // u2: verification off, so u2 and later are good but unverified.
    patch_schedule(&e, "aging", json!({"spec": {"verify": false}})).await;
    backup_now(&e, "aging", "u2").await;
    let s = wait_schedule(&e, "aging", "u2", newest("u2"), &op).await;
    let st = s.status.unwrap();
    // v1 is younger than maxAge: kept beyond keepLast 1.
    assert_eq!(st.recent_backups.len(), 2, "{st:#?}");
    let u2 = st.recent_backups[0].clone();
    assert!(!u2.verified);
    // Let u2 (and v1) age past maxAge: the clock is what this feature is about.
    let aged_at = u2.completed_at.0.as_second() + 21;
    poll_until(
        "u2 older than maxAge",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async move { (unix_now() > aged_at).then_some(()) },
    )
    .await
    .unwrap();
    backup_now(&e, "aging", "u3").await;
    let s = wait_schedule(&e, "aging", "u3", newest("u3"), &op).await;
    let st = s.status.unwrap();
    let u3 = st.recent_backups[0].clone();
    // u3 (newest) and v1 (newest verified, although old) stay; u2 (old) is pruned.
    let mut keys: Vec<_> = st.recent_backups.iter().map(|r| r.key.clone()).collect();
    keys.sort();
    let mut want = vec![v1.key.clone(), u3.key.clone()];
    want.sort();
    assert_eq!(keys, want, "{st:#?}");
    // u4 right after: u3 is beyond keepLast but younger than maxAge, so it stays.
    backup_now(&e, "aging", "u4").await;
    let s = wait_schedule(&e, "aging", "u4", newest("u4"), &op).await;
    let st = s.status.unwrap();
    let u4 = st.recent_backups[0].clone();
    let mut keys: Vec<_> = st.recent_backups.iter().map(|r| r.key.clone()).collect();
    keys.sort();
    let mut want = vec![v1.key.clone(), u3.key.clone(), u4.key.clone()];
    want.sort();
    assert_eq!(keys, want, "{st:#?}");
    // S3 holds exactly those, plus the foreign object, untouched.
    let mut stored = list_keys(&s3, &bucket, &prefix).await.unwrap();
    stored.sort();
    let mut want_stored = want.clone();
    want_stored.push(foreign.clone());
    want_stored.sort();
    assert_eq!(stored, want_stored);
    assert_eq!(
        get_object(&s3, &bucket, &foreign).await.unwrap(),
        b"someone else's".to_vec()
    );
    let events = event_texts(&e).await;
    let pruned: Vec<_> = events
        .iter()
        .filter(|(_, r, _)| r == "Pruned")
        .map(|(_, _, n)| n.clone())
        .collect();
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert!(pruned[0].contains(&u2.key), "{pruned:?}");
    cleanup_objects(&e).await;
    teardown(e).await;
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A suspended every-minute schedule takes no scheduled backup across a minute
/// boundary (no next schedule time, Ready says Suspended), while the backup-now
/// annotation still takes one (the CRD documents "on-demand backups still run").
/// Resuming runs the slot missed while suspended at once (one folded run, like a
/// CronJob without a starting deadline).
#[tokio::test]
async fn suspended_schedule_skips_slots_but_takes_on_demand_backups() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-bkf", &[]).await;
    shared_s3_secret(&e).await;
    running_bot(&e, "idle", &op).await;
    shared_schedule(&e, "paused", "* * * * *", "  suspend: true\n").await;
    let s = wait_schedule(
        &e,
        "paused",
        "Ready=Suspended",
        |s| bks_condition(s, "Ready").is_some_and(|c| c.1 == "Suspended"),
        &op,
    )
    .await;
    assert!(s.status.as_ref().unwrap().next_schedule_time.is_none());
    let created = s.metadata.creation_timestamp.clone().unwrap().0.as_second();

    // On demand while suspended: taken.
    backup_now(&e, "paused", "manual").await;
    let s = wait_schedule(&e, "paused", "on-demand", on_demand_done("manual"), &op).await;
    let st = s.status.unwrap();
    assert_eq!(st.last_result, Some(BackupResult::Succeeded), "{st:#?}");
    assert_eq!(st.recent_backups.len(), 1);
    let manual = st.recent_backups[0].key.clone();

    // Across the next minute boundary (+5 s): no scheduled run.
    let boundary = (created / 60 + 1) * 60;
    let slot_passed = boundary.max(unix_now() / 60 * 60) + 5;
    let reconciles = "iq720_operator_reconciliations_total{controller=\"backupschedule\"}";
    let count_before = op.metric(reconciles).await;
    poll_until(
        "a minute slot passed",
        Duration::from_secs(70),
        Duration::from_millis(250),
        || async move { (unix_now() >= slot_passed).then_some(()) },
    )
    .await
    .unwrap();
    let s = schedules(&e).get("paused").await.unwrap();
    let st = s.status.clone().unwrap();
    assert!(st.last_schedule_time.is_none(), "{st:#?}");
    assert!(st.next_schedule_time.is_none(), "{st:#?}");
    assert_eq!(st.recent_backups.len(), 1, "{st:#?}");
    let s3 = s3_client(&e.cluster).unwrap();
    let bucket = s3_bucket(&e.cluster).unwrap();
    let prefix = bot_prefix(&e, "idle");
    assert_eq!(
        list_keys(&s3, &bucket, &prefix).await.unwrap(),
        vec![manual.clone()]
    );
    // A suspended schedule is not requeued at its slots: a few reconciles at most
    // (bot status changes wake it), not one per second.
    let count_after = op.metric(reconciles).await;
    assert!(
        count_after - count_before <= 10.0,
        "{count_before} -> {count_after} reconciles while suspended"
    );

    // Resume: the slot missed while suspended runs at once.
    patch_schedule(&e, "paused", json!({"spec": {"suspend": false}})).await;
    let s = wait_schedule(
        &e,
        "paused",
        "the folded run after resuming",
        |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.last_schedule_time.is_some() && st.recent_backups.len() >= 2)
        },
        &op,
    )
    .await;
    let st = s.status.unwrap();
    let slot = st.last_schedule_time.unwrap().0.as_second();
    assert_eq!(slot % 60, 0);
    assert!(slot >= boundary && slot <= unix_now(), "{slot}");
    assert!(st.next_schedule_time.is_some());
    assert_eq!(
        bks_condition(&schedules(&e).get("paused").await.unwrap(), "Ready")
            .map(|c| c.1)
            .as_deref(),
        Some("Scheduled")
    );
    cleanup_objects(&e).await;
    teardown(e).await;
}
