//! Strategies and their parameters: the names, the valid range of every parameter and
//! the rules between parameters.
//!
//! Why here: the operator used to check only parameter names, so a spec with
//! `rsiPeriod: 1` passed admission and the bot then refused it on every hot reload and
//! at the next start. The table [`PARAMS`] is the single definition both sides check
//! against.

use std::collections::BTreeMap;

use crate::problem::Problem;

/// The strategy kinds the bot implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    /// RSI oversold/overbought.
    Rsi,
    /// MACD histogram zero crossings.
    Macd,
    /// Bollinger band mean reversion.
    Bollinger,
    /// Votes of the three above.
    RsiMacdBollinger,
}

/// Strategy names the bot accepts in `strategy.name`, canonical spelling first.
pub const STRATEGY_NAMES: &[&str] = &["rsi", "macd", "bollinger", "rsiMacdBollinger"];

impl StrategyKind {
    /// Parse a strategy name (`rsi_macd_bollinger` is accepted as an alias).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rsi" => Some(StrategyKind::Rsi),
            "macd" => Some(StrategyKind::Macd),
            "bollinger" => Some(StrategyKind::Bollinger),
            "rsiMacdBollinger" | "rsi_macd_bollinger" => Some(StrategyKind::RsiMacdBollinger),
            _ => None,
        }
    }

    /// The canonical name, as the operator renders it.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Rsi => "rsi",
            StrategyKind::Macd => "macd",
            StrategyKind::Bollinger => "bollinger",
            StrategyKind::RsiMacdBollinger => "rsiMacdBollinger",
        }
    }
}

/// The values a parameter may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamRange {
    /// A whole number in `min..=max`.
    Whole {
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },
    /// A number in `min..=max`.
    Closed {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// A number strictly between `min` and `max`.
    Open {
        /// The value must be above this.
        min: f64,
        /// The value must be below this.
        max: f64,
    },
}

impl ParamRange {
    /// Whether `v` is in the range (`v` must be finite).
    pub fn contains(&self, v: f64) -> bool {
        match *self {
            ParamRange::Whole { min, max } => {
                v.fract() == 0.0 && (f64::from(min)..=f64::from(max)).contains(&v)
            }
            ParamRange::Closed { min, max } => (min..=max).contains(&v),
            ParamRange::Open { min, max } => min < v && v < max,
        }
    }

    /// What the range requires, e.g. `must be a whole number between 2 and 1000`.
    pub fn describe(&self) -> String {
        match *self {
            ParamRange::Whole { min, max } => {
                format!("must be a whole number between {min} and {max}")
            }
            ParamRange::Closed { min, max } => format!("must be between {min} and {max}"),
            ParamRange::Open { min, max } => format!("must be in ({min}, {max})"),
        }
    }
}

/// One strategy parameter: name, range and default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    /// Name in `strategy.params`.
    pub name: &'static str,
    /// Allowed values.
    pub range: ParamRange,
    /// Value when the parameter is not set.
    pub default: f64,
}

/// Range of the look-back periods.
const PERIOD: ParamRange = ParamRange::Whole { min: 2, max: 1000 };
/// Range of RSI thresholds.
const RSI_LEVEL: ParamRange = ParamRange::Open {
    min: 0.0,
    max: 100.0,
};

/// Every parameter in `strategy.params`, with its range and default. The cross rules
/// `rsiBuy < rsiSell` and `macdFast < macdSlow` apply on top.
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "rsiPeriod",
        range: PERIOD,
        default: 14.0,
    },
    ParamSpec {
        name: "rsiBuy",
        range: RSI_LEVEL,
        default: 30.0,
    },
    ParamSpec {
        name: "rsiSell",
        range: RSI_LEVEL,
        default: 70.0,
    },
    ParamSpec {
        name: "macdFast",
        range: PERIOD,
        default: 12.0,
    },
    ParamSpec {
        name: "macdSlow",
        range: PERIOD,
        default: 26.0,
    },
    ParamSpec {
        name: "macdSignal",
        range: PERIOD,
        default: 9.0,
    },
    ParamSpec {
        name: "bbPeriod",
        range: PERIOD,
        default: 20.0,
    },
    ParamSpec {
        name: "bbStdDev",
        range: ParamRange::Closed {
            min: 0.1,
            max: 10.0,
        },
        default: 2.0,
    },
    ParamSpec {
        name: "minConfirmations",
        range: ParamRange::Whole { min: 1, max: 3 },
        default: 2.0,
    },
];

