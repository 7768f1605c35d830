//! Rotation of the bot's own API tokens (the runbook's quarterly key rotation).
//!
//! Why it is built this way: the operator reaches a bot only with a token from the
//! bot's token Secret, and the operator may be killed at any moment. A rotation that
//! replaced the token in one write could leave the operator holding a token the bot no
//! longer accepts (or the bot not yet accepting the one the operator holds: the mounted
//! Secret is refreshed with a delay). So a rotation overlaps the two tokens — the bot
//! accepts every key of its token Secret — and moves forward one persisted step per
//! reconcile:
//!
//! 1. **start**: record `status.apiKeys.rotation` (the new key's *name* and the start
//!    time) with a status write, *then* add the new token to the Secret as key
//!    `token-<unix seconds>` next to the old one. A restart between the two writes
//!    finds the record and adds the key; a Secret that already holds several tokens
//!    without a record (a record lost) is taken as a rotation to its newest key;
//! 2. **verify**: call `GET /api/v1/status` with the new token until the bot accepts it
//!    (the kubelet refreshes the mounted Secret after a while; the reconcile requeues
//!    instead of blocking);
//! 3. **switch**: the operator's token cache gets the new token and `switchedAt` is
//!    recorded;
//! 4. **finish** `gracePeriod` after the switch: every other key is removed from the
//!    Secret, `lastRotated` and `nextRotation` are set and the record is cleared.
//!
//! Each step has an Event. Readers of the Secret take the newest token
//! ([`token::token_of`]); a caller the bot refuses with it tries the others
//! ([`unauthorized`]), so at no point of a rotation can a restart lock the operator
//! out. A rotation is due `rotationInterval` after `lastRotated` (before the first one,
//! after the Secret's creation) or when the annotation
//! [`ROTATE_KEYS_ANNOTATION`] has a value not yet recorded in
//! `status.apiKeys.lastRotationRequest`; it *starts* only when the maintenance-window
//! gate allows `keyRotation`. Once started it runs to the end whatever the windows say:
//! the later steps disturb nothing, and stopping half-way would keep the old token
//! valid. Tokens never reach status, Events or logs — only key names do.
//!
//! The decisions ([`plan_idle`], [`progress`], [`new_key`], ...) are pure and
//! unit-tested; [`step`] carries them out.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use iq720_contract::api::SecurityResponse;
use iq720_crds::trading_bot::{ApiKeysStatus, KeyRotationStatus, ROTATE_KEYS_ANNOTATION};
use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use tracing::{debug, info, warn};

use super::status::{self, Written};
use crate::botlink::BotRef;
use crate::botlink::client::BotEndpoint;
use crate::botlink::token::{self, TokenError};
use crate::shared::apply::is_controlled_by;
use crate::shared::context::Context;
use crate::shared::gate::{Gate, Operation};

/// How soon the next step is looked at while a rotation moves or waits for the bot.
const STEP_AGAIN: Duration = Duration::from_secs(2);
/// How soon a failed step is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Event action of every rotation Event.
const ACTION: &str = "RotateKeys";

