//! The link from any controller to a running bot: where its pod is, which token it
//! accepts, and a typed client for its control API.
//!
//! Why a separate module: the TradingBot controller talks to bots for pause, hot
//! reload and emergency stop, and the backup and maintenance controllers talk to the
//! same API for snapshots and database tasks. None of them should reach into another
//! controller for it. This module knows the bot workload's naming convention
//! ([`BotRef`]) and nothing about any controller.

pub mod client;
pub mod endpoint;
pub mod token;

/// Port of the bot's HTTP API (container port and the port the operator dials).
pub const API_PORT: i32 = 8080;
/// Key of the bot API token in the token Secret.
pub const TOKEN_KEY: &str = "token";

/// A bot by namespace and name, with the names of the objects that make it reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotRef {
    /// Namespace of the TradingBot.
    pub namespace: String,
    /// Name of the TradingBot.
    pub name: String,
}

impl BotRef {
    /// A reference to the bot `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Name of the single pod of the bot's StatefulSet.
    pub fn pod_name(&self) -> String {
        format!("{}-0", self.name)
    }

    /// Name of the Secret holding the bot's API token.
    pub fn token_secret_name(&self) -> String {
        format!("{}-api-token", self.name)
    }
}

/// Halt reason the bot records when it runs close-all (emergency stop or deletion);
/// defined by the contract, which the bot's tests check against a real close-all.
pub use iq720_contract::CLOSE_ALL_HALT_REASON;
