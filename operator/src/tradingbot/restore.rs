//! Bootstrap restore (`spec.restore`): which backup a bot's pod restores, pinned once,
//! and what the pod's restore step did with it.
//!
//! Why it works like this:
//! - The restore runs in the pod, as an init container with the bot image
//!   ([`build::stateful_set::add_restore`]), on the pod's own data volume: the
//!   operator never mounts volumes and never holds a database. The init container
//!   restores only into an EMPTY volume; a volume holding a database is left untouched
//!   and the step succeeds, saying so. So the init container can stay in the pod
//!   template for the bot's life: every later pod start skips it in milliseconds.
//! - The key is resolved once (`spec.restore.key`, else this bot's newest VERIFIED
//!   backup in the BackupSchedule's status) and pinned in `status.restore.key` (and,
//!   through the template, in the StatefulSet). A later backup therefore never changes
//!   the pod template (no roll) or what a re-created pod restores. Changing
//!   `spec.restore` (another schedule or key) re-pins.
//! - No verified backup yet (or no BackupSchedule): a bot whose data volume does not
//!   exist yet gets its StatefulSet with zero replicas (no pod, so no empty database
//!   that would then block the restore), condition `Restored` False with the reason,
//!   and starts once a backup is verified (the regular requeue re-resolves). A bot
//!   with a volume is never scaled down for this: it runs on its volume without the
//!   restore step.
//! - What happened is read from the init container's last log line (a JSON report the
//!   bot prints) once it has terminated: `status.restore.result` `Restored` or
//!   `SkippedNotEmpty`, condition `Restored`, an Event. Credentials are never read
//!   here; the pod gets them from the Secret by reference.

use iq720_crds::backup_schedule::BackupRecord;
use iq720_crds::trading_bot::RestoreStatus;
use iq720_crds::{BackupSchedule, TradingBot, TradingBotStatus};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, LogParams};
use kube::runtime::events::EventType;
use tracing::{debug, warn};

use super::build::labels::workload_name;
use super::build::stateful_set::{self, DATA_VOLUME, RESTORE_CONTAINER, RestoreSource};
use crate::shared::cache::lookup_unpacked;
use crate::shared::conditions::{self, set_condition};
use crate::shared::context::Context;

/// Condition type of the bootstrap restore.
pub const RESTORED: &str = "Restored";
/// `status.restore.result` when the backup was restored.
pub const RESULT_RESTORED: &str = "Restored";
/// `status.restore.result` when the volume already held a database.
pub const RESULT_SKIPPED: &str = "SkippedNotEmpty";

/// What the restore step asks of the StatefulSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// No `spec.restore`, or nothing to add (a running bot without a resolvable
    /// backup keeps running as it is).
    Nothing,
    /// Render the restore init container for this backup.
    Restore(Box<RestoreSource>),
    /// Create the StatefulSet with zero replicas until a backup can be resolved.
    Wait,
}

impl Plan {
    /// Applies the plan to the built StatefulSet.
    pub fn apply(&self, sts: &mut StatefulSet) {
        match self {
            Plan::Nothing => {}
            Plan::Restore(source) => stateful_set::add_restore(sts, source.as_ref()),
            Plan::Wait => {
                if let Some(spec) = sts.spec.as_mut() {
                    spec.replicas = Some(0);
                }
            }
        }
    }
}

/// The newest verified backup of `bot` in a schedule's status (records are kept
/// newest first, but sort anyway).
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

/// The `--s3-key` of an existing StatefulSet's restore init container.
pub fn pinned_in(sts: &StatefulSet) -> Option<String> {
    let init = sts
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == RESTORE_CONTAINER)?;
    let args = init.args.as_ref()?;
    let i = args.iter().position(|a| a == "--s3-key")?;
    args.get(i + 1).cloned()
}

/// The restore report in a container log: the last line that is a JSON object with
/// a `result`.
pub fn report_in_log(log: &str) -> Option<iq720_bot::restore_s3::RestoreReport> {
    log.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<iq720_bot::restore_s3::RestoreReport>(l).ok())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn existing_sts(ctx: &Context, ns: &str, name: &str) -> Option<StatefulSet> {
    let sts_name = workload_name(name);
    match ctx.cache.stores() {
        Some(stores) => lookup_unpacked(&stores.statefulsets, ns, &sts_name),
        None => Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
            .get_opt(&sts_name)
            .await
            .ok()
            .flatten(),
    }
}

/// Sets the `Restored` condition; an Event when it changes.
async fn report(
    ctx: &Context,
    bot: &TradingBot,
    st: &mut TradingBotStatus,
    status: bool,
    reason: &str,
    message: &str,
) {
    let changed = conditions::find(&st.conditions, RESTORED)
        .is_none_or(|c| c.reason != reason || c.message != message);
    set_condition(
        &mut st.conditions,
        RESTORED,
        status,
        reason,
        message,
        bot.metadata.generation,
    );
    if changed {
        let type_ = if status || reason == RESULT_SKIPPED || reason == "Pending" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.event(bot, type_, reason, "Restore", message.to_string())
            .await;
    }
}

