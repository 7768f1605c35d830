//! The running bot: shared state, the engine loop thread, and the control operations
//! the API calls (pause, resume, close-all, config patch, data source switch).
//!
//! On SIGTERM/SIGINT the server sets [`Bot::draining`]: the engine loop ends (no new
//! entries, no exits of its own), while the API keeps answering so the operator can
//! still close the positions over it; see `server.rs` for when the process then exits.
//!
//! The engine loop also keeps [`IterationHealth`]: a loop that still turns but fails at
//! every step (its database writes keep failing, its state lock is poisoned) is as
//! useless as a stuck one, and `/healthz` must say so, so the kubelet restarts the bot,
//! which then reloads its state from the database.

use crate::api::auth::TokenStore;
use crate::config::{Config, ConfigError, HOT_RELOADABLE};
use crate::credentials::CredentialStore;
use crate::engine::{Engine, EngineEvent};
use crate::feed::FeedError;
use crate::feed::failover::{FeedManager, Role, SwitchError};
use crate::metrics::{Metrics, MetricsError};
use crate::store::{Store, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Errors starting the bot.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Database problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Market data source problem.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// Config problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Metrics registry problem.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Thread spawn failed.
    #[error("cannot start engine thread: {0}")]
    Thread(std::io::Error),
}

/// Errors of control operations (mapped to HTTP statuses by the API).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Database problem (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Internal lock poisoned (500).
    #[error("internal state lock poisoned")]
    Poisoned,
    /// Fields that need a restart (422).
    #[error("these fields cannot be changed without a restart: {}", .0.join(", "))]
    NotHotReloadable(Vec<String>),
    /// Patched config invalid (422).
    #[error("{0}")]
    InvalidConfig(String),
    /// Data source switch refused (409).
    #[error(transparent)]
    Switch(#[from] SwitchError),
}

/// `/healthz` fails after this many consecutive failed engine iterations. At the
/// default 10 ticks/s that is half a second of an engine that cannot write; iterations
/// that had nothing to write do not count either way (see [`IterationHealth`]).
pub const UNHEALTHY_AFTER_FAILED_ITERATIONS: u32 = 5;

/// What a successful engine iteration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IterationOutcome {
    /// Something was written to the database (trades, halt, snapshot) and committed.
    Wrote,
    /// Nothing needed writing.
    Idle,
}

/// Consecutive failed engine iterations, for `/healthz`.
///
/// A failure is an iteration that returned an error (a database write failed, the state
/// lock is poisoned). A success that wrote to the database resets the count. An idle
/// success (nothing to write) neither counts nor resets: it proves nothing about the
/// database, and the engine writes only now and then (trades, snapshots), so letting
/// idle iterations reset the count would hide a database that refuses every write.
/// A write-free streak is bounded by the snapshot interval, which always writes.
#[derive(Debug)]
pub struct IterationHealth {
    threshold: u32,
    failures: AtomicU32,
    last_error: Mutex<Option<String>>,
}

/// Why the engine is unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// Consecutive failed iterations.
    pub failures: u32,
    /// The last iteration's error.
    pub last_error: String,
}

