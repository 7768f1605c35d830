//! Version rollouts: a change of `spec.version` (or of `spec.image.repository`: the
//! pair is the release, [`release_of`]) away from the last release that passed the
//! health gate (`status.rollout.stableVersion`) is carried out step by step instead of
//! rolling the pod at once:
//!
//! ```text
//! WaitingForWindow ──(window allows upgrades)──▶ BackingUp ──(verified, or no schedule)──▶
//! HaltingEntries ──(bot paused, or not running)──▶ HealthGate ──▶ Succeeded
//!                                                           └──(fails / healthTimeout)──▶ RolledBack | Failed
//! ```
//!
//! Why a state machine in the status: every reconcile moves at most one step and
//! writes the step to `status.rollout.active`, so an operator restart resumes where
//! it was, and the whole decision is pure ([`advance`], [`observe`], [`outputs`])
//! and unit-tested without a cluster. The async glue ([`prepare`], [`finish`]) only
//! reads the bot and the BackupSchedules and writes Events.
//!
//! Why status never pins the image: the pod template is built from `spec.version`,
//! except that the builder input gets the stable version while the rollout has not
//! reached its roll yet, and while `spec.version` still names a version that failed
//! and was rolled back ([`Plan::version_override`]). Once the user changes
//! `spec.version` the template follows the spec again (the bug of CloudNativePG issue
//! 9128 is a status field that kept the image pinned). A failed version is not retried
//! until `spec.version` changes (the endless retry loop of Flagger issue 862), and
//! after [`HALT_AFTER_ROLLBACKS`] rollbacks in a row automatic updates stop (condition
//! `AutoUpdatesHalted`) until the `trading.iq720.io/resume-updates` annotation gets a
//! new value.
//!
//! The health gate: the pod is Ready, the bot's `/api/v1/status` reports the new
//! version, its engine loop completed an iteration within [`HEARTBEAT_MAX_AGE_SECONDS`]
//! (`engineLoopAgeSeconds`) and its active market data is fresh — all within
//! `spec.update.healthTimeout` of the roll. A pod that cannot run (image pull error,
//! crash loop) fails the gate at once.
//!
//! Pre-update backup: the operator does not back the bot up itself (that is the
//! BackupSchedule controller's job, which this module does not import); it asks the
//! BackupSchedule selecting the bot for an on-demand run with the
//! `trading.iq720.io/backup-now=<rollout id>` annotation and waits until that
//! schedule's status lists a verified backup of the bot completed after the rollout
//! started. A bot no BackupSchedule selects is upgraded without a backup, with a
//! Warning Event `PreUpdateBackupSkipped`. Restoring the database on rollback is not
//! done (see the README).
//!
//! An emergency stop during a rollout wins: the pipeline's emergency path runs before
//! any of this, and a rollout interrupted by a stop starts over once the stop is
//! cleared.

use std::borrow::Cow;
use std::time::Duration;

use iq720_contract::api::StatusResponse;
use iq720_crds::backup_schedule::BACKUP_NOW_ANNOTATION;
use iq720_crds::trading_bot::DEFAULT_BOT_IMAGE;
use iq720_crds::trading_bot::{
    ActiveRollout, RESUME_UPDATES_ANNOTATION, RollbackRestore, RolloutRecord, RolloutResult,
    RolloutStatus, RolloutStep, TradingBotPhase,
};
use iq720_crds::{BackupSchedule, TradingBot, TradingBotStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{debug, info, warn};

use super::build::stateful_set::RestoreSource;
use super::status::{Written, set_condition};
use crate::botlink::client::BotEndpoint;
use crate::shared::conditions;
use crate::shared::context::Context;

/// Condition types of rollouts.
pub mod condition {
    /// A rollout is in progress (True), or how the last one ended (False).
    pub const UPGRADING: &str = "Upgrading";
    /// Automatic updates stopped after several rollbacks in a row.
    pub const AUTO_UPDATES_HALTED: &str = "AutoUpdatesHalted";
}

/// Rollouts kept in `status.rollout.history`.
pub const HISTORY_LIMIT: usize = 5;
/// Rollbacks in a row after which automatic updates stop.
pub const HALT_AFTER_ROLLBACKS: i32 = 3;
/// The engine loop must have completed an iteration this recently.
pub const HEARTBEAT_MAX_AGE_SECONDS: f64 = 10.0;
/// The roll back to the stable version is not held by a maintenance window for this
/// long after the rollback was decided (a broken version must not run until the next
/// window); after that a still pending roll waits for a window like any other.
pub const ROLLBACK_BYPASS_MS: i64 = 10 * 60 * 1000;
/// Requeue while a rollout runs.
pub const ROLLOUT_REQUEUE: Duration = Duration::from_secs(2);
/// `spec.update.healthTimeout` when it cannot be parsed (validation reports it).
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);

/// What the spec asks of rollouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The release asked for ([`release_of`] `spec.image.repository` and
    /// `spec.version`): a change of either is a rollout.
    pub version: String,
    /// `spec.image.repository`.
    pub repository: String,
    /// `spec.update.autoRollback`.
    pub auto_rollback: bool,
    /// `spec.update.preUpdateBackup`.
    pub pre_update_backup: bool,
    /// `spec.update.healthTimeout`.
    pub health_timeout: Duration,
    /// Value of the `trading.iq720.io/resume-updates` annotation.
    pub resume_request: Option<String>,
}

impl Wanted {
    /// What a TradingBot asks for.
    pub fn of(bot: &TradingBot) -> Self {
        let update = &bot.spec.update;
        Self {
            version: release_of(&bot.spec.image.repository, &bot.spec.version),
            repository: bot.spec.image.repository.clone(),
            auto_rollback: update.auto_rollback,
            pre_update_backup: update.pre_update_backup,
            health_timeout: iq720_contract::duration::parse(&update.health_timeout)
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT),
            resume_request: bot.annotations().get(RESUME_UPDATES_ANNOTATION).cloned(),
        }
    }
}

/// The release a rollout moves between: `spec.version` alone with the default image
/// repository (so `status.rollout` reads `0.2.0`), else `repository:version`. A change
/// of `spec.image.repository` is therefore a rollout like a change of `spec.version`.
pub fn release_of(repository: &str, version: &str) -> String {
    if repository == DEFAULT_BOT_IMAGE {
        version.to_string()
    } else {
        format!("{repository}:{version}")
    }
}

/// The image repository of a release (the default when it names none).
pub fn repository_part(release: &str) -> &str {
    match release.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => DEFAULT_BOT_IMAGE,
    }
}

/// The version (image tag) of a release: what the bot reports on its status API.
pub fn version_part(release: &str) -> &str {
    match release.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag,
        _ => release,
    }
}

/// Whether two releases are the same: the same repository and version (`v1.2.0` =
/// `1.2.0`). Also compares a bare version with a release of the default repository.
pub fn same_version(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.strip_prefix('v').unwrap_or(s).to_string();
    repository_part(a) == repository_part(b) && strip(version_part(a)) == strip(version_part(b))
}

/// The container image of a release.
pub fn image_of(release: &str) -> String {
    format!("{}:{}", repository_part(release), version_part(release))
}

/// Whether the version a bot reports is the version of `release`.
fn reports(reported: &str, release: &str) -> bool {
    let strip = |s: &str| s.strip_prefix('v').unwrap_or(s).to_string();
    strip(reported) == strip(version_part(release))
}

/// Something a person wants to see in `kubectl describe` (an Event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// Event reason.
    pub reason: &'static str,
    /// Event message.
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Self {
        Self {
            warning: false,
            reason,
            message,
        }
    }
    fn warning(reason: &'static str, message: String) -> Self {
        Self {
            warning: true,
            reason,
            message,
        }
    }
}

