//! `iq720-bot run`: wire config, logging, tokens, engine and HTTP server together, and
//! shut down in the order that keeps positions closable.
//!
//! Why the shutdown drains: SIGTERM does not always mean "restart me". When a
//! TradingBot is deleted with foreground propagation (Argo CD's default), the garbage
//! collector deletes the bot's pod while the operator's finalizer is still calling
//! `POST /api/v1/emergency/close-all` on it. A bot that stopped its API at the signal
//! would make that call fail and leave positions open with nobody running them. So on
//! the first SIGTERM/SIGINT the bot
//!
//! 1. stops trading: the engine loop ends, so nothing opens or closes on its own. No
//!    halt is persisted, so a rollout restart trades on with the positions it reloads;
//! 2. holding no open position, exits promptly: as soon as no `/api/v1` request has
//!    finished for [`FLAT_QUIET`] (at once if the API was idle), so a close-all that
//!    raced the signal and the caller's follow-up `GET /status` are still answered;
//! 3. holding open positions, keeps serving the API for the drain period
//!    (`--shutdown-drain` / `IQ720_SHUTDOWN_DRAIN`, default 15 s) and exits as soon as
//!    it is flat (after a close-all; same [`FLAT_QUIET`] rule) or when the period ends,
//!    with the positions kept in the database. A drain of `0` exits at once, as before.
//!
//! A second SIGTERM/SIGINT exits at once. Whatever the path, in-flight requests get a
//! short grace and the WAL is checkpointed before the process exits.

use crate::api::{self, auth::TokenStore};
use crate::cli::RunArgs;
use crate::config::{Config, ConfigError};
use crate::logging::{self, LogError};
use crate::runner::{Bot, StartError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{error, info, warn};

/// Errors that stop `run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad config (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Logging setup failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Engine/store start failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Network / runtime failure.
    #[error("{0}")]
    Io(String),
}

/// Load the config file and apply command-line / environment overrides.
pub fn effective_config(args: &RunArgs) -> Result<Config, ConfigError> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(a) = &args.listen_addr {
        cfg.api.listen_addr = a.clone();
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(d) = &args.log_dir {
        cfg.log_dir = d.clone();
    }
    if let Some(d) = &args.token_dir {
        cfg.api.token_dir = d.clone();
    }
    if let Some(d) = &args.exchange_credentials_dir {
        cfg.exchange.credentials_dir = Some(d.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), RunError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| RunError::Io(format!("cannot start {name} thread: {e}")))
}

