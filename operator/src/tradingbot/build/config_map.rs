//! The ConfigMap holding the rendered bot configuration.

use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;

use super::bot_config::{CONFIG_FILE, RenderedConfig};
use super::labels::config_map_name;
use super::{BuildError, Owner};

/// Builds the bot's ConfigMap.
pub fn build(owner: &Owner, config: &RenderedConfig) -> Result<ConfigMap, BuildError> {
    let yaml = config
        .to_yaml()
        .map_err(|e| BuildError::Render(e.to_string()))?;
    Ok(ConfigMap {
        metadata: owner.metadata(config_map_name(&owner.name)),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), yaml)])),
        ..ConfigMap::default()
    })
}
