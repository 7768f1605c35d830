//! Converse step: bring the running bot in line with the spec through its API (hot
//! configuration, pause, resume after a lifted emergency stop) and read its figures.
//!
//! Why a separate step: these are the changes that must never restart the pod, and
//! pause must keep working even when the rest of the spec is invalid.
//!
//! The same poll reads the bot's security audit (`GET /api/v1/security`, once) into
//! `status.security`: only the count of rejected authentications and the time of the
//! last one, truncated to whole seconds as the status stores it, so an idle bot's
//! status never changes and is never written. A Warning Event `AuthFailures` marks each
//! poll that finds new rejections.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use iq720_contract::api::SecurityResponse;
use iq720_crds::trading_bot::{SecurityStatus, TradingBotPhase};
use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{debug, info};

use super::build::{self, DesiredObjects};
use super::error::Result;
use super::status::{BotReport, condition, set_condition};
use crate::botlink::CLOSE_ALL_HALT_REASON;
use crate::botlink::client::BotEndpoint;
use crate::shared::cache::bytes_hash;
use crate::shared::context::Context;

/// Whether a bot reporting `halted` should be resumed for a spec without an emergency
/// stop: only a halt that close-all caused.
pub fn should_resume(emergency_stop_wanted: bool, halted: Option<&str>) -> bool {
    !emergency_stop_wanted && halted == Some(CLOSE_ALL_HALT_REASON)
}

/// The pause a bot should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pause {
    /// `spec.paused` OR an open maintenance window with `pauseTrading`.
    pub paused: bool,
    /// The window that pauses the bot when the spec does not (for the Event).
    pub window: Option<String>,
}

impl Pause {
    /// The pause the spec alone asks for.
    pub fn of_spec(bot: &TradingBot) -> Self {
        Self {
            paused: bot.spec.paused,
            window: None,
        }
    }
}

/// Sets the bot's pause to `wanted`; returns whether it changed anything.
/// `known_paused`: the bot's pause as read a moment ago in the same reconcile (`None`
/// reads it).
pub async fn sync_pause(
    ctx: &Context,
    bot: &TradingBot,
    ep: &BotEndpoint,
    wanted: &Pause,
    known_paused: Option<bool>,
) -> Result<bool> {
    let paused_now = match known_paused {
        Some(paused) => paused,
        None => ctx.bots.status(ep).await?.paused,
    };
    if paused_now == wanted.paused {
        return Ok(false);
    }
    ctx.bots
        .patch_config(ep, &json!({ "paused": wanted.paused }))
        .await?;
    let (reason, note) = match (wanted.paused, &wanted.window) {
        (true, Some(w)) => (
            "Paused",
            format!(
                "new entries paused for maintenance window {w}; open positions keep being managed"
            ),
        ),
        (true, None) => (
            "Paused",
            "new entries paused; open positions keep being managed".to_string(),
        ),
        (false, _) => ("Unpaused", "new entries allowed again".to_string()),
    };
    ctx.event(bot, EventType::Normal, reason, "Pause", note)
        .await;
    Ok(true)
}

