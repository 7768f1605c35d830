//! Starts everything a running operator needs: the Kubernetes client, the health and
//! metrics server, leader election and every controller.
//!
//! Order of a leader's life: acquire the Lease → mark leading → run the controllers
//! while a separate task renews. If renewal fails, the controllers are dropped at once
//! and the process exits with an error (Kubernetes restarts it as a standby). On
//! SIGTERM the controllers finish their in-flight reconciles (for at most
//! [`SHUTDOWN_GRACE`]), then the Lease is released so the next replica takes over
//! within one retry period. The HTTP server
//! runs throughout, so a standby is Ready (see [`crate::shared::health`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::shared::context::{BotIngress, Context, Settings};
use crate::shared::leader::{Elector, Fence, KubeLeases, LeaderError, LeaderSettings};
use crate::shared::metrics::Metrics;

/// Why the operator process stopped.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The Kubernetes client could not be built.
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// Leader election failed or leadership was lost.
    #[error("leader election: {0}")]
    Leader(#[from] LeaderError),
    /// A runtime (I/O, bind) failure.
    #[error("{0}")]
    Runtime(String),
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "iq720-operator".to_string());
    format!("{host}-{}", std::process::id())
}

async fn client(args: &RunArgs) -> Result<kube::Client, ManagerError> {
    Ok(match &args.kubeconfig {
        None => kube::Client::try_default().await?,
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                ManagerError::Runtime(format!("cannot read {}: {e}", path.display()))
            })?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| {
                    ManagerError::Runtime(format!("bad kubeconfig {}: {e}", path.display()))
                })?;
            kube::Client::try_from(config)?
        }
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn leader_settings(args: &RunArgs, identity: String) -> LeaderSettings {
    LeaderSettings {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity,
        lease_duration: args.lease_duration,
        renew_deadline: args
            .lease_renew_deadline
            .unwrap_or_else(|| LeaderSettings::default_renew_deadline(args.lease_duration)),
        retry_period: args.lease_renew_every,
    }
}

/// `iq720-operator run`: health server, optional leader election, controllers.
pub async fn run(args: RunArgs) -> Result<(), ManagerError> {
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let leader = if args.leader_election {
        let s = leader_settings(&args, identity.clone());
        s.validate()?;
        Some(s)
    } else {
        None
    };
    let client = client(&args).await?;
    let metrics = Metrics::new().map_err(|e| ManagerError::Runtime(format!("metrics: {e}")))?;
    let settings = Settings {
        bot_poll_interval: args.bot_poll_interval,
        close_all_deadline: args.close_all_deadline,
        status_figures_interval: args.status_figures_interval,
        max_concurrent_reconciles: args.max_concurrent_reconciles,
        notify: args
            .notify_secret
            .clone()
            .map(|secret| crate::shared::notify::Target {
                namespace: args
                    .operator_namespace
                    .clone()
                    .unwrap_or_else(|| args.lease_namespace.clone()),
                secret,
                key: args.notify_secret_key.clone(),
                format: args.notify_format,
            }),
        bot_ingress: BotIngress {
            operator_namespace: args.operator_namespace.clone(),
            metrics_scraper_namespaces: args.metrics_scraper_namespaces.clone(),
        },
        ..Settings::default()
    };
    let ctx = Context::new(client.clone(), metrics, settings, Some(identity));

    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .map_err(|e| {
            ManagerError::Runtime(format!("cannot listen on {}: {e}", args.metrics_address))
        })?;
    info!(address = %args.metrics_address, "serving /metrics, /healthz, /readyz and /leader");
    let app = crate::shared::health::router(ctx.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "health server stopped");
        }
    });

    let outcome = match leader {
        None => {
            ctx.set_leading(true);
            controllers_until_shutdown(&ctx, &args).await;
            ctx.set_leading(false);
            Ok(())
        }
        Some(settings) => lead(&ctx, &args, client, settings).await,
    };
    server.abort();
    if let Err(e) = &outcome {
        error!(error = %e, "stopping: no longer the leader");
    }
    outcome
}