/// The parameter names accepted in `strategy.params`, in the order of [`PARAMS`].
pub const PARAM_NAMES: &[&str] = &[
    "rsiPeriod",
    "rsiBuy",
    "rsiSell",
    "macdFast",
    "macdSlow",
    "macdSignal",
    "bbPeriod",
    "bbStdDev",
    "minConfirmations",
];

/// The specification of a parameter by name.
pub fn param(name: &str) -> Option<&'static ParamSpec> {
    PARAMS.iter().find(|p| p.name == name)
}

/// Resolved strategy parameters (defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrategyParams {
    /// RSI look-back (`rsiPeriod`, default 14).
    pub rsi_period: usize,
    /// Enter below this RSI (`rsiBuy`, default 30).
    pub rsi_buy: f64,
    /// Exit above this RSI (`rsiSell`, default 70).
    pub rsi_sell: f64,
    /// MACD fast EMA (`macdFast`, default 12).
    pub macd_fast: usize,
    /// MACD slow EMA (`macdSlow`, default 26).
    pub macd_slow: usize,
    /// MACD signal EMA (`macdSignal`, default 9).
    pub macd_signal: usize,
    /// Bollinger look-back (`bbPeriod`, default 20).
    pub bb_period: usize,
    /// Bollinger width in standard deviations (`bbStdDev`, default 2.0).
    pub bb_std_dev: f64,
    /// Votes needed to enter with `rsiMacdBollinger` (`minConfirmations`, default 2).
    pub min_confirmations: usize,
}

impl Default for StrategyParams {
    fn default() -> Self {
        StrategyParams {
            rsi_period: 14,
            rsi_buy: 30.0,
            rsi_sell: 70.0,
            macd_fast: 12,
            macd_slow: 26,
            macd_signal: 9,
            bb_period: 20,
            bb_std_dev: 2.0,
            min_confirmations: 2,
        }
    }
}

impl StrategyParams {
    /// Sets one parameter that [`PARAMS`] already accepted.
    fn set(&mut self, name: &str, v: f64) {
        // Whole-number parameters are range-checked before, so the cast is exact.
        let whole = v as usize;
        match name {
            "rsiPeriod" => self.rsi_period = whole,
            "rsiBuy" => self.rsi_buy = v,
            "rsiSell" => self.rsi_sell = v,
            "macdFast" => self.macd_fast = whole,
            "macdSlow" => self.macd_slow = whole,
            "macdSignal" => self.macd_signal = whole,
            "bbPeriod" => self.bb_period = whole,
            "bbStdDev" => self.bb_std_dev = v,
            "minConfirmations" => self.min_confirmations = whole,
            _ => {}
        }
    }
}