impl IterationHealth {
    /// A tracker that reports unhealthy after `threshold` (≥ 1) consecutive failures.
    pub fn new(threshold: u32) -> Self {
        IterationHealth {
            threshold: threshold.max(1),
            failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Record a successful iteration; returns the failure count it reset (0 if none).
    pub fn success(&self, outcome: IterationOutcome) -> u32 {
        match outcome {
            IterationOutcome::Idle => 0,
            IterationOutcome::Wrote => self.failures.swap(0, Ordering::Relaxed),
        }
    }

    /// Record a failed iteration; returns the consecutive failure count.
    pub fn failure(&self, error: &str) -> u32 {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        self.failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// Consecutive failed iterations so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The last recorded error (kept after a reset, for diagnosis).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `Some` once the threshold is reached.
    pub fn unhealthy(&self) -> Option<Unhealthy> {
        let failures = self.consecutive_failures();
        (failures >= self.threshold).then(|| Unhealthy {
            failures,
            last_error: self.last_error().unwrap_or_default(),
        })
    }

    /// The threshold.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }
}

/// Mutable state guarded by one lock so every control operation is atomic with
/// respect to the engine loop.
pub struct Core {
    /// The trading engine.
    pub engine: Engine,
    /// Market data sources.
    pub feed: FeedManager,
    /// Effective config (after hot reloads).
    pub config: Config,
    ticks: Vec<(usize, f64)>,
    events: Vec<EngineEvent>,
}

/// Result of one emergency close-all.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseAllReport {
    /// Always true afterwards.
    pub halted: bool,
    /// Halt reason now in force.
    pub halt_reason: Option<String>,
    /// Whether there was nothing to close.
    pub already_flat: bool,
    /// Orders canceled.
    pub canceled_orders: usize,
    /// Per-position result.
    pub positions: Vec<ClosedPosition>,
    /// Open positions left (0 on success).
    pub open_positions: usize,
}

/// One position closed by close-all.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosedPosition {
    /// Trade id.
    pub trade_id: i64,
    /// Pair.
    pub pair: String,
    /// Amount sold.
    pub amount: f64,
    /// Fill price.
    pub close_rate: f64,
    /// Profit in the stake currency.
    pub profit_abs: f64,
    /// `closed`.
    pub status: &'static str,
}

/// One in-flight close-all run that concurrent callers join.
type CloseAllRun = Arc<tokio::sync::OnceCell<Result<CloseAllReport, String>>>;

/// Everything shared between the engine thread and the API.
pub struct Bot {
    core: Mutex<Core>,
    /// Database.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// API tokens.
    pub tokens: Arc<TokenStore>,
    /// Exchange credentials, re-read when the mounted Secret changes.
    pub credentials: CredentialStore,
    started: Instant,
    heartbeat_ms: AtomicU64,
    /// True while a restore or startup recovery runs (readyz fails).
    pub restoring: AtomicBool,
    /// Set to stop the engine loop and the helper threads.
    pub shutdown: AtomicBool,
    /// Set on the first SIGTERM/SIGINT: the engine loop stops trading (it ends), the API
    /// keeps serving, `/readyz` reports not ready and `/healthz` reports `draining`.
    /// Never persisted: a restart trades as before.
    pub draining: AtomicBool,
    /// [`Bot::mono_ms`] when the last `/api/v1` request finished (0: none yet).
    last_api_ms: AtomicU64,
    close_all_inflight: Mutex<Option<CloseAllRun>>,
    tick_interval: Duration,
    /// Consecutive failed engine iterations (`/healthz`).
    pub iteration_health: IterationHealth,
}

/// Wall clock in ms since the epoch.
pub fn wall_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Bot {
    /// Open the store, restore state and build the engine (the loop is started separately).
    pub fn new(config: Config, tokens: Arc<TokenStore>) -> Result<Arc<Self>, StartError> {
        // First take the data directory (fails at once if another bot holds it), so
        // nothing below can disturb the process that owns it.
        let store = Store::open(&config.data_dir)?;
        info!(lock = %store.lock_path().display(), "data directory locked for this process");
        // Leftovers of a backup interrupted by a crash.
        let _ = std::fs::remove_dir_all(config.data_dir.join(".backup-work"));
        let restored = store.load(&config.pairs)?;
        for o in &restored.orphans {
            warn!(target: "trading", trade_id = o.position.trade_id, pair = %o.pair,
                "open trade on a pair that is no longer configured: not traded, counted in openPositions, closed by emergency close-all");
        }
        let (kind, params) = config.strategy.resolve()?;
        let now = wall_ms();
        let restored_open = restored.positions.len();
        let engine = Engine::new(&config, kind, params, restored, now);
        // The effective pause state (config OR persisted) is what GET /config reports.
        let mut config = config;
        config.paused = engine.paused();
        let started = Instant::now();
        let feed = FeedManager::new(&config.market_data, &config.pairs, 0)?;
        let metrics = Metrics::new()?;
        let credentials = CredentialStore::new(
            config.exchange.credentials_dir.as_deref(),
            crate::credentials::auth_for(config.mode),
        );
        info!(
            target: "trading",
            open_positions = restored_open,
            halted = engine.halted().unwrap_or(""),
            paused = engine.paused(),
            "state restored from database"
        );
        let tick_interval = Duration::from_secs_f64(1.0 / config.market_data.tick_rate);
        let bot = Arc::new(Bot {
            core: Mutex::new(Core {
                engine,
                feed,
                config,
                ticks: Vec::with_capacity(64),
                events: Vec::with_capacity(16),
            }),
            store,
            metrics,
            tokens,
            credentials,
            started,
            heartbeat_ms: AtomicU64::new(0),
            restoring: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            last_api_ms: AtomicU64::new(0),
            close_all_inflight: Mutex::new(None),
            tick_interval,
            iteration_health: IterationHealth::new(UNHEALTHY_AFTER_FAILED_ITERATIONS),
        });
        // Persist the merged pause flag so a later restart sees the same state.
        {
            let core = bot.lock()?;
            bot.store
                .save_flags(core.engine.halted(), core.engine.paused())?;
        }
        Ok(bot)
    }

    /// Monotonic ms since start.
    pub fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Record that an `/api/v1` request just finished (the shutdown drain waits for the
    /// API to fall quiet before it exits, so a caller's follow-up request still lands).
    pub fn note_api_request(&self) {
        self.last_api_ms.store(self.mono_ms(), Ordering::Relaxed);
    }

    /// Time since the last `/api/v1` request finished (since start if none).
    pub fn api_quiet_for(&self) -> Duration {
        Duration::from_millis(
            self.mono_ms()
                .saturating_sub(self.last_api_ms.load(Ordering::Relaxed)),
        )
    }

    /// Whether trading has stopped for shutdown (see [`Bot::draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Open trades, orphans included (what close-all would close).
    pub fn open_positions(&self) -> Result<usize, ControlError> {
        Ok(self.lock_ctl()?.engine.open_count())
    }

    /// Stop trading for shutdown: set [`Bot::draining`] under the engine lock, so once
    /// this returns no engine iteration opens or closes anything (one that was waiting
    /// for the lock sees the flag and does nothing). Returns the open positions at that
    /// moment. Nothing is persisted. The flag is set even if the lock is poisoned.
    pub fn stop_trading(&self) -> Result<usize, ControlError> {
        match self.lock_ctl() {
            Ok(core) => {
                self.draining.store(true, Ordering::Relaxed);
                Ok(core.engine.open_count())
            }
            Err(e) => {
                self.draining.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Lock the core.
    pub fn lock(&self) -> Result<MutexGuard<'_, Core>, StoreError> {
        self.core.lock().map_err(|_| StoreError::Poisoned)
    }

    fn lock_ctl(&self) -> Result<MutexGuard<'_, Core>, ControlError> {
        self.core.lock().map_err(|_| ControlError::Poisoned)
    }

    /// Start the engine loop thread.
    pub fn spawn_engine(self: &Arc<Self>) -> Result<std::thread::JoinHandle<()>, StartError> {
        let bot = self.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || bot.engine_loop())
            .map_err(StartError::Thread)
    }

    fn engine_loop(&self) {
        let mut next = Instant::now();
        let mut last_snapshot = Instant::now();
        let snapshot_every = self
            .lock()
            .map(|c| c.config.snapshot_interval.0)
            .unwrap_or(Duration::from_secs(60));
        while !self.shutdown.load(Ordering::Relaxed) && !self.is_draining() {
            next += self.tick_interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > Duration::from_secs(1) {
                next = now; // far behind (e.g. suspended): skip the backlog
            }
            let lag = Instant::now().saturating_duration_since(next);
            self.metrics.loop_lag.set(lag.as_secs_f64());
            let snapshot = last_snapshot.elapsed() >= snapshot_every;
            if snapshot {
                last_snapshot = Instant::now();
            }
            match self.iteration(snapshot) {
                Ok(outcome) => {
                    let reset = self.iteration_health.success(outcome);
                    if reset > 0 {
                        info!(failed_iterations = reset, "engine iterations succeed again");
                    }
                }
                Err(e) => {
                    self.metrics.iteration_failures_total.inc();
                    let n = self.iteration_health.failure(&e.to_string());
                    // Log the start of a streak, the moment /healthz turns, then sparsely.
                    if n == 1 || n == self.iteration_health.threshold() || n.is_multiple_of(1000) {
                        error!(error = %e, consecutive_failures = n, "engine iteration failed");
                    }
                }
            }
            self.metrics
                .consecutive_failed_iterations
                .set(i64::from(self.iteration_health.consecutive_failures()));
            self.heartbeat_ms.store(self.mono_ms(), Ordering::Relaxed);
        }
        info!(
            draining = self.is_draining(),
            "engine loop stopped; this process opens and closes no more trades on its own"
        );
    }

    /// One turn of the loop: poll ticks, decide, persist, maybe snapshot. A failed write
    /// is returned as the error (after halting entries) so [`IterationHealth`] sees it.
    fn iteration(&self, snapshot: bool) -> Result<IterationOutcome, StoreError> {
        let mono = self.mono_ms();
        let wall = wall_ms();
        let mut guard = self.lock()?;
        if self.is_draining() {
            // Trading stopped while this iteration waited for the lock.
            return Ok(IterationOutcome::Idle);
        }
        let core = &mut *guard;
        core.ticks.clear();
        core.events.clear();
        let n = core.engine.pairs().len();
        core.feed.poll(mono, n, &mut core.ticks);
        let received = Instant::now();
        if let Some(sw) = core.feed.evaluate(mono) {
            if sw.why == crate::feed::failover::Selection::Failover {
                self.metrics.failovers_total.inc();
            }
            warn!(target: "trading", from = sw.from.as_str(), to = sw.to.as_str(), why = ?sw.why, "market data source switched");
        }
        for &(pair, px) in &core.ticks {
            core.engine.on_tick(pair, px, wall, &mut core.events);
            self.metrics
                .tick_to_decision
                .observe(received.elapsed().as_secs_f64());
        }
        core.engine.check_risk(wall, &mut core.events);
        let mut outcome = IterationOutcome::Idle;
        let mut failed = None;
        if !core.events.is_empty() {
            let strategy = core.engine.strategy_name().to_string();
            match self
                .store
                .persist(&core.events, core.engine.pair_names(), &strategy)
            {
                Ok(()) => {
                    outcome = IterationOutcome::Wrote;
                    self.report_events(&core.events, core.engine.pair_names());
                }
                Err(e) => {
                    error!(error = %e, "cannot persist trades; halting new entries");
                    core.engine.halt(&format!("database write failed: {e}"));
                    failed = Some(e);
                }
            }
        }
        self.update_gauges(core, mono);
        if let Some(e) = failed {
            return Err(e);
        }
        if snapshot {
            let eq = core.engine.equity();
            self.store.snapshot(
                wall,
                eq,
                core.engine.cash(),
                core.engine.open_count(),
                core.engine.risk(),
            )?;
            outcome = IterationOutcome::Wrote;
            info!(
                target: "performance",
                equity = eq,
                cash = core.engine.cash(),
                realized_pnl = core.engine.realized_pnl(),
                open_positions = core.engine.open_count(),
                "equity snapshot"
            );
        }
        Ok(outcome)
    }

    fn report_events(&self, events: &[EngineEvent], pairs: &[String]) {
        for ev in events {
            match ev {
                EngineEvent::Opened { position: p, .. } => {
                    self.metrics.trades_opened_total.inc();
                    let pair = pairs.get(p.pair_idx).map(String::as_str).unwrap_or("?");
                    info!(target: "trading", trade_id = p.trade_id, pair = %pair, amount = p.amount,
                        open_rate = p.open_rate, stake = p.stake, "trade opened");
                }
                EngineEvent::Closed { trade: t, .. } => {
                    let outcome = if t.profit_abs > 0.0 { "win" } else { "loss" };
                    self.metrics
                        .trades_total
                        .with_label_values(&[outcome])
                        .inc();
                    let pair = pairs
                        .get(t.position.pair_idx)
                        .map(String::as_str)
                        .unwrap_or("?");
                    info!(target: "trading", trade_id = t.position.trade_id, pair = %pair,
                        close_rate = t.close_rate, profit_abs = t.profit_abs, exit_reason = t.reason.as_str(), "trade closed");
                }
                EngineEvent::Halted { reason } => {
                    warn!(target: "trading", reason = %reason, "new entries halted");
                }
            }
        }
    }

    fn update_gauges(&self, core: &Core, mono: u64) {
        let m = &self.metrics;
        m.equity.set(core.engine.equity());
        m.realized_pnl.set(core.engine.realized_pnl());
        m.open_positions.set(core.engine.open_count() as i64);
        m.halted.set(core.engine.halted().is_some() as i64);
        m.paused.set(core.engine.paused() as i64);
        for s in core.feed.status(mono) {
            m.market_data_age
                .with_label_values(&[&s.name, s.role.as_str()])
                .set(s.age_seconds);
            m.active_source
                .with_label_values(&[&s.name, s.role.as_str()])
                .set(if s.active { 1.0 } else { 0.0 });
        }
    }

    /// Seconds since the engine loop last completed an iteration.
    pub fn loop_age(&self) -> Duration {
        Duration::from_millis(
            self.mono_ms()
                .saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)),
        )
    }