/// Run until SIGTERM/SIGINT.
pub fn run(args: RunArgs) -> Result<(), RunError> {
    let cfg = effective_config(&args)?;
    logging::init(&cfg.logs.level, Some(&cfg.log_dir), logging::system_clock())?;
    let addr: SocketAddr = crate::config::parse_listen_addr(&cfg.api.listen_addr)
        .map_err(|e| RunError::Io(format!("bad listen address: {e}")))?;
    info!(
        name = %cfg.name,
        version = crate::chaos::version(),
        fault = ?crate::chaos::fault(),
        pairs = ?cfg.pairs,
        data_dir = %cfg.data_dir.display(),
        log_dir = %cfg.log_dir.display(),
        token_dir = %cfg.api.token_dir.display(),
        "starting iq720-bot"
    );
    let tokens = Arc::new(TokenStore::new(&cfg.api.token_dir));
    if tokens.is_empty() {
        warn!(target: "security", dir = %cfg.api.token_dir.display(), "no API tokens found; every /api call will be refused until one appears");
    }
    let log_dir = cfg.log_dir.clone();
    let bot = Bot::new(cfg, tokens.clone())?;
    let engine = bot.spawn_engine()?;

    {
        let bot = bot.clone();
        spawn_named("tokens", move || {
            bot.tokens.watch(Duration::from_secs(1), &bot.shutdown)
        })?;
    }
    {
        let bot = bot.clone();
        spawn_named("credentials", move || {
            bot.credentials.watch(&bot.shutdown, |r| {
                let result = match r {
                    crate::credentials::Reload::Applied => "applied",
                    crate::credentials::Reload::Rejected(_) => "rejected",
                    crate::credentials::Reload::Unchanged => return,
                };
                bot.metrics
                    .exchange_credentials_reloads_total
                    .with_label_values(&[result])
                    .inc();
            })
        })?;
    }
    {
        let bot = bot.clone();
        spawn_named("log-retention", move || retention_loop(&bot, &log_dir))?;
    }

    let drain = args.shutdown_drain;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(|e| RunError::Io(format!("cannot start runtime: {e}")))?;
    let served = rt.block_on(serve(bot.clone(), engine, addr, drain));
    // Blocking API work still running (a backup stream, a slow query) must not hold the
    // exit; SQLite keeps the database consistent if a write is cut short.
    rt.shutdown_timeout(RUNTIME_GRACE);
    bot.shutdown.store(true, Ordering::Relaxed);
    if let Ok(conn) = bot.store.writer() {
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    info!("stopped");
    served
}

/// During the drain, once the bot is flat: exit after no `/api/v1` request has finished
/// for this long, so the operator's confirmation call after close-all is answered.
pub const FLAT_QUIET: Duration = Duration::from_secs(1);
/// How often the drain checks whether the bot is flat.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long in-flight requests may take to finish once the server stops accepting.
const SERVER_GRACE: Duration = Duration::from_secs(3);
/// How long the runtime waits for blocking tasks at exit.
const RUNTIME_GRACE: Duration = Duration::from_secs(2);

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Serve the API until shutdown: see the module documentation for the order.
async fn serve(
    bot: Arc<Bot>,
    engine: std::thread::JoinHandle<()>,
    addr: SocketAddr,
    drain: Duration,
) -> Result<(), RunError> {
    // Before listening: a signal sent once the API answers is always handled.
    let mut signals = Signals::install()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Io(format!("cannot listen on {addr}: {e}")))?;
    info!(%addr, "HTTP API listening");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = api::router(bot.clone());
    let mut server: ServerTask = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .await
    });

    let first = tokio::select! {
        res = &mut server => {
            // The server does not end on its own short of a runtime failure.
            error!("HTTP server stopped unexpectedly; stopping the engine");
            bot.shutdown.store(true, Ordering::Relaxed);
            join_engine(engine).await;
            return server_result(res);
        }
        s = signals.next() => s,
    };
    info!(signal = first, "shutdown signal received: stopping trading");
    // Waits for the engine lock (an iteration or a close-all may hold it): a second
    // signal must not be stuck behind that.
    let open = tokio::select! {
        open = async {
            let open = stop_trading(&bot).await;
            join_engine(engine).await;
            open
        } => open,
        s = signals.next() => {
            warn!(signal = s, "second shutdown signal while stopping trading: exiting at once");
            server.abort();
            return Ok(());
        }
    };
    match &open {
        Ok(n) => info!(open_positions = n, "trading stopped"),
        Err(e) => error!(error = %e, "trading stopped; cannot count open positions"),
    }

    let end = drain_positions(&bot, open, &mut signals, &mut server, drain).await;
    let _ = stop_tx.send(());
    match end {
        DrainEnd::ServerEnded(res) => server_result(res),
        DrainEnd::SecondSignal => {
            server.abort();
            Ok(())
        }
        DrainEnd::Done => {
            tokio::select! {
                res = tokio::time::timeout(SERVER_GRACE, &mut server) => match res {
                    Ok(res) => server_result(res),
                    Err(_) => {
                        warn!(grace = ?SERVER_GRACE, "requests still running after the grace period; exiting without them");
                        server.abort();
                        Ok(())
                    }
                },
                s = signals.next() => {
                    warn!(signal = s, "second shutdown signal: exiting at once");
                    server.abort();
                    Ok(())
                }
            }
        }
    }
}

fn server_result(res: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), RunError> {
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Io(format!("server error: {e}"))),
        Err(e) => Err(RunError::Io(format!("server task failed: {e}"))),
    }
}

/// Wait for the engine thread to finish its current iteration and end.
async fn join_engine(engine: std::thread::JoinHandle<()>) {
    match tokio::task::spawn_blocking(move || engine.join()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => error!("engine thread panicked"),
        Err(e) => error!(error = %e, "cannot wait for the engine thread"),
    }
}