/// Why a rotation step could not be carried out (all transient: retried).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the token Secret failed.
    #[error("token Secret: {0}")]
    Kube(#[from] kube::Error),
    /// The token could not be read or generated.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The status write that records the rotation failed.
    #[error("recording the rotation in status: {0}")]
    Status(#[from] super::error::Error),
    /// The token Secret does not exist (the reconcile creates it again).
    #[error("the token Secret {0} does not exist")]
    Missing(String),
    /// The token Secret is not owned by the bot.
    #[error("the token Secret {0} is not owned by this bot")]
    NotOwned(String),
    /// `spec.apiKeys` holds a duration that cannot be parsed (validation reports it).
    #[error("spec.apiKeys: {0}")]
    Spec(#[from] iq720_contract::duration::DurationError),
}

// ---------------------------------------------------------------- pure decisions

/// What to do while no rotation is in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idle {
    /// Nothing is due; the next scheduled rotation is at `next` (`None`: unknown).
    Wait {
        /// When the next scheduled rotation is due.
        next: Option<Timestamp>,
    },
    /// A rotation is due but no open maintenance window allows it.
    Gated {
        /// When the scheduled rotation was due.
        next: Option<Timestamp>,
        /// Whether an on-demand request waits (not only the schedule).
        on_demand: bool,
    },
    /// Start a rotation now.
    Start {
        /// The annotation value to record as handled (an on-demand rotation).
        request: Option<String>,
    },
}

/// When the next scheduled rotation is due: `rotationInterval` after the last rotation,
/// or after the token was issued (the Secret's creation) when it never rotated.
pub fn scheduled_at(
    last_rotated: Option<Timestamp>,
    issued: Option<Timestamp>,
    interval: Duration,
) -> Option<Timestamp> {
    last_rotated.or(issued)?.checked_add(interval).ok()
}

/// The on-demand request still to act on: the annotation's value when it is set and
/// differs from the last one acted on.
pub fn pending_request<'a>(
    annotation: Option<&'a str>,
    status: Option<&ApiKeysStatus>,
) -> Option<&'a str> {
    let value = annotation.filter(|v| !v.trim().is_empty())?;
    let last = status.and_then(|s| s.last_rotation_request.as_deref());
    (last != Some(value)).then_some(value)
}

/// The decision while no rotation is in progress: due (by schedule or on demand) and
/// allowed by the gate → start; due and gated → wait for a window; else wait.
pub fn plan_idle(
    now: Timestamp,
    scheduled: Option<Timestamp>,
    request: Option<&str>,
    may_run: bool,
) -> Idle {
    let scheduled_due = scheduled.is_some_and(|at| now >= at);
    if !scheduled_due && request.is_none() {
        return Idle::Wait { next: scheduled };
    }
    if !may_run {
        return Idle::Gated {
            next: scheduled,
            on_demand: request.is_some(),
        };
    }
    Idle::Start {
        request: request.map(str::to_string),
    }
}

/// The key a rotation starting at `now` writes its new token to, given the token keys
/// the Secret holds: the newest of them when there are several already (a rotation
/// whose record was lost — finish it rather than add a third token), else
/// `token-<now in unix seconds>`, ranked above every existing key.
pub fn new_key(existing: &[String], now: Timestamp) -> String {
    let ranks: Vec<u64> = existing.iter().filter_map(|k| token::key_rank(k)).collect();
    let newest = ranks.iter().copied().max();
    if ranks.len() > 1
        && let Some(n) = newest
    {
        return token::key_name(n);
    }
    let now = u64::try_from(now.as_second()).unwrap_or(0);
    let rank = newest.map_or(now, |n| now.max(n.saturating_add(1))).max(1);
    token::key_name(rank)
}

/// The next step of a rotation in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The new key is not in the Secret yet: add it (after a restart between the
    /// status write and the Secret write, or a key removed by hand).
    AddKey,
    /// The new key is in the Secret: wait until the bot accepts it, then switch.
    Verify,
    /// Switched; the old token stays valid until `until`.
    Grace {
        /// End of the grace period.
        until: Timestamp,
    },
    /// The grace period is over: remove the old token and record the rotation.
    Finish,
}

/// Which step a rotation in progress takes now, from its record, the Secret's keys
/// and `gracePeriod`.
pub fn progress(
    rotation: &KeyRotationStatus,
    keys: &[String],
    now: Timestamp,
    grace: Duration,
) -> Progress {
    if !keys.contains(&rotation.new_key) {
        return Progress::AddKey;
    }
    let Some(switched) = rotation.switched_at.as_ref() else {
        return Progress::Verify;
    };
    match switched.0.checked_add(grace) {
        Ok(until) if now < until => Progress::Grace { until },
        _ => Progress::Finish,
    }
}

/// Time from `now` until `at` (zero when past).
fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

// ---------------------------------------------------------------- steps

