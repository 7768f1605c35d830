//! Errors of the MaintenanceWindow controller.
//!
//! A reconcile fails only when the apiserver cannot be read or written; a bad spec is
//! not an error but the InvalidSpec condition (reported, then no requeue until the spec
//! changes). Every variant maps to a metric label.

/// Errors of a MaintenanceWindow reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Serialisation of a status failed.
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// Short label for the `reason` of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serde(_) => "serde",
        }
    }
}

/// Result alias of the MaintenanceWindow controller.
pub type Result<T, E = Error> = std::result::Result<T, E>;
