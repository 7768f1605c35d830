//! Restore drills: the newest verified backup of a bot is restored into a throwaway
//! pod running the bot image (`iq720-bot restore-drill`: download, sha256 against the
//! recorded one and the object metadata, the bot's archive verification, the real
//! restore into scratch space, `PRAGMA integrity_check`, row counts of every table);
//! the result, row counts and duration go into `status.drills`, an Event and the
//! `iq720_operator_restore_drills_total` metric; the pod is deleted afterwards.
//!
//! Why a pod and not the operator: the drill runs the very binary and code path a
//! disaster recovery runs (the bot's restore init container), with the bot's image
//! version, so a successful drill says "this backup restores with this bot". The
//! operator only creates the pod (credentials by `secretKeyRef`, never in arguments),
//! waits for it with a watch and reads its last log line (one JSON report).
//!
//! When: after every Nth verified backup of a bot (`spec.restoreDrill.everyNthBackup`,
//! counted in `status.drills[].backupsSinceDrill`), and once per distinct value of the
//! `trading.iq720.io/drill-now` annotation for every selected bot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iq720_crds::backup_schedule::{
    BackupRecord, BackupScheduleStatus, BotDrillStatus, DrillRecord, DrillResult,
};
use iq720_crds::{BackupSchedule, TradingBot};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod, PodSecurityContext,
    PodSpec, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, LogParams, ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::wait::await_condition;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::shared::conditions::set_condition;
use crate::shared::context::Context;

/// Label on drill pods (value: the BackupSchedule's name).
pub const DRILL_LABEL: &str = "trading.iq720.io/restore-drill";
/// Label on drill pods naming the bot drilled.
pub use iq720_crds::trading_bot::BOT_LABEL;
/// Condition type of the last drill's outcome.
pub const LAST_DRILL_SUCCEEDED: &str = "LastDrillSucceeded";
/// Name of the drill pod's container.
pub const CONTAINER: &str = "drill";
/// Scratch directory in the drill pod.
const WORK_DIR: &str = "/work";
/// Deadline when `spec.restoreDrill.timeout` is unset or unreadable.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Records new verified backups (in `st` but not verified in `old`) per bot.
pub fn count_new_backups(old: &[BackupRecord], st: &mut BackupScheduleStatus) {
    let new: Vec<String> = st
        .recent_backups
        .iter()
        .filter(|r| r.verified)
        .filter(|r| !old.iter().any(|o| o.key == r.key && o.verified))
        .map(|r| r.bot.clone())
        .collect();
    for bot in new {
        match st.drills.iter_mut().find(|d| d.bot == bot) {
            Some(d) => d.backups_since_drill = d.backups_since_drill.saturating_add(1),
            None => st.drills.push(BotDrillStatus {
                bot,
                backups_since_drill: 1,
                last_drill: None,
            }),
        }
    }
    st.drills.sort_by(|a, b| a.bot.cmp(&b.bot));
}

/// Bots whose drill is due after every `nth` backup.
pub fn due(st: &BackupScheduleStatus, nth: i32) -> Vec<String> {
    st.drills
        .iter()
        .filter(|d| d.backups_since_drill >= nth.max(1))
        .map(|d| d.bot.clone())
        .collect()
}

/// The newest verified backup of `bot`.
pub fn newest_verified<'a>(records: &'a [BackupRecord], bot: &str) -> Option<&'a BackupRecord> {
    records
        .iter()
        .filter(|r| r.bot == bot && r.verified)
        .max_by(|a, b| {
            a.completed_at
                .0
                .cmp(&b.completed_at.0)
                .then(a.key.cmp(&b.key))
        })
}

