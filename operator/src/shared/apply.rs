//! Server-side apply of owned objects, with an ownership check.
//!
//! Why the check: a forced server-side apply takes over every field it names, so
//! applying `my-bot-config` over a ConfigMap someone else created would silently adopt
//! and rewrite it. Before applying, the object (if it exists) must carry a controller
//! owner reference to the resource we apply for; otherwise the apply is refused with
//! [`ApplyError::NotOwned`], which controllers report as a condition and an Event.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::cache::{AppliedMemory, bytes_digest};

/// Why an apply did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An object with this name exists and is not controlled by the owner.
    #[error(
        "{kind} {name} exists and is not owned by this resource; refusing to take it over (delete or rename it)"
    )]
    NotOwned {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
    },
    /// The apiserver refused the apply or could not be reached.
    #[error("{kind} {name}: {source}")]
    Kube {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The object could not be serialised.
    #[error("cannot serialise {kind}: {source}")]
    Serde {
        /// Kind of the object.
        kind: String,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },
}

impl ApplyError {
    /// Whether retrying can help (a refused or unowned object needs a spec or cluster
    /// change; a timeout or conflict may pass on retry).
    pub fn is_permanent(&self) -> bool {
        match self {
            ApplyError::NotOwned { .. } | ApplyError::Serde { .. } => true,
            ApplyError::Kube {
                source: kube::Error::Api(e),
                ..
            } => matches!(e.code, 400 | 403 | 422),
            ApplyError::Kube { .. } => false,
        }
    }
}

/// Whether `obj` is controlled by the owner with `owner_uid`.
pub fn is_controlled_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    controlled_by(obj.meta(), owner_uid)
}

/// Whether an object with metadata `meta` is controlled by the owner with `owner_uid`.
pub fn controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner_uid && r.controller == Some(true))
}

/// What the caller knows about the stored object: its metadata is all an apply
/// needs (the owner, and the generation and resourceVersion of the last write).
pub enum Known {
    /// No cache: read it from the apiserver.
    Unknown,
    /// From a synced cache of the operator's labelled objects. `None` is confirmed with
    /// a read, because an object someone else created without the operator's labels is
    /// not in that cache and must still be refused; so only creations cost a read.
    Cached(Option<Box<ObjectMeta>>),
}

/// Applies `obj` with server-side apply under `field_manager` after checking that an
/// existing object of the same name is controlled by `owner_uid`. Skips the write when
/// `memory` shows this process applied the same content and the object is unchanged
/// since. Returns whether it wrote.
pub async fn apply_owned<K>(
    client: &Client,
    field_manager: &str,
    obj: &K,
    owner_uid: &str,
    known: Known,
    memory: &AppliedMemory,
) -> Result<bool, ApplyError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let name = obj.meta().name.clone().unwrap_or_default();
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let kube_err = |source| ApplyError::Kube {
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    let existing = match known {
        Known::Cached(Some(found)) => Some(*found),
        Known::Cached(None) | Known::Unknown => api
            .get_metadata_opt(&name)
            .await
            .map_err(kube_err)?
            .map(|o| o.metadata),
    };
    if let Some(existing) = &existing
        && !controlled_by(existing, owner_uid)
    {
        return Err(ApplyError::NotOwned { kind, name });
    }
    let serde_err = |source| ApplyError::Serde {
        kind: kind.clone(),
        source,
    };
    // The hash is taken of the serialised bytes (no JSON tree is built for an apply
    // that is skipped, which is nearly every one: this runs at every poll of every bot).
    let bytes = serde_json::to_vec(obj).map_err(serde_err)?;
    let hash = bytes_digest(&bytes);
    if memory.unchanged::<K>(existing.as_ref(), &ns, &name, &hash) {
        return Ok(false);
    }
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(serde_err)?;
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    let params = PatchParams::apply(field_manager).force();
    let stored = api
        .patch(&name, &params, &Patch::Apply(&value))
        .await
        .map_err(kube_err)?;
    memory.record(&stored, existing.as_ref(), &hash);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn cm(owner: Option<(&str, bool)>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("x".into()),
                owner_references: owner.map(|(uid, controller)| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(controller),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn only_a_controller_reference_to_the_owner_counts() {
        assert!(is_controlled_by(&cm(Some(("u1", true))), "u1"));
        assert!(!is_controlled_by(&cm(Some(("u1", false))), "u1"));
        assert!(!is_controlled_by(&cm(Some(("u2", true))), "u1"));
        assert!(!is_controlled_by(&cm(None), "u1"));
    }
}
