//! Command-line interface.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The IQ-720 trading bot.
#[derive(Debug, Parser)]
#[command(
    name = "iq720-bot",
    version,
    about = "IQ-720 paper-trading bot with an HTTP control API"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bot.
    Run(RunArgs),
    /// Validate a config file and print the effective config as YAML.
    CheckConfig {
        /// Config file (YAML).
        #[arg(long, env = "IQ720_CONFIG")]
        config: PathBuf,
    },
    /// Write a backup archive of a data directory (safe while the bot runs).
    Backup {
        /// Data directory holding trades.db.
        #[arg(long, env = "IQ720_DATA_DIR")]
        data_dir: PathBuf,
        /// Archive to write (.tar.gz).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a backup and restore it into a data directory (bot stopped).
    Restore {
        /// Archive to restore.
        #[arg(long)]
        from: PathBuf,
        /// Target data directory.
        #[arg(long, env = "IQ720_DATA_DIR")]
        data_dir: PathBuf,
        /// Overwrite a non-empty data directory.
        #[arg(long)]
        force: bool,
    },
    /// Check a backup's manifest, checksums and database integrity without restoring.
    VerifyBackup {
        /// Archive to check.
        file: PathBuf,
    },
    /// Print the version.
    Version,
}

/// `run` arguments; the env variables override the config file.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config file (YAML).
    #[arg(long, env = "IQ720_CONFIG")]
    pub config: PathBuf,
    /// Listen address, e.g. 0.0.0.0:8080 (overrides api.listenAddr).
    #[arg(long, env = "IQ720_LISTEN_ADDR")]
    pub listen_addr: Option<String>,
    /// Data directory (overrides dataDir).
    #[arg(long, env = "IQ720_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log directory (overrides logDir).
    #[arg(long, env = "IQ720_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Token directory (overrides api.tokenDir).
    #[arg(long, env = "IQ720_TOKEN_DIR")]
    pub token_dir: Option<PathBuf>,
}
