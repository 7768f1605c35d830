//! The security audit of the API: rejected authentications by reason, and for each
//! accepted token when it was last used and how often (`GET /api/v1/security`, and the
//! metrics `iq720_bot_auth_failures_total{reason}` and
//! `iq720_bot_token_last_used_timestamp_seconds{token}`).
//!
//! Why: the runbook's security audit asks whether anyone calls the bot with a wrong
//! token, and whether a token that should be retired is still in use (after a key
//! rotation the old key must go quiet). Tokens are named by their id, the key name of
//! the token Secret; no value, nor any part of one, is kept here. The figures live in
//! memory and start from zero when the bot starts: an audit of the running process,
//! not a persisted log (the `security` log target has every rejection).
//!
//! The same answer carries `exchangeCredentials` ([`crate::credentials`]): the
//! fingerprint of the exchange credentials in use and the outcome of the last change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use iq720_contract::api::{AuthFailures, SecurityResponse, TokenUse};
use jiff::Timestamp;

use super::AppState;

/// Reasons a request is rejected, as the metrics label `reason` and the keys of
/// `authFailures.byReason`.
pub const REASONS: &[&str] = &["missing", "malformed", "invalid", "no_tokens_configured"];

/// Use of one token.
#[derive(Debug, Clone, Copy)]
struct Use {
    count: u64,
    last: Timestamp,
}

#[derive(Debug, Default)]
struct Record {
    failures: BTreeMap<&'static str, u64>,
    total: u64,
    last_failure: Option<Timestamp>,
    uses: HashMap<String, Use>,
}

/// Counts of failed and successful authentications (thread safe).
#[derive(Debug, Default)]
pub struct Audit {
    record: Mutex<Record>,
}

impl Audit {
    /// Records a rejected request; returns the new total.
    pub fn failure(&self, reason: &'static str, at: Timestamp) -> u64 {
        let Ok(mut r) = self.record.lock() else {
            return 0;
        };
        *r.failures.entry(reason).or_default() += 1;
        r.total += 1;
        r.last_failure = Some(at);
        r.total
    }

    /// Records a request authenticated with the token `id`; returns its use count.
    pub fn used(&self, id: &str, at: Timestamp) -> u64 {
        let Ok(mut r) = self.record.lock() else {
            return 0;
        };
        let u = r
            .uses
            .entry(id.to_string())
            .or_insert(Use { count: 0, last: at });
        u.count += 1;
        u.last = at;
        u.count
    }

    /// The audit for the tokens `ids` (the ones accepted now; a token no longer
    /// accepted is not listed).
    pub fn report(&self, ids: &[String]) -> SecurityResponse {
        let Ok(r) = self.record.lock() else {
            return SecurityResponse {
                auth_failures: AuthFailures::default(),
                tokens: Vec::new(),
                exchange_credentials: None,
            };
        };
        let by_reason = REASONS
            .iter()
            .map(|reason| {
                (
                    (*reason).to_string(),
                    r.failures.get(reason).copied().unwrap_or(0),
                )
            })
            .collect();
        SecurityResponse {
            auth_failures: AuthFailures {
                total: r.total,
                by_reason,
                last_failure_at: r.last_failure.map(|t| t.to_string()),
            },
            tokens: ids
                .iter()
                .map(|id| {
                    let u = r.uses.get(id);
                    TokenUse {
                        id: id.clone(),
                        last_used_at: u.map(|u| u.last.to_string()),
                        uses: u.map_or(0, |u| u.count),
                    }
                })
                .collect(),
            exchange_credentials: None,
        }
    }
}

/// `GET /api/v1/security`.
pub async fn security(State(bot): State<AppState>) -> Json<SecurityResponse> {
    let mut report = bot.tokens.audit().report(&bot.tokens.ids());
    report.exchange_credentials = bot.credentials.report();
    Json(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn counts_failures_by_reason_and_uses_by_token() {
        let a = Audit::default();
        let ids = vec!["token-1".to_string(), "token-2".to_string()];
        let empty = a.report(&ids);
        assert_eq!(empty.auth_failures.total, 0);
        assert_eq!(empty.auth_failures.last_failure_at, None);
        assert_eq!(empty.auth_failures.by_reason.len(), REASONS.len());
        assert!(
            empty
                .tokens
                .iter()
                .all(|t| t.uses == 0 && t.last_used_at.is_none())
        );

        assert_eq!(a.failure("invalid", at(100)), 1);
        assert_eq!(a.failure("invalid", at(101)), 2);
        assert_eq!(a.failure("missing", at(102)), 3);
        assert_eq!(a.used("token-2", at(200)), 1);
        assert_eq!(a.used("token-2", at(205)), 2);
        let r = a.report(&ids);
        assert_eq!(r.auth_failures.total, 3);
        assert_eq!(r.auth_failures.by_reason["invalid"], 2);
        assert_eq!(r.auth_failures.by_reason["missing"], 1);
        assert_eq!(r.auth_failures.by_reason["malformed"], 0);
        assert_eq!(
            r.auth_failures.last_failure_at.as_deref(),
            Some(at(102).to_string().as_str())
        );
        assert_eq!(r.tokens[0].id, "token-1");
        assert_eq!(r.tokens[0].uses, 0);
        assert_eq!(r.tokens[1].uses, 2);
        assert_eq!(
            r.tokens[1].last_used_at.as_deref(),
            Some(at(205).to_string().as_str())
        );
        // A retired token is no longer listed.
        let r = a.report(&ids[..1]);
        assert_eq!(r.tokens.len(), 1);
    }
}