/// What the rest of the reconcile does for the rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Build the pod template with this version instead of `spec.version` (never
    /// written to the spec or pinned in status).
    pub version_override: Option<String>,
    /// Halt new entries (pause the bot through its hot configuration).
    pub halt_entries: bool,
    /// The roll back to the stable version is not held by a maintenance window.
    pub bypass_window: bool,
    /// After a rollback: the pre-update backup the stable version's pod restores
    /// when the database schema is one it cannot open (`status.rollout.rollbackRestore`).
    pub rollback_restore: Option<RollbackRestore>,
}

impl Plan {
    /// The builder input: the bot, with the version replaced when the plan says so.
    pub fn builder_input<'a>(&self, bot: &'a TradingBot) -> Cow<'a, TradingBot> {
        match &self.version_override {
            Some(v) if *v != release_of(&bot.spec.image.repository, &bot.spec.version) => {
                let mut b = bot.clone();
                b.spec.image.repository = repository_part(v).to_string();
                b.spec.version = version_part(v).to_string();
                Cow::Owned(b)
            }
            _ => Cow::Borrowed(bot),
        }
    }

    /// The pause the bot should have: the spec's / window's, or halted for the rollout.
    pub fn pause(&self, mut pause: super::converse::Pause) -> super::converse::Pause {
        if self.halt_entries && !pause.paused {
            pause.paused = true;
            pause.window = None;
        }
        pause
    }
}

fn ms_between(from: &Time, to: Timestamp) -> i64 {
    to.as_millisecond() - from.0.as_millisecond()
}

fn push_history(r: &mut RolloutStatus, record: RolloutRecord) {
    r.history.insert(0, record);
    r.history.truncate(HISTORY_LIMIT);
}

fn end(
    r: &mut RolloutStatus,
    a: &ActiveRollout,
    result: RolloutResult,
    reason: Option<String>,
    now: Timestamp,
) {
    push_history(
        r,
        RolloutRecord {
            from_version: a.from_version.clone(),
            to_version: a.to_version.clone(),
            result,
            reason,
            started_at: a.started_at.clone(),
            finished_at: Time(now),
            gate_ms: a.rolled_at.as_ref().map(|t| ms_between(t, now)),
            backup_key: a.backup_key.clone(),
        },
    );
}

/// Pure, before the build: takes a resume request, records the baseline, starts,
/// supersedes or restarts a rollout, and leaves `WaitingForWindow` when the window
/// allows (`hold`: a maintenance window forbids a pod restart now). `running` is the
/// version the bot last reported (`status.currentVersion`); `stopped_at` when the
/// latest emergency stop was requested.
pub fn advance(
    w: &Wanted,
    r: &mut RolloutStatus,
    running: Option<&str>,
    stopped_at: Option<&Time>,
    hold: bool,
    now: Timestamp,
) -> Vec<Note> {
    let mut notes = Vec::new();
    if let Some(req) = &w.resume_request
        && r.last_resume_request.as_ref() != Some(req)
    {
        r.last_resume_request = Some(req.clone());
        if r.consecutive_rollbacks > 0 {
            r.consecutive_rollbacks = 0;
            notes.push(Note::normal(
                "UpdatesResumed",
                "automatic updates resumed (the resume-updates annotation changed)".into(),
            ));
        }
    }
    if r.stable_version.is_none() {
        // A bot from before rollouts existed: what it runs is the baseline. A new bot
        // gets its baseline when it first reports spec.version (see `observe`).
        r.stable_version = running.map(|v| release_of(&w.repository, v));
    }
    let Some(stable) = r.stable_version.clone() else {
        return notes;
    };
    if same_version(&w.version, &stable) {
        if let Some(a) = r.active.take() {
            end(
                r,
                &a,
                RolloutResult::Superseded,
                Some(format!("spec.version was set back to {stable}")),
                now,
            );
            notes.push(Note::normal(
                "RolloutCancelled",
                format!(
                    "rollout to {} cancelled: spec.version is {stable} again",
                    a.to_version
                ),
            ));
        }
        r.failed_version = None;
        r.failure_reason = None;
        return notes;
    }
    if r.failed_version
        .as_ref()
        .is_some_and(|f| same_version(f, &w.version))
    {
        // Failed before: not retried until spec.version changes.
        return notes;
    }
    if r.failed_version.is_some() {
        // spec.version moved on from the failed version.
        r.failed_version = None;
        r.failure_reason = None;
    }
    if r.active.is_none() && r.consecutive_rollbacks >= HALT_AFTER_ROLLBACKS {
        return notes;
    }
    let interrupted = |a: &ActiveRollout| stopped_at.is_some_and(|s| s.0 > a.started_at.0);
    let keep = r
        .active
        .as_ref()
        .is_some_and(|a| same_version(&a.to_version, &w.version) && !interrupted(a));
    if !keep {
        if let Some(old) = r.active.take() {
            let why = if interrupted(&old) {
                "interrupted by an emergency stop; the rollout starts over".to_string()
            } else {
                format!("spec.version changed to {}", w.version)
            };
            end(r, &old, RolloutResult::Superseded, Some(why), now);
        }
        if r.consecutive_rollbacks >= HALT_AFTER_ROLLBACKS {
            return notes;
        }
        notes.push(Note::normal(
            "RolloutStarted",
            format!("rollout {stable} -> {} started", w.version),
        ));
        // The next roll replaces the pod template anyway: a restore step left by an
        // earlier rollback goes with it.
        r.rollback_restore = None;
        r.active = Some(ActiveRollout {
            id: format!("rollout-{}-{}", w.version, now.as_second()),
            from_version: stable.clone(),
            to_version: w.version.clone(),
            step: RolloutStep::WaitingForWindow,
            started_at: Time(now),
            rolled_at: None,
            backup_schedule: None,
            backup_key: None,
            message: None,
        });
    }
    if let Some(a) = r.active.as_mut() {
        match a.step {
            RolloutStep::WaitingForWindow if !hold => {
                a.step = if w.pre_update_backup {
                    RolloutStep::BackingUp
                } else {
                    RolloutStep::HaltingEntries
                };
                a.message = None;
            }
            RolloutStep::WaitingForWindow => {
                a.message = Some("waiting for a maintenance window that allows upgrades".into());
            }
            // The window closed before the roll: wait for the next one.
            RolloutStep::BackingUp | RolloutStep::HaltingEntries if hold => {
                a.step = RolloutStep::WaitingForWindow;
                a.message = Some("waiting for a maintenance window that allows upgrades".into());
            }
            _ => {}
        }
    }
    notes
}

/// Pure: what the build, the apply and the pause do for the rollout's state.
pub fn outputs(w: &Wanted, r: &RolloutStatus, now: Timestamp) -> Plan {
    // A new rollout clears `rollbackRestore`; until then every template keeps the
    // restore step (a no-op on a database the stable version opens), so it never
    // changes the template on its own.
    Plan {
        rollback_restore: r.rollback_restore.clone(),
        ..version_plan(w, r, now)
    }
}

fn version_plan(w: &Wanted, r: &RolloutStatus, now: Timestamp) -> Plan {
    let Some(stable) = r.stable_version.clone() else {
        return Plan::default();
    };
    if let Some(a) = &r.active {
        return match a.step {
            // The gate holds the changed template (and says so in MaintenancePending).
            RolloutStep::WaitingForWindow => Plan::default(),
            RolloutStep::BackingUp => Plan {
                version_override: Some(stable),
                ..Plan::default()
            },
            RolloutStep::HaltingEntries => Plan {
                version_override: Some(stable),
                halt_entries: true,
                ..Plan::default()
            },
            RolloutStep::HealthGate => Plan {
                version_override: Some(a.to_version.clone()),
                halt_entries: true,
                ..Plan::default()
            },
        };
    }
    if same_version(&w.version, &stable) {
        return Plan::default();
    }
    let failed = r
        .failed_version
        .as_ref()
        .is_some_and(|f| same_version(f, &w.version));
    if failed && !w.auto_rollback {
        // autoRollback false: the failed version stays.
        return Plan::default();
    }
    let just_rolled_back = r.history.first().is_some_and(|h| {
        h.result == RolloutResult::RolledBack
            && same_version(&h.to_version, &w.version)
            && now.as_millisecond() - h.finished_at.0.as_millisecond() < ROLLBACK_BYPASS_MS
    });
    // Failed and rolled back, or automatic updates halted: the stable version runs.
    Plan {
        version_override: Some(stable),
        halt_entries: false,
        bypass_window: failed && just_rolled_back,
        rollback_restore: None,
    }
}

