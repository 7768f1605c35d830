//! The ConfigMap holding the rendered bot configuration.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

use super::bot_config::{CONFIG_FILE, RenderedConfig};
use super::labels::{common_labels, config_map_name};
use super::{BuildError, Owner};

/// Builds the bot's ConfigMap.
pub fn build(owner: &Owner, config: &RenderedConfig) -> Result<ConfigMap, BuildError> {
    let yaml = config
        .to_yaml()
        .map_err(|e| BuildError::Render(e.to_string()))?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&owner.name)),
            namespace: Some(owner.namespace.clone()),
            labels: Some(common_labels(&owner.name)),
            owner_references: Some(vec![owner.reference.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), yaml)])),
        ..ConfigMap::default()
    })
}
