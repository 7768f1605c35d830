//! Resolution of a container's environment: env, envFrom, valueFrom and `$(VAR)`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use super::downward::{NodeCapacity, field_value, resource_value};
use super::error::{NodeError, Result};
use super::expansion::expand;
use super::objects::ObjectCache;

/// Ordered environment being built: later definitions replace earlier ones.
#[derive(Debug, Clone, Default)]
pub struct EnvList {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl EnvList {
    /// Sets `key` (keeping its first position).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        if !self.values.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.values.insert(key, value.into());
    }

    /// Looks a variable up.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.values.get(key)
    }

    /// Expands `$(VAR)` references against the variables defined so far.
    pub fn expand(&self, s: &str) -> String {
        expand(s, |k| self.values.get(k).cloned())
    }

    /// The final map.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.values.into_iter().collect()
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| NodeError::Spec(format!("{what} is not UTF-8")))
}

/// Is `name` a valid environment variable name (what envFrom keeps)?
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Adds the container's `envFrom` and `env` to `env`, in Kubernetes order.
pub async fn resolve_container_env(
    env: &mut EnvList,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    node: &NodeCapacity,
    objects: &mut ObjectCache,
) -> Result<()> {
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (data, what, optional) = if let Some(cm) = &source.config_map_ref {
            (
                objects.configmap(&cm.name).await?.cloned(),
                format!("configmap {:?}", cm.name),
                cm.optional == Some(true),
            )
        } else if let Some(s) = &source.secret_ref {
            (
                objects.secret(&s.name).await?.cloned(),
                format!("secret {:?}", s.name),
                s.optional == Some(true),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    let name = format!("{prefix}{k}");
                    if valid_env_name(&name) {
                        env.set(name, utf8(&v, &what)?);
                    }
                }
            }
            None if optional => {}
            None => return Err(NodeError::Spec(format!("{what} not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_var_value(env, var, pod, container, pod_ip, node, objects).await? {
            env.set(var.name.clone(), value);
        }
    }
    Ok(())
}

async fn env_var_value(
    env: &EnvList,
    var: &EnvVar,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    node: &NodeCapacity,
    objects: &mut ObjectCache,
) -> Result<Option<String>> {
    let Some(from) = &var.value_from else {
        return Ok(Some(env.expand(var.value.as_deref().unwrap_or_default())));
    };
    if let Some(f) = &from.field_ref {
        return field_value(pod, &f.field_path, pod_ip)
            .map(Some)
            .map_err(|e| NodeError::Spec(format!("env {}: {e}", var.name)));
    }
    if let Some(r) = &from.resource_field_ref {
        let target = match r.container_name.as_deref() {
            Some(name) => pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == name)),
            None => Some(container),
        };
        return resource_value(target, &r.resource, r.divisor.as_ref(), node)
            .map(Some)
            .map_err(|e| NodeError::Spec(format!("env {}: {e}", var.name)));
    }
    if let Some(sel) = &from.config_map_key_ref {
        let optional = sel.optional == Some(true);
        let found = objects
            .configmap(&sel.name)
            .await?
            .and_then(|d| d.get(&sel.key).cloned());
        return match found {
            Some(v) => utf8(&v, &format!("configmap {:?} key {:?}", sel.name, sel.key)).map(Some),
            None if optional => Ok(None),
            None => Err(NodeError::Spec(format!(
                "couldn't find key {} in ConfigMap {}",
                sel.key, sel.name
            ))),
        };
    }
    if let Some(sel) = &from.secret_key_ref {
        let optional = sel.optional == Some(true);
        let found = objects
            .secret(&sel.name)
            .await?
            .and_then(|d| d.get(&sel.key).cloned());
        return match found {
            Some(v) => utf8(&v, &format!("secret {:?} key {:?}", sel.name, sel.key)).map(Some),
            None if optional => Ok(None),
            None => Err(NodeError::Spec(format!(
                "couldn't find key {} in Secret {}",
                sel.key, sel.name
            ))),
        };
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn later_values_see_earlier_ones() {
        let mut e = EnvList::default();
        e.set("HOST", "127.1.0.3");
        let v = e.expand("http://$(HOST):$(PORT)");
        e.set("URL", v);
        e.set("HOST", "x");
        assert_eq!(e.get("URL").unwrap(), "http://127.1.0.3:$(PORT)");
        assert_eq!(e.into_map().len(), 2);
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("A_B.c-1"));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("a b"));
        assert!(!valid_env_name(""));
    }
}
