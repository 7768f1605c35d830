//! Per-operation cache of the ConfigMaps and Secrets a pod refers to.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use super::error::Result;

/// Fetches ConfigMaps and Secrets of one namespace, each at most once.
pub struct ObjectCache {
    configmaps: Api<ConfigMap>,
    secrets: Api<Secret>,
    cm: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    sec: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl ObjectCache {
    /// A cache for namespace `ns`.
    pub fn new(client: Client, ns: &str) -> Self {
        Self {
            configmaps: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client, ns),
            cm: HashMap::new(),
            sec: HashMap::new(),
        }
    }

    /// The data (and binaryData) of a ConfigMap; `None` if it does not exist.
    pub async fn configmap(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.cm.contains_key(name) {
            let data = self.configmaps.get_opt(name).await?.map(|cm| {
                let mut out: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                out.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                out
            });
            self.cm.insert(name.to_string(), data);
        }
        Ok(self.cm.get(name).and_then(Option::as_ref))
    }

    /// The data (and stringData) of a Secret; `None` if it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.sec.contains_key(name) {
            let data = self.secrets.get_opt(name).await?.map(|s| {
                let mut out: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                out.extend(
                    s.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                out
            });
            self.sec.insert(name.to_string(), data);
        }
        Ok(self.sec.get(name).and_then(Option::as_ref))
    }
}
