//! The operator's error type; every variant maps to a metric label.

use crate::tradingbot::bot_client::BotApiError;
use crate::tradingbot::build::BuildError;

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Building the desired objects failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Talking to a bot failed.
    #[error(transparent)]
    Bot(#[from] BotApiError),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Serialisation of an object failed.
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
    /// The token Secret could not be generated.
    #[error("cannot generate the bot API token: {0}")]
    Token(std::io::Error),
    /// Leader election failed.
    #[error("leader election: {0}")]
    Leader(String),
    /// A runtime (I/O, bind) failure outside a reconcile.
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    /// Short label for the `reason` of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Build(_) => "build",
            Error::Bot(BotApiError::Unreachable(_)) => "bot_unreachable",
            Error::Bot(_) => "bot_api",
            Error::Finalizer(_) => "finalizer",
            Error::Serde(_) => "serde",
            Error::Token(_) => "token",
            Error::Leader(_) => "leader",
            Error::Runtime(_) => "runtime",
        }
    }
}

/// Result alias of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
