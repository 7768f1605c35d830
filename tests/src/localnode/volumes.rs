//! Pod volumes as directories: emptyDir, hostPath, persistentVolumeClaim (the PV's
//! hostPath), and the generated kinds (configMap, secret, downwardAPI, projected with
//! serviceAccountToken), which are re-synced and swapped atomically when they change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
    Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::atomic_writer::{FileEntry, Payload, write_payload};
use super::downward::{NodeCapacity, field_value, resource_value};
use super::error::{NodeError, Result};
use super::objects::{ObjectCache, WatchedObjects};

const DEFAULT_MODE: u32 = 0o644;
const DEFAULT_TOKEN_SECONDS: i64 = 3607;

/// What a pod's volume sync needs to know.
pub struct VolumeInputs<'a> {
    /// API client.
    pub client: &'a Client,
    /// The pod.
    pub pod: &'a Pod,
    /// The pod's IP.
    pub pod_ip: &'a str,
    /// Node capacity for resourceFieldRef defaults.
    pub node: &'a NodeCapacity,
    /// Directory of this pod (volumes go under `<pod_dir>/volumes`).
    pub pod_dir: &'a Path,
    /// The agent's watched ConfigMaps and Secrets.
    pub watched: Option<&'a WatchedObjects>,
}

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// The volumes of one pod and what was last written to them.
#[derive(Default)]
pub struct PodVolumes {
    dirs: BTreeMap<String, PathBuf>,
    last: HashMap<String, Payload>,
    tokens: HashMap<String, CachedToken>,
}

fn mode_of(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(default)
}

impl PodVolumes {
    /// Real directory of each volume, by volume name.
    pub fn dirs(&self) -> &BTreeMap<String, PathBuf> {
        &self.dirs
    }

    /// Creates or refreshes every volume of the pod. Generated volumes are rewritten
    /// only when their content changed.
    pub async fn sync(&mut self, inp: &VolumeInputs<'_>) -> Result<()> {
        let ns = inp.pod.metadata.namespace.clone().unwrap_or_default();
        let mut objects = ObjectCache::new(inp.client.clone(), &ns, inp.watched);
        let volumes = inp
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for vol in &volumes {
            let dir = inp.pod_dir.join("volumes").join(&vol.name);
            if vol.empty_dir.is_some() {
                std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
                self.dirs.insert(vol.name.clone(), dir);
            } else if let Some(hp) = &vol.host_path {
                let p = PathBuf::from(&hp.path);
                if hp.type_.as_deref() == Some("DirectoryOrCreate") {
                    std::fs::create_dir_all(&p).map_err(|e| NodeError::io(&p, e))?;
                }
                self.dirs.insert(vol.name.clone(), p);
            } else if let Some(pvc) = &vol.persistent_volume_claim {
                if !self.dirs.contains_key(&vol.name) {
                    let p = pvc_dir(inp.client, &ns, &pvc.claim_name).await?;
                    self.dirs.insert(vol.name.clone(), p);
                }
            } else if let Some(payload) = self.generated_payload(vol, inp, &mut objects).await? {
                if self.last.get(&vol.name) != Some(&payload) || !dir.join("..data").exists() {
                    write_payload(&dir, &payload)?;
                    tracing::debug!(volume = %vol.name, files = payload.len(), "volume written");
                    self.last.insert(vol.name.clone(), payload);
                }
                self.dirs.insert(vol.name.clone(), dir);
            } else {
                tracing::warn!(volume = %vol.name, "unsupported volume type: using an empty directory");
                std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
                self.dirs.insert(vol.name.clone(), dir);
            }
        }
        Ok(())
    }