/// Checks a strategy name and its parameters. Returns the resolved kind and parameters
/// when there is no problem, else every problem found (fields are config paths such as
/// `strategy.params.rsiPeriod`), in a stable order: name, each parameter in name order,
/// then the cross rules.
pub fn resolve(
    name: &str,
    params: &BTreeMap<String, f64>,
) -> Result<(StrategyKind, StrategyParams), Vec<Problem>> {
    let mut problems = Vec::new();
    let kind = StrategyKind::parse(name);
    if kind.is_none() {
        problems.push(Problem::new(
            "strategy.name",
            format!(
                "unknown strategy `{name}` (expected rsi, macd, bollinger or rsiMacdBollinger)"
            ),
        ));
    }
    let mut p = StrategyParams::default();
    let mut bad = Vec::new();
    for (key, &value) in params {
        let field = format!("strategy.params.{key}");
        let Some(spec) = param(key) else {
            problems.push(Problem::new(
                field,
                format!("unknown parameter (known: {})", PARAM_NAMES.join(", ")),
            ));
            bad.push(key.as_str());
            continue;
        };
        if !value.is_finite() {
            problems.push(Problem::new(field, "must be a finite number"));
            bad.push(key.as_str());
        } else if !spec.range.contains(value) {
            problems.push(Problem::new(field, spec.range.describe()));
            bad.push(key.as_str());
        } else {
            p.set(key, value);
        }
    }
    // Cross rules, only between parameters that are valid on their own.
    let ok = |k: &str| !bad.contains(&k);
    if ok("rsiBuy") && ok("rsiSell") && p.rsi_buy >= p.rsi_sell {
        problems.push(Problem::new(
            "strategy.params.rsiBuy",
            "need 0 < rsiBuy < rsiSell < 100",
        ));
    }
    if ok("macdFast") && ok("macdSlow") && p.macd_fast >= p.macd_slow {
        problems.push(Problem::new(
            "strategy.params.macdFast",
            "must be smaller than macdSlow",
        ));
    }
    match kind {
        Some(kind) if problems.is_empty() => Ok((kind, p)),
        _ => Err(problems),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(params: &[(&str, f64)]) -> Result<StrategyParams, Vec<String>> {
        let map = params.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        resolve("rsi", &map)
            .map(|(_, p)| p)
            .map_err(|ps| ps.into_iter().map(|p| p.field).collect())
    }

    #[test]
    fn names_match_the_table() {
        let names: Vec<&str> = PARAMS.iter().map(|p| p.name).collect();
        assert_eq!(names, PARAM_NAMES);
        let defaults = StrategyParams::default();
        let mut from_table = StrategyParams::default();
        for p in PARAMS {
            from_table.set(p.name, p.default);
        }
        assert_eq!(from_table, defaults);
    }

    #[test]
    fn ranges_are_checked_at_their_edges() {
        for (name, ok, bad) in [
            ("rsiPeriod", [2.0, 1000.0], [1.0, 1001.0]),
            ("macdSignal", [2.0, 1000.0], [1.0, 2.5]),
            ("bbPeriod", [2.0, 1000.0], [0.0, 1000.5]),
            ("bbStdDev", [0.1, 10.0], [0.09, 10.01]),
            ("minConfirmations", [1.0, 3.0], [0.0, 4.0]),
            ("rsiBuy", [0.001, 69.9], [0.0, -1.0]),
            ("rsiSell", [30.1, 99.999], [100.0, 150.0]),
        ] {
            for v in ok {
                assert!(check(&[(name, v)]).is_ok(), "{name}={v}");
            }
            for v in bad {
                assert_eq!(
                    check(&[(name, v)]),
                    Err(vec![format!("strategy.params.{name}")]),
                    "{name}={v}"
                );
            }
        }
        assert!(check(&[("rsiPeriod", f64::NAN)]).is_err());
        assert!(check(&[("bbStdDev", f64::INFINITY)]).is_err());
    }

    #[test]
    fn cross_rules() {
        assert_eq!(
            check(&[("rsiBuy", 80.0)]),
            Err(vec!["strategy.params.rsiBuy".to_string()])
        );
        assert_eq!(
            check(&[("macdFast", 26.0)]),
            Err(vec!["strategy.params.macdFast".to_string()])
        );
        assert!(check(&[("macdFast", 25.0)]).is_ok());
        // A parameter invalid on its own does not also trip the cross rule.
        assert_eq!(
            check(&[("rsiSell", 100.0), ("rsiBuy", 99.0)]),
            Err(vec!["strategy.params.rsiSell".to_string()])
        );
    }

    #[test]
    fn unknown_name_and_parameter() {
        let e = resolve("foo", &BTreeMap::from([("bogus".to_string(), 1.0)])).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["strategy.name", "strategy.params.bogus"]);
        assert_eq!(
            resolve("rsi_macd_bollinger", &BTreeMap::new()).unwrap().0,
            StrategyKind::RsiMacdBollinger
        );
    }
}