    /// The engine loop is considered stuck after this long without an iteration.
    pub fn loop_timeout(&self) -> Duration {
        (self.tick_interval * 20).max(Duration::from_secs(5))
    }

    /// Whether the active market data source is fresh.
    pub fn feed_fresh(&self) -> Result<bool, StoreError> {
        let mono = self.mono_ms();
        Ok(self.lock()?.feed.active_fresh(mono))
    }

    /// Whether the active market data source is fresh, and whether `marketData.use`
    /// pins it (for `/readyz`: a pinned stale source does not make the bot unready, so
    /// the operator keeps talking to it, reports the stale pin and can lift it).
    pub fn feed_state(&self) -> Result<(bool, bool), StoreError> {
        let mono = self.mono_ms();
        let core = self.lock()?;
        Ok((
            core.feed.active_fresh(mono),
            core.feed.use_source().is_pinned(),
        ))
    }

    /// Status document for `GET /api/v1/status`.
    pub fn status(&self) -> Result<Value, ControlError> {
        let mono = self.mono_ms();
        let core = self.lock_ctl()?;
        let e = &core.engine;
        let state = if e.halted().is_some() {
            "halted"
        } else if e.paused() {
            "paused"
        } else {
            "running"
        };
        Ok(json!({
            "name": core.config.name,
            "version": crate::chaos::version(),
            "mode": core.config.mode,
            "exchange": core.config.exchange.name,
            "state": state,
            "paused": e.paused(),
            "halted": e.halted().is_some(),
            "haltReason": e.halted(),
            "openPositions": e.open_count(),
            "orphanedPositions": e.orphan_count(),
            "orphanedPairs": e.orphans().iter().map(|p| e.pair_name(p.pair_idx)).collect::<Vec<_>>(),
            "maxPositions": core.config.risk.max_positions,
            "equity": e.equity(),
            "cash": e.cash(),
            "realizedPnl": e.realized_pnl(),
            "startingBalance": e.starting_balance(),
            "stakeCurrency": core.config.stake_currency,
            "strategy": e.strategy_name(),
            "pairs": e.pairs(),
            "activeMarketData": core.feed.active_name(),
            "marketData": Self::datasource_doc(&core, mono),
            "uptimeSeconds": self.started.elapsed().as_secs_f64(),
            "engineLoopAgeSeconds": self.loop_age().as_secs_f64(),
            "schemaVersion": self.store.schema_version().ok(),
        }))
    }

