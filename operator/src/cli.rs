//! Command-line interface of the operator binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use iq720_crds::generate;

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
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as one YAML stream, or write them to a directory.
    Crd {
        /// Write one `<name>.yaml` file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    iq720_contract::duration::parse(s).map_err(|e| e.to_string())
}

/// A namespace name (DNS-1123 label).
fn parse_namespace(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a namespace name (DNS-1123 label)"))
    }
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
    /// How long a standby waits, after it last saw the Lease change, before it takes over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal; it stops (exits)
    /// after that. Must be shorter than --lease-duration (default: two thirds of it).
    #[arg(long, value_parser = parse_duration)]
    pub lease_renew_deadline: Option<Duration>,
    /// How often the leader renews the Lease (and a standby retries).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lease_renew_every: Duration,
    /// Namespace the operator's pods run in; bots' NetworkPolicies admit the operator
    /// (pods labelled `trading.iq720.io/operator: "true"`) only from this namespace.
    /// Unset: from any namespace.
    #[arg(long, env = "POD_NAMESPACE", value_parser = parse_namespace)]
    pub operator_namespace: Option<String>,
    /// Comma-separated namespaces whose pods labelled
    /// `trading.iq720.io/metrics-scraper: "true"` may scrape bot metrics (default: none).
    #[arg(
        long,
        env = "IQ720_METRICS_SCRAPER_NAMESPACES",
        value_delimiter = ',',
        value_parser = parse_namespace
    )]
    pub metrics_scraper_namespaces: Vec<String>,
    /// How often each bot is polled for status.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub bot_poll_interval: Duration,
    /// Deadline for an emergency close-all before the bot is scaled to zero anyway.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub close_all_deadline: Duration,
    /// How often a running bot's live figures (PnL, win rate) may be written to its
    /// status when nothing else changed (phase, conditions and positions are written at
    /// once; Prometheus carries the figures in between).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub status_figures_interval: Duration,
    /// Most reconciles running at once per controller.
    #[arg(long, default_value_t = 32)]
    pub max_concurrent_reconciles: u16,
    /// Threads running the controllers. One is the default: the operator's work is
    /// many short tasks waiting on the network (one poll of every bot per interval),
    /// and a second thread mostly added wake-ups and hand-overs between the two
    /// (polling 1,000 bots took 10.8 % of a core with two, 8.0 % with one; README
    /// "Scale"). Blocking work (backup verification, archives) runs on its own
    /// threads either way.
    #[arg(long, env = "IQ720_WORKER_THREADS", default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=64))]
    pub worker_threads: u16,
    /// Secret (in the operator's namespace) holding the webhook URL for notifications
    /// of incidents (emergency stop, positions possibly open, backup failure, rollback,
    /// key rotation overdue). Unset: no notifications.
    #[arg(long, env = "IQ720_NOTIFY_SECRET")]
    pub notify_secret: Option<String>,
    /// Key of the webhook URL in --notify-secret.
    #[arg(long, default_value = "url")]
    pub notify_secret_key: String,
    /// Body format of the notifications.
    #[arg(long, value_enum, default_value = "generic")]
    pub notify_format: crate::shared::notify::Format,
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
}

/// Runs the parsed command.
/// `iq720-operator crd`: prints the CRDs, or writes one file per CRD into `out_dir`.
pub fn crd(out_dir: Option<&std::path::Path>) -> Result<(), CliError> {
    match out_dir {
        None => {
            print!("{}", generate::all_to_yaml()?);
            Ok(())
        }
        Some(dir) => write_crds(dir),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["iq720-operator", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(a) => Ok(*a),
            Command::Crd { .. } => unreachable!("parsed `run`"),
        }
    }

    #[test]
    fn network_policy_and_lease_flags() {
        let a = run_args(&[
            "--operator-namespace",
            "iq720-system",
            "--metrics-scraper-namespaces",
            "monitoring,obs",
            "--lease-duration",
            "4s",
            "--lease-renew-deadline",
            "3s",
        ])
        .unwrap();
        assert_eq!(a.operator_namespace.as_deref(), Some("iq720-system"));
        assert_eq!(a.metrics_scraper_namespaces, vec!["monitoring", "obs"]);
        assert_eq!(a.lease_renew_deadline, Some(Duration::from_secs(3)));
        assert!(run_args(&["--metrics-scraper-namespaces", "Not_A_Namespace"]).is_err());
        assert!(run_args(&["--operator-namespace", "-x"]).is_err());
    }
}