/// What the bot answered on `/api/v1/status`, as far as the gate cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Version the bot reports.
    pub version: String,
    /// New entries paused.
    pub paused: bool,
    /// Seconds since the engine loop completed an iteration.
    pub engine_loop_age_seconds: Option<f64>,
    /// The active market-data source is fresh.
    pub market_data_fresh: bool,
}

impl From<&StatusResponse> for Probe {
    fn from(s: &StatusResponse) -> Self {
        Self {
            version: s.version.clone(),
            paused: s.paused,
            engine_loop_age_seconds: s.engine_loop_age_seconds,
            market_data_fresh: s.market_data.fresh,
        }
    }
}

/// What the reconcile saw of the bot's pod after the apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// The pod is Ready and not terminating.
    pub pod_ready: bool,
    /// Why the pod's container cannot run (image pull error, crash loop), if so.
    pub stuck: Option<String>,
    /// The bot's answer, when it gave one.
    pub probe: Option<Probe>,
    /// The image the bot pod's container runs, when the pod was found. A release that
    /// keeps the version (a new image repository) is told from the old pod only by it.
    pub pod_image: Option<String>,
}

/// Result of the health gate on one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateCheck {
    /// Every check passed.
    Pass,
    /// Not yet; what is missing.
    Wait(String),
    /// Cannot pass (the pod cannot run).
    Fail(String),
}

/// Pure: the health gate for version `to`.
pub fn gate_check(h: &Health, to: &str) -> GateCheck {
    if let Some(why) = &h.stuck {
        return GateCheck::Fail(format!("the new pod cannot run: {why}"));
    }
    if !h.pod_ready {
        return GateCheck::Wait("the pod is not Ready".into());
    }
    if let Some(image) = &h.pod_image
        && *image != image_of(to)
    {
        return GateCheck::Wait(format!("the pod still runs {image}, not {}", image_of(to)));
    }
    let Some(p) = &h.probe else {
        return GateCheck::Wait("the bot does not answer its status API".into());
    };
    if !reports(&p.version, to) {
        return GateCheck::Wait(format!(
            "the bot reports version {}, not {}",
            p.version,
            version_part(to)
        ));
    }
    match p.engine_loop_age_seconds {
        Some(age) if age <= HEARTBEAT_MAX_AGE_SECONDS => {}
        Some(age) => {
            return GateCheck::Wait(format!(
                "the engine loop has not completed an iteration for {age:.0}s"
            ));
        }
        None => return GateCheck::Wait("the bot reports no engine heartbeat".into()),
    }
    if !p.market_data_fresh {
        return GateCheck::Wait("the bot's market data is not fresh".into());
    }
    GateCheck::Pass
}

/// Outcome of [`observe`] besides the notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Events to write.
    pub notes: Vec<Note>,
    /// A rollback was decided now (the metric counts it).
    pub rolled_back: bool,
}

/// Pure, after the apply and the conversation with the bot: records the first
/// baseline, leaves `HaltingEntries` once the bot is paused (or not running), and
/// runs the health gate.
pub fn observe(w: &Wanted, r: &mut RolloutStatus, h: &Health, now: Timestamp) -> Observed {
    let mut out = Observed::default();
    if r.stable_version.is_none() {
        if h.pod_ready
            && let Some(p) = &h.probe
            && reports(&p.version, &w.version)
        {
            r.stable_version = Some(w.version.clone());
        }
        return out;
    }
    let Some(mut a) = r.active.take() else {
        return out;
    };
    match a.step {
        RolloutStep::HaltingEntries => {
            let halted = !h.pod_ready || h.probe.as_ref().is_none_or(|p| p.paused);
            if halted {
                a.step = RolloutStep::HealthGate;
                a.rolled_at = Some(Time(now));
                a.message = Some(format!("rolling the pod to {}", a.to_version));
                out.notes.push(Note::normal(
                    "RolloutRolling",
                    format!(
                        "new entries halted; rolling the pod from {} to {} (health gate within {}s)",
                        a.from_version,
                        a.to_version,
                        w.health_timeout.as_secs()
                    ),
                ));
            } else {
                a.message = Some("halting new entries before the roll".into());
            }
        }
        RolloutStep::HealthGate => {
            let rolled = a.rolled_at.clone().unwrap_or(Time(now));
            let elapsed = ms_between(&rolled, now);
            let limit = i64::try_from(w.health_timeout.as_millis()).unwrap_or(i64::MAX);
            let failure = match gate_check(h, &a.to_version) {
                GateCheck::Pass => {
                    let secs = elapsed as f64 / 1000.0;
                    end(r, &a, RolloutResult::Succeeded, None, now);
                    r.stable_version = Some(a.to_version.clone());
                    r.failed_version = None;
                    r.failure_reason = None;
                    r.consecutive_rollbacks = 0;
                    out.notes.push(Note::normal(
                        "RolloutSucceeded",
                        format!(
                            "{} -> {}: the new version passed the health gate {secs:.1}s after the roll",
                            a.from_version, a.to_version
                        ),
                    ));
                    return out;
                }
                GateCheck::Fail(why) => Some(why),
                GateCheck::Wait(why) if elapsed > limit => Some(format!(
                    "health gate not passed within healthTimeout {}s: {why}",
                    w.health_timeout.as_secs()
                )),
                GateCheck::Wait(why) => {
                    a.message = Some(format!("health gate: {why}"));
                    None
                }
            };
            if let Some(reason) = failure {
                r.failed_version = Some(a.to_version.clone());
                r.failure_reason = Some(reason.clone());
                if w.auto_rollback {
                    end(r, &a, RolloutResult::RolledBack, Some(reason.clone()), now);
                    r.consecutive_rollbacks += 1;
                    out.rolled_back = true;
                    if let (Some(schedule), Some(key)) = (&a.backup_schedule, &a.backup_key) {
                        r.rollback_restore = Some(RollbackRestore {
                            backup_schedule: schedule.clone(),
                            key: key.clone(),
                        });
                        out.notes.push(Note::normal(
                            "RollbackRestoresDatabase",
                            format!(
                                "the {} pod restores the pre-update backup {key} first if {} left a database schema {} cannot open",
                                a.from_version, a.to_version, a.from_version
                            ),
                        ));
                    }
                    out.notes.push(Note::warning(
                        "RolledBack",
                        format!(
                            "{} failed: {reason}; rolling back to {} (not retried until spec.version changes)",
                            a.to_version, a.from_version
                        ),
                    ));
                    if r.consecutive_rollbacks >= HALT_AFTER_ROLLBACKS {
                        out.notes.push(Note::warning(
                            "AutoUpdatesHalted",
                            format!(
                                "{} rollbacks in a row: automatic updates stop until the {RESUME_UPDATES_ANNOTATION} annotation changes",
                                r.consecutive_rollbacks
                            ),
                        ));
                    }
                } else {
                    end(r, &a, RolloutResult::Failed, Some(reason.clone()), now);
                    out.notes.push(Note::warning(
                        "RolloutFailed",
                        format!(
                            "{} failed: {reason}; it stays (spec.update.autoRollback is false)",
                            a.to_version
                        ),
                    ));
                }
                return out;
            }
        }
        RolloutStep::WaitingForWindow | RolloutStep::BackingUp => {}
    }
    r.active = Some(a);
    out
}