/// Brings the running bot in line with the spec and reads its figures.
pub async fn converse(
    ctx: &Context,
    bot: &TradingBot,
    ep: &BotEndpoint,
    desired: &DesiredObjects,
    pause: &Pause,
    st: &mut TradingBotStatus,
) -> Result<BotReport> {
    let generation = bot.metadata.generation;
    // One status read serves the whole conversation unless it changes the bot (a
    // resume, a hot reload, a pause): at every poll of every bot, each saved request
    // is operator and bot CPU (`make bench-scale`).
    let mut changed = false;
    let status_json = ctx.bots.status(ep).await?;
    let halted = status_json.halted;
    let reason = status_json.halt_reason.as_deref();
    if halted && should_resume(bot.spec.emergency_stop, reason) {
        changed = true;
        ctx.bots.resume(ep).await?;
        let lifted = st.emergency_stop.is_some();
        st.emergency_stop = None;
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            false,
            "Recovered",
            "no emergency stop; the bot was resumed",
            generation,
        );
        let note = if lifted {
            "emergency stop cleared: the bot is back and resumed"
        } else {
            "the bot's database carried the halt of an earlier close-all (a deleted bot of \
             the same name); the spec asks to trade, so the bot was resumed"
        };
        ctx.event(
            bot,
            EventType::Normal,
            "Resumed",
            "Resume",
            note.to_string(),
        )
        .await;
        info!(bot = %bot.name_any(), "resumed a bot halted by close-all");
    }
    // Hot-reloadable configuration (pause is compared with the engine's live state).
    // Checked when the desired part changed, the bot process restarted, or at most
    // every `status_figures_interval` otherwise (drift by a direct API call is
    // corrected within that): one bot API read fewer per poll.
    let mut hot = desired.config.hot.clone();
    if let Some(obj) = hot.as_object_mut() {
        obj.remove("paused");
    }
    let (ns, name) = (bot.namespace().unwrap_or_default(), bot.name_any());
    let hot_hash = bytes_hash(hot.to_string().as_bytes());
    let uptime = status_json
        .uptime_seconds
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok());
    let interval = ctx.settings.status_figures_interval;
    let check = ctx
        .hot_confirmed
        .due(&ns, &name, &hot_hash, uptime, interval);
    let reported = if check {
        Some(ctx.bots.config(ep).await?)
    } else {
        None
    };
    let patch = reported
        .as_ref()
        .and_then(|r| build::bot_config::hot_diff(&hot, r));
    if reported.is_some() && patch.is_none() {
        ctx.hot_confirmed.confirm(&ns, &name, &hot_hash);
    }
    if let Some(patch) = patch {
        changed = true;
        match ctx.bots.patch_config(ep, &patch).await {
            Ok(_) => {
                ctx.metrics
                    .hot_reloads
                    .with_label_values(&["applied"])
                    .inc();
                let fields: Vec<&String> = patch
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                ctx.event(
                    bot,
                    EventType::Normal,
                    "ConfigReloaded",
                    "HotReload",
                    format!("applied {fields:?} to the running bot without a restart"),
                )
                .await;
            }
            Err(e) => {
                ctx.metrics.hot_reloads.with_label_values(&["failed"]).inc();
                ctx.event(
                    bot,
                    EventType::Warning,
                    "ConfigReloadFailed",
                    "HotReload",
                    e.to_string(),
                )
                .await;
                return Err(e.into());
            }
        }
    }
    let known_paused = (!changed).then_some(status_json.paused);
    changed |= sync_pause(ctx, bot, ep, pause, known_paused).await?;
    let status_json = if changed {
        ctx.bots.status(ep).await?
    } else {
        status_json
    };
    // The win rate (the one figure only `/performance` has) is read at the figures'
    // rate: at every poll it was a third of the requests to an idle bot.
    let key = super::status::figures_key(&ns, &name);
    let performance = if ctx.figures_read_due(&key) {
        let p = ctx.bots.performance(ep).await?;
        ctx.figures_read(&key);
        Some(p)
    } else {
        None
    };
    let security = audit(ctx, bot, ep, st).await;
    Ok(BotReport {
        security,
        ..BotReport::from_api(&status_json, performance.as_ref())
    })
}

/// The status figures of a security audit, and how many rejections are new since
/// `stored` (0 when none). New rejections are told by a later `lastAuthFailureAt`, so
/// a bot restart (its count starts again from zero) is no increase until it rejects
/// again; then the new count is the bot's total when it is below the stored one.
pub fn fold_security(
    stored: Option<&SecurityStatus>,
    audit: &SecurityResponse,
) -> (SecurityStatus, i64) {
    let total = i64::try_from(audit.auth_failures.total).unwrap_or(i64::MAX);
    let last = audit
        .auth_failures
        .last_failure_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .and_then(|t| Timestamp::from_second(t.as_second()).ok())
        .map(Time);
    let next = SecurityStatus {
        auth_failures: total,
        last_auth_failure_at: last,
    };
    let before = stored.map_or(0, |s| s.auth_failures);
    let newer = match (
        &next.last_auth_failure_at,
        stored.and_then(|s| s.last_auth_failure_at.as_ref()),
    ) {
        (Some(now), Some(then)) => now.0 > then.0 || total > before,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let new = if !newer || total == 0 {
        0
    } else if total > before {
        total - before
    } else {
        total
    };
    (next, new)
}

/// The audit each bot (by uid) was last seen with by this process. A reconcile may run
/// on a cached object older than the status the previous one wrote; comparing with
/// this record as well keeps it from announcing the same rejections again. After a
/// restart the stored status is the baseline (at worst one repeated Event).
static SEEN: OnceLock<Mutex<HashMap<String, SecurityStatus>>> = OnceLock::new();

/// Whichever of two audits saw the later rejection.
fn later<'a>(
    a: Option<&'a SecurityStatus>,
    b: Option<&'a SecurityStatus>,
) -> Option<&'a SecurityStatus> {
    match (a, b) {
        (Some(x), Some(y)) => {
            let key = |s: &SecurityStatus| {
                (
                    s.last_auth_failure_at.as_ref().map(|t| t.0),
                    s.auth_failures,
                )
            };
            Some(if key(y) > key(x) { y } else { x })
        }
        (x, y) => x.or(y),
    }
}