/// The restore step: resolves and pins the backup, reports what the pod did with it,
/// and says what the StatefulSet needs. Never fails the reconcile: problems become
/// the `Restored` condition.
pub async fn step(ctx: &Context, bot: &TradingBot, st: &mut TradingBotStatus) -> Plan {
    let Some(spec) = &bot.spec.restore else {
        return Plan::Nothing;
    };
    let ns = bot.namespace().unwrap_or_default();
    let name = bot.name_any();
    let schedule_name = &spec.backup_schedule_ref.name;
    let existing = existing_sts(ctx, &ns, &name).await;
    let schedules: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let schedule = match schedules.get_opt(schedule_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let message = format!("BackupSchedule {schedule_name} not found");
            return wait_or_run(
                ctx,
                bot,
                st,
                (&ns, &name),
                "BackupScheduleNotFound",
                &message,
            )
            .await;
        }
        Err(e) => {
            let message = format!("cannot read BackupSchedule {schedule_name}: {e}");
            return wait_or_run(
                ctx,
                bot,
                st,
                (&ns, &name),
                "BackupScheduleUnreadable",
                &message,
            )
            .await;
        }
    };
    let records = schedule
        .status
        .as_ref()
        .map(|s| s.recent_backups.as_slice())
        .unwrap_or_default();
    // Pinned already (same schedule and, if given, the same key)?
    let pinned = st
        .restore
        .as_ref()
        .filter(|r| r.backup_schedule == *schedule_name)
        .filter(|r| spec.key.as_ref().is_none_or(|k| *k == r.key))
        .cloned()
        .or_else(|| {
            // The status may lag (or be lost); the StatefulSet carries the key too.
            let key = existing.as_ref().and_then(pinned_in)?;
            if spec.key.as_ref().is_some_and(|k| *k != key) {
                return None;
            }
            Some(RestoreStatus {
                backup_schedule: schedule_name.clone(),
                sha256: records
                    .iter()
                    .find(|r| r.key == key)
                    .map(|r| r.sha256.clone()),
                key,
                pinned_at: Some(now()),
                ..RestoreStatus::default()
            })
        });
    let pinned = match pinned {
        Some(p) => p,
        None => {
            let (key, sha256) = match &spec.key {
                Some(key) => (
                    key.clone(),
                    records
                        .iter()
                        .find(|r| r.key == *key)
                        .map(|r| r.sha256.clone()),
                ),
                None => match newest_verified(records, &name) {
                    Some(r) => (r.key.clone(), Some(r.sha256.clone())),
                    None => {
                        let message = format!(
                            "BackupSchedule {schedule_name} has no verified backup of bot {name} yet; the bot starts once one exists (or set spec.restore.key)"
                        );
                        return wait_or_run(
                            ctx,
                            bot,
                            st,
                            (&ns, &name),
                            "NoVerifiedBackup",
                            &message,
                        )
                        .await;
                    }
                },
            };
            ctx.event(
                bot,
                EventType::Normal,
                "RestorePinned",
                "Restore",
                format!("the pod restores {key} from BackupSchedule {schedule_name} (only into an empty volume)"),
            )
            .await;
            RestoreStatus {
                backup_schedule: schedule_name.clone(),
                key,
                sha256,
                pinned_at: Some(now()),
                ..RestoreStatus::default()
            }
        }
    };
    let mut pinned = pinned;
    if pinned.result.is_none() {
        observe(ctx, bot, st, &mut pinned, &ns, &name).await;
    }
    st.restore = Some(pinned.clone());
    Plan::Restore(Box::new(RestoreSource {
        key: pinned.key,
        sha256: pinned.sha256,
        location: schedule.spec.destination.clone(),
        if_schema_too_new: false,
    }))
}

/// Whether the bot's data volume (the claim of pod `NAME-0`) exists. Read fresh, not
/// from a cache: it decides whether a pod may start without a restore.
async fn volume_exists(ctx: &Context, ns: &str, name: &str) -> bool {
    let claim = format!("{DATA_VOLUME}-{}-0", workload_name(name));
    match Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .get_opt(&claim)
        .await
    {
        Ok(found) => found.is_some(),
        // Unknown: assume it exists, so a running bot is never scaled down for this.
        Err(_) => true,
    }
}

/// No backup to restore: a bot without a data volume waits (zero replicas, so no pod
/// creates an empty database that would then block the restore); a bot with a volume
/// runs on it.
async fn wait_or_run(
    ctx: &Context,
    bot: &TradingBot,
    st: &mut TradingBotStatus,
    (ns, name): (&str, &str),
    reason: &str,
    message: &str,
) -> Plan {
    if volume_exists(ctx, ns, name).await {
        let message = format!(
            "{message}; the bot's data volume exists already, so it runs on it without a restore step"
        );
        report(ctx, bot, st, false, reason, &message).await;
        return Plan::Nothing;
    }
    report(ctx, bot, st, false, reason, message).await;
    Plan::Wait
}

