//! Downward API values (fieldRef and resourceFieldRef) and quantity arithmetic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Host-level facts used when a container sets no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeCapacity {
    /// CPU cores.
    pub cpu_cores: f64,
    /// Memory in bytes.
    pub memory_bytes: f64,
    /// Ephemeral storage in bytes.
    pub ephemeral_bytes: f64,
    /// Most pods the node takes (the scheduler places no more).
    pub max_pods: u32,
}

/// The host IP every pod reports.
pub const HOST_IP: &str = "127.0.0.1";

fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Value of a `fieldRef.fieldPath` for `pod` whose IP is `pod_ip`.
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    if let Some(key) = subscript("metadata.labels['") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(&key).cloned())
            .unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations['") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|l| l.get(&key).cloned())
            .unwrap_or_default());
    }
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string()),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => HOST_IP.to_string(),
        other => return Err(format!("unsupported fieldPath {other:?}")),
    };
    Ok(value)
}

/// Parses a Kubernetes quantity ("500m", "128Mi", "1G", "2") into a number.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) for a container,
/// rounded up in units of `divisor`; limits default to the node's capacity.
pub fn resource_value(
    container: Option<&Container>,
    resource: &str,
    divisor: Option<&Quantity>,
    node: &NodeCapacity,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let res = container.and_then(|c| c.resources.as_ref());
    let declared = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {resource:?}")),
    }
    .and_then(|m| m.get(name))
    .and_then(|q| parse_quantity(&q.0));
    let fallback = match (kind, name) {
        ("limits", "cpu") => node.cpu_cores,
        ("limits", "memory") => node.memory_bytes,
        ("limits", "ephemeral-storage") => node.ephemeral_bytes,
        ("requests", _) => 0.0,
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let value = declared.unwrap_or(fallback);
    let div = divisor
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    // Kubernetes rounds up; a CPU request of 0 still reports at least 1 unit for cpu.
    let mut units = (value / div).ceil();
    if name == "cpu" && units < 1.0 && kind == "requests" && value > 0.0 {
        units = 1.0;
    }
    Ok(format!("{}", units.max(0.0) as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use kube::api::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("bot-0".into()),
                namespace: Some("ns1".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([("app".into(), "bot".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("iq720-local".into()),
                service_account_name: Some("sa".into()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn field_paths() {
        let p = pod();
        let f = |path| field_value(&p, path, "127.1.0.9").unwrap();
        assert_eq!(f("metadata.name"), "bot-0");
        assert_eq!(f("metadata.namespace"), "ns1");
        assert_eq!(f("metadata.uid"), "u-1");
        assert_eq!(f("status.podIP"), "127.1.0.9");
        assert_eq!(f("spec.nodeName"), "iq720-local");
        assert_eq!(f("spec.serviceAccountName"), "sa");
        assert_eq!(f("metadata.labels"), "app=\"bot\"");
        assert_eq!(f("metadata.labels['app']"), "bot");
        assert!(field_value(&p, "spec.bogus", "").is_err());
    }

    #[test]
    fn quantities_and_resources() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("128Mi"), Some(134_217_728.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
                requests: Some(BTreeMap::from([("cpu".into(), Quantity("250m".into()))])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let node = NodeCapacity {
            cpu_cores: 2.0,
            memory_bytes: 1e9,
            ephemeral_bytes: 1e10,
            max_pods: 110,
        };
        let mi = Quantity("1Mi".into());
        let milli = Quantity("1m".into());
        assert_eq!(
            resource_value(Some(&c), "limits.memory", Some(&mi), &node).unwrap(),
            "64"
        );
        assert_eq!(
            resource_value(Some(&c), "requests.cpu", Some(&milli), &node).unwrap(),
            "250"
        );
        assert_eq!(
            resource_value(Some(&c), "requests.cpu", None, &node).unwrap(),
            "1"
        );
        assert_eq!(
            resource_value(Some(&c), "limits.cpu", None, &node).unwrap(),
            "2"
        );
        assert!(resource_value(Some(&c), "bogus", None, &node).is_err());
    }
}
