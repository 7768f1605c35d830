//! Age of the bot's exchange credentials: the `KeyRotationDue` condition and a Warning
//! Event when the credentials in `spec.exchange.credentialsSecretRef` are older than
//! `spec.apiKeys.rotationInterval`.
//!
//! Why an annotation: exchange keys are created at the exchange, not by the operator,
//! so only whoever rotates them (a person or a secret manager) knows when that was.
//! The Secret's `metadata.creationTimestamp` would be wrong as soon as the Secret is
//! updated in place, and its data says nothing about time. So the age is read from the
//! annotation [`ROTATED_AT_ANNOTATION`] (`trading.iq720.io/rotated-at: <RFC 3339>`) on
//! that Secret; without it the condition is `Unknown` and says how to set it.
//!
//! Only the Secret's *metadata* is read (a metadata-only GET): the operator never
//! receives the credentials themselves, so they cannot reach a log, an Event or the
//! status. The bot re-reads the mounted Secret on its own when it changes (see the
//! bot's `credentials` module); nothing here restarts it.
//!
//! The same step copies what the bot reports about the set it uses (`GET
//! /api/v1/security` → `status.exchangeCredentials`: fingerprint, load time, why the
//! newest set was refused) and announces a refused set with a Warning Event
//! `ExchangeCredentialsRejected`. Bots without credentials are not asked.
//!
//! Idle cost: the condition's message depends only on the Secret's name, the
//! annotation and the interval, and the reported figures only on the set in use, so an
//! unchanged Secret never causes a status write; the reconcile is requeued for the
//! moment a fresh set becomes due.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use iq720_contract::api::{ExchangeCredentialsReport, SecurityResponse};
use iq720_contract::duration::{self, HumanDuration};
use iq720_crds::trading_bot::ExchangeCredentialsStatus;
use iq720_crds::{TradingBot, TradingBotStatus};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::debug;

use super::status::remove_condition;
use crate::shared::conditions;
use crate::shared::context::Context;

/// Annotation on the exchange credentials Secret: when the credentials in it were last
/// rotated, as an RFC 3339 time (`2026-11-25T16:00:00Z`). Set by the user or the
/// secret manager that writes the Secret.
pub const ROTATED_AT_ANNOTATION: &str = "trading.iq720.io/rotated-at";
/// Condition type: the exchange credentials are older than the rotation interval.
pub const KEY_ROTATION_DUE: &str = "KeyRotationDue";
/// Event reason when the condition turns True.
pub const EVENT_REASON: &str = "KeyRotationDue";
/// Event reason when the bot refuses a new set of credentials.
pub const REJECTED_REASON: &str = "ExchangeCredentialsRejected";
/// Longest `lastError` copied into the status.
const MAX_ERROR: usize = 1024;

/// Status of the condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Older than the interval.
    Yes,
    /// Within the interval.
    No,
    /// The age is not known.
    Unknown,
}

impl Due {
    fn as_str(self) -> &'static str {
        match self {
            Due::Yes => "True",
            Due::No => "False",
            Due::Unknown => "Unknown",
        }
    }
}

/// What the condition says, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Condition status.
    pub due: Due,
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
    /// The rotation time read from the annotation (whole seconds).
    pub rotated_at: Option<Timestamp>,
    /// Until the fresh credentials become due (`None`: no time-driven change).
    pub recheck_in: Option<Duration>,
}

/// How to set the annotation, for messages.
fn how_to_set(secret: &str) -> String {
    format!(
        "annotate it with the time the credentials were last rotated, for example \
         `kubectl annotate secret {secret} {ROTATED_AT_ANNOTATION}=$(date -u +%Y-%m-%dT%H:%M:%SZ) --overwrite`"
    )
}