/// Pure: the `Upgrading` and `AutoUpdatesHalted` conditions and the phase.
pub fn report(st: &mut TradingBotStatus, w: &Wanted, generation: Option<i64>) {
    let Some(r) = st.rollout.clone() else {
        return;
    };
    let c = &mut st.conditions;
    if let Some(a) = &r.active {
        let (reason, what) = match a.step {
            RolloutStep::WaitingForWindow => ("WaitingForWindow", "waiting for a window"),
            RolloutStep::BackingUp => ("BackingUp", "pre-update backup"),
            RolloutStep::HaltingEntries => ("HaltingEntries", "halting new entries"),
            RolloutStep::HealthGate => ("HealthGate", "health gate"),
        };
        let message = format!(
            "{} -> {}: {}",
            a.from_version,
            a.to_version,
            a.message.as_deref().unwrap_or(what)
        );
        set_condition(c, condition::UPGRADING, true, reason, &message, generation);
        if a.step != RolloutStep::WaitingForWindow {
            st.phase = Some(TradingBotPhase::Upgrading);
        }
    } else if let Some(f) = r
        .failed_version
        .as_ref()
        .filter(|f| same_version(f, &w.version))
    {
        let why = r.failure_reason.as_deref().unwrap_or("health gate failed");
        let stable = r
            .stable_version
            .as_deref()
            .unwrap_or("the previous version");
        let (reason, message) = if w.auto_rollback {
            (
                "RolledBack",
                format!(
                    "{f} failed ({why}); running {stable}; change spec.version to try again or move on"
                ),
            )
        } else {
            (
                "HealthGateFailed",
                format!("{f} failed ({why}) and stays: spec.update.autoRollback is false"),
            )
        };
        set_condition(c, condition::UPGRADING, false, reason, &message, generation);
    } else if r.consecutive_rollbacks >= HALT_AFTER_ROLLBACKS
        && r.stable_version
            .as_ref()
            .is_some_and(|s| !same_version(s, &w.version))
    {
        set_condition(
            c,
            condition::UPGRADING,
            false,
            "AutoUpdatesHalted",
            &format!(
                "{} is not rolled out: automatic updates are halted",
                w.version
            ),
            generation,
        );
    } else if r.stable_version.is_some() {
        set_condition(
            c,
            condition::UPGRADING,
            false,
            "UpToDate",
            "the bot runs the version spec.version asks for",
            generation,
        );
    }
    let halted = r.consecutive_rollbacks >= HALT_AFTER_ROLLBACKS;
    if halted {
        set_condition(
            c,
            condition::AUTO_UPDATES_HALTED,
            true,
            "ConsecutiveRollbacks",
            &format!(
                "{} rollbacks in a row; annotate the bot with {RESUME_UPDATES_ANNOTATION}=<new value> to resume automatic updates",
                r.consecutive_rollbacks
            ),
            generation,
        );
    } else if conditions::find(c, condition::AUTO_UPDATES_HALTED).is_some() {
        set_condition(
            c,
            condition::AUTO_UPDATES_HALTED,
            false,
            "Resumed",
            "automatic updates run",
            generation,
        );
    }
}

/// Requeue hint while a rollout runs.
pub fn requeue(r: Option<&RolloutStatus>) -> Option<Duration> {
    r.and_then(|r| r.active.as_ref())
        .filter(|a| a.step != RolloutStep::WaitingForWindow)
        .map(|_| ROLLOUT_REQUEUE)
}

/// Events and the rollback counter a reconcile's rollout steps decided. They are
/// announced only after the status that records the decision is stored: a reconcile
/// on an older cached object decides the same transition again, and its status write
/// is refused ([`super::status::Written::Stale`]), so it announces nothing.
#[derive(Debug, Default)]
#[must_use = "announce after the status write"]
pub struct Announcements {
    notes: Vec<Note>,
    rolled_back: bool,
}

impl Announcements {
    /// Adds what a later step decided.
    pub fn merge(&mut self, other: Announcements) {
        self.notes.extend(other.notes);
        self.rolled_back |= other.rolled_back;
    }

    /// Writes the Events and counts the rollback, unless the status write was stale.
    pub async fn announce(self, ctx: &Context, bot: &TradingBot, written: &Written) {
        if !written.landed() {
            if !self.notes.is_empty() {
                debug!(bot = %bot.name_any(), notes = self.notes.len(), "rollout: decided on an older object; not announced");
            }
            return;
        }
        if self.rolled_back {
            ctx.metrics
                .rollbacks
                .with_label_values(&[
                    &bot.namespace().unwrap_or_default(),
                    bot.name_any().as_str(),
                ])
                .inc();
        }
        for n in self.notes {
            let t = if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            info!(bot = %bot.name_any(), reason = n.reason, message = %n.message, "rollout");
            ctx.event(bot, t, n.reason, "Rollout", n.message).await;
        }
    }
}

/// Before the build: advances the rollout (including the pre-update backup) and says
/// what the build, apply and pause do. `hold`: a maintenance window forbids a pod
/// restart now.
pub async fn prepare(
    ctx: &Context,
    bot: &TradingBot,
    st: &mut TradingBotStatus,
    hold: bool,
) -> (Plan, Announcements) {
    let w = Wanted::of(bot);
    let now = Timestamp::now();
    let mut r = st.rollout.clone().unwrap_or_default();
    let stopped_at = st
        .emergency_stop
        .as_ref()
        .and_then(|e| e.requested_at.as_ref());
    let mut notes = advance(
        &w,
        &mut r,
        st.current_version.as_deref(),
        stopped_at,
        hold,
        now,
    );
    if let Some(a) = r.active.as_mut()
        && a.step == RolloutStep::BackingUp
    {
        match backup_progress(ctx, bot, a).await {
            BackupProgress::Verified(schedule, key) => {
                notes.push(Note::normal(
                    "PreUpdateBackupVerified",
                    format!("pre-update backup {key} verified; halting new entries"),
                ));
                a.backup_schedule = Some(schedule);
                a.backup_key = Some(key);
                a.step = RolloutStep::HaltingEntries;
                a.message = None;
            }
            BackupProgress::NoSchedule => {
                notes.push(Note::warning(
                    "PreUpdateBackupSkipped",
                    format!(
                        "no BackupSchedule selects this bot: {} is rolled out without a pre-update backup",
                        a.to_version
                    ),
                ));
                a.step = RolloutStep::HaltingEntries;
                a.message = None;
            }
            BackupProgress::Waiting(why) => a.message = Some(why),
        }
    }
    let plan = outputs(&w, &r, now);
    if r != RolloutStatus::default() {
        st.rollout = Some(r);
    }
    (
        plan,
        Announcements {
            notes,
            rolled_back: false,
        },
    )
}

