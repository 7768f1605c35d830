//! Server-side apply of multi-document YAML (any kind, found through discovery).

use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

use super::cluster::FIELD_MANAGER;
use super::error::{HarnessError, Result};

/// Splits multi-document YAML into objects (empty documents are skipped).
pub fn parse_documents(yaml: &str) -> Result<Vec<DynamicObject>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        out.push(serde_yaml::from_value(value)?);
    }
    Ok(out)
}

/// Applies every document of `yaml` with server-side apply (field manager
/// `iq720-tests`, forced). Namespaced objects without a namespace go to `namespace`.
pub async fn apply_yaml(
    client: &Client,
    namespace: Option<&str>,
    yaml: &str,
) -> Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for mut obj in parse_documents(yaml)? {
        let types = obj
            .types
            .clone()
            .ok_or_else(|| HarnessError::Manifest("document without apiVersion/kind".into()))?;
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| {
            HarnessError::Manifest(format!("bad apiVersion {:?}: {e}", types.api_version))
        })?;
        let (ar, caps) = pinned_kind(client, &gvk).await?;
        let name = obj.name_any();
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .or_else(|| namespace.map(str::to_string))
                .ok_or_else(|| {
                    HarnessError::Manifest(format!("{} {name} needs a namespace", types.kind))
                })?;
            obj.metadata.namespace = Some(ns.clone());
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        applied.push(api.patch(&name, &pp, &Patch::Apply(&obj)).await?);
    }
    Ok(applied)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents() {
        let docs = parse_documents(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n---\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: b}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].types.as_ref().unwrap().kind, "StatefulSet");
        assert!(parse_documents("a: [").is_err());
    }
}
