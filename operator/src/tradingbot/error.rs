//! Errors of the TradingBot controller; every variant maps to a metric label, and
//! [`Error::is_permanent`] decides between "wait for a spec change" and "retry soon".

use crate::botlink::client::BotApiError;
use crate::botlink::token::TokenError;
use crate::shared::apply::ApplyError;

use super::build::BuildError;

/// Errors of a TradingBot reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Applying an owned object failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Building the desired objects failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Talking to a bot failed.
    #[error(transparent)]
    Bot(#[from] BotApiError),
    /// The bot's API token could not be read or created.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Serialisation of an object failed.
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
    /// The bot as the store keeps it does not read back (no packed bot does; logged
    /// with the reason where it happens).
    #[error("the cached TradingBot does not read back")]
    Unreadable,
}

impl Error {
    /// Short label for the `reason` of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Apply(ApplyError::NotOwned { .. }) => "not_owned",
            Error::Apply(_) => "apply",
            Error::Build(_) => "build",
            Error::Bot(BotApiError::Unreachable(_)) => "bot_unreachable",
            Error::Bot(BotApiError::NotFlat { .. }) => "bot_not_flat",
            Error::Bot(_) => "bot_api",
            Error::Token(_) => "token",
            Error::Finalizer(_) => "finalizer",
            Error::Serde(_) => "serde",
            Error::Unreadable => "unreadable",
        }
    }
}

/// Result alias of the TradingBot controller.
pub type Result<T, E = Error> = std::result::Result<T, E>;