/// The condition for Secret `secret` with the annotation value `annotation` (if any),
/// the rotation interval `interval` (as written in the spec, `interval_text`) at `now`.
/// Pure: the Secret's data plays no part.
pub fn assess(
    secret: &str,
    annotation: Option<&str>,
    interval: Duration,
    interval_text: &str,
    now: Timestamp,
) -> Assessment {
    let Some(value) = annotation else {
        return Assessment {
            due: Due::Unknown,
            reason: "NoRotationTime",
            message: format!(
                "Secret {secret} has no annotation {ROTATED_AT_ANNOTATION}, so the age of the exchange credentials is unknown; {}",
                how_to_set(secret)
            ),
            rotated_at: None,
            recheck_in: None,
        };
    };
    let parsed = value
        .trim()
        .parse::<Timestamp>()
        .ok()
        .and_then(|t| Timestamp::from_second(t.as_second()).ok());
    let Some(at) = parsed else {
        return Assessment {
            due: Due::Unknown,
            reason: "NoRotationTime",
            message: format!(
                "the annotation {ROTATED_AT_ANNOTATION} on Secret {secret} is not an RFC 3339 time such as 2026-11-25T16:00:00Z; {}",
                how_to_set(secret)
            ),
            rotated_at: None,
            recheck_in: None,
        };
    };
    let due_at = jiff::SignedDuration::try_from(interval)
        .ok()
        .and_then(|d| at.checked_add(d).ok());
    let interval_text = interval_text.trim();
    match due_at {
        Some(due_at) if due_at > now => Assessment {
            due: Due::No,
            reason: "Fresh",
            message: format!(
                "exchange credentials in Secret {secret} were rotated at {at}, within rotationInterval {interval_text}; rotation due at {due_at}"
            ),
            rotated_at: Some(at),
            recheck_in: Duration::try_from(due_at.duration_since(now)).ok(),
        },
        _ => Assessment {
            due: Due::Yes,
            reason: "RotationOverdue",
            message: format!(
                "exchange credentials in Secret {secret} were rotated at {at}, older than rotationInterval {interval_text}; \
                 rotate them at the exchange, write the new ones to the Secret (the bot picks them up without a restart) \
                 and set {ROTATED_AT_ANNOTATION} to the time of the rotation"
            ),
            rotated_at: Some(at),
            recheck_in: None,
        },
    }
}