/// Reads the restore init container's outcome from the pod, once it has run.
async fn observe(
    ctx: &Context,
    bot: &TradingBot,
    st: &mut TradingBotStatus,
    pinned: &mut RestoreStatus,
    ns: &str,
    name: &str,
) {
    let pod_name = format!("{}-0", workload_name(name));
    let pod = match ctx.cache.stores() {
        Some(stores) => lookup_unpacked(&stores.pods, ns, &pod_name),
        None => Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .get_opt(&pod_name)
            .await
            .ok()
            .flatten(),
    };
    let Some(pod) = pod else {
        let message = format!("the pod restores {} before the bot starts", pinned.key);
        report(ctx, bot, st, false, "Pending", &message).await;
        return;
    };
    // Only a pod rendered for this key tells about this key.
    let rendered_for = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == RESTORE_CONTAINER))
        .and_then(|c| c.args.as_ref())
        .is_some_and(|a| a.contains(&pinned.key));
    if !rendered_for {
        return;
    }
    let Some(init) = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == RESTORE_CONTAINER))
    else {
        return;
    };
    let terminated = init.state.as_ref().and_then(|s| s.terminated.as_ref());
    let failed_before = init
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.exit_code != 0);
    let done = terminated.is_some_and(|t| t.exit_code == 0);
    if !(done || terminated.is_some() || failed_before) {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = LogParams {
        container: Some(RESTORE_CONTAINER.to_string()),
        tail_lines: Some(50),
        ..LogParams::default()
    };
    let log = match pods.logs(&pod_name, &params).await {
        Ok(l) => l,
        Err(e) => {
            debug!(pod = %pod_name, error = %e, "cannot read the restore container's log");
            return;
        }
    };
    if !done {
        let why = log
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("the restore step failed")
            .to_string();
        report(
            ctx,
            bot,
            st,
            false,
            "RestoreFailed",
            &format!("restore of {}: {why}", pinned.key),
        )
        .await;
        return;
    }
    let Some(rep) = report_in_log(&log) else {
        warn!(pod = %pod_name, "the restore container finished without a report line");
        return;
    };
    pinned.completed_at = Some(now());
    pinned.duration_ms = i64::try_from(rep.duration_ms).ok();
    if rep.result == "restored" {
        pinned.result = Some(RESULT_RESTORED.to_string());
        let message = format!(
            "restored {} ({} bytes) into the empty volume in {} ms",
            pinned.key,
            rep.size_bytes.unwrap_or_default(),
            rep.duration_ms
        );
        report(ctx, bot, st, true, RESULT_RESTORED, &message).await;
    } else {
        pinned.result = Some(RESULT_SKIPPED.to_string());
        let message = format!(
            "{} was not restored: {}",
            pinned.key,
            rep.reason
                .unwrap_or_else(|| "the volume already held data".into())
        );
        report(ctx, bot, st, false, RESULT_SKIPPED, &message).await;
    }
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
            sha256: "00".into(),
            verified,
            verification_error: None,
            completed_at: Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap()),
        }
    }

    #[test]
    fn newest_verified_skips_unverified_and_other_bots() {
        let records = vec![
            rec("a", "a/3", 300, false),
            rec("b", "b/9", 900, true),
            rec("a", "a/2", 200, true),
            rec("a", "a/1", 100, true),
        ];
        assert_eq!(newest_verified(&records, "a").unwrap().key, "a/2");
        assert!(newest_verified(&records, "c").is_none());
        assert!(newest_verified(&[rec("a", "a/1", 1, false)], "a").is_none());
    }

    #[test]
    fn the_report_is_the_last_json_line() {
        let log =
            "restore restored: x\n{\"result\":\"restored\",\"key\":\"k\",\"durationMs\":12}\n";
        let r = report_in_log(log).unwrap();
        assert_eq!((r.result.as_str(), r.duration_ms), ("restored", 12));
        assert!(report_in_log("error: boom\n").is_none());
    }

    #[test]
    fn wait_scales_to_zero_and_restore_adds_the_init_container() {
        let spec: iq720_crds::TradingBotSpec = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pairs": ["BTC/USDT"]
        }))
        .unwrap();
        let mut bot = TradingBot::new("alpha", spec);
        bot.metadata.namespace = Some("ns".into());
        bot.metadata.uid = Some("u".into());
        let owner = super::super::build::Owner::of(&bot).unwrap();
        let base = stateful_set::build(&owner, &bot, "sum", 1);
        let mut waiting = base.clone();
        Plan::Wait.apply(&mut waiting);
        assert_eq!(waiting.spec.as_ref().unwrap().replicas, Some(0));
        let mut nothing = base.clone();
        Plan::Nothing.apply(&mut nothing);
        assert_eq!(nothing, base);
        let location = serde_json::from_value(serde_json::json!({
            "bucket": "bkt", "credentialsSecretRef": {"name": "s"}
        }))
        .unwrap();
        let mut restoring = base;
        Plan::Restore(Box::new(RestoreSource {
            key: "p/ns/alpha/1.tar.gz".into(),
            sha256: None,
            location,
            if_schema_too_new: false,
        }))
        .apply(&mut restoring);
        assert_eq!(
            pinned_in(&restoring).as_deref(),
            Some("p/ns/alpha/1.tar.gz")
        );
        assert_eq!(restoring.spec.as_ref().unwrap().replicas, Some(1));
    }
}