    async fn generated_payload(
        &mut self,
        vol: &Volume,
        inp: &VolumeInputs<'_>,
        objects: &mut ObjectCache,
    ) -> Result<Option<Payload>> {
        let mut payload = Payload::new();
        if let Some(cm) = &vol.config_map {
            let mode = mode_of(cm.default_mode, DEFAULT_MODE);
            let data = objects.configmap(&cm.name).await?;
            project_keys(
                &mut payload,
                data,
                cm.items.as_deref(),
                mode,
                cm.optional == Some(true),
                &format!("configmap {:?}", cm.name),
            )?;
        } else if let Some(s) = &vol.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = mode_of(s.default_mode, DEFAULT_MODE);
            let data = objects.secret(&name).await?;
            project_keys(
                &mut payload,
                data,
                s.items.as_deref(),
                mode,
                s.optional == Some(true),
                &format!("secret {name:?}"),
            )?;
        } else if let Some(d) = &vol.downward_api {
            let mode = mode_of(d.default_mode, DEFAULT_MODE);
            project_downward(
                &mut payload,
                d.items.as_deref().unwrap_or_default(),
                mode,
                inp,
            )?;
        } else if let Some(p) = &vol.projected {
            let mode = mode_of(p.default_mode, DEFAULT_MODE);
            for src in p.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    let data = objects.configmap(&cm.name).await?;
                    project_keys(
                        &mut payload,
                        data,
                        cm.items.as_deref(),
                        mode,
                        cm.optional == Some(true),
                        &format!("configmap {:?}", cm.name),
                    )?;
                }
                if let Some(s) = &src.secret {
                    let data = objects.secret(&s.name).await?;
                    project_keys(
                        &mut payload,
                        data,
                        s.items.as_deref(),
                        mode,
                        s.optional == Some(true),
                        &format!("secret {:?}", s.name),
                    )?;
                }
                if let Some(d) = &src.downward_api {
                    project_downward(
                        &mut payload,
                        d.items.as_deref().unwrap_or_default(),
                        mode,
                        inp,
                    )?;
                }
                if let Some(t) = &src.service_account_token {
                    let key = format!("{}/{}", vol.name, t.path);
                    let token = self
                        .token(&key, inp, t.audience.as_deref(), t.expiration_seconds)
                        .await?;
                    payload.insert(
                        t.path.clone(),
                        FileEntry {
                            data: token.into_bytes(),
                            mode,
                        },
                    );
                }
            }
        } else {
            return Ok(None);
        }
        Ok(Some(payload))
    }

    async fn token(
        &mut self,
        key: &str,
        inp: &VolumeInputs<'_>,
        audience: Option<&str>,
        expiration: Option<i64>,
    ) -> Result<String> {
        if let Some(t) = self.tokens.get(key)
            && Instant::now() < t.refresh_at
        {
            return Ok(t.token.clone());
        }
        let ns = inp.pod.metadata.namespace.clone().unwrap_or_default();
        let sa = inp
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        let seconds = expiration.unwrap_or(DEFAULT_TOKEN_SECONDS).max(600);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: inp.pod.metadata.name.clone(),
                    uid: inp.pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(inp.client.clone(), &ns);
        let resp = api
            .create_token_request(&sa, &PostParams::default(), &req)
            .await?;
        let token = resp
            .status
            .map(|s| s.token)
            .ok_or_else(|| NodeError::Spec(format!("empty TokenRequest answer for {ns}/{sa}")))?;
        let ttl = Duration::from_secs(u64::try_from(seconds).unwrap_or(600));
        self.tokens.insert(
            key.to_string(),
            CachedToken {
                token: token.clone(),
                refresh_at: Instant::now() + ttl.mul_f64(0.8),
            },
        );
        Ok(token)
    }
}

/// Adds the keys of a ConfigMap/Secret to a payload (all keys, or the listed items).
pub fn project_keys(
    payload: &mut Payload,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    what: &str,
) -> Result<()> {
    let Some(data) = data else {
        return if optional {
            Ok(())
        } else {
            Err(NodeError::Spec(format!("{what} not found")))
        };
    };
    match items {
        None => {
            for (k, v) in data {
                payload.insert(
                    k.clone(),
                    FileEntry {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        payload.insert(
                            item.path.clone(),
                            FileEntry {
                                data: v.clone(),
                                mode: mode_of(item.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(NodeError::Spec(format!("{what} has no key {:?}", item.key)));
                    }
                }
            }
        }
    }
    Ok(())
}

fn project_downward(
    payload: &mut Payload,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    inp: &VolumeInputs<'_>,
) -> Result<()> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field_value(inp.pod, &f.field_path, inp.pod_ip)
        } else if let Some(r) = &item.resource_field_ref {
            let c = inp.pod.spec.as_ref().and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
            });
            resource_value(c, &r.resource, r.divisor.as_ref(), inp.node)
        } else {
            continue;
        }
        .map_err(|e| NodeError::Spec(format!("downwardAPI {}: {e}", item.path)))?;
        payload.insert(
            item.path.clone(),
            FileEntry {
                data: value.into_bytes(),
                mode: mode_of(item.mode, default_mode),
            },
        );
    }
    Ok(())
}

/// The host directory behind a bound PVC (its PV's hostPath or local path).
async fn pvc_dir(client: &Client, ns: &str, claim: &str) -> Result<PathBuf> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs
        .get_opt(claim)
        .await?
        .ok_or_else(|| NodeError::Spec(format!("persistentvolumeclaim {claim:?} not found")))?;
    let pv_name = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| NodeError::Spec(format!("persistentvolumeclaim {claim:?} is not bound")))?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or_else(|| spec.local.map(|l| l.path))
        .ok_or_else(|| NodeError::Spec(format!("persistentvolume {pv_name:?} has no hostPath")))?;
    let path = PathBuf::from(path);
    std::fs::create_dir_all(&path).map_err(|e| NodeError::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_items() {
        let data = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        let mut p = Payload::new();
        project_keys(&mut p, Some(&data), None, 0o600, false, "cm").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["a"].mode, 0o600);

        let items = vec![KeyToPath {
            key: "b".into(),
            path: "dir/b.txt".into(),
            mode: Some(0o400),
        }];
        let mut p = Payload::new();
        project_keys(&mut p, Some(&data), Some(&items), 0o644, false, "cm").unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["dir/b.txt"]);
        assert_eq!(p["dir/b.txt"].mode, 0o400);

        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "zz".into(),
            mode: None,
        }];
        assert!(
            project_keys(
                &mut Payload::new(),
                Some(&data),
                Some(&missing),
                0o644,
                false,
                "cm"
            )
            .is_err()
        );
        assert!(
            project_keys(
                &mut Payload::new(),
                Some(&data),
                Some(&missing),
                0o644,
                true,
                "cm"
            )
            .is_ok()
        );
        assert!(project_keys(&mut Payload::new(), None, None, 0o644, false, "cm").is_err());
        assert!(project_keys(&mut Payload::new(), None, None, 0o644, true, "cm").is_ok());
    }
}
