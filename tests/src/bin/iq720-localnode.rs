//! `iq720-localnode`: the local node agent (a kubelet that runs containers as local
//! processes). See `iq720_tests::localnode`.

use std::path::PathBuf;

use clap::Parser;
use iq720_tests::localnode::agent::{AgentOptions, run};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "iq720-localnode",
    version,
    about = "Local node agent for the IQ-720 test cluster"
)]
struct Args {
    /// Admin kubeconfig of the cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, env = "IQ720_NODE_NAME", default_value = "iq720-local")]
    node_name: String,
    /// State directory (pod dirs, logs, volumes).
    #[arg(long)]
    state_dir: PathBuf,
    /// Image map (YAML), re-read at every container start.
    #[arg(long, env = "IQ720_IMAGE_MAP")]
    image_map: PathBuf,
    /// Port of the kubelet API (kubectl logs) on 127.0.0.1; 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    kubelet_port: u16,
    /// Most pods the node takes (raise it for scale benchmarks: 1,000 bots).
    #[arg(long, default_value_t = iq720_tests::localnode::node::MAX_PODS)]
    max_pods: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let args = Args::parse();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::process::ExitCode::FAILURE;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        token.cancel();
    });
    let opts = AgentOptions {
        kubeconfig: args.kubeconfig,
        node_name: args.node_name,
        state_dir: args.state_dir,
        image_map: args.image_map,
        kubelet_port: args.kubelet_port,
        max_pods: args.max_pods,
    };
    match run(opts, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node agent failed");
            std::process::ExitCode::FAILURE
        }
    }
}
