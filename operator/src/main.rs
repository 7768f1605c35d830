//! `iq720-operator`: the Kubernetes operator that runs IQ-720 trading bots.
//!
//! Subcommands:
//! - `crd` prints the CustomResourceDefinitions as YAML, or writes one file per CRD
//!   with `--out-dir` (this is what `make crds` runs).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iq720-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
