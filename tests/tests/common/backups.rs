//! Helpers shared by the e2e tests that back bots up to the cluster's MinIO
//! (`backup_e2e`, `backup_failures_e2e`, `restore_e2e`) or archive to it
//! (`maintenance_e2e`).
//!
//! Why one module: each of those files had grown its own copy of the same
//! BackupSchedule plumbing (the S3 credentials Secret, the schedule YAML, the
//! `backup-now` annotation, waiting on a schedule's status with the operator log in
//! the panic). One copy keeps the waits, deadlines and diagnostics the same in all of
//! them. What is specific to one file (its object prefix, its schedule defaults) stays
//! there and is passed in.

use iq720_crds::BackupSchedule;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, list_keys, s3_client};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use super::Operator;
use super::bots::{DEADLINE, Env, bot_yaml, bots, phase, wait_bot};

/// The annotation that asks for an on-demand backup.
pub const BACKUP_NOW: &str = "trading.iq720.io/backup-now";

/// The BackupSchedules of the test's namespace.
pub fn schedules(e: &Env) -> Api<BackupSchedule> {
    Api::namespaced(e.cluster.client.clone(), e.ns.name())
}

/// The cluster MinIO's (access key, secret key).
pub fn minio_credentials(e: &Env) -> (String, String) {
    let access = e
        .cluster
        .env
        .var("IQ720_S3_ACCESS_KEY")
        .unwrap()
        .to_string();
    let secret = e
        .cluster
        .env
        .var("IQ720_S3_SECRET_KEY")
        .unwrap()
        .to_string();
    (access, secret)
}

/// Applies a Secret `name` with S3 credentials in the test's namespace.
pub async fn apply_s3_secret(e: &Env, name: &str, access: &str, secret: &str) {
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n  AWS_ACCESS_KEY_ID: \"{access}\"\n  AWS_SECRET_ACCESS_KEY: \"{secret}\"\n"
        ),
    )
    .await
    .unwrap();
}

/// Where a schedule writes: bucket, prefix, endpoint and credentials Secret.
pub struct Destination<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub endpoint: &'a str,
    pub secret: &'a str,
}

/// Applies a BackupSchedule `name` selecting `backup: "yes"` bots (`time_zone` None:
/// no `timeZone` field); `extra` is appended to its spec.
pub async fn apply_schedule(
    e: &Env,
    name: &str,
    cron: &str,
    time_zone: Option<&str>,
    dest: &Destination<'_>,
    extra: &str,
) {
    let zone = time_zone
        .map(|z| format!("  timeZone: \"{z}\"\n"))
        .unwrap_or_default();
    let Destination {
        bucket,
        prefix,
        endpoint,
        secret,
    } = dest;
    let yaml = format!(
        "apiVersion: trading.iq720.io/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: {name}}}\nspec:\n  schedule: \"{cron}\"\n{zone}  botSelector: {{matchLabels: {{backup: \"yes\"}}}}\n  destination:\n    bucket: {bucket}\n    prefix: {prefix}\n    endpoint: {endpoint}\n    forcePathStyle: true\n    credentialsSecretRef: {{name: {secret}}}\n{extra}",
    );
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &yaml)
        .await
        .unwrap();
}

/// [`apply_schedule`] writing to the cluster MinIO's bucket (`IQ720_S3_ENDPOINT`)
/// under `prefix`, with credentials from Secret `secret`.
pub async fn apply_cluster_schedule(
    e: &Env,
    name: &str,
    cron: &str,
    time_zone: Option<&str>,
    prefix: &str,
    secret: &str,
    extra: &str,
) {
    let bucket = iq720_tests::s3_bucket(&e.cluster).unwrap();
    let endpoint = e.cluster.env.var("IQ720_S3_ENDPOINT").unwrap().to_string();
    let dest = Destination {
        bucket: &bucket,
        prefix,
        endpoint: &endpoint,
        secret,
    };
    apply_schedule(e, name, cron, time_zone, &dest, extra).await;
}