/// Run a call that takes the engine lock off the async workers (close-all or an engine
/// iteration may hold it for a while).
async fn locked<T: Send + 'static>(
    bot: &Arc<Bot>,
    f: impl FnOnce(&Bot) -> Result<T, crate::runner::ControlError> + Send + 'static,
) -> Result<T, String> {
    let bot = bot.clone();
    match tokio::task::spawn_blocking(move || f(&bot)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// [`Bot::stop_trading`]; the open positions at the stop.
async fn stop_trading(bot: &Arc<Bot>) -> Result<usize, String> {
    let res = locked(bot, Bot::stop_trading).await;
    // Should the blocking task itself have failed, the flag is still set.
    bot.draining.store(true, Ordering::Relaxed);
    res
}

/// Open positions, orphans included.
async fn open_positions(bot: &Arc<Bot>) -> Result<usize, String> {
    locked(bot, Bot::open_positions).await
}

/// How the drain ended.
enum DrainEnd {
    /// Nothing (more) to wait for: flat, drain disabled, or the period is over.
    Done,
    /// A second SIGTERM/SIGINT.
    SecondSignal,
    /// The HTTP server ended by itself.
    ServerEnded(Result<std::io::Result<()>, tokio::task::JoinError>),
}

/// After the first signal, with trading stopped and `open` positions at the stop:
/// serve the API (the server runs in its own task) while positions are open and the
/// drain period lasts. Flat, the bot still waits for the API to be quiet for
/// [`FLAT_QUIET`] (within the period), so a close-all that raced the signal and the
/// caller's follow-up call are answered.
async fn drain_positions(
    bot: &Arc<Bot>,
    open: Result<usize, String>,
    signals: &mut Signals,
    server: &mut ServerTask,
    period: Duration,
) -> DrainEnd {
    let drain = crate::config::HumanDuration(period).to_string();
    let flat_at_signal = matches!(open, Ok(0));
    match open {
        Ok(0) => {}
        Ok(open) if period.is_zero() => {
            warn!(
                target: "trading",
                open_positions = open,
                "shutdown drain disabled: exiting with positions open; they stay in the database and are reloaded on the next start"
            );
        }
        Ok(open) => warn!(
            target: "trading",
            open_positions = open,
            drain = %drain,
            "positions open: serving the API for up to {drain} so they can be closed (POST /api/v1/emergency/close-all); exiting as soon as the bot is flat"
        ),
        Err(e) if period.is_zero() => {
            error!(error = %e, "cannot count open positions; shutdown drain disabled: exiting");
        }
        Err(e) => error!(
            error = %e,
            drain = %drain,
            "cannot count open positions; serving the API for up to {drain} anyway"
        ),
    }
    if period.is_zero() {
        if flat_at_signal {
            info!("no open positions: exiting");
        }
        return DrainEnd::Done;
    }
    let expired = tokio::time::sleep(period);
    tokio::pin!(expired);
    let mut poll = tokio::time::interval(DRAIN_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            s = signals.next() => {
                warn!(signal = s, "second shutdown signal: exiting at once");
                return DrainEnd::SecondSignal;
            }
            res = &mut *server => {
                error!("HTTP server stopped unexpectedly during the shutdown drain");
                return DrainEnd::ServerEnded(res);
            }
            () = &mut expired => {
                match open_positions(bot).await {
                    Ok(0) if flat_at_signal => info!("no open positions: exiting"),
                    Ok(0) => info!(target: "trading", "flat after close-all: exiting"),
                    Ok(open) => warn!(
                        target: "trading",
                        open_positions = open,
                        drain = %drain,
                        "shutdown drain over with positions open: exiting; they stay in the database and are reloaded on the next start"
                    ),
                    Err(e) => error!(
                        error = %e,
                        drain = %drain,
                        "shutdown drain over; cannot count open positions: exiting; open ones stay in the database"
                    ),
                }
                return DrainEnd::Done;
            }
            _ = poll.tick() => {
                if bot.api_quiet_for() >= FLAT_QUIET && matches!(open_positions(bot).await, Ok(0)) {
                    if flat_at_signal {
                        info!("no open positions: exiting");
                    } else {
                        info!(target: "trading", "flat after close-all: exiting");
                    }
                    return DrainEnd::Done;
                }
            }
        }
    }
}

/// SIGTERM and SIGINT, each as a stream (the drain needs to see a second one).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, RunError> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| RunError::Io(format!("cannot handle {name}: {e}")))
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.term.recv() => "SIGTERM",
            Some(()) = self.int.recv() => "SIGINT",
            else => std::future::pending().await,
        }
    }
}

fn retention_loop(bot: &Bot, dir: &std::path::Path) {
    let mut last: Option<std::time::Instant> = None;
    while !bot.shutdown.load(Ordering::Relaxed) {
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last = Some(std::time::Instant::now());
            let logs = match bot.config() {
                Ok(c) => c.logs,
                Err(_) => continue,
            };
            let today = (logging::system_clock())();
            match logging::apply_retention(
                dir,
                today,
                logs.compress_after.days_ceil() as i64,
                logs.delete_after.days_ceil() as i64,
            ) {
                Ok(r) if !r.compressed.is_empty() || !r.deleted.is_empty() => {
                    info!(
                        compressed = r.compressed.len(),
                        deleted = r.deleted.len(),
                        "log retention applied"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "log retention failed"),
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