/// After the apply and the conversation: runs the health gate on what was seen,
/// writes Events, counts rollbacks, sets the conditions and phase. Returns a requeue
/// hint while a rollout runs. `endpoint`: the bot's address when its pod is Ready.
pub async fn finish(
    ctx: &Context,
    bot: &TradingBot,
    st: &mut TradingBotStatus,
    endpoint: Option<&BotEndpoint>,
    stuck: Option<String>,
) -> (Option<Duration>, Announcements) {
    let w = Wanted::of(bot);
    let mut r = st.rollout.clone().unwrap_or_default();
    let pod_ready = endpoint.is_some();
    // Ask the bot only when the answer matters (a baseline, a halt, the gate).
    let needed = r.stable_version.is_none()
        || r.active.as_ref().is_some_and(|a| {
            matches!(
                a.step,
                RolloutStep::HaltingEntries | RolloutStep::HealthGate
            )
        });
    let probe = match endpoint {
        Some(ep) if needed => match ctx.bots.status(ep).await {
            Ok(s) => Some(Probe::from(&s)),
            Err(e) => {
                debug!(bot = %bot.name_any(), error = %e, "rollout: bot status unavailable");
                None
            }
        },
        _ => None,
    };
    let pod_image = if needed {
        bot_pod_image(ctx, bot).await
    } else {
        None
    };
    let health = Health {
        pod_ready,
        stuck,
        probe,
        pod_image,
    };
    let out = observe(&w, &mut r, &health, Timestamp::now());
    if outputs(&w, &r, Timestamp::now()).bypass_window {
        unstick(ctx, bot, &r).await;
    }
    if r != RolloutStatus::default() {
        st.rollout = Some(r);
    }
    report(st, &w, bot.metadata.generation);
    (
        requeue(st.rollout.as_ref()),
        Announcements {
            notes: out.notes,
            rolled_back: out.rolled_back,
        },
    )
}

/// The restore step of a rolled-back pod ([`Plan::rollback_restore`]): the bot's
/// `restore --if-schema-too-new` from the pre-update backup, with the destination and
/// credentials reference of the BackupSchedule that took it. None (logged) when that
/// schedule cannot be read: the pod then starts without the step.
pub async fn rollback_restore_source(
    ctx: &Context,
    bot: &TradingBot,
    rr: &RollbackRestore,
) -> Option<RestoreSource> {
    let api: Api<BackupSchedule> =
        Api::namespaced(ctx.client.clone(), &bot.namespace().unwrap_or_default());
    let schedule = match api.get_opt(&rr.backup_schedule).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            warn!(bot = %bot.name_any(), schedule = %rr.backup_schedule, "the BackupSchedule of the pre-update backup is gone; the rolled-back pod starts without a restore step");
            return None;
        }
        Err(e) => {
            warn!(bot = %bot.name_any(), schedule = %rr.backup_schedule, error = %e, "cannot read the BackupSchedule of the pre-update backup");
            return None;
        }
    };
    let sha256 = schedule.status.as_ref().and_then(|s| {
        s.recent_backups
            .iter()
            .find(|b| b.key == rr.key)
            .map(|b| b.sha256.clone())
    });
    Some(RestoreSource {
        key: rr.key.clone(),
        sha256,
        location: schedule.spec.destination.clone(),
        if_schema_too_new: true,
    })
}

/// The image of the bot pod's container (from the cache when there is one).
async fn bot_pod_image(ctx: &Context, bot: &TradingBot) -> Option<String> {
    let ns = bot.namespace().unwrap_or_default();
    let name = crate::botlink::BotRef::new(&ns, bot.name_any()).pod_name();
    let pod = match ctx.cache.stores() {
        Some(stores) => crate::shared::cache::lookup_unpacked(&stores.pods, &ns, &name),
        None => Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&name)
            .await
            .ok()
            .flatten(),
    }?;
    let spec = pod.spec?;
    spec.containers
        .into_iter()
        .find(|c| c.name == super::build::stateful_set::CONTAINER)
        .and_then(|c| c.image)
}

/// Deletes the bot's pod when it still runs the failed version and is not Ready.
///
/// Why: a StatefulSet with `OrderedReady` pods waits for a pod that is not Running
/// and Ready before it replaces it, so reverting the template alone never replaces a
/// broken pod (kubernetes/kubernetes issue 67250, "forced rollback"). The pod of the
/// failed version is deleted once; the StatefulSet then creates it from the reverted
/// template. A Ready pod is left to the ordinary rolling update.
async fn unstick(ctx: &Context, bot: &TradingBot, r: &RolloutStatus) {
    let Some(failed) = &r.failed_version else {
        return;
    };
    let ns = bot.namespace().unwrap_or_default();
    let name = format!("{}-0", super::build::labels::workload_name(&bot.name_any()));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let Ok(Some(pod)) = api.get_opt(&name).await else {
        return;
    };
    let failed_image = format!("{}:{failed}", bot.spec.image.repository);
    let runs_failed = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        == Some(failed_image.as_str());
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !runs_failed || ready || pod.metadata.deletion_timestamp.is_some() {
        return;
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(bot = %bot.name_any(), pod = %name, "deleted the pod of the failed version so that the rollback replaces it")
        }
        Err(e) => {
            warn!(bot = %bot.name_any(), error = %e, "cannot delete the pod of the failed version")
        }
    }
}

/// Where the pre-update backup stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BackupProgress {
    /// A verified backup of the bot, completed after the rollout started: the
    /// schedule's name and the object key.
    Verified(String, String),
    /// No BackupSchedule selects the bot.
    NoSchedule,
    /// Requested or running; why it is not done.
    Waiting(String),
}

/// Pure: the verified backup of `bot` the schedule recorded for the request `id`,
/// completed after `since`.
fn verified_backup(schedule: &BackupSchedule, bot: &str, id: &str, since: &Time) -> Option<String> {
    let status = schedule.status.as_ref()?;
    if status.last_on_demand_request.as_deref() != Some(id) {
        return None;
    }
    status
        .recent_backups
        .iter()
        .filter(|b| b.bot == bot && b.verified && b.completed_at.0 >= since.0)
        .max_by_key(|b| b.completed_at.0)
        .map(|b| b.key.clone())
}

