//! Command-line interface of the operator binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
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
    /// Print the CustomResourceDefinitions as one YAML stream, or write them to a directory.
    Crd {
        /// Write one `<name>.yaml` file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
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
pub fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Crd { out_dir: None } => {
            print!("{}", generate::all_to_yaml()?);
            Ok(())
        }
        Command::Crd { out_dir: Some(dir) } => write_crds(&dir),
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
