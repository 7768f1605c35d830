//! Starts everything a running operator needs: the Kubernetes client, the health and
//! metrics server, leader election and every controller.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{error, info};

use crate::cli::RunArgs;
use crate::shared::context::{Context, Settings};
use crate::shared::leader::{self, LeaderError, LeaderSettings};
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

/// `iq720-operator run`: health server, optional leader election, controllers.
pub async fn run(args: RunArgs) -> Result<(), ManagerError> {
    let client = match &args.kubeconfig {
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
    };
    let metrics = Metrics::new().map_err(|e| ManagerError::Runtime(format!("metrics: {e}")))?;
    let settings = Settings {
        bot_poll_interval: args.bot_poll_interval,
        close_all_deadline: args.close_all_deadline,
        ..Settings::default()
    };
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let ctx = Context::new(client.clone(), metrics, settings, Some(identity.clone()));

    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .map_err(|e| {
            ManagerError::Runtime(format!("cannot listen on {}: {e}", args.metrics_address))
        })?;
    info!(address = %args.metrics_address, "serving /metrics, /healthz and /readyz");
    let app = crate::shared::health::router(ctx.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "health server stopped");
        }
    });

    let lost_leadership = if args.leader_election {
        let settings = LeaderSettings {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity,
            lease_duration: args.lease_duration,
            renew_every: args.lease_renew_every,
        };
        tokio::select! {
            res = leader::acquire(client.clone(), &settings) => res?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        Some(tokio::spawn(leader::keep(client.clone(), settings)))
    } else {
        None
    };

    ctx.ready.store(true, Ordering::Relaxed);
    info!(namespace = ?args.namespace, "starting the TradingBot controller");
    let controller = crate::tradingbot::run(Arc::new(ctx.clone()), args.namespace.clone());
    let outcome = match lost_leadership {
        Some(keeper) => tokio::select! {
            _ = controller => Ok(()),
            lost = keeper => match lost {
                Ok(err) => Err(err.into()),
                Err(join) => Err(ManagerError::Runtime(format!("lease keeper failed: {join}"))),
            },
        },
        None => {
            controller.await;
            Ok(())
        }
    };
    ctx.ready.store(false, Ordering::Relaxed);
    server.abort();
    if let Err(e) = &outcome {
        error!(error = %e, "stopping: no longer the leader");
    }
    outcome
}
