//! Error type of the local node agent.

use std::path::PathBuf;

/// Everything that can go wrong inside the node agent.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Reading the kubeconfig failed.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The image map could not be read or parsed.
    #[error("image map {path}: {message}")]
    ImageMap {
        /// Path of the image map file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A pod spec refers to something that does not exist or is invalid.
    #[error("{0}")]
    Spec(String),
}

impl NodeError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the node agent.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
