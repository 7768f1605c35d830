//! Command-line interface.
//!
//! Settings that belong to the process rather than to the bot's trading (where to
//! listen, which directories, how long to drain on shutdown) are flags with an `IQ720_*`
//! environment twin, so the operator can set them per pod without touching the config
//! file (the ConfigMap), which stays the source of truth for trading.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Default of `--shutdown-drain` / `IQ720_SHUTDOWN_DRAIN`: shorter than the 30 s
/// termination grace period the operator gives a bot pod, longer than the operator's
/// 10 s close-all deadline.
pub const DEFAULT_SHUTDOWN_DRAIN: &str = "15s";

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
    /// Test/chaos switch: report this version instead of the binary's (see
    /// `crate::chaos`).
    #[arg(long, global = true, env = "IQ720_REPORT_VERSION")]
    pub report_version: Option<String>,
    /// Test/chaos switch: inject a fault (`unhealthy`: `/readyz` always 503).
    #[arg(long, global = true, env = "IQ720_FAULT", value_enum)]
    pub fault: Option<crate::chaos::Fault>,
    /// Test/chaos switch: migrate the database one schema version beyond this release
    /// (see `crate::chaos`).
    #[arg(long, global = true, env = "IQ720_SCHEMA_AHEAD")]
    pub schema_ahead: bool,
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
    /// Verify a backup and restore it into a data directory (bot stopped), from a
    /// local archive (`--from`) or from S3 (`--s3-key`, credentials from the
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables). From S3, a
    /// data directory that already holds data is left alone and the command succeeds
    /// reporting `skipped` (the bootstrap restore of a bot pod's init container).
    Restore {
        /// Archive to restore.
        #[arg(long, required_unless_present = "key", conflicts_with = "key")]
        from: Option<PathBuf>,
        /// The backup object in S3.
        #[command(flatten)]
        s3: crate::restore_s3::S3Source,
        /// Target data directory.
        #[arg(long, env = "IQ720_DATA_DIR")]
        data_dir: PathBuf,
        /// Overwrite a non-empty data directory.
        #[arg(long)]
        force: bool,
        /// Rollback restore: replace the database only when its schema is newer than
        /// this release supports (with `--s3-key`; see `restore_s3`).
        #[arg(long, conflicts_with_all = ["force", "from"])]
        if_schema_too_new: bool,
    },
    /// Restore drill: download a backup from S3, check it, restore it into a scratch
    /// directory, check the restored database's integrity and count its rows; prints
    /// one JSON line with the result (exit 1 when the drill failed).
    RestoreDrill {
        /// The backup object in S3.
        #[command(flatten)]
        s3: crate::restore_s3::S3Source,
        /// Scratch directory (emptied afterwards).
        #[arg(long, default_value = "/tmp")]
        work_dir: PathBuf,
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
    /// Exchange credentials directory (overrides exchange.credentialsDir).
    #[arg(long, env = "IQ720_EXCHANGE_CREDENTIALS_DIR")]
    pub exchange_credentials_dir: Option<PathBuf>,
    /// After SIGTERM/SIGINT with positions open: keep serving the API this long so the
    /// operator can close them (exit as soon as the bot is flat); `0` exits at once.
    /// Trading stops at the signal either way; a second signal exits at once.
    #[arg(
        long,
        env = "IQ720_SHUTDOWN_DRAIN",
        default_value = DEFAULT_SHUTDOWN_DRAIN,
        value_parser = parse_drain
    )]
    pub shutdown_drain: Duration,
}

/// Parse a `--shutdown-drain` value: a duration like the config file's (`15s`, `1m`,
/// `500ms`) or a bare `0` (disabled).
pub fn parse_drain(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    crate::config::HumanDuration::parse(s)
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut all = vec!["iq720-bot", "run", "--config", "c.yaml"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Run(a) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shutdown_drain_defaults_to_15s_and_parses_durations_and_zero() {
        if std::env::var_os("IQ720_SHUTDOWN_DRAIN").is_none() {
            assert_eq!(
                run_args(&[]).unwrap().shutdown_drain,
                Duration::from_secs(15)
            );
        }
        let d = |v: &str| run_args(&["--shutdown-drain", v]).map(|a| a.shutdown_drain);
        assert_eq!(d("0").unwrap(), Duration::ZERO);
        assert_eq!(d("0s").unwrap(), Duration::ZERO);
        assert_eq!(d("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(d("250ms").unwrap(), Duration::from_millis(250));
        let e = d("15").unwrap_err().to_string();
        assert!(e.contains("--shutdown-drain"), "{e}");
        assert!(d("-1s").is_err());
    }
}
