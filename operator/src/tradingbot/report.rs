//! Performance reports on request (the runbook's `generate_report.py --period
//! weekly`): the annotation `trading.iq720.io/report=<period>[-<text>]` asks the bot for
//! its report over the last day, week or 30 days (`GET /api/v1/report`), and the
//! operator stores it in the ConfigMap `<bot>-report` (keys `<period>.json` and
//! `<period>.txt`), records the outcome in `status.report` and sends `ReportReady`.
//!
//! Why on request and stored in a ConfigMap: the report is read by people with
//! `kubectl get cm NAME-report -o jsonpath='{.data.weekly\.txt}'` and by programs from the
//! JSON key, long after it was made, without a port-forward to the bot and its token.
//! Each distinct annotation value is one request: nothing is written while no new value
//! comes, so idle bots cost no writes. A request is answered once: `status.report` holds
//! the value answered, and the ConfigMap's per-period request annotation guards the
//! short moment before the status write reaches the cache (so a reconcile triggered by
//! the ConfigMap write does not make the report twice).

use iq720_contract::report::{PerformanceReport, REPORT_ANNOTATION, ReportPeriod};
use iq720_crds::TradingBot;
use iq720_crds::TradingBotStatus;
use iq720_crds::trading_bot::{ReportResult, ReportStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::build::labels::report_map_name;
use super::build::{Owner, report_map};
use crate::botlink::client::BotEndpoint;
use crate::shared::apply::{Known, apply_owned};
use crate::shared::cache::lookup;
use crate::shared::context::Context;

/// The request this reconcile has to act on: the annotation's value, unless it was
/// answered already (ready, or invalid until it changes).
pub fn pending(bot: &TradingBot) -> Option<&str> {
    let value = bot.annotations().get(REPORT_ANNOTATION)?;
    let answered = bot
        .status
        .as_ref()
        .and_then(|s| s.report.as_ref())
        .is_some_and(|r| {
            r.request == *value && matches!(r.result, ReportResult::Ready | ReportResult::Invalid)
        });
    (!answered).then_some(value.as_str())
}

/// Answers a pending report request. `endpoint` is the bot's API when it answers now;
/// without it the request waits. Never fails the reconcile: the outcome goes to
/// `status.report` and, when it is new, to an Event.
pub async fn step(
    ctx: &Context,
    bot: &TradingBot,
    owner: &Owner,
    endpoint: Option<&BotEndpoint>,
    st: &mut TradingBotStatus,
) {
    let Some(request) = pending(bot) else {
        return;
    };
    let map_name = report_map_name(&owner.name);
    let outcome = match ReportPeriod::of_request(request) {
        Err(e) => Outcome::invalid(request, e.to_string()),
        Ok(period) => match already_stored(ctx, owner, period, request) {
            Some(generated_at) => Outcome::ready(request, &map_name, generated_at),
            None => match endpoint {
                None => Outcome::waiting(request),
                Some(ep) => make(ctx, owner, ep, period, request, &map_name).await,
            },
        },
    };
    let new = st.report.as_ref() != Some(&outcome.status);
    if new && let Some((type_, reason, note)) = outcome.event {
        // One action per period: the Event recorder folds Events with the same reason
        // and action into one series that keeps the first note, and a monthly report's
        // figures must not hide behind the weekly one's.
        let action = match ReportPeriod::of_request(request) {
            Ok(p) => format!("Report{}", capitalised(p.as_str())),
            Err(_) => "Report".to_string(),
        };
        ctx.event(bot, type_, reason, &action, note).await;
    }
    st.report = Some(outcome.status);
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What a request came to, and the Event that says so.
struct Outcome {
    status: ReportStatus,
    event: Option<(EventType, &'static str, String)>,
}

impl Outcome {
    fn invalid(request: &str, why: String) -> Self {
        Self {
            status: ReportStatus {
                request: request.to_string(),
                result: ReportResult::Invalid,
                message: Some(why.clone()),
                config_map: None,
                generated_at: None,
            },
            event: Some((EventType::Warning, "ReportRequestInvalid", why)),
        }
    }

    fn waiting(request: &str) -> Self {
        Self {
            status: ReportStatus {
                request: request.to_string(),
                result: ReportResult::Waiting,
                message: Some(
                    "the bot's API does not answer yet; the report is made once it does"
                        .to_string(),
                ),
                config_map: None,
                generated_at: None,
            },
            event: None,
        }
    }

    fn failed(request: &str, why: String) -> Self {
        Self {
            status: ReportStatus {
                request: request.to_string(),
                result: ReportResult::Failed,
                message: Some(format!("{why}; retried at the next reconcile")),
                config_map: None,
                generated_at: None,
            },
            event: Some((EventType::Warning, "ReportFailed", why)),
        }
    }

    fn ready(request: &str, map_name: &str, generated_at: Time) -> Self {
        Self {
            status: ReportStatus {
                request: request.to_string(),
                result: ReportResult::Ready,
                message: None,
                config_map: Some(map_name.to_string()),
                generated_at: Some(generated_at),
            },
            event: None,
        }
    }
}

/// When the ConfigMap already holds the answer to `request` (its period's request
/// annotation says so): the time it was made.
fn already_stored(
    ctx: &Context,
    owner: &Owner,
    period: ReportPeriod,
    request: &str,
) -> Option<Time> {
    let stores = ctx.cache.stores()?;
    let map = lookup(
        &stores.configmaps,
        &owner.namespace,
        &report_map_name(&owner.name),
    )?;
    let ann = map.metadata.annotations.as_ref()?;
    if ann.get(&report_map::request_annotation(period))? != request {
        return None;
    }
    let at = ann.get(&report_map::generated_at_annotation(period))?;
    at.parse().ok().map(Time)
}

/// Asks the bot for the report and stores it.
async fn make(
    ctx: &Context,
    owner: &Owner,
    ep: &BotEndpoint,
    period: ReportPeriod,
    request: &str,
    map_name: &str,
) -> Outcome {
    let report = match ctx.bots.report(ep, period).await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::failed(
                request,
                format!("the bot did not give its {period} report: {e}"),
            );
        }
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let map = match report_map::build(owner, request, &now.to_string(), &report) {
        Ok(m) => m,
        Err(e) => return Outcome::failed(request, e.to_string()),
    };
    let known = ctx.cache.stores().map_or(Known::Unknown, |s| {
        Known::Cached(
            lookup(&s.configmaps, &owner.namespace, map_name).map(|o| Box::new(o.metadata.clone())),
        )
    });
    let manager = report_map::field_manager(period);
    if let Err(e) = apply_owned(
        &ctx.client,
        &manager,
        &map,
        &owner.reference.uid,
        known,
        &ctx.applied,
    )
    .await
    {
        warn!(bot = %owner.name, namespace = %owner.namespace, error = %e, "cannot store the report");
        return Outcome::failed(request, format!("cannot store the {period} report: {e}"));
    }
    info!(bot = %owner.name, namespace = %owner.namespace, %period, trades = report.trades,
        "performance report stored in ConfigMap {map_name}");
    let mut outcome = Outcome::ready(request, map_name, Time(now));
    outcome.event = Some((EventType::Normal, "ReportReady", summary(&report, map_name)));
    outcome
}

/// The Event's note: the headline figures and where the report is.
fn summary(r: &PerformanceReport, map_name: &str) -> String {
    let period = r.period;
    format!(
        "{period} report ({} .. {}): {} trade(s) closed, win rate {:.1} %, PnL {:+.2} {}, max drawdown {:.2} {}; kubectl get configmap {map_name} -o jsonpath='{{.data.{period}\\.txt}}'",
        r.from,
        r.to,
        r.trades,
        r.win_rate * 100.0,
        r.pnl,
        r.stake_currency,
        r.max_drawdown,
        r.stake_currency
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn bot(annotation: Option<&str>, answered: Option<(&str, ReportResult)>) -> TradingBot {
        let mut b: TradingBot = serde_json::from_value(serde_json::json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"version": "0.1.0", "pairs": ["BTC/USDT"], "strategy": {"name": "rsi"}}
        }))
        .unwrap();
        if let Some(v) = annotation {
            b.metadata.annotations = Some(BTreeMap::from([(
                REPORT_ANNOTATION.to_string(),
                v.to_string(),
            )]));
        }
        if let Some((request, result)) = answered {
            b.status = Some(TradingBotStatus {
                report: Some(ReportStatus {
                    request: request.to_string(),
                    result,
                    message: None,
                    config_map: None,
                    generated_at: None,
                }),
                ..TradingBotStatus::default()
            });
        }
        b
    }

    #[test]
    fn a_request_is_pending_until_answered_ready_or_invalid_and_a_new_value_asks_again() {
        assert_eq!(pending(&bot(None, None)), None);
        assert_eq!(pending(&bot(Some("weekly"), None)), Some("weekly"));
        assert_eq!(
            pending(&bot(Some("weekly"), Some(("weekly", ReportResult::Ready)))),
            None
        );
        assert_eq!(
            pending(&bot(Some("bogus"), Some(("bogus", ReportResult::Invalid)))),
            None
        );
        for retried in [ReportResult::Waiting, ReportResult::Failed] {
            assert_eq!(
                pending(&bot(Some("weekly"), Some(("weekly", retried)))),
                Some("weekly")
            );
        }
        assert_eq!(
            pending(&bot(
                Some("weekly-2"),
                Some(("weekly", ReportResult::Ready))
            )),
            Some("weekly-2")
        );
    }

    #[test]
    fn the_event_names_the_figures_and_the_command() {
        let r: PerformanceReport = serde_json::from_value(serde_json::json!({
            "period": "weekly", "from": "A", "to": "B", "stakeCurrency": "USDT", "trades": 4,
            "wins": 3, "losses": 1, "winRate": 0.75, "pnl": -2.5, "grossProfit": 1.0,
            "grossLoss": -3.5, "fees": 0.1, "averagePnl": -0.6, "averageHoldingSeconds": 1.0,
            "equityStart": 1.0, "equityEnd": 1.0, "maxDrawdown": 3.5, "maxDrawdownPercent": 1.0,
            "openPositions": 0
        }))
        .unwrap();
        let s = summary(&r, "b-report");
        assert!(s.contains("weekly report (A .. B): 4 trade(s) closed, win rate 75.0 %, PnL -2.50 USDT, max drawdown 3.50 USDT"), "{s}");
        assert!(
            s.contains("kubectl get configmap b-report -o jsonpath='{.data.weekly\\.txt}'"),
            "{s}"
        );
    }
}