    fn datasource_doc(core: &Core, mono: u64) -> Value {
        json!({
            "active": core.feed.active_role(),
            "activeName": core.feed.active_name(),
            "selection": core.feed.selection(),
            "use": core.feed.use_source(),
            "failovers": core.feed.failovers(),
            "failback": core.config.market_data.failback,
            "staleAfter": core.config.market_data.stale_after,
            "fresh": core.feed.active_fresh(mono),
            "sources": core.feed.status(mono),
        })
    }

    /// `GET /api/v1/datasource`.
    pub fn datasource(&self) -> Result<Value, ControlError> {
        let mono = self.mono_ms();
        let core = self.lock_ctl()?;
        Ok(Self::datasource_doc(&core, mono))
    }

    /// `PUT /api/v1/datasource`: stall hooks first, then the switch.
    pub fn set_datasource(
        &self,
        active: Option<Role>,
        stalled: &[(Role, bool)],
    ) -> Result<Value, ControlError> {
        let mono = self.mono_ms();
        let mut core = self.lock_ctl()?;
        for &(role, s) in stalled {
            core.feed.set_stalled(role, s)?;
            warn!(target: "trading", source = role.as_str(), stalled = s, "market data stall hook set over the API");
        }
        if let Some(role) = active
            && let Some(sw) = core.feed.switch_to(role, mono)?
        {
            warn!(target: "trading", from = sw.from.as_str(), to = sw.to.as_str(), "market data source switched manually");
        }
        self.update_gauges(&core, mono);
        Ok(Self::datasource_doc(&core, mono))
    }