/// Takes the next step of the bot's token rotation, if any, after a successful
/// conversation with the bot at `endpoint` (whose token is the one the operator uses
/// now), with the bot's security audit of that conversation (`audit`, when it
/// answered). Updates `st` (the caller writes it) and returns when the next step is
/// due, for the requeue. Failures are logged and retried; they never fail the reconcile.
pub async fn step(
    ctx: &Context,
    bot: &mut Cow<'_, TradingBot>,
    target: &BotRef,
    endpoint: &BotEndpoint,
    audit: Option<&SecurityResponse>,
    gate: &Result<Gate, String>,
    st: &mut TradingBotStatus,
) -> Duration {
    match advance(ctx, bot, target, endpoint, audit, gate, st).await {
        Ok(next) => next,
        Err(e) => {
            warn!(bot = %target.name, namespace = %target.namespace, error = %e, "API token rotation step failed; retrying");
            RETRY
        }
    }
}

async fn advance(
    ctx: &Context,
    current: &mut Cow<'_, TradingBot>,
    target: &BotRef,
    endpoint: &BotEndpoint,
    audit: Option<&SecurityResponse>,
    gate: &Result<Gate, String>,
    st: &mut TradingBotStatus,
) -> Result<Duration, KeyError> {
    // The bot as this step found it (a cheap copy of the borrowed reference); `current`
    // becomes the stored object when this step writes the status.
    let found = current.clone();
    let bot: &TradingBot = &found;
    let interval = iq720_contract::duration::parse(&bot.spec.api_keys.rotation_interval)?;
    let grace = iq720_contract::duration::parse(&bot.spec.api_keys.grace_period)?;
    let now = Timestamp::now();
    let keys = st.api_keys.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let secret_name = target.token_secret_name();

    let Some(mut rotation) = keys.rotation.clone() else {
        let request = pending_request(
            bot.annotations()
                .get(ROTATE_KEYS_ANNOTATION)
                .map(String::as_str),
            Some(&keys),
        );
        let issued = match keys.last_rotated {
            Some(_) => None,
            None => issued_at(ctx, bot, target).await?,
        };
        let scheduled = scheduled_at(keys.last_rotated.map(|t| t.0), issued, interval);
        if let Some(due) = scheduled {
            ctx.metrics
                .api_keys_rotation_due
                .with_label_values(&[&target.namespace, &target.name])
                .set(due.as_second());
        }
        let may_run = gate.as_ref().is_ok_and(|g| {
            g.verdict(Operation::KeyRotation, jiff::Timestamp::now())
                .may_run()
        });
        return match plan_idle(now, scheduled, request, may_run) {
            Idle::Wait { next } => {
                set_next(st, next);
                Ok(next.map_or(interval, |at| until(now, at)))
            }
            Idle::Gated { next, on_demand } => {
                set_next(st, next);
                if let Some(due) = next
                    && overdue(now, due)
                    && first_overdue_report(bot, due)
                {
                    let note = format!(
                        "API token rotation was due at {due} and still waits for a maintenance window allowing keyRotation (more than {} days overdue)",
                        OVERDUE_SLACK.as_secs() / 86_400
                    );
                    ctx.event(bot, EventType::Warning, "KeyRotationOverdue", ACTION, note)
                        .await;
                }
                debug!(bot = %target.name, on_demand, "API token rotation due; waiting for a maintenance window allowing keyRotation");
                // The reconcile already requeues at the next window boundary.
                Ok(interval)
            }
            Idle::Start { request } => {
                let secret = owned_secret(&api, &secret_name, bot).await?;
                let existing: Vec<String> = token::tokens_of(&secret)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                let new = new_key(&existing, now);
                let entry = st.api_keys.get_or_insert_with(ApiKeysStatus::default);
                entry.rotation = Some(KeyRotationStatus {
                    new_key: new.clone(),
                    started_at: Time(now),
                    switched_at: None,
                });
                if let Some(r) = &request {
                    entry.last_rotation_request = Some(r.clone());
                }
                // The record first: a restart after it resumes, never starts over.
                match status::write(ctx, bot, st.clone()).await? {
                    Written::Stored(stored) => *current = Cow::Owned(*stored),
                    Written::Unchanged => {}
                    // Decided on an older object: no key is added; the newer one decides.
                    Written::Stale => return Ok(STEP_AGAIN),
                }
                let bot: &TradingBot = current;
                if !existing.contains(&new) {
                    add_key(&api, secret, &new).await?;
                }
                let why = match &request {
                    Some(_) => format!("requested with the {ROTATE_KEYS_ANNOTATION} annotation"),
                    None => format!(
                        "rotationInterval {} has passed",
                        bot.spec.api_keys.rotation_interval
                    ),
                };
                let note = format!(
                    "API token rotation started ({why}): a new token is in Secret {secret_name} under key {new}, next to the old one; the bot accepts both until the old one is removed"
                );
                info!(bot = %target.name, namespace = %target.namespace, new_key = %new, "API token rotation started");
                ctx.event(bot, EventType::Normal, "KeyRotationStarted", ACTION, note)
                    .await;
                Ok(STEP_AGAIN)
            }
        };
    };

    let secret = owned_secret(&api, &secret_name, bot).await?;
    let tokens = token::tokens_of(&secret);
    let names: Vec<String> = tokens.iter().map(|(k, _)| k.clone()).collect();
    let new_token = tokens
        .iter()
        .find(|(k, _)| *k == rotation.new_key)
        .map(|(_, t)| t.clone());
    match progress(&rotation, &names, now, grace) {
        Progress::AddKey => {
            add_key(&api, secret, &rotation.new_key).await?;
            rotation.switched_at = None;
            set_rotation(st, Some(rotation.clone()));
            let note = format!(
                "API token rotation resumed: a new token is in Secret {secret_name} under key {}, next to the old one",
                rotation.new_key
            );
            info!(bot = %target.name, namespace = %target.namespace, new_key = %rotation.new_key, "API token rotation: new key added");
            ctx.event(bot, EventType::Normal, "KeyRotationStarted", ACTION, note)
                .await;
            Ok(STEP_AGAIN)
        }
        Progress::Verify => {
            let Some(new_token) = new_token else {
                return Ok(STEP_AGAIN);
            };
            // The audit (asked with the token in use) says whether the bot holds the new
            // key yet: probing with a token it does not hold yet would count as a
            // rejected call in that audit (and raise AuthFailures) at every rotation. A
            // bot without the audit API is probed directly.
            if let Some(audit) = audit
                && !audit.tokens.iter().any(|t| t.id == rotation.new_key)
            {
                debug!(bot = %target.name, new_key = %rotation.new_key, "the bot does not hold the new API token yet");
                return Ok(STEP_AGAIN);
            }
            let probe = BotEndpoint {
                base: endpoint.base.clone(),
                token: new_token.clone(),
            };
            if let Err(e) = ctx.bots.status(&probe).await {
                // Usually the kubelet has not refreshed the mounted Secret yet.
                debug!(bot = %target.name, new_key = %rotation.new_key, error = %e, "the bot does not accept the new API token yet");
                return Ok(STEP_AGAIN);
            }
            ctx.tokens.put(&target.namespace, &target.name, &new_token);
            rotation.switched_at = Some(Time(now));
            set_rotation(st, Some(rotation.clone()));
            let remove_at = now.checked_add(grace).ok();
            let note = format!(
                "the bot accepts the new API token (key {}); the operator uses it now; the old token stays valid for gracePeriod {}{}",
                rotation.new_key,
                bot.spec.api_keys.grace_period,
                remove_at.map_or(String::new(), |t| format!(", until {t}"))
            );
            info!(bot = %target.name, namespace = %target.namespace, new_key = %rotation.new_key, "API token rotation: switched to the new token");
            ctx.event(bot, EventType::Normal, "KeyRotationSwitched", ACTION, note)
                .await;
            Ok(grace.max(Duration::from_secs(1)))
        }
        Progress::Grace { until: end } => {
            if let Some(t) = &new_token
                && endpoint.token != *t
            {
                // Verified before (this process or an earlier one): use it.
                ctx.tokens.put(&target.namespace, &target.name, t);
            }
            Ok(until(now, end).max(Duration::from_secs(1)))
        }
        Progress::Finish => {
            let old: Vec<String> = secret
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .filter(|k| *k != rotation.new_key)
                .collect();
            if let Some(t) = &new_token {
                ctx.tokens.put(&target.namespace, &target.name, t);
            }
            if !old.is_empty() {
                keep_only(&api, secret, &rotation.new_key).await?;
            }
            let next = now.checked_add(interval).ok();
            let entry = st.api_keys.get_or_insert_with(ApiKeysStatus::default);
            entry.last_rotated = Some(Time(now));
            entry.next_rotation = next.map(Time);
            entry.rotation = None;
            let note = format!(
                "API token rotation done: the old token is removed from Secret {secret_name}{}; key {} is the only one; next rotation {}",
                if old.is_empty() {
                    String::new()
                } else {
                    format!(" (key {})", old.join(", "))
                },
                rotation.new_key,
                next.map_or("unknown".to_string(), |t| t.to_string())
            );
            info!(bot = %target.name, namespace = %target.namespace, new_key = %rotation.new_key, removed = ?old, "API token rotation done");
            ctx.event(bot, EventType::Normal, "KeyRotated", ACTION, note)
                .await;
            Ok(interval)
        }
    }
}