/// Sets a condition that may be Unknown; the transition time changes only with the
/// status (the same rule as [`crate::shared::conditions::set_condition`]).
fn put(st: &mut TradingBotStatus, a: &Assessment, generation: Option<i64>) {
    let status = a.due.as_str();
    let transition = conditions::find(&st.conditions, KEY_ROTATION_DUE)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    st.conditions.retain(|c| c.type_ != KEY_ROTATION_DUE);
    st.conditions.push(Condition {
        type_: KEY_ROTATION_DUE.to_string(),
        status: status.to_string(),
        reason: a.reason.to_string(),
        message: a.message.clone(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    st.conditions.sort_by(|x, y| x.type_.cmp(&y.type_));
}

/// The overdue rotation each bot (by uid) was last announced for by this process: a
/// reconcile on a cached object older than the status the previous one wrote must not
/// announce the same overdue rotation again.
static ANNOUNCED: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();

/// Whether the Event for this overdue rotation is still to be sent; records it.
fn first_announcement(uid: &str, what: &str) -> bool {
    let Ok(mut m) = ANNOUNCED.get_or_init(Default::default).lock() else {
        return true;
    };
    if m.get(uid).is_some_and(|w| w == what) {
        return false;
    }
    m.insert(uid.to_string(), what.to_string());
    true
}

fn forget_announcement(uid: &str) {
    if let Ok(mut m) = ANNOUNCED.get_or_init(Default::default).lock() {
        m.remove(uid);
    }
}

/// The status form of the bot's report: whole-second time (an idle bot's status never
/// changes), the error cut to [`MAX_ERROR`] characters.
pub fn fold_report(r: &ExchangeCredentialsReport) -> ExchangeCredentialsStatus {
    ExchangeCredentialsStatus {
        fingerprint: r.fingerprint.clone(),
        loaded_at: r
            .loaded_at
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.as_second()).ok())
            .map(Time),
        last_error: r
            .last_error
            .as_ref()
            .map(|e| e.chars().take(MAX_ERROR).collect()),
    }
}

/// Copies the bot's report on its credentials (from this poll's security audit) into
/// `st`, with a Warning Event when the bot newly refused a set. A bot that could not
/// answer, or an older one without the field, keeps the stored figures.
async fn copy_report(
    ctx: &Context,
    bot: &TradingBot,
    audit: Option<&SecurityResponse>,
    uid: &str,
    st: &mut TradingBotStatus,
) {
    let Some(report) = audit.and_then(|a| a.exchange_credentials.as_ref()) else {
        return;
    };
    let next = fold_report(report);
    let stored_error = st
        .exchange_credentials
        .as_ref()
        .and_then(|c| c.last_error.clone());
    if let Some(error) = &next.last_error {
        let what = format!(
            "{error}@{}",
            report.last_change_seen.as_deref().unwrap_or_default()
        );
        if first_announcement(&format!("{uid}/rejected"), &what)
            && stored_error.as_ref() != Some(error)
        {
            let keeps = match &next.fingerprint {
                Some(fp) => format!("the set with fingerprint {fp} stays in use"),
                None => "the bot has no valid set".to_string(),
            };
            ctx.event(
                bot,
                EventType::Warning,
                REJECTED_REASON,
                "CheckCredentials",
                format!("the bot refused the new exchange credentials: {error}; {keeps}"),
            )
            .await;
        }
    }
    st.exchange_credentials = Some(next);
}

/// Sets `KeyRotationDue` in `st` from the exchange credentials Secret's annotation, with
/// a Warning Event when it turns True, and `status.exchangeCredentials` from the bot at
/// its security audit of this poll (`audit`). Returns when to look again (`Duration::MAX`: nothing time-driven). A
/// Secret that cannot be read now leaves the condition as it is; a bot without
/// credentials has neither.
pub async fn step(
    ctx: &Context,
    bot: &TradingBot,
    audit: Option<&SecurityResponse>,
    st: &mut TradingBotStatus,
) -> Duration {
    let Some(secret_ref) = &bot.spec.exchange.credentials_secret_ref else {
        remove_condition(&mut st.conditions, KEY_ROTATION_DUE);
        st.exchange_credentials = None;
        return Duration::MAX;
    };
    let uid = bot
        .uid()
        .unwrap_or_else(|| format!("{}/{}", bot.namespace().unwrap_or_default(), bot.name_any()));
    copy_report(ctx, bot, audit, &uid, st).await;
    // An unparsable interval is reported by validation (InvalidSpec).
    let Ok(interval) = duration::parse(&bot.spec.api_keys.rotation_interval) else {
        return Duration::MAX;
    };
    let interval_text = HumanDuration(interval).to_string();
    let namespace = bot.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = bot.metadata.generation;
    let assessment = match secrets.get_metadata_opt(&secret_ref.name).await {
        Ok(Some(meta)) => assess(
            &secret_ref.name,
            meta.annotations()
                .get(ROTATED_AT_ANNOTATION)
                .map(String::as_str),
            interval,
            &interval_text,
            Timestamp::now(),
        ),
        Ok(None) => Assessment {
            due: Due::Unknown,
            reason: "SecretNotFound",
            message: format!(
                "Secret {} (spec.exchange.credentialsSecretRef) does not exist; create it with keys apiKey and apiSecret, then {}",
                secret_ref.name,
                how_to_set(&secret_ref.name)
            ),
            rotated_at: None,
            recheck_in: None,
        },
        Err(e) => {
            debug!(bot = %bot.name_any(), secret = %secret_ref.name, error = %e,
                "cannot read the exchange credentials Secret's metadata; KeyRotationDue left as it is");
            return Duration::MAX;
        }
    };
    let was_true =
        conditions::find(&st.conditions, KEY_ROTATION_DUE).is_some_and(|c| c.status == "True");
    put(st, &assessment, generation);
    if assessment.due == Due::Yes {
        let what = format!(
            "{}@{}",
            secret_ref.name,
            assessment
                .rotated_at
                .map(|t| t.to_string())
                .unwrap_or_default()
        );
        if first_announcement(&uid, &what) && !was_true {
            ctx.event(
                bot,
                EventType::Warning,
                EVENT_REASON,
                "CheckCredentials",
                assessment.message.clone(),
            )
            .await;
        }
    } else {
        forget_announcement(&uid);
    }
    assessment.recheck_in.unwrap_or(Duration::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn older_than_the_interval_is_due_and_says_when_it_was_rotated() {
        let a = assess(
            "exch",
            Some("2026-08-01T00:00:00Z"),
            90 * DAY,
            "90d",
            at("2026-11-25T00:00:00Z"),
        );
        assert_eq!(a.due, Due::Yes);
        assert_eq!(a.reason, "RotationOverdue");
        assert!(
            a.message.starts_with(
                "exchange credentials in Secret exch were rotated at 2026-08-01T00:00:00Z, older than rotationInterval 90d"
            ),
            "{}",
            a.message
        );
        assert_eq!(a.recheck_in, None);
    }

    #[test]
    fn fresh_is_not_due_and_rechecks_when_it_becomes_due() {
        let now = at("2026-11-25T00:00:00Z");
        let a = assess(
            "exch",
            Some("2026-11-24T23:59:00.5Z"),
            2 * 60 * Duration::from_secs(1),
            "2m",
            now,
        );
        assert_eq!(a.due, Due::No);
        // whole seconds: 23:59:00 + 2m = 00:01:00
        assert_eq!(a.recheck_in, Some(Duration::from_secs(60)));
        assert!(
            a.message.contains("rotation due at 2026-11-25T00:01:00Z"),
            "{}",
            a.message
        );
        // the message does not depend on `now`: an idle bot's status stays unchanged
        let later = assess(
            "exch",
            Some("2026-11-24T23:59:00.5Z"),
            2 * 60 * Duration::from_secs(1),
            "2m",
            at("2026-11-25T00:00:30Z"),
        );
        assert_eq!(later.message, a.message);
    }

    #[test]
    fn missing_or_bad_annotation_is_unknown_and_says_how_to_set_it() {
        let now = at("2026-11-25T00:00:00Z");
        for value in [None, Some("yesterday"), Some("")] {
            let a = assess("exch", value, DAY, "1d", now);
            assert_eq!(a.due, Due::Unknown);
            assert_eq!(a.reason, "NoRotationTime");
            assert!(
                a.message
                    .contains("kubectl annotate secret exch trading.iq720.io/rotated-at="),
                "{}",
                a.message
            );
        }
    }

    #[test]
    fn condition_keeps_its_transition_time_while_the_status_holds() {
        let mut st = TradingBotStatus::default();
        let now = at("2026-11-25T00:00:00Z");
        let due = assess("exch", Some("2020-01-01T00:00:00Z"), DAY, "1d", now);
        put(&mut st, &due, Some(1));
        let first = conditions::find(&st.conditions, KEY_ROTATION_DUE)
            .unwrap()
            .clone();
        assert_eq!(first.status, "True");
        put(&mut st, &due, Some(1));
        assert_eq!(
            conditions::find(&st.conditions, KEY_ROTATION_DUE).unwrap(),
            &first
        );
        let unknown = assess("exch", None, DAY, "1d", now);
        put(&mut st, &unknown, Some(1));
        let c = conditions::find(&st.conditions, KEY_ROTATION_DUE).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NoRotationTime")
        );
        assert_eq!(st.conditions.len(), 1);
    }

    #[test]
    fn the_report_is_stored_with_whole_seconds_and_a_bounded_error() {
        let r = ExchangeCredentialsReport {
            fingerprint: Some("0123456789ab".into()),
            loaded_at: Some("2026-11-25T16:00:00.987654Z".into()),
            last_change_seen: Some("2026-11-25T16:05:00.1Z".into()),
            last_error: Some("x".repeat(5000)),
        };
        let s = fold_report(&r);
        assert_eq!(s.fingerprint.as_deref(), Some("0123456789ab"));
        assert_eq!(s.loaded_at.unwrap().0.to_string(), "2026-11-25T16:00:00Z");
        assert_eq!(s.last_error.unwrap().len(), MAX_ERROR);
        let none = fold_report(&ExchangeCredentialsReport::default());
        assert_eq!(none, ExchangeCredentialsStatus::default());
    }

    #[test]
    fn an_overdue_rotation_is_announced_once_per_process() {
        assert!(first_announcement("uid-1", "exch@2020-01-01T00:00:00Z"));
        assert!(!first_announcement("uid-1", "exch@2020-01-01T00:00:00Z"));
        assert!(first_announcement("uid-1", "exch@2020-06-01T00:00:00Z"));
        forget_announcement("uid-1");
        assert!(first_announcement("uid-1", "exch@2020-06-01T00:00:00Z"));
    }
}