    /// Open positions with mark-to-market values; orphans (pairs no longer configured)
    /// are marked at their entry price and flagged `orphaned`.
    pub fn positions(&self) -> Result<Value, ControlError> {
        let core = self.lock_ctl()?;
        let e = &core.engine;
        let list: Vec<Value> = e
            .positions()
            .map(|p| (p, false))
            .chain(e.orphans().iter().map(|p| (p, true)))
            .map(|(p, orphaned)| {
                let px = e.last_price(p.pair_idx);
                let px = if px.is_finite() { px } else { p.open_rate };
                let value = p.amount * px;
                json!({
                    "tradeId": p.trade_id,
                    "pair": e.pair_name(p.pair_idx),
                    "orphaned": orphaned,
                    "side": "long",
                    "amount": p.amount,
                    "stakeAmount": p.stake,
                    "openRate": p.open_rate,
                    "openDate": crate::store::rfc3339(p.open_ms),
                    "currentRate": px,
                    "stopRate": e.risk().stop_price(p.open_rate, p.max_rate),
                    "unrealizedPnl": value - p.stake - p.fee_open,
                })
            })
            .collect();
        Ok(json!({ "positions": list, "count": list.len() }))
    }

    /// Pause new entries (persisted).
    pub fn pause(&self) -> Result<Value, ControlError> {
        let mut core = self.lock_ctl()?;
        core.engine.set_paused(true);
        core.config.paused = true;
        self.store.save_flags(core.engine.halted(), true)?;
        self.metrics.paused.set(1);
        info!(target: "trading", "trading paused over the API");
        Ok(
            json!({ "paused": true, "halted": core.engine.halted().is_some(), "haltReason": core.engine.halted() }),
        )
    }