/// How long a due rotation may wait for a window before it is reported overdue (an
/// Event and a notification; the IQ720ApiKeyRotationOverdue alert uses the same slack):
/// a weekly window plus a day.
pub const OVERDUE_SLACK: Duration = Duration::from_secs(8 * 86_400);

/// Whether a rotation due at `due` is overdue at `now`.
pub fn overdue(now: Timestamp, due: Timestamp) -> bool {
    now.duration_since(due).as_secs() > OVERDUE_SLACK.as_secs() as i64
}

/// Whether this process has not reported this bot's rotation due at `due` as overdue
/// yet (and remembers that it now has).
fn first_overdue_report(bot: &TradingBot, due: Timestamp) -> bool {
    static REPORTED: OnceLock<Mutex<HashMap<String, Timestamp>>> = OnceLock::new();
    let memo = REPORTED.get_or_init(|| Mutex::new(HashMap::new()));
    let uid = bot.metadata.uid.clone().unwrap_or_default();
    let Ok(mut map) = memo.lock() else {
        return false;
    };
    if map.get(&uid) == Some(&due) {
        return false;
    }
    map.insert(uid, due);
    true
}

/// Drops a deleted bot's rotation-due gauge, so the overdue alert does not fire for
/// a bot that no longer exists.
pub fn forget_due(ctx: &Context, target: &BotRef) {
    let _ = ctx
        .metrics
        .api_keys_rotation_due
        .remove_label_values(&[&target.namespace, &target.name]);
}