async fn backup_progress(ctx: &Context, bot: &TradingBot, a: &ActiveRollout) -> BackupProgress {
    let ns = bot.namespace().unwrap_or_default();
    let name = bot.name_any();
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let schedules = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            warn!(bot = %name, error = %e, "cannot list BackupSchedules for the pre-update backup");
            return BackupProgress::Waiting(format!("cannot read BackupSchedules: {e}"));
        }
    };
    let labels = bot.labels();
    let mut selecting: Vec<BackupSchedule> = schedules
        .into_iter()
        .filter(|s| {
            Selector::try_from(s.spec.bot_selector.clone()).is_ok_and(|sel| sel.matches(labels))
        })
        .collect();
    selecting.sort_by_key(ResourceExt::name_any);
    let Some(schedule) = selecting.into_iter().next() else {
        return BackupProgress::NoSchedule;
    };
    let sname = schedule.name_any();
    if let Some(key) = verified_backup(&schedule, &name, &a.id, &a.started_at) {
        return BackupProgress::Verified(sname, key);
    }
    let asked = schedule.annotations().get(BACKUP_NOW_ANNOTATION) == Some(&a.id);
    if !asked {
        let patch = json!({"metadata": {"annotations": {BACKUP_NOW_ANNOTATION: a.id}}});
        if let Err(e) = api
            .patch(&sname, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            return BackupProgress::Waiting(format!(
                "cannot request a backup from BackupSchedule {sname}: {e}"
            ));
        }
        ctx.event(
                bot,
                EventType::Normal,
                "PreUpdateBackupRequested",
                "Rollout",
                format!(
                    "asked BackupSchedule {sname} for a backup ({BACKUP_NOW_ANNOTATION}={}) before rolling out {}",
                    a.id, a.to_version
                ),
            )
            .await;
    }
    BackupProgress::Waiting(format!(
        "waiting for a verified backup from BackupSchedule {sname}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use iq720_crds::TradingBotSpec;
    use iq720_crds::trading_bot::EmergencyStopStatus;

    fn w(version: &str) -> Wanted {
        Wanted {
            version: version.into(),
            repository: repository_part(version).into(),
            auto_rollback: true,
            pre_update_backup: false,
            health_timeout: Duration::from_secs(60),
            resume_request: None,
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn stable(v: &str) -> RolloutStatus {
        RolloutStatus {
            stable_version: Some(v.into()),
            ..RolloutStatus::default()
        }
    }

    fn healthy(version: &str) -> Health {
        Health {
            pod_ready: true,
            stuck: None,
            probe: Some(Probe {
                version: version.into(),
                paused: true,
                engine_loop_age_seconds: Some(0.5),
                market_data_fresh: true,
            }),
            pod_image: None,
        }
    }

    fn step(r: &RolloutStatus) -> Option<RolloutStep> {
        r.active.as_ref().map(|a| a.step)
    }

    /// From a rollout that `advance` started, until the pod is rolled (HealthGate).
    fn to_health_gate_from_started(wanted: &Wanted, r: &mut RolloutStatus, now: Timestamp) {
        advance(wanted, r, None, None, false, now);
        assert_eq!(step(r), Some(RolloutStep::HaltingEntries));
        let mut paused = healthy(r.stable_version.as_deref().map(version_part).unwrap());
        paused.probe.as_mut().unwrap().paused = true;
        observe(wanted, r, &paused, now);
        assert_eq!(step(r), Some(RolloutStep::HealthGate));
    }

    /// Drives a rollout of `to` from `r` until the pod is rolled (HealthGate).
    fn to_health_gate(wanted: &Wanted, r: &mut RolloutStatus, now: Timestamp) {
        advance(wanted, r, None, None, false, now);
        assert_eq!(step(r), Some(RolloutStep::HaltingEntries));
        let running = r.stable_version.clone().unwrap();
        let mut paused = healthy(&running);
        assert_eq!(
            outputs(wanted, r, now),
            Plan {
                version_override: Some(running.clone()),
                halt_entries: true,
                bypass_window: false,
                rollback_restore: None,
            }
        );
        paused.probe.as_mut().unwrap().paused = false;
        observe(wanted, r, &paused, now);
        assert_eq!(step(r), Some(RolloutStep::HaltingEntries), "not paused yet");
        paused.probe.as_mut().unwrap().paused = true;
        let out = observe(wanted, r, &paused, now);
        assert_eq!(step(r), Some(RolloutStep::HealthGate));
        assert_eq!(out.notes[0].reason, "RolloutRolling");
    }

    #[test]
    fn first_deploy_records_the_baseline_without_a_rollout() {
        let mut r = RolloutStatus::default();
        let notes = advance(&w("0.1.0"), &mut r, None, None, false, t(0));
        assert!(notes.is_empty() && r.active.is_none());
        assert_eq!(outputs(&w("0.1.0"), &r, t(0)), Plan::default());
        observe(&w("0.1.0"), &mut r, &healthy("0.1.0"), t(1));
        assert_eq!(r.stable_version.as_deref(), Some("0.1.0"));
        // A bot from before rollouts: its running version is the baseline.
        let mut old = RolloutStatus::default();
        advance(&w("0.2.0"), &mut old, Some("0.1.0"), None, false, t(0));
        assert_eq!(old.stable_version.as_deref(), Some("0.1.0"));
        assert_eq!(step(&old), Some(RolloutStep::HaltingEntries));
    }

    #[test]
    fn a_good_version_passes_the_gate_and_becomes_stable() {
        let wanted = w("0.2.0");
        let mut r = stable("0.1.0");
        to_health_gate(&wanted, &mut r, t(0));
        let plan = outputs(&wanted, &r, t(1));
        assert_eq!(plan.version_override.as_deref(), Some("0.2.0"));
        assert!(plan.halt_entries, "entries stay halted through the gate");
        // The old pod still answers: not the new version yet.
        let out = observe(&wanted, &mut r, &healthy("0.1.0"), t(2));
        assert!(out.notes.is_empty());
        assert!(
            r.active
                .as_ref()
                .unwrap()
                .message
                .as_ref()
                .unwrap()
                .contains("reports version 0.1.0")
        );
        // Stale market data or a stuck engine keep it waiting.
        let mut stale = healthy("0.2.0");
        stale.probe.as_mut().unwrap().market_data_fresh = false;
        observe(&wanted, &mut r, &stale, t(3));
        let mut stuck = healthy("0.2.0");
        stuck.probe.as_mut().unwrap().engine_loop_age_seconds = Some(30.0);
        observe(&wanted, &mut r, &stuck, t(4));
        assert_eq!(step(&r), Some(RolloutStep::HealthGate));
        let out = observe(&wanted, &mut r, &healthy("v0.2.0"), t(5));
        assert_eq!(out.notes[0].reason, "RolloutSucceeded");
        assert!(r.active.is_none());
        assert_eq!(r.stable_version.as_deref(), Some("0.2.0"));
        assert_eq!(r.history[0].result, RolloutResult::Succeeded);
        assert_eq!(r.history[0].gate_ms, Some(5000));
        assert_eq!(outputs(&wanted, &r, t(6)), Plan::default());
        let mut st = TradingBotStatus {
            rollout: Some(r),
            ..TradingBotStatus::default()
        };
        report(&mut st, &wanted, Some(2));
        let c = conditions::find(&st.conditions, condition::UPGRADING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "UpToDate")
        );
    }

    #[test]
    fn a_broken_version_is_rolled_back_recorded_and_not_retried() {
        let wanted = w("0.2.0-broken");
        let mut r = stable("0.1.0");
        to_health_gate(&wanted, &mut r, t(0));
        let mut not_ready = healthy("0.2.0-broken");
        not_ready.pod_ready = false;
        assert!(!observe(&wanted, &mut r, &not_ready, t(59)).rolled_back);
        let out = observe(&wanted, &mut r, &not_ready, t(61));
        assert!(out.rolled_back);
        assert_eq!(out.notes[0].reason, "RolledBack");
        assert!(out.notes[0].warning);
        assert!(r.active.is_none());
        assert_eq!(r.failed_version.as_deref(), Some("0.2.0-broken"));
        assert!(
            r.failure_reason.as_ref().unwrap().contains("healthTimeout")
                && r.failure_reason.as_ref().unwrap().contains("not Ready"),
            "{:?}",
            r.failure_reason
        );
        assert_eq!(r.consecutive_rollbacks, 1);
        assert_eq!(r.history[0].result, RolloutResult::RolledBack);
        // The template goes back to the stable version, at once even in a closed window.
        let plan = outputs(&wanted, &r, t(62));
        assert_eq!(plan.version_override.as_deref(), Some("0.1.0"));
        assert!(plan.bypass_window);
        // Not retried while spec.version names it: no new rollout, ever.
        for s in [100, 10_000, 100_000] {
            assert!(advance(&wanted, &mut r, Some("0.1.0"), None, false, t(s)).is_empty());
            assert!(r.active.is_none());
            let plan = outputs(&wanted, &r, t(s));
            assert_eq!(plan.version_override.as_deref(), Some("0.1.0"));
            assert!(!plan.halt_entries);
        }
        assert!(!outputs(&wanted, &r, t(100_000)).bypass_window);
        let mut st = TradingBotStatus {
            rollout: Some(r.clone()),
            ..TradingBotStatus::default()
        };
        report(&mut st, &wanted, None);
        let c = conditions::find(&st.conditions, condition::UPGRADING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RolledBack")
        );
        // A new spec.version is a new rollout; the failed record is cleared.
        let notes = advance(&w("0.2.1"), &mut r, None, None, false, t(200_000));
        assert_eq!(notes[0].reason, "RolloutStarted");
        assert!(r.failed_version.is_none());
        assert_eq!(r.active.as_ref().unwrap().from_version, "0.1.0");
    }

    #[test]
    fn a_rollback_after_a_pre_update_backup_restores_it_if_the_schema_moved() {
        let wanted = w("0.3.0-migrating");
        let mut r = stable("0.1.0");
        to_health_gate(&wanted, &mut r, t(0));
        let a = r.active.as_mut().unwrap();
        a.backup_schedule = Some("nightly".into());
        a.backup_key = Some("p/ns/b/pre.tar.gz".into());
        let mut not_ready = healthy("0.3.0-migrating");
        not_ready.pod_ready = false;
        let out = observe(&wanted, &mut r, &not_ready, t(61));
        assert!(out.rolled_back);
        assert!(
            out.notes
                .iter()
                .any(|n| n.reason == "RollbackRestoresDatabase")
        );
        let restore = RollbackRestore {
            backup_schedule: "nightly".into(),
            key: "p/ns/b/pre.tar.gz".into(),
        };
        assert_eq!(r.rollback_restore.as_ref(), Some(&restore));
        // Every template of the stable version keeps the step, also once spec.version
        // is set back to it (no roll of its own)...
        let plan = outputs(&wanted, &r, t(62));
        assert_eq!(plan.version_override.as_deref(), Some("0.1.0"));
        assert_eq!(plan.rollback_restore.as_ref(), Some(&restore));
        advance(&w("0.1.0"), &mut r, Some("0.1.0"), None, false, t(70));
        assert_eq!(
            outputs(&w("0.1.0"), &r, t(70)).rollback_restore,
            Some(restore)
        );
        // ...until the next rollout replaces the template anyway.
        advance(&w("0.2.0"), &mut r, Some("0.1.0"), None, false, t(80));
        assert!(r.rollback_restore.is_none());
        assert!(outputs(&w("0.2.0"), &r, t(80)).rollback_restore.is_none());
    }

    #[test]
    fn a_rollback_without_a_pre_update_backup_has_nothing_to_restore() {
        let wanted = w("0.2.0-broken");
        let mut r = stable("0.1.0");
        to_health_gate(&wanted, &mut r, t(0));
        let mut not_ready = healthy("0.2.0-broken");
        not_ready.pod_ready = false;
        let out = observe(&wanted, &mut r, &not_ready, t(61));
        assert!(out.rolled_back);
        assert!(r.rollback_restore.is_none());
        assert!(
            out.notes
                .iter()
                .all(|n| n.reason != "RollbackRestoresDatabase")
        );
    }

    #[test]
    fn a_release_names_the_repository_only_when_it_is_not_the_default() {
        assert_eq!(release_of(DEFAULT_BOT_IMAGE, "0.2.0"), "0.2.0");
        let custom = release_of("registry.local:5000/team/iq720-bot", "0.2.0");
        assert_eq!(custom, "registry.local:5000/team/iq720-bot:0.2.0");
        assert_eq!(
            repository_part(&custom),
            "registry.local:5000/team/iq720-bot"
        );
        assert_eq!(version_part(&custom), "0.2.0");
        assert_eq!(
            (repository_part("0.2.0"), version_part("0.2.0")),
            (DEFAULT_BOT_IMAGE, "0.2.0")
        );
        assert!(same_version("v0.2.0", "0.2.0"));
        assert!(
            !same_version(&custom, "0.2.0"),
            "another repository is another release"
        );
        assert!(reports("0.2.0", &custom));
    }

    #[test]
    fn an_image_repository_change_is_a_rollout_through_the_gate() {
        let mirror = release_of("mirror.local/iq720-bot", "0.1.0");
        let wanted = w(&mirror);
        let mut r = stable("0.1.0");
        let notes = advance(&wanted, &mut r, None, None, false, t(0));
        assert_eq!(notes[0].reason, "RolloutStarted");
        assert_eq!(r.active.as_ref().unwrap().to_version, mirror);
        to_health_gate_from_started(&wanted, &mut r, t(1));
        let plan = outputs(&wanted, &r, t(2));
        let mut bot: TradingBot = serde_json::from_value(serde_json::json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"version": "0.1.0", "pairs": ["BTC/USDT"],
                     "image": {"repository": "mirror.local/iq720-bot"}},
        }))
        .unwrap();
        // The gate runs the new repository; the bot reports the version it always did.
        assert_eq!(
            plan.builder_input(&bot).spec.image.repository,
            "mirror.local/iq720-bot"
        );
        let out = observe(&wanted, &mut r, &healthy("0.1.0"), t(3));
        assert_eq!(out.notes[0].reason, "RolloutSucceeded");
        assert_eq!(r.stable_version.as_deref(), Some(mirror.as_str()));
        // A broken mirror would have rolled back to the default repository.
        bot.spec.image.repository = "broken.local/iq720-bot".into();
        let back = Plan {
            version_override: Some("0.1.0".into()),
            ..Plan::default()
        };
        let input = back.builder_input(&bot);
        assert_eq!(
            (
                input.spec.image.repository.as_str(),
                input.spec.version.as_str()
            ),
            (DEFAULT_BOT_IMAGE, "0.1.0")
        );
    }

    #[test]
    fn the_gate_waits_for_the_pod_of_the_new_image() {
        let mirror = release_of("mirror.local/iq720-bot", "0.1.0");
        let mut old_pod = healthy("0.1.0");
        old_pod.pod_image = Some(format!("{DEFAULT_BOT_IMAGE}:0.1.0"));
        assert!(
            matches!(gate_check(&old_pod, &mirror), GateCheck::Wait(w) if w.contains("still runs"))
        );
        let mut new_pod = healthy("0.1.0");
        new_pod.pod_image = Some("mirror.local/iq720-bot:0.1.0".into());
        assert_eq!(gate_check(&new_pod, &mirror), GateCheck::Pass);
    }

    #[test]
    fn a_pod_that_cannot_run_fails_the_gate_at_once() {
        let wanted = w("0.3.0");
        let mut r = stable("0.1.0");
        to_health_gate(&wanted, &mut r, t(0));
        let h = Health {
            stuck: Some("ErrImagePull".into()),
            ..Health::default()
        };
        assert!(observe(&wanted, &mut r, &h, t(1)).rolled_back);
        assert!(r.failure_reason.unwrap().contains("ErrImagePull"));
    }

    #[test]
    fn without_auto_rollback_the_failed_version_stays() {
        let mut wanted = w("0.2.0");
        wanted.auto_rollback = false;
        let mut r = stable("0.1.0");
        to_health_gate(&wanted, &mut r, t(0));
        let out = observe(&wanted, &mut r, &Health::default(), t(120));
        assert!(!out.rolled_back);
        assert_eq!(out.notes[0].reason, "RolloutFailed");
        assert_eq!(r.history[0].result, RolloutResult::Failed);
        assert_eq!(r.failed_version.as_deref(), Some("0.2.0"));
        assert_eq!(r.consecutive_rollbacks, 0);
        assert_eq!(outputs(&wanted, &r, t(121)), Plan::default());
        advance(&wanted, &mut r, None, None, false, t(200));
        assert!(r.active.is_none(), "not retried");
        let mut st = TradingBotStatus {
            rollout: Some(r),
            ..TradingBotStatus::default()
        };
        report(&mut st, &wanted, None);
        let c = conditions::find(&st.conditions, condition::UPGRADING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "HealthGateFailed")
        );
    }

    #[test]
    fn consecutive_rollbacks_halt_automatic_updates_until_resumed() {
        let mut r = stable("0.1.0");
        for (i, v) in ["0.2.0", "0.2.1", "0.2.2"].iter().enumerate() {
            let wanted = w(v);
            let base = i64::try_from(i).unwrap() * 1000;
            to_health_gate(&wanted, &mut r, t(base));
            assert!(observe(&wanted, &mut r, &Health::default(), t(base + 61)).rolled_back);
        }
        assert_eq!(r.consecutive_rollbacks, HALT_AFTER_ROLLBACKS);
        let wanted = w("0.2.3");
        advance(&wanted, &mut r, None, None, false, t(10_000));
        assert!(r.active.is_none(), "halted: no new rollout");
        assert_eq!(
            outputs(&wanted, &r, t(10_000)).version_override.as_deref(),
            Some("0.1.0")
        );
        let mut st = TradingBotStatus {
            rollout: Some(r.clone()),
            ..TradingBotStatus::default()
        };
        report(&mut st, &wanted, None);
        assert!(conditions::is_true(
            &st.conditions,
            condition::AUTO_UPDATES_HALTED
        ));
        let c = conditions::find(&st.conditions, condition::UPGRADING).unwrap();
        assert_eq!(c.reason, "AutoUpdatesHalted");
        // The annotation resumes them.
        let mut resumed = wanted.clone();
        resumed.resume_request = Some("1".into());
        let notes = advance(&resumed, &mut r, None, None, false, t(10_001));
        assert!(notes.iter().any(|n| n.reason == "UpdatesResumed"));
        assert_eq!(step(&r), Some(RolloutStep::HaltingEntries));
        st.rollout = Some(r);
        report(&mut st, &resumed, None);
        assert!(!conditions::is_true(
            &st.conditions,
            condition::AUTO_UPDATES_HALTED
        ));
    }

    #[test]
    fn a_closed_window_holds_the_rollout_before_the_roll() {
        let wanted = w("0.2.0");
        let mut r = stable("0.1.0");
        advance(&wanted, &mut r, None, None, true, t(0));
        assert_eq!(step(&r), Some(RolloutStep::WaitingForWindow));
        // The template follows the spec; the gate holds it (MaintenancePending).
        assert_eq!(outputs(&wanted, &r, t(0)), Plan::default());
        advance(&wanted, &mut r, None, None, false, t(10));
        assert_eq!(step(&r), Some(RolloutStep::HaltingEntries));
        // The window closes again before the roll.
        advance(&wanted, &mut r, None, None, true, t(20));
        assert_eq!(step(&r), Some(RolloutStep::WaitingForWindow));
    }

    #[test]
    fn pre_update_backup_comes_before_the_halt() {
        let mut wanted = w("0.2.0");
        wanted.pre_update_backup = true;
        let mut r = stable("0.1.0");
        advance(&wanted, &mut r, None, None, false, t(0));
        assert_eq!(step(&r), Some(RolloutStep::BackingUp));
        let plan = outputs(&wanted, &r, t(0));
        assert_eq!(plan.version_override.as_deref(), Some("0.1.0"));
        assert!(!plan.halt_entries);
    }

    #[test]
    fn changing_the_version_mid_rollout_supersedes_it_and_setting_it_back_cancels() {
        let mut r = stable("0.1.0");
        to_health_gate(&w("0.2.0"), &mut r, t(0));
        advance(&w("0.3.0"), &mut r, None, None, false, t(5));
        assert_eq!(r.active.as_ref().unwrap().to_version, "0.3.0");
        assert_eq!(r.history[0].result, RolloutResult::Superseded);
        let notes = advance(&w("0.1.0"), &mut r, None, None, false, t(6));
        assert_eq!(notes[0].reason, "RolloutCancelled");
        assert!(r.active.is_none());
        assert_eq!(outputs(&w("0.1.0"), &r, t(6)), Plan::default());
    }

    #[test]
    fn an_emergency_stop_interrupts_the_rollout_which_starts_over() {
        let wanted = w("0.2.0");
        let mut r = stable("0.1.0");
        to_health_gate(&wanted, &mut r, t(0));
        let stop = Time(t(3));
        advance(&wanted, &mut r, None, Some(&stop), false, t(30));
        assert_eq!(r.history[0].result, RolloutResult::Superseded);
        assert!(
            r.history[0]
                .reason
                .as_ref()
                .unwrap()
                .contains("emergency stop")
        );
        let a = r.active.as_ref().unwrap();
        assert_eq!(a.step, RolloutStep::HaltingEntries);
        assert_eq!(a.started_at, Time(t(30)));
        // The same (older) stop does not interrupt it again.
        advance(&wanted, &mut r, None, Some(&stop), false, t(31));
        assert_eq!(r.history.len(), 1);
    }

    #[test]
    fn the_emergency_stop_path_runs_before_a_rollout_in_progress() {
        let spec: TradingBotSpec = serde_json::from_value(
            serde_json::json!({"version": "0.2.0", "pairs": ["BTC/USDT"], "emergencyStop": true}),
        )
        .unwrap();
        let mut bot = TradingBot::new("alpha", spec);
        let mut r = stable("0.1.0");
        let mut wanted = Wanted::of(&bot);
        wanted.pre_update_backup = false;
        to_health_gate(&wanted, &mut r, t(0));
        bot.status = Some(TradingBotStatus {
            rollout: Some(r),
            emergency_stop: Some(EmergencyStopStatus::default()),
            ..TradingBotStatus::default()
        });
        assert!(matches!(
            super::super::decide::plan(&bot, super::super::decide::FleetSwitch::Off, &[]),
            super::super::decide::Plan::EmergencyStop(_)
        ));
    }

    #[test]
    fn history_is_bounded_and_newest_first() {
        let mut r = stable("0.1.0");
        for i in 0..8 {
            let v = format!("0.2.{i}");
            to_health_gate(&w(&v), &mut r, t(i * 100));
            observe(&w(&v), &mut r, &healthy(&v), t(i * 100 + 1));
        }
        assert_eq!(r.history.len(), HISTORY_LIMIT);
        assert_eq!(r.history[0].to_version, "0.2.7");
        assert_eq!(r.stable_version.as_deref(), Some("0.2.7"));
    }

    #[test]
    fn the_builder_input_changes_only_the_version() {
        let spec: TradingBotSpec =
            serde_json::from_value(serde_json::json!({"version": "0.2.0", "pairs": ["BTC/USDT"]}))
                .unwrap();
        let bot = TradingBot::new("alpha", spec);
        let plan = Plan {
            version_override: Some("0.1.0".into()),
            ..Plan::default()
        };
        let input = plan.builder_input(&bot);
        assert_eq!(input.spec.version, "0.1.0");
        assert_eq!(input.spec.pairs, bot.spec.pairs);
        assert_eq!(bot.spec.version, "0.2.0", "the spec itself is untouched");
        assert!(matches!(
            Plan::default().builder_input(&bot),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_backup_counts_only_when_verified_for_this_request_and_bot() {
        let mut s: BackupSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "b"},
            "spec": {"schedule": "0 3 * * *", "botSelector": {},
                "destination": {"bucket": "x", "endpoint": "http://s3", "credentialsSecretRef": {"name": "s"}}},
            "status": {"lastOnDemandRequest": "r1", "recentBackups": [
                {"bot": "alpha", "key": "old", "sizeBytes": 1, "sha256": "a", "verified": true, "completedAt": "2027-01-15T00:00:00Z"},
                {"bot": "alpha", "key": "bad", "sizeBytes": 1, "sha256": "a", "verified": false, "completedAt": "2027-01-15T08:00:01Z"},
                {"bot": "other", "key": "o", "sizeBytes": 1, "sha256": "a", "verified": true, "completedAt": "2027-01-15T08:00:02Z"},
                {"bot": "alpha", "key": "new", "sizeBytes": 1, "sha256": "a", "verified": true, "completedAt": "2027-01-15T08:00:03Z"}
            ]}
        }))
        .unwrap();
        let since = Time("2027-01-15T08:00:00Z".parse().unwrap());
        assert_eq!(
            verified_backup(&s, "alpha", "r1", &since).as_deref(),
            Some("new")
        );
        assert_eq!(verified_backup(&s, "alpha", "r2", &since), None);
        s.status.as_mut().unwrap().recent_backups.pop();
        assert_eq!(verified_backup(&s, "alpha", "r1", &since), None);
    }
}
