//! Error type of the harness.

use std::path::PathBuf;

/// Everything a harness helper can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Kubernetes API error.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// YAML could not be parsed.
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Starting or finding the cluster failed.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A wait ran out of time.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// An object was deleted while waiting for it.
    #[error("{0} was deleted while waiting for it")]
    Deleted(String),
    /// A manifest is not usable.
    #[error("manifest: {0}")]
    Manifest(String),
    /// S3 error.
    #[error("s3: {0}")]
    S3(String),
    /// HTTP helper error.
    #[error("http {addr}: {message}")]
    Http {
        /// Address.
        addr: String,
        /// What went wrong.
        message: String,
    },
}

impl HarnessError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