fn set_next(st: &mut TradingBotStatus, next: Option<Timestamp>) {
    let next = next.map(Time);
    let current = st.api_keys.as_ref().and_then(|k| k.next_rotation.clone());
    if current != next {
        st.api_keys
            .get_or_insert_with(ApiKeysStatus::default)
            .next_rotation = next;
    }
}

fn set_rotation(st: &mut TradingBotStatus, rotation: Option<KeyRotationStatus>) {
    st.api_keys
        .get_or_insert_with(ApiKeysStatus::default)
        .rotation = rotation;
}

/// The bot's token Secret, which must exist and be the bot's.
async fn owned_secret(api: &Api<Secret>, name: &str, bot: &TradingBot) -> Result<Secret, KeyError> {
    let secret = api
        .get_opt(name)
        .await?
        .ok_or_else(|| KeyError::Missing(name.to_string()))?;
    let uid = bot.metadata.uid.as_deref().unwrap_or_default();
    if !is_controlled_by(&secret, uid) {
        return Err(KeyError::NotOwned(name.to_string()));
    }
    Ok(secret)
}

/// Adds a fresh token under `key` (replace with the read resourceVersion: a concurrent
/// change fails with a conflict and the step is retried on the new content).
async fn add_key(api: &Api<Secret>, mut secret: Secret, key: &str) -> Result<(), KeyError> {
    let fresh = token::generate().map_err(TokenError::Random)?;
    secret
        .data
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), ByteString(fresh.into_bytes()));
    replace(api, secret).await
}