/// Reads the bot's security audit into `st.security`, with a Warning Event
/// `AuthFailures` when there are new rejections. A bot that cannot answer (an older
/// version without the route) keeps the stored figures: the audit never fails a poll.
/// Returns the bot's answer, for the steps after the conversation.
async fn audit(
    ctx: &Context,
    bot: &TradingBot,
    ep: &BotEndpoint,
    st: &mut TradingBotStatus,
) -> Option<SecurityResponse> {
    let answer = match ctx.bots.security(ep).await {
        Ok(a) => a,
        Err(e) => {
            debug!(bot = %bot.name_any(), error = %e, "cannot read the bot's security audit");
            return None;
        }
    };
    let key = bot
        .uid()
        .unwrap_or_else(|| format!("{}/{}", bot.namespace().unwrap_or_default(), bot.name_any()));
    let seen = SEEN.get_or_init(Default::default);
    let remembered = seen.lock().ok().and_then(|m| m.get(&key).cloned());
    let (next, new) = fold_security(later(st.security.as_ref(), remembered.as_ref()), &answer);
    if let Ok(mut m) = seen.lock() {
        m.insert(key, next.clone());
    }
    if new > 0 {
        let reasons: Vec<String> = answer
            .auth_failures
            .by_reason
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        ctx.event(
            bot,
            EventType::Warning,
            "AuthFailures",
            "Audit",
            format!(
                "the bot rejected {new} API request(s) for a missing, malformed or unknown \
                 token ({} since it started: {})",
                next.auth_failures,
                reasons.join(", ")
            ),
        )
        .await;
    }
    st.security = Some(next);
    Some(answer)
}

/// Status of a bot whose pod is not running or not ready yet.
pub fn starting(st: &mut TradingBotStatus, why: &str, generation: Option<i64>) {
    st.phase = Some(TradingBotPhase::Starting);
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        "Starting",
        why,
        generation,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_close_all_halt_is_lifted() {
        assert!(should_resume(false, Some(CLOSE_ALL_HALT_REASON)));
        assert!(!should_resume(true, Some(CLOSE_ALL_HALT_REASON)));
        assert!(!should_resume(false, Some("daily loss limit reached")));
        assert!(!should_resume(false, None));
    }

    fn answer(total: u64, last: Option<&str>) -> SecurityResponse {
        serde_json::from_value(json!({
            "authFailures": {"total": total, "byReason": {"invalid": total}, "lastFailureAt": last},
            "tokens": [{"id": "token-1", "lastUsedAt": null, "uses": 0}]
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn security_counts_new_rejections_once_and_ignores_sub_second_time() {
        let (idle, new) = fold_security(None, &answer(0, None));
        assert_eq!(
            (idle.auth_failures, idle.last_auth_failure_at.clone(), new),
            (0, None, 0)
        );
        let (s3, new) = fold_security(Some(&idle), &answer(3, Some("2026-11-25T15:00:00.123456Z")));
        assert_eq!((s3.auth_failures, new), (3, 3));
        // The status stores whole seconds: the same answer again is no change.
        let stored: SecurityStatus =
            serde_json::from_value(serde_json::to_value(&s3).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored, s3);
        let (again, new) = fold_security(
            Some(&stored),
            &answer(3, Some("2026-11-25T15:00:00.123456Z")),
        );
        assert_eq!((again == stored, new), (true, 0));
        let (s5, new) = fold_security(Some(&stored), &answer(5, Some("2026-11-25T15:00:07Z")));
        assert_eq!((s5.auth_failures, new), (5, 2));
        // A restarted bot counts from zero: no Event until it rejects again.
        let (restarted, new) = fold_security(Some(&s5), &answer(0, None));
        assert_eq!((restarted.auth_failures, new), (0, 0));
        let (s1, new) = fold_security(Some(&s5), &answer(1, Some("2026-11-25T16:00:00Z")));
        assert_eq!((s1.auth_failures, new), (1, 1));
        // A stale stored status loses against what this process saw last.
        assert_eq!(later(Some(&idle), Some(&s5)), Some(&s5));
        assert_eq!(later(Some(&s5), Some(&s3)), Some(&s5));
        assert_eq!(later(None, Some(&s3)), Some(&s3));
        let (_, new) = fold_security(
            later(Some(&idle), Some(&s5)),
            &answer(5, Some("2026-11-25T15:00:07Z")),
        );
        assert_eq!(new, 0);
    }
}
