//! Prometheus metrics (prefix `iq720_bot_`).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of the bot.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Closed trades by outcome (`win` / `loss`).
    pub trades_total: IntCounterVec,
    /// Opened trades.
    pub trades_opened_total: IntCounter,
    /// Realised profit (stake currency).
    pub realized_pnl: Gauge,
    /// Equity (stake currency).
    pub equity: Gauge,
    /// Open positions.
    pub open_positions: IntGauge,
    /// Seconds since each source's last tick.
    pub market_data_age: GaugeVec,
    /// Automatic failovers.
    pub failovers_total: IntCounter,
    /// 1 for the active source, 0 otherwise (labels source, role).
    pub active_source: GaugeVec,
    /// HTTP requests by route, method and status.
    pub http_requests_total: IntCounterVec,
    /// Rejected API authentications by reason.
    pub auth_failures_total: IntCounterVec,
    /// Unix time (seconds) of the last request authenticated with each token (label
    /// `token`: the token's id, the key name of the token Secret, never its value).
    pub token_last_used: GaugeVec,
    /// How late the engine loop woke up, seconds.
    pub loop_lag: Gauge,
    /// Tick to decision latency.
    pub tick_to_decision: Histogram,
    /// 1 when entries are halted.
    pub halted: IntGauge,
    /// 1 when entries are paused.
    pub paused: IntGauge,
    /// Failed engine iterations (database write failed, state lock poisoned).
    pub iteration_failures_total: IntCounter,
    /// Current streak of failed engine iterations (`/healthz` fails at
    /// [`crate::runner::UNHEALTHY_AFTER_FAILED_ITERATIONS`]).
    pub consecutive_failed_iterations: IntGauge,
    /// Changes of the mounted exchange credentials by outcome (`applied`: verified and
    /// in use; `rejected`: refused, the previous set stays in use).
    pub exchange_credentials_reloads_total: IntCounterVec,
}

/// Metric construction failed (only on programming errors such as duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Register everything.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let m = Metrics {
            trades_total: IntCounterVec::new(
                Opts::new("iq720_bot_trades_total", "Closed trades by outcome"),
                &["outcome"],
            )?,
            trades_opened_total: IntCounter::new("iq720_bot_trades_opened_total", "Opened trades")?,
            realized_pnl: Gauge::new(
                "iq720_bot_realized_pnl",
                "Realised profit in the stake currency",
            )?,
            equity: Gauge::new(
                "iq720_bot_equity",
                "Equity (cash + open positions at last price)",
            )?,
            open_positions: IntGauge::new("iq720_bot_open_positions", "Open positions")?,
            market_data_age: GaugeVec::new(
                Opts::new(
                    "iq720_bot_market_data_age_seconds",
                    "Seconds since the source's last tick",
                ),
                &["source", "role"],
            )?,
            failovers_total: IntCounter::new(
                "iq720_bot_market_data_failovers_total",
                "Automatic market data failovers",
            )?,
            active_source: GaugeVec::new(
                Opts::new(
                    "iq720_bot_market_data_active_source",
                    "1 for the active market data source",
                ),
                &["source", "role"],
            )?,
            http_requests_total: IntCounterVec::new(
                Opts::new(
                    "iq720_bot_http_requests_total",
                    "HTTP requests by route, method and status",
                ),
                &["route", "method", "status"],
            )?,
            auth_failures_total: IntCounterVec::new(
                Opts::new(
                    "iq720_bot_auth_failures_total",
                    "Rejected API authentications",
                ),
                &["reason"],
            )?,
            token_last_used: GaugeVec::new(
                Opts::new(
                    "iq720_bot_token_last_used_timestamp_seconds",
                    "Unix time of the last request authenticated with the token (by id)",
                ),
                &["token"],
            )?,
            loop_lag: Gauge::new(
                "iq720_bot_engine_loop_lag_seconds",
                "How late the engine loop last woke up",
            )?,
            tick_to_decision: Histogram::with_opts(
                HistogramOpts::new(
                    "iq720_bot_tick_to_decision_seconds",
                    "Time from tick receipt to trading decision",
                )
                .buckets(vec![
                    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2,
                ]),
            )?,
            halted: IntGauge::new("iq720_bot_halted", "1 when new entries are halted")?,
            paused: IntGauge::new("iq720_bot_paused", "1 when new entries are paused")?,
            iteration_failures_total: IntCounter::new(
                "iq720_bot_engine_iteration_failures_total",
                "Engine iterations that failed (database write error, poisoned lock)",
            )?,
            consecutive_failed_iterations: IntGauge::new(
                "iq720_bot_engine_consecutive_failed_iterations",
                "Current streak of failed engine iterations",
            )?,
            exchange_credentials_reloads_total: IntCounterVec::new(
                Opts::new(
                    "iq720_bot_exchange_credentials_reloads_total",
                    "Changes of the mounted exchange credentials, applied or rejected",
                ),
                &["result"],
            )?,
            registry,
        };
        let build = IntGaugeVec::new(
            Opts::new("iq720_bot_build_info", "Build information"),
            &["version"],
        )?;
        build.with_label_values(&[crate::chaos::version()]).set(1);
        let r = &m.registry;
        r.register(Box::new(build))?;
        r.register(Box::new(m.trades_total.clone()))?;
        r.register(Box::new(m.trades_opened_total.clone()))?;
        r.register(Box::new(m.realized_pnl.clone()))?;
        r.register(Box::new(m.equity.clone()))?;
        r.register(Box::new(m.open_positions.clone()))?;
        r.register(Box::new(m.market_data_age.clone()))?;
        r.register(Box::new(m.failovers_total.clone()))?;
        r.register(Box::new(m.active_source.clone()))?;
        r.register(Box::new(m.http_requests_total.clone()))?;
        r.register(Box::new(m.auth_failures_total.clone()))?;
        r.register(Box::new(m.token_last_used.clone()))?;
        r.register(Box::new(m.loop_lag.clone()))?;
        r.register(Box::new(m.tick_to_decision.clone()))?;
        r.register(Box::new(m.halted.clone()))?;
        r.register(Box::new(m.paused.clone()))?;
        r.register(Box::new(m.iteration_failures_total.clone()))?;
        r.register(Box::new(m.consecutive_failed_iterations.clone()))?;
        r.register(Box::new(m.exchange_credentials_reloads_total.clone()))?;
        for result in ["applied", "rejected"] {
            m.exchange_credentials_reloads_total
                .with_label_values(&[result]);
        }
        for outcome in ["win", "loss"] {
            m.trades_total.with_label_values(&[outcome]);
        }
        for reason in crate::api::security::REASONS {
            m.auth_failures_total.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_conventional_names() {
        let m = Metrics::new().unwrap();
        m.failovers_total.inc();
        let text = m.render();
        assert!(text.contains("iq720_bot_market_data_failovers_total 1"));
        assert!(text.contains("iq720_bot_build_info{version=\""));
        assert!(text.contains("iq720_bot_trades_total{outcome=\"win\"} 0"));
        assert!(text.contains("iq720_bot_engine_iteration_failures_total 0"));
        assert!(text.contains("iq720_bot_engine_consecutive_failed_iterations 0"));
        assert!(text.contains("iq720_bot_auth_failures_total{reason=\"invalid\"} 0"));
        assert!(
            text.contains("iq720_bot_exchange_credentials_reloads_total{result=\"rejected\"} 0")
        );
    }
}