/// Merge-patches a BackupSchedule.
pub async fn patch_schedule(e: &Env, name: &str, patch: serde_json::Value) {
    schedules(e)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// Sets annotation `key` of a BackupSchedule to `value`.
pub async fn annotate(e: &Env, name: &str, key: &str, value: &str) {
    patch_schedule(e, name, json!({"metadata": {"annotations": {key: value}}})).await;
}

/// Asks for an on-demand backup (`backup-now` = `value`).
pub async fn backup_now(e: &Env, name: &str, value: &str) {
    annotate(e, name, BACKUP_NOW, value).await;
}

/// The last 40 lines of the operator's log, oldest first.
pub fn tail(op: &Operator) -> String {
    let text = op.log_text();
    let mut lines: Vec<&str> = text.lines().rev().take(40).collect();
    lines.reverse();
    lines.join("\n")
}

/// The last 40 lines of the operator's log, newest first.
pub fn tail_newest_first(op: &Operator) -> String {
    op.log_text()
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (up to `DEADLINE`) until the schedule satisfies `pred`; panics with `what`,
/// its status and the operator's log tail (oldest first) otherwise.
pub async fn wait_schedule(
    e: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&BackupSchedule) -> bool + Send + 'static,
    op: &Operator,
) -> BackupSchedule {
    wait_schedule_with(e, name, what, pred, op, tail).await
}

/// [`wait_schedule`] with the operator's log tail newest first in the panic.
pub async fn wait_schedule_newest_first(
    e: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&BackupSchedule) -> bool + Send + 'static,
    op: &Operator,
) -> BackupSchedule {
    wait_schedule_with(e, name, what, pred, op, tail_newest_first).await
}

async fn wait_schedule_with(
    e: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&BackupSchedule) -> bool + Send + 'static,
    op: &Operator,
    log_tail: fn(&Operator) -> String,
) -> BackupSchedule {
    match iq720_tests::wait_for_condition(
        &schedules(e),
        name,
        move |s: Option<&BackupSchedule>| s.is_some_and(&pred),
        DEADLINE,
    )
    .await
    {
        Ok(s) => s,
        Err(err) => {
            let now = schedules(e).get_opt(name).await.ok().flatten();
            panic!(
                "{what}: {err}\nstatus: {:#?}\noperator log tail:\n{}",
                now.and_then(|s| s.status),
                log_tail(op)
            );
        }
    }
}

/// True once the on-demand request `value` has been handled (a result recorded).
pub fn on_demand_done(value: &'static str) -> impl Fn(&BackupSchedule) -> bool + Send + 'static {
    move |s| {
        s.status.as_ref().is_some_and(|st| {
            st.last_on_demand_request.as_deref() == Some(value) && st.last_result.is_some()
        })
    }
}

/// The schedule's condition `type_` as (status, reason, message).
pub fn bks_condition(s: &BackupSchedule, type_: &str) -> Option<(String, String, String)> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Every Event (type, reason, note) in the namespace.
pub async fn event_texts(e: &Env) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|ev| {
            (
                ev.type_.unwrap_or_default(),
                ev.reason.unwrap_or_default(),
                ev.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// The bot's `LastBackupSucceeded` condition as (status, reason).
pub async fn bot_backup_condition(e: &Env, bot: &str) -> Option<(String, String)> {
    let b = bots(e).get(bot).await.unwrap();
    b.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "LastBackupSucceeded")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The bot's YAML (`bot_yaml`) labelled `backup: "yes"`.
pub fn labelled(name: &str, extra: &str) -> String {
    bot_yaml(name, extra).replace(
        &format!("metadata: {{name: {name}}}"),
        &format!("metadata: {{name: {name}, labels: {{backup: \"yes\"}}}}"),
    )
}

/// A Running bot labelled for backups.
pub async fn running_bot(e: &Env, name: &str, op: &Operator) {
    apply_yaml(&e.cluster.client, Some(e.ns.name()), &labelled(name, ""))
        .await
        .unwrap();
    wait_bot(
        e,
        name,
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        op,
    )
    .await;
}

/// Deletes every object under `prefix` (a `/` is appended) in the cluster's bucket.
pub async fn delete_prefix(e: &Env, prefix: &str) {
    let s3 = s3_client(&e.cluster).unwrap();
    let bucket = iq720_tests::s3_bucket(&e.cluster).unwrap();
    for k in list_keys(&s3, &bucket, &format!("{prefix}/"))
        .await
        .unwrap()
    {
        let _ = iq720_tests::delete_object(&s3, &bucket, &k).await;
    }
}

/// The SHA-256 of `bytes` (hex), computed by `sha256sum`.
pub fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obj");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