    /// Resume: clear pause and halt (persisted); drawdown references restart.
    pub fn resume(&self) -> Result<Value, ControlError> {
        let mut core = self.lock_ctl()?;
        let was = core.engine.halted().map(str::to_string);
        core.engine.resume(wall_ms());
        core.config.paused = false;
        self.store.save_flags(None, false)?;
        self.metrics.paused.set(0);
        self.metrics.halted.set(0);
        info!(target: "trading", previous_halt = was.as_deref().unwrap_or(""), "trading resumed over the API");
        Ok(json!({ "paused": false, "halted": false, "clearedHaltReason": was }))
    }

    /// Emergency close-all; concurrent callers share one run.
    pub async fn close_all(self: &Arc<Self>) -> Result<CloseAllReport, String> {
        let cell = {
            let mut slot = self
                .close_all_inflight
                .lock()
                .map_err(|_| "internal lock poisoned".to_string())?;
            slot.get_or_insert_with(|| Arc::new(tokio::sync::OnceCell::new()))
                .clone()
        };
        let bot = self.clone();
        let result = cell
            .get_or_init(|| async move {
                match tokio::task::spawn_blocking(move || bot.close_all_blocking()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("close-all task failed: {e}")),
                }
            })
            .await
            .clone();
        if let Ok(mut slot) = self.close_all_inflight.lock()
            && slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            *slot = None;
        }
        result
    }

    fn close_all_blocking(&self) -> Result<CloseAllReport, ControlError> {
        let wall = wall_ms();
        let mut guard = self.lock_ctl()?;
        let core = &mut *guard;
        let reason = "emergency close-all requested over the API";
        // 1. halt first, persisted, so nothing opens while we close
        if core.engine.halted().is_none() {
            core.engine.halt(reason);
        }
        self.store
            .save_flags(core.engine.halted(), core.engine.paused())?;
        self.metrics.halted.set(1);
        // 2. cancel open orders
        let canceled_orders = self.store.cancel_open_orders(wall)?;
        // 3. close every position, orphans (pairs no longer configured) included (paper
        //    fills are immediate, so "wait for fills" is the persistence below)
        let already_flat = core.engine.open_count() == 0;
        let mut events = Vec::new();
        core.engine.close_all(reason, wall, &mut events);
        let strategy = core.engine.strategy_name().to_string();
        self.store
            .persist(&events, core.engine.pair_names(), &strategy)?;
        self.report_events(&events, core.engine.pair_names());
        let positions = events
            .iter()
            .filter_map(|ev| match ev {
                EngineEvent::Closed { trade: t, .. } => Some(ClosedPosition {
                    trade_id: t.position.trade_id,
                    pair: core.engine.pair_name(t.position.pair_idx).to_string(),
                    amount: t.position.amount,
                    close_rate: t.close_rate,
                    profit_abs: t.profit_abs,
                    status: "closed",
                }),
                _ => None,
            })
            .collect();
        self.update_gauges(core, self.mono_ms());
        warn!(target: "trading", closed = events.len(), "emergency close-all done");
        Ok(CloseAllReport {
            halted: true,
            halt_reason: core.engine.halted().map(str::to_string),
            already_flat,
            canceled_orders,
            positions,
            open_positions: core.engine.open_count(),
        })
    }

    /// Current effective config.
    pub fn config(&self) -> Result<Config, ControlError> {
        Ok(self.lock_ctl()?.config.clone())
    }

    /// Apply a JSON merge patch (RFC 7386) of hot-reloadable fields.
    pub fn patch_config(&self, patch: &Value) -> Result<Config, ControlError> {
        let mut core = self.lock_ctl()?;
        let new = merge_config(&core.config, patch)?;
        let old = core.config.clone();
        if new.risk != old.risk {
            core.engine.set_risk(new.risk);
        }
        if new.strategy != old.strategy {
            let (kind, params) = new
                .strategy
                .resolve()
                .map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
            core.engine.set_strategy(&new.strategy.name, kind, params);
        }
        if new.paused != core.engine.paused() {
            core.engine.set_paused(new.paused);
            self.store.save_flags(core.engine.halted(), new.paused)?;
        }
        if new.market_data.use_source != core.feed.use_source() {
            let switched = core.feed.set_use(new.market_data.use_source)?;
            warn!(target: "trading", use_source = %new.market_data.use_source,
                switched_to = switched.as_ref().map(|s| s.to.as_str()),
                "marketData.use changed");
            let mono = self.mono_ms();
            self.update_gauges(&core, mono);
        }
        info!(target: "trading", patch = %patch, "config hot-reloaded");
        core.config = new.clone();
        Ok(new)
    }
}

