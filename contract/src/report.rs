//! The performance report (the runbook's `generate_report.py --period weekly`): its
//! periods, the request annotation's grammar, the document the bot computes from its
//! trade history (`GET /api/v1/report`) and its plain-text rendering.
//!
//! Why here: the bot computes the report and the operator stores it in a ConfigMap
//! (`<bot>-report`, keys `<period>.json` and `<period>.txt`). Both render the same text
//! (the bot for `?format=text`, the operator for the ConfigMap), and both must agree on
//! what `weekly` means and on which annotation values are requests, so each rule exists
//! once, here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Annotation on a TradingBot asking for a report. Its value is the period, optionally
/// followed by `-` and any text to ask again: each distinct value produces one report,
/// for example `kubectl annotate tb NAME trading.iq720.io/report="weekly-$(date +%s)" --overwrite`.
pub const REPORT_ANNOTATION: &str = "trading.iq720.io/report";

const DAY_MS: i64 = 86_400_000;

/// The length of a report: a rolling window that ends when the report is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportPeriod {
    /// The last 24 hours.
    Daily,
    /// The last 7 days.
    Weekly,
    /// The last 30 days.
    Monthly,
}

/// A period name or request annotation value that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a report period: use daily, weekly or monthly, optionally followed by `-` and any text to ask again (e.g. weekly-2)"
)]
pub struct PeriodError(pub String);

impl ReportPeriod {
    /// Every period, shortest first.
    pub const ALL: [ReportPeriod; 3] = [Self::Daily, Self::Weekly, Self::Monthly];

    /// Its name (`daily`, `weekly`, `monthly`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    /// Its length in milliseconds.
    pub fn length_ms(self) -> i64 {
        match self {
            Self::Daily => DAY_MS,
            Self::Weekly => 7 * DAY_MS,
            Self::Monthly => 30 * DAY_MS,
        }
    }

    /// Parses a period name exactly.
    pub fn parse(name: &str) -> Result<Self, PeriodError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| PeriodError(name.to_string()))
    }

    /// The period a request annotation value asks for: `weekly` or `weekly-<text>`.
    pub fn of_request(value: &str) -> Result<Self, PeriodError> {
        let name = value.split_once('-').map_or(value, |(p, _)| p);
        Self::parse(name.trim()).map_err(|_| PeriodError(value.to_string()))
    }
}

impl std::fmt::Display for ReportPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trade named in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TradeRef {
    /// Trade id (as in `GET /api/v1/trades`).
    pub id: i64,
    /// Pair.
    pub pair: String,
    /// Profit in the stake currency, net of both fees.
    pub pnl: f64,
    /// Profit ratio (0.01 is 1 %).
    pub ratio: f64,
}

/// Figures of one pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairFigures {
    /// Trades closed in the period.
    pub trades: u64,
    /// Of these, closed with a profit.
    pub wins: u64,
    /// Sum of their profit, net of fees.
    pub pnl: f64,
}

/// The performance of a bot over one period, computed by the bot from the trades it
/// closed in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceReport {
    /// The bot (`namespace/name` when run by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
    /// The period.
    pub period: ReportPeriod,
    /// Start of the period (RFC 3339, inclusive).
    pub from: String,
    /// End of the period (RFC 3339, exclusive): when the report was made, or the
    /// requested `end`.
    pub to: String,
    /// Stake (quote) currency of every amount.
    pub stake_currency: String,
    /// Trades closed in the period.
    pub trades: u64,
    /// Of these, closed with a profit (> 0).
    pub wins: u64,
    /// Of these, closed without a profit (≤ 0).
    pub losses: u64,
    /// wins / trades (0 without trades).
    pub win_rate: f64,
    /// Sum of the closed trades' profit, net of fees.
    pub pnl: f64,
    /// Sum of the winning trades' profit.
    pub gross_profit: f64,
    /// Sum of the losing trades' profit (≤ 0).
    pub gross_loss: f64,
    /// gross profit / |gross loss|; absent without a losing trade.
    #[serde(default)]
    pub profit_factor: Option<f64>,
    /// Entry and exit fees of the closed trades.
    pub fees: f64,
    /// pnl / trades (0 without trades).
    pub average_pnl: f64,
    /// Mean time from entry to exit, in seconds (0 without trades).
    pub average_holding_seconds: f64,
    /// The most profitable trade.
    #[serde(default)]
    pub best_trade: Option<TradeRef>,
    /// The least profitable trade.
    #[serde(default)]
    pub worst_trade: Option<TradeRef>,
    /// Equity at the start of the period: the newest equity snapshot at or before
    /// `from`, or the starting balance when the bot has none that old.
    pub equity_start: f64,
    /// Equity at the end of the period (the live equity when `to` is now).
    pub equity_end: f64,
    /// Largest fall of the realised equity (equity at the start plus closed trades in
    /// the order they closed) from its running peak, in the stake currency. Open
    /// positions' unrealised swings are not included.
    pub max_drawdown: f64,
    /// That fall as a percentage of the peak it fell from.
    pub max_drawdown_percent: f64,
    /// Positions open at the end of the period.
    pub open_positions: u64,
    /// Figures per pair, for the pairs with trades closed in the period.
    #[serde(default)]
    pub pairs: BTreeMap<String, PairFigures>,
    /// Closed trades per exit reason.
    #[serde(default)]
    pub exit_reasons: BTreeMap<String, u64>,
}

fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{v:.2}")
    } else {
        format!("{v:.2}")
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, 0, s) => format!("{s}s"),
        (0, 0, m, s) => format!("{m}m {s}s"),
        (0, h, m, _) => format!("{h}h {m}m"),
        (d, h, _, _) => format!("{d}d {h}h"),
    }
}

impl PerformanceReport {
    /// The report as text for people (`kubectl get cm NAME-report -o
    /// jsonpath='{.data.weekly\.txt}'`, or the bot's `?format=text`).
    pub fn render_text(&self) -> String {
        let c = &self.stake_currency;
        let mut out = String::new();
        let who = self.bot.as_deref().unwrap_or("bot");
        let _ = writeln!(out, "IQ-720 {} performance report: {who}", self.period);
        let _ = writeln!(out, "Period         {} .. {}", self.from, self.to);
        let _ = writeln!(
            out,
            "Trades         {} closed: {} won, {} lost (win rate {:.1} %)",
            self.trades,
            self.wins,
            self.losses,
            self.win_rate * 100.0
        );
        let factor = self.profit_factor.map_or_else(
            || "n/a (no losing trade)".to_string(),
            |f| format!("{f:.2}"),
        );
        let _ = writeln!(
            out,
            "PnL            {} {c} after {:.2} {c} fees; profit factor {factor}",
            signed(self.pnl),
            self.fees
        );
        let change = if self.equity_start > 0.0 {
            (self.equity_end - self.equity_start) / self.equity_start * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "Equity         {:.2} -> {:.2} {c} ({} %)",
            self.equity_start,
            self.equity_end,
            signed(change)
        );
        let _ = writeln!(
            out,
            "Max drawdown   {:.2} {c} ({:.2} %, realised)",
            self.max_drawdown, self.max_drawdown_percent
        );
        for (label, t) in [
            ("Best trade", &self.best_trade),
            ("Worst trade", &self.worst_trade),
        ] {
            if let Some(t) = t {
                let _ = writeln!(
                    out,
                    "{label:<14} #{} {} {} {c} ({} %)",
                    t.id,
                    t.pair,
                    signed(t.pnl),
                    signed(t.ratio * 100.0)
                );
            }
        }
        let _ = writeln!(
            out,
            "Average trade  {} {c}, held {}",
            signed(self.average_pnl),
            duration(self.average_holding_seconds)
        );
        let _ = writeln!(out, "Open now       {} position(s)", self.open_positions);
        if !self.pairs.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<14} {:>6} {:>6} {:>9} {:>12}",
                "PAIR", "TRADES", "WINS", "WIN RATE", "PNL"
            );
            for (pair, f) in &self.pairs {
                let rate = if f.trades > 0 {
                    f.wins as f64 / f.trades as f64 * 100.0
                } else {
                    0.0
                };
                let _ = writeln!(
                    out,
                    "{pair:<14} {:>6} {:>6} {:>7.1} % {:>12}",
                    f.trades,
                    f.wins,
                    rate,
                    signed(f.pnl)
                );
            }
        }
        if !self.exit_reasons.is_empty() {
            let reasons: Vec<String> = self
                .exit_reasons
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(out);
            let _ = writeln!(out, "Exit reasons   {}", reasons.join(", "));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_request_values_parse_and_bad_ones_say_what_is_allowed() {
        assert_eq!(ReportPeriod::parse("weekly"), Ok(ReportPeriod::Weekly));
        assert_eq!(
            ReportPeriod::of_request("monthly"),
            Ok(ReportPeriod::Monthly)
        );
        assert_eq!(
            ReportPeriod::of_request("daily-1733526000"),
            Ok(ReportPeriod::Daily)
        );
        let err = ReportPeriod::of_request("fortnightly-2").unwrap_err();
        assert!(err.to_string().contains("`fortnightly-2`"), "{err}");
        assert!(
            err.to_string().contains("daily, weekly or monthly"),
            "{err}"
        );
        assert!(ReportPeriod::of_request("").is_err());
        assert!(ReportPeriod::parse("Weekly").is_err());
        assert_eq!(ReportPeriod::Weekly.length_ms(), 604_800_000);
        assert_eq!(ReportPeriod::Monthly.length_ms(), 30 * 86_400_000);
    }

    fn sample() -> PerformanceReport {
        PerformanceReport {
            bot: Some("default/demo".into()),
            period: ReportPeriod::Weekly,
            from: "2026-11-29T00:00:00Z".into(),
            to: "2026-12-06T00:00:00Z".into(),
            stake_currency: "USDT".into(),
            trades: 3,
            wins: 2,
            losses: 1,
            win_rate: 2.0 / 3.0,
            pnl: 15.0,
            gross_profit: 20.0,
            gross_loss: -5.0,
            profit_factor: Some(4.0),
            fees: 0.6,
            average_pnl: 5.0,
            average_holding_seconds: 3_725.0,
            best_trade: Some(TradeRef {
                id: 7,
                pair: "BTC/USDT".into(),
                pnl: 12.0,
                ratio: 0.012,
            }),
            worst_trade: Some(TradeRef {
                id: 9,
                pair: "ETH/USDT".into(),
                pnl: -5.0,
                ratio: -0.005,
            }),
            equity_start: 10_000.0,
            equity_end: 10_015.0,
            max_drawdown: 5.0,
            max_drawdown_percent: 0.05,
            open_positions: 1,
            pairs: BTreeMap::from([
                (
                    "BTC/USDT".into(),
                    PairFigures {
                        trades: 2,
                        wins: 2,
                        pnl: 20.0,
                    },
                ),
                (
                    "ETH/USDT".into(),
                    PairFigures {
                        trades: 1,
                        wins: 0,
                        pnl: -5.0,
                    },
                ),
            ]),
            exit_reasons: BTreeMap::from([("exit_signal".into(), 2), ("stop_loss".into(), 1)]),
        }
    }

    #[test]
    fn text_names_every_figure() {
        let text = sample().render_text();
        for want in [
            "IQ-720 weekly performance report: default/demo",
            "2026-11-29T00:00:00Z .. 2026-12-06T00:00:00Z",
            "3 closed: 2 won, 1 lost (win rate 66.7 %)",
            "+15.00 USDT after 0.60 USDT fees; profit factor 4.00",
            "10000.00 -> 10015.00 USDT (+0.15 %)",
            "Max drawdown   5.00 USDT (0.05 %, realised)",
            "#7 BTC/USDT +12.00 USDT (+1.20 %)",
            "#9 ETH/USDT -5.00 USDT (-0.50 %)",
            "Average trade  +5.00 USDT, held 1h 2m",
            "Open now       1 position(s)",
            "Exit reasons   exit_signal 2, stop_loss 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            text.contains("BTC/USDT") && text.contains("100.0 %"),
            "{text}"
        );
    }

    #[test]
    fn text_of_an_empty_period_has_no_trade_lines() {
        let mut r = sample();
        r.trades = 0;
        r.wins = 0;
        r.losses = 0;
        r.profit_factor = None;
        r.best_trade = None;
        r.worst_trade = None;
        r.pairs.clear();
        r.exit_reasons.clear();
        let text = r.render_text();
        assert!(
            text.contains("profit factor n/a (no losing trade)"),
            "{text}"
        );
        assert!(
            !text.contains("Best trade") && !text.contains("PAIR"),
            "{text}"
        );
    }

    #[test]
    fn the_json_round_trips() {
        let r = sample();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"period\":\"weekly\"") && json.contains("\"maxDrawdown\""));
        let back: PerformanceReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
