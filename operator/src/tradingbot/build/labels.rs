//! Names and labels of the objects owned by a TradingBot.

use std::collections::BTreeMap;

/// Label that names the TradingBot an object belongs to.
pub use iq720_crds::trading_bot::BOT_LABEL;
/// Container port name and number of the bot's HTTP API.
pub const API_PORT_NAME: &str = "api";
/// Container port of the bot's HTTP API.
pub use crate::botlink::API_PORT;
/// Pod-template annotation holding the checksum of the restart-requiring configuration.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "trading.iq720.io/config-checksum";
/// Label that lets a namespace's pods scrape bot metrics through the NetworkPolicy.
pub const METRICS_SCRAPER_LABEL: &str = "trading.iq720.io/metrics-scraper";
/// Key of the bot API token in the token Secret.
pub use crate::botlink::TOKEN_KEY;

/// StatefulSet, headless Service and NetworkPolicy name.
pub fn workload_name(bot: &str) -> String {
    bot.to_string()
}

/// ConfigMap with the rendered bot configuration.
pub fn config_map_name(bot: &str) -> String {
    format!("{bot}-config")
}

/// ConfigMap with the bot's performance reports (see `report_map`).
pub fn report_map_name(bot: &str) -> String {
    format!("{bot}-report")
}

/// Secret with the bot's API token.
pub fn token_secret_name(bot: &str) -> String {
    crate::botlink::BotRef::new("", bot).token_secret_name()
}

/// Labels that select the bot's pod.
pub fn selector_labels(bot: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "iq720-bot".to_string(),
        ),
        (BOT_LABEL.to_string(), bot.to_string()),
    ])
}

/// Labels on every owned object.
pub fn common_labels(bot: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(bot);
    labels.insert("app.kubernetes.io/instance".to_string(), bot.to_string());
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "iq720-operator".to_string(),
    );
    labels.insert("app.kubernetes.io/part-of".to_string(), "iq720".to_string());
    labels
}