/// Leaf paths of a JSON object (`a.b.c`).
fn leaf_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(child, &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Validate and apply a merge patch to a config without side effects.
pub fn merge_config(current: &Config, patch: &Value) -> Result<Config, ControlError> {
    if !patch.is_object() {
        return Err(ControlError::InvalidConfig(
            "the patch must be a JSON object".into(),
        ));
    }
    let cur =
        serde_json::to_value(current).map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
    let mut doc = cur.clone();
    merge_patch(&mut doc, patch);
    // Round-trip through YAML text so deserialisation errors carry the field path.
    let text =
        serde_yaml::to_string(&doc).map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
    let parsed = Config::from_yaml(&text);
    // Compare normalised values, so re-sending an unchanged cold field (e.g. the whole
    // rendered spec) is accepted and only real changes are refused.
    let normalised = match &parsed {
        Ok(c) => serde_json::to_value(c).unwrap_or_else(|_| doc.clone()),
        Err(_) => doc.clone(),
    };
    let mut leaves = Vec::new();
    leaf_paths(patch, "", &mut leaves);
    let refused: Vec<String> = leaves
        .into_iter()
        .filter(|path| {
            !HOT_RELOADABLE
                .iter()
                .any(|hot| path == hot || path.starts_with(&format!("{hot}.")))
        })
        .filter(|path| {
            let ptr = format!("/{}", path.replace('.', "/"));
            cur.pointer(&ptr) != normalised.pointer(&ptr)
        })
        .collect();
    if !refused.is_empty() {
        return Err(ControlError::NotHotReloadable(refused));
    }
    parsed.map_err(|e| ControlError::InvalidConfig(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_yaml("pairs: [A/B]").unwrap()
    }

    #[test]
    fn iteration_health_turns_after_consecutive_failures_and_a_write_resets_it() {
        let h = IterationHealth::new(3);
        assert!(h.unhealthy().is_none());
        assert_eq!(h.failure("disk full"), 1);
        assert_eq!(h.failure("disk full"), 2);
        assert!(h.unhealthy().is_none());
        // an idle iteration proves nothing about the database: no reset
        assert_eq!(h.success(IterationOutcome::Idle), 0);
        assert_eq!(h.failure("database is locked"), 3);
        assert_eq!(
            h.unhealthy(),
            Some(Unhealthy {
                failures: 3,
                last_error: "database is locked".into()
            })
        );
        assert_eq!(h.failure("database is locked"), 4);
        // one successful write resets it
        assert_eq!(h.success(IterationOutcome::Wrote), 4);
        assert!(h.unhealthy().is_none());
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.last_error().as_deref(), Some("database is locked"));
        assert_eq!(IterationHealth::new(0).threshold(), 1);
        assert_eq!(UNHEALTHY_AFTER_FAILED_ITERATIONS, 5);
    }

    #[test]
    fn hot_fields_apply() {
        let new = merge_config(
            &cfg(),
            &json!({"risk": {"maxPositions": 7}, "paused": true, "strategy": {"params": {"rsiPeriod": 5}}, "logs": {"deleteAfter": "60d"}}),
        )
        .unwrap();
        assert_eq!(new.risk.max_positions, 7);
        assert!(new.paused);
        assert_eq!(new.strategy.params.get("rsiPeriod"), Some(&5.0));
        assert_eq!(new.risk.max_position_size, cfg().risk.max_position_size);
    }

    #[test]
    fn cold_fields_are_named() {
        match merge_config(
            &cfg(),
            &json!({"pairs": ["C/D"], "marketData": {"staleAfter": "1s"}, "risk": {"maxPositions": 2}}),
        ) {
            Err(ControlError::NotHotReloadable(f)) => {
                assert_eq!(f, vec!["marketData.staleAfter", "pairs"])
            }
            other => panic!("{other:?}"),
        }
        // unchanged cold values are accepted (the operator may send the whole spec)
        let c = cfg();
        let same = json!({"pairs": ["A/B"], "marketData": {"staleAfter": "5000ms"}, "risk": {"maxPositions": 4}});
        assert_eq!(merge_config(&c, &same).unwrap().risk.max_positions, 4);
        match merge_config(&cfg(), &json!({"logs": {"level": "debug"}})) {
            Err(ControlError::NotHotReloadable(f)) => assert_eq!(f, vec!["logs.level"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_values_are_refused_with_the_field() {
        let e = merge_config(&cfg(), &json!({"risk": {"maxPositions": 0}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("risk.maxPositions"), "{e}");
        let e = merge_config(&cfg(), &json!({"risk": {"maxPositions": "x"}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid"), "{e}");
        assert!(merge_config(&cfg(), &json!([1])).is_err());
    }
}
