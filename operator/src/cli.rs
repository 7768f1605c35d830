//! Command-line interface of the operator binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use iq720_crds::generate;
use tracing::{error, info};

use crate::context::{Context, Settings};
use crate::error::Error;
use crate::leader::{self, LeaderSettings};
use crate::metrics::Metrics;

/// Kubernetes operator for IQ-720 trading bots.
#[derive(Debug, Parser)]
#[command(name = "iq720-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of the operator binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as one YAML stream, or write them to a directory.
    Crd {
        /// Write one `<name>.yaml` file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// Flags of `iq720-operator run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "IQ720_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the metrics and health server.
    #[arg(long, env = "IQ720_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Run the controllers only while holding a Lease, so that several replicas can run.
    #[arg(long, env = "IQ720_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "iq720-operator-leader")]
    pub lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Identity of this replica in the election (defaults to the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long the Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews the Lease (and a standby retries).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lease_renew_every: Duration,
    /// How often each bot is polled for status.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub bot_poll_interval: Duration,
    /// Deadline for an emergency close-all before the bot is scaled to zero anyway.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub close_all_deadline: Duration,
}

/// Errors of the command-line front end.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A CRD could not be rendered.
    #[error(transparent)]
    Generate(#[from] generate::GenerateError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The operator failed.
    #[error(transparent)]
    Operator(#[from] Error),
}

/// Runs the parsed command.
pub fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Crd { out_dir: None } => {
            print!("{}", generate::all_to_yaml()?);
            Ok(())
        }
        Command::Crd { out_dir: Some(dir) } => write_crds(&dir),
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))?;
            runtime.block_on(run(args))?;
            Ok(())
        }
    }
}

fn write_crds(dir: &std::path::Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for crd in generate::all_crds() {
        let path = dir.join(generate::file_name(&crd));
        let yaml = generate::to_yaml(&crd)?;
        std::fs::write(&path, yaml).map_err(|source| CliError::Write { path, source })?;
    }
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "iq720-operator".to_string());
    format!("{host}-{}", std::process::id())
}

/// `iq720-operator run`: health server, optional leader election, controllers.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    let client = match &args.kubeconfig {
        None => kube::Client::try_default().await?,
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Runtime(format!("cannot read {}: {e}", path.display())))?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| Error::Runtime(format!("bad kubeconfig {}: {e}", path.display())))?;
            kube::Client::try_from(config)?
        }
    };
    let metrics = Metrics::new().map_err(|e| Error::Runtime(format!("metrics: {e}")))?;
    let settings = Settings {
        bot_poll_interval: args.bot_poll_interval,
        close_all_deadline: args.close_all_deadline,
        ..Settings::default()
    };
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let ctx = Context::new(client.clone(), metrics, settings, Some(identity.clone()));

    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .map_err(|e| Error::Runtime(format!("cannot listen on {}: {e}", args.metrics_address)))?;
    info!(address = %args.metrics_address, "serving /metrics, /healthz and /readyz");
    let app = crate::server::router(ctx.clone());
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
                Ok(err) => Err(err),
                Err(join) => Err(Error::Leader(format!("lease keeper failed: {join}"))),
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