async fn run_controllers(ctx: &Context, args: &RunArgs) {
    info!(namespace = ?args.namespace, "starting the TradingBot controller");
    let tradingbots = crate::tradingbot::run(Arc::new(ctx.clone()), args.namespace.clone());
    // BackupSchedule controller (issue 9): runs beside the TradingBot controller.
    info!(namespace = ?args.namespace, "starting the BackupSchedule controller");
    let backups = crate::backupschedule::run(
        Arc::new(ctx.clone()),
        args.namespace.clone(),
        crate::backupschedule::BackupSettings::default(),
    );
    // MaintenanceWindow controller (issue 10): window status, Events, and the store
    // of windows the TradingBot controller's gate reads.
    info!(namespace = ?args.namespace, "starting the MaintenanceWindow controller");
    let windows = crate::maintenancewindow::run(Arc::new(ctx.clone()), args.namespace.clone());
    tokio::join!(tradingbots, backups, windows);
}

/// How long the controllers may take to finish their reconciles after SIGTERM before
/// they are dropped: below Kubernetes' default grace period (30 s), so that a leader
/// still releases its Lease before it would be killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the controllers until they end by themselves, or until [`SHUTDOWN_GRACE`] after
/// SIGTERM/SIGINT (each controller starts its graceful shutdown on the signal; a
/// controller whose watches cannot reach the apiserver would otherwise never end).
async fn controllers_until_shutdown(ctx: &Context, args: &RunArgs) {
    let controllers = run_controllers(ctx, args);
    tokio::pin!(controllers);
    tokio::select! {
        () = &mut controllers => return,
        () = shutdown_signal() => {}
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers)
        .await
        .is_err()
    {
        warn!(
            grace = ?SHUTDOWN_GRACE,
            "the controllers did not finish after the shutdown signal; stopping them"
        );
    }
}

/// Waits for the Lease, runs the controllers while it is held, releases it on a clean
/// shutdown.
async fn lead(
    ctx: &Context,
    args: &RunArgs,
    client: kube::Client,
    settings: LeaderSettings,
) -> Result<(), ManagerError> {
    // If the runtime is too stuck to give up leadership in time, the OS thread does.
    let fence = Fence::start(|| {
        eprintln!("iq720-operator: leader renew deadline passed without a renewal; exiting");
        std::process::exit(3);
    })
    .map_err(|e| ManagerError::Runtime(format!("cannot start the leader fence: {e}")))?;
    let store = KubeLeases::new(client, &settings.namespace, &settings.name);
    let mut elector = Elector::new(store, settings)?.with_fence(fence);
    let since = tokio::select! {
        since = elector.acquire() => since,
        () = shutdown_signal() => return Ok(()),
    };
    ctx.set_leading(true);
    let (stop, stopped) = oneshot::channel();
    let mut keeper = tokio::spawn(async move {
        let held = elector.hold(since, stopped).await;
        (elector, held)
    });
    tokio::select! {
        // The controllers ended (SIGTERM: in-flight reconciles finished): hand over.
        () = controllers_until_shutdown(ctx, args) => {
            ctx.set_leading(false);
            let _ = stop.send(());
            let (mut elector, _) = keeper
                .await
                .map_err(|e| ManagerError::Runtime(format!("lease keeper failed: {e}")))?;
            match elector.release().await {
                Ok(true) => info!("released the lease"),
                Ok(false) => info!("the lease was no longer ours; nothing to release"),
                Err(e) => warn!(error = %e, "cannot release the lease; a standby takes over when it expires"),
            }
            Ok(())
        }
        // Renewal failed: the controllers future is dropped here, before this returns.
        kept = &mut keeper => {
            ctx.set_leading(false);
            match kept {
                Ok((_, Err(e))) => Err(e.into()),
                Ok((_, Ok(()))) => Err(ManagerError::Runtime("lease keeper stopped".into())),
                Err(e) => Err(ManagerError::Runtime(format!("lease keeper failed: {e}"))),
            }
        }
    }
}
