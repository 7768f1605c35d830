//! `iq720-bot run`: wire config, logging, tokens, engine and HTTP server together.

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
        version = env!("CARGO_PKG_VERSION"),
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
        spawn_named("log-retention", move || retention_loop(&bot, &log_dir))?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(|e| RunError::Io(format!("cannot start runtime: {e}")))?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Io(format!("cannot listen on {addr}: {e}")))?;
        info!(%addr, "HTTP API listening");
        let app = api::router(bot.clone());
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| RunError::Io(format!("server error: {e}")))
    });
    bot.shutdown.store(true, Ordering::Relaxed);
    if engine.join().is_err() {
        error!("engine thread panicked");
    }
    if let Ok(conn) = bot.store.writer() {
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    info!("stopped");
    served
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    info!("shutdown signal received");
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
