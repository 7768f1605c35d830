//! `iq720-operator`: the Kubernetes operator that runs IQ-720 trading bots.
//!
//! - `run` runs the controllers (see `--help`).
//! - `crd` prints the CustomResourceDefinitions as YAML, or writes one file per CRD
//!   with `--out-dir` (this is what `make crds` runs).

use std::process::ExitCode;

use clap::Parser;
use iq720_operator::cli;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // kube and aws-sdk-s3 both use rustls; with two crypto providers compiled in,
    // rustls cannot pick one by itself, so the process chooses ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cli::Cli::parse();
    if matches!(cli.command, cli::Command::Run(_)) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .init();
    }
    match cli::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iq720-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
