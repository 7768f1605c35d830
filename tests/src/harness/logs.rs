//! Reading what the node agent knows about a pod: container logs and pids.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::cluster::Cluster;
use super::error::{HarnessError, Result};

/// Log file of a container of pod `uid` (stdout+stderr, appended across restarts).
pub fn log_path(cluster: &Cluster, uid: &str, container: &str) -> PathBuf {
    cluster
        .env
        .node_dir()
        .join("pods")
        .join(uid)
        .join("logs")
        .join(format!("{container}.log"))
}

/// The log of a container of a pod (looked up by name).
pub async fn pod_log(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String> {
    let p = Api::<Pod>::namespaced(cluster.client.clone(), namespace)
        .get(pod)
        .await?;
    let uid = p.metadata.uid.unwrap_or_default();
    let path = log_path(cluster, &uid, container);
    std::fs::read_to_string(&path).map_err(|e| HarnessError::io(&path, e))
}

/// Pid of a container's current process, from its `containerID` (`iq720://<pid>`).
pub fn container_pid(pod: &Pod, container: &str) -> Option<u32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .container_id
        .as_deref()?
        .strip_prefix("iq720://")?
        .parse()
        .ok()
}

/// Is process `pid` alive (and not a zombie)?
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The pod's IP from its status.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}