/// Removes every key but `keep` (the new token): any other key of the Secret is a
/// token the bot would keep accepting.
async fn keep_only(api: &Api<Secret>, mut secret: Secret, keep: &str) -> Result<(), KeyError> {
    if let Some(data) = secret.data.as_mut() {
        data.retain(|k, _| k == keep);
    }
    secret.string_data = None;
    replace(api, secret).await
}

async fn replace(api: &Api<Secret>, mut secret: Secret) -> Result<(), KeyError> {
    secret.metadata.managed_fields = None;
    let name = secret.name_any();
    api.replace(&name, &PostParams::default(), &secret).await?;
    Ok(())
}

/// When the bot's first token was issued (its Secret's creation), read once per
/// operator process and bot (keyed by the TradingBot's uid, so a bot deleted and
/// created again is read again): a bot that never rotated must not cost a Secret read
/// at every reconcile.
async fn issued_at(
    ctx: &Context,
    bot: &TradingBot,
    target: &BotRef,
) -> Result<Option<Timestamp>, KeyError> {
    static ISSUED: OnceLock<Mutex<HashMap<String, Timestamp>>> = OnceLock::new();
    let memo = ISSUED.get_or_init(|| Mutex::new(HashMap::new()));
    let uid = bot.metadata.uid.clone().unwrap_or_default();
    if let Ok(map) = memo.lock()
        && let Some(t) = map.get(&uid)
    {
        return Ok(Some(*t));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let created = api
        .get_opt(&target.token_secret_name())
        .await?
        .and_then(|s| s.metadata.creation_timestamp)
        .map(|t| t.0);
    if let (Some(t), Ok(mut map)) = (created, memo.lock()) {
        map.insert(uid, t);
    }
    Ok(created)
}

/// The bot refused `refused` (401/403): forget the cached token and try the Secret's
/// other tokens, newest first, with `GET /api/v1/status`; the first one the bot
/// accepts is cached. Mid-rotation, the newest token may not have reached the bot's
/// mounted Secret yet while the old one still works — this keeps the operator in.
pub async fn unauthorized(ctx: &Context, target: &BotRef, refused: &BotEndpoint) {
    ctx.tokens.forget(&target.namespace, &target.name);
    let tokens = match token::read_all(&ctx.client, target).await {
        Ok(t) => t,
        Err(e) => {
            debug!(bot = %target.name, error = %e, "cannot read the token Secret after a refusal");
            return;
        }
    };
    for (key, candidate) in tokens {
        if candidate == refused.token {
            continue;
        }
        let probe = BotEndpoint {
            base: refused.base.clone(),
            token: candidate.clone(),
        };
        if ctx.bots.status(&probe).await.is_ok() {
            info!(bot = %target.name, namespace = %target.namespace, key = %key, "the bot refused the cached API token; it accepts the one under this key");
            ctx.tokens.put(&target.namespace, &target.name, &candidate);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_rotation_is_overdue_after_eight_days_of_waiting() {
        let due = ts(1_000_000_000);
        assert!(!overdue(ts(1_000_000_000 + 7 * 86_400), due));
        assert!(!overdue(ts(1_000_000_000 + 8 * 86_400), due));
        assert!(overdue(ts(1_000_000_000 + 8 * 86_400 + 1), due));
        assert!(!overdue(ts(999_000_000), due), "not yet due");
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn rotation(new_key: &str, switched: Option<i64>) -> KeyRotationStatus {
        KeyRotationStatus {
            new_key: new_key.into(),
            started_at: Time(ts(1_000)),
            switched_at: switched.map(|s| Time(ts(s))),
        }
    }

    #[test]
    fn scheduled_from_last_rotation_else_from_issue() {
        let i = 90 * DAY;
        assert_eq!(
            scheduled_at(Some(ts(100)), Some(ts(5)), i),
            Some(ts(100 + 90 * 86_400))
        );
        assert_eq!(
            scheduled_at(None, Some(ts(5)), i),
            Some(ts(5 + 90 * 86_400))
        );
        assert_eq!(scheduled_at(None, None, i), None);
    }

    #[test]
    fn due_not_due_and_gated() {
        let at = Some(ts(1_000));
        assert_eq!(
            plan_idle(ts(999), at, None, true),
            Idle::Wait { next: at },
            "not due yet"
        );
        assert_eq!(
            plan_idle(ts(1_000), at, None, true),
            Idle::Start { request: None },
            "due at the instant"
        );
        assert_eq!(
            plan_idle(ts(5_000), at, None, false),
            Idle::Gated {
                next: at,
                on_demand: false
            },
            "due but no open window allows keyRotation"
        );
        assert_eq!(
            plan_idle(ts(5_000), None, None, true),
            Idle::Wait { next: None },
            "unknown issue time: never due by schedule"
        );
    }

    #[test]
    fn on_demand_once_per_distinct_value() {
        let none = ApiKeysStatus::default();
        assert_eq!(pending_request(Some("1"), Some(&none)), Some("1"));
        assert_eq!(pending_request(Some("1"), None), Some("1"));
        assert_eq!(pending_request(Some("  "), None), None);
        assert_eq!(pending_request(None, Some(&none)), None);
        let done = ApiKeysStatus {
            last_rotation_request: Some("1".into()),
            ..ApiKeysStatus::default()
        };
        assert_eq!(pending_request(Some("1"), Some(&done)), None, "handled");
        assert_eq!(
            pending_request(Some("2"), Some(&done)),
            Some("2"),
            "new value"
        );
        // on demand starts before the schedule is due, and is gated too
        let at = Some(ts(1_000_000));
        assert_eq!(
            plan_idle(ts(10), at, Some("2"), true),
            Idle::Start {
                request: Some("2".into())
            }
        );
        assert_eq!(
            plan_idle(ts(10), at, Some("2"), false),
            Idle::Gated {
                next: at,
                on_demand: true
            }
        );
    }

    #[test]
    fn new_key_ranks_above_the_old_and_adopts_a_lost_rotation() {
        let now = ts(1_767_225_600);
        assert_eq!(new_key(&keys(&["token"]), now), "token-1767225600");
        assert_eq!(new_key(&[], now), "token-1767225600");
        // a clock behind the newest key still ranks above it
        assert_eq!(
            new_key(&keys(&["token-1767225700"]), now),
            "token-1767225701"
        );
        // two tokens and no record: finish that rotation, no third token
        assert_eq!(
            new_key(&keys(&["token-1767225000", "token"]), now),
            "token-1767225000"
        );
        let k = new_key(&keys(&["token"]), now);
        assert!(token::key_rank(&k).unwrap() > token::key_rank("token").unwrap());
    }

    #[test]
    fn which_step_next() {
        let grace = Duration::from_secs(60);
        let both = keys(&["token-2000", "token"]);
        assert_eq!(
            progress(
                &rotation("token-2000", None),
                &keys(&["token"]),
                ts(2_000),
                grace
            ),
            Progress::AddKey,
            "recorded, not yet written (restart between the writes)"
        );
        assert_eq!(
            progress(&rotation("token-2000", None), &both, ts(2_000), grace),
            Progress::Verify
        );
        assert_eq!(
            progress(
                &rotation("token-2000", Some(2_010)),
                &both,
                ts(2_030),
                grace
            ),
            Progress::Grace { until: ts(2_070) }
        );
        assert_eq!(
            progress(
                &rotation("token-2000", Some(2_010)),
                &both,
                ts(2_070),
                grace
            ),
            Progress::Finish
        );
        assert_eq!(
            progress(
                &rotation("token-2000", Some(2_010)),
                &keys(&["token-2000"]),
                ts(2_100),
                grace
            ),
            Progress::Finish,
            "old key already removed (restart before the status write): finish again"
        );
    }

    #[test]
    fn until_is_never_negative() {
        assert_eq!(until(ts(10), ts(5)), Duration::ZERO);
        assert_eq!(until(ts(5), ts(10)), Duration::from_secs(5));
    }
}