/// The drill pod (pure): the bot image running `restore-drill` on an emptyDir, S3
/// credentials by reference, owned by the schedule (garbage-collected with it).
pub fn build_pod(bks: &BackupSchedule, bot: &TradingBot, record: &BackupRecord) -> Pod {
    let loc = &bks.spec.destination;
    let mut args = vec![
        "restore-drill".to_string(),
        "--work-dir".to_string(),
        WORK_DIR.to_string(),
        "--s3-bucket".to_string(),
        loc.bucket.clone(),
        "--s3-key".to_string(),
        record.key.clone(),
        "--s3-region".to_string(),
        loc.region.clone(),
        "--s3-sha256".to_string(),
        record.sha256.clone(),
    ];
    if let Some(endpoint) = &loc.endpoint {
        args.extend(["--s3-endpoint".to_string(), endpoint.clone()]);
    }
    if loc.force_path_style {
        args.push("--s3-path-style".to_string());
    }
    let refs = &loc.credentials_secret_ref;
    let secret_env = |name: &str, key: &str| EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: refs.name.clone(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let schedule = bks.name_any();
    let bot_name = bot.name_any();
    // generateName: the schedule's name, cut so the generated name stays a label.
    let base: String = format!("{schedule}-drill-").chars().take(50).collect();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(base),
            namespace: bks.namespace(),
            labels: Some(BTreeMap::from([
                (DRILL_LABEL.to_string(), schedule.chars().take(63).collect()),
                (BOT_LABEL.to_string(), bot_name.chars().take(63).collect()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "iq720-operator".to_string(),
                ),
            ])),
            owner_references: bks.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_string()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            containers: vec![Container {
                name: CONTAINER.to_string(),
                image: Some(format!(
                    "{}:{}",
                    bot.spec.image.repository, bot.spec.version
                )),
                image_pull_policy: Some(format!("{:?}", bot.spec.image.pull_policy)),
                args: Some(args),
                env: Some(vec![
                    secret_env("AWS_ACCESS_KEY_ID", &refs.access_key_id_key),
                    secret_env("AWS_SECRET_ACCESS_KEY", &refs.secret_access_key_key),
                ]),
                volume_mounts: Some(vec![VolumeMount {
                    name: "work".to_string(),
                    mount_path: WORK_DIR.to_string(),
                    ..VolumeMount::default()
                }]),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".to_string()]),
                        ..Capabilities::default()
                    }),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            volumes: Some(vec![Volume {
                name: "work".to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }]),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn finished(p: Option<&Pod>) -> bool {
    p.and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
}

/// Runs one drill pod to its end; the record of what it found.
async fn drill_one(
    ctx: &Context,
    bks: &BackupSchedule,
    bot: &TradingBot,
    record: &BackupRecord,
    timeout: Duration,
) -> DrillRecord {
    let started_at = now();
    let ns = bks.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let fail = |message: String| DrillRecord {
        key: record.key.clone(),
        result: DrillResult::Failed,
        message,
        row_counts: BTreeMap::new(),
        duration_ms: None,
        started_at: started_at.clone(),
        completed_at: now(),
    };
    let pod = match pods
        .create(&PostParams::default(), &build_pod(bks, bot, record))
        .await
    {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot create the drill pod: {e}")),
    };
    let name = pod.name_any();
    info!(pod = %name, key = %record.key, "restore drill started");
    let waited =
        tokio::time::timeout(timeout, await_condition(pods.clone(), &name, finished)).await;
    let result = match waited {
        Err(_) => fail(format!(
            "the drill pod {name} did not finish within {}s",
            timeout.as_secs()
        )),
        Ok(Err(e)) => fail(format!("cannot watch the drill pod {name}: {e}")),
        Ok(Ok(_)) => {
            let params = LogParams {
                container: Some(CONTAINER.to_string()),
                tail_lines: Some(50),
                ..LogParams::default()
            };
            match pods.logs(&name, &params).await {
                Err(e) => fail(format!("cannot read the drill pod's log: {e}")),
                Ok(log) => match report_in_log(&log) {
                    None => fail(
                        log.lines()
                            .rev()
                            .find(|l| l.starts_with("error:"))
                            .unwrap_or("the drill pod ended without a report")
                            .to_string(),
                    ),
                    Some(rep) => {
                        let ok = rep.result == "succeeded";
                        DrillRecord {
                            key: record.key.clone(),
                            result: if ok {
                                DrillResult::Succeeded
                            } else {
                                DrillResult::Failed
                            },
                            message: if ok {
                                format!(
                                    "restored {} bytes; integrity ok; {} tables",
                                    rep.size_bytes.unwrap_or_default(),
                                    rep.row_counts.len()
                                )
                            } else {
                                rep.error.unwrap_or_else(|| "the drill failed".into())
                            },
                            row_counts: rep.row_counts,
                            duration_ms: i64::try_from(rep.duration_ms).ok(),
                            started_at: started_at.clone(),
                            completed_at: now(),
                        }
                    }
                },
            }
        }
    };
    if let Err(e) = pods
        .delete(
            &name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
    {
        warn!(pod = %name, error = %e, "cannot delete the drill pod (its owner reference removes it with the schedule)");
    }
    result
}

/// The drill report in a log: the last JSON line with a `result`.
pub fn report_in_log(log: &str) -> Option<iq720_bot::restore_s3::DrillReport> {
    log.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<iq720_bot::restore_s3::DrillReport>(l).ok())
}

/// Drills each bot in `names` (one at a time: a drill is a download and a restore,
/// not worth running many at once) and records the outcomes in `st`.
pub async fn run(
    ctx: &Context,
    bks: &BackupSchedule,
    st: &mut BackupScheduleStatus,
    names: &[String],
    bots: &[TradingBot],
) {
    let timeout = bks
        .spec
        .restore_drill
        .as_ref()
        .and_then(|d| super::validate::parse_duration(&d.timeout))
        .unwrap_or(DEFAULT_TIMEOUT);
    for name in names {
        let Some(bot) = bots.iter().find(|b| b.name_any() == *name) else {
            continue;
        };
        let Some(record) = newest_verified(&st.recent_backups, name).cloned() else {
            continue;
        };
        let started = Instant::now();
        let rec = drill_one(ctx, bks, bot, &record, timeout).await;
        let ok = rec.result == DrillResult::Succeeded;
        let label = if ok { "succeeded" } else { "failed" };
        ctx.metrics.restore_drills.with_label_values(&[label]).inc();
        ctx.metrics
            .restore_drill_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        let counts = rec
            .row_counts
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let note = if ok {
            format!(
                "bot {name}: {} restored in a throwaway pod in {} ms; rows: {counts}",
                rec.key,
                rec.duration_ms.unwrap_or_default()
            )
        } else {
            format!("bot {name}: drill of {} failed: {}", rec.key, rec.message)
        };
        ctx.event(
            bks,
            if ok {
                EventType::Normal
            } else {
                EventType::Warning
            },
            if ok { "DrillSucceeded" } else { "DrillFailed" },
            "RestoreDrill",
            note.clone(),
        )
        .await;
        set_condition(
            &mut st.conditions,
            LAST_DRILL_SUCCEEDED,
            ok,
            if ok { "DrillSucceeded" } else { "DrillFailed" },
            &note,
            bks.metadata.generation,
        );
        match st.drills.iter_mut().find(|d| d.bot == *name) {
            Some(d) => {
                d.backups_since_drill = 0;
                d.last_drill = Some(rec);
            }
            None => st.drills.push(BotDrillStatus {
                bot: name.clone(),
                backups_since_drill: 0,
                last_drill: Some(rec),
            }),
        }
    }
    // Bots no longer selected and without records lose their drill entry.
    st.drills.retain(|d| {
        bots.iter().any(|b| b.name_any() == d.bot)
            || st.recent_backups.iter().any(|r| r.bot == d.bot)
    });
    st.drills.sort_by(|a, b| a.bot.cmp(&b.bot));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rec(bot: &str, key: &str, at: i64, verified: bool) -> BackupRecord {
        BackupRecord {
            bot: bot.into(),
            key: key.into(),
            size_bytes: 1,
            sha256: "ab".into(),
            verified,
            verification_error: None,
            completed_at: Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap()),
        }
    }

    #[test]
    fn every_nth_verified_backup_makes_a_drill_due() {
        let old = vec![rec("a", "a/1", 1, true)];
        let mut st = BackupScheduleStatus {
            recent_backups: vec![
                rec("a", "a/2", 2, true),
                rec("b", "b/2", 2, false),
                rec("a", "a/1", 1, true),
            ],
            ..BackupScheduleStatus::default()
        };
        count_new_backups(&old, &mut st);
        assert_eq!(st.drills.len(), 1);
        assert_eq!(st.drills[0].backups_since_drill, 1);
        assert_eq!(due(&st, 1), ["a"]);
        assert!(due(&st, 2).is_empty());
        // the same records again: nothing new is counted
        let again = st.recent_backups.clone();
        count_new_backups(&again, &mut st);
        assert_eq!(st.drills[0].backups_since_drill, 1);
    }

    #[test]
    fn the_drill_pod_gets_credentials_by_reference_and_is_owned() {
        let bks: BackupSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "nightly", "namespace": "ns", "uid": "u1"},
            "spec": {"schedule": "0 3 * * *", "destination": {
                "bucket": "b", "endpoint": "http://minio:9000", "forcePathStyle": true,
                "credentialsSecretRef": {"name": "creds"}}}
        }))
        .unwrap();
        let bot: TradingBot = serde_json::from_value(serde_json::json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": "alpha", "namespace": "ns"},
            "spec": {"version": "0.1.0", "pairs": ["BTC/USDT"]}
        }))
        .unwrap();
        let pod = build_pod(&bks, &bot, &rec("alpha", "p/ns/alpha/1.tar.gz", 1, true));
        assert_eq!(pod.metadata.owner_references.unwrap()[0].uid, "u1");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let c = &spec.containers[0];
        assert!(c.image.as_deref().unwrap().ends_with(":0.1.0"));
        let args = c.args.clone().unwrap();
        assert_eq!(args[0], "restore-drill");
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--s3-sha256" && w[1] == "ab")
        );
        for e in c.env.as_ref().unwrap() {
            assert!(e.value.is_none());
            assert_eq!(
                e.value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap()
                    .name,
                "creds"
            );
        }
    }
}
