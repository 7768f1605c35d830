//! Shared state: the agent-wide context and the per-pod context.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio::sync::watch;

use super::downward::NodeCapacity;
use super::ipam::IpPool;

/// Agent-wide settings and state.
pub struct AgentContext {
    /// API client.
    pub client: Client,
    /// This node's name.
    pub node_name: String,
    /// State directory (pods, volumes).
    pub state_dir: PathBuf,
    /// Path of the image map (re-read at every container start).
    pub image_map_path: PathBuf,
    /// Host and port of the apiserver, passed to pods as KUBERNETES_SERVICE_*.
    pub api_endpoint: Option<(String, u16)>,
    /// Node capacity.
    pub capacity: NodeCapacity,
    /// Pod IP allocation.
    pub ips: Mutex<IpPool>,
    /// Port of the kubelet API (`kubectl logs`), reported in the node status.
    pub kubelet_port: u16,
    /// When the agent started (the node conditions' last transition).
    pub started: k8s_openapi::jiff::Timestamp,
    /// Every ConfigMap and Secret, watched (`None`: read each with a GET).
    pub objects: Option<super::objects::WatchedObjects>,
}

/// What every container task of one pod shares.
pub struct PodShared {
    /// The agent.
    pub agent: std::sync::Arc<AgentContext>,
    /// The latest version of the pod object.
    pub pod: watch::Receiver<Pod>,
    /// The pod's IP.
    pub pod_ip: String,
    /// The pod's directory under the state dir.
    pub pod_dir: PathBuf,
    /// Real directory of each volume.
    pub volumes: Mutex<BTreeMap<String, PathBuf>>,
}

impl PodShared {
    /// Snapshot of the volume directories.
    pub fn volume_dirs(&self) -> BTreeMap<String, PathBuf> {
        self.volumes.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Log file of a container (stdout and stderr, appended across restarts).
    pub fn log_file(&self, container: &str) -> PathBuf {
        self.pod_dir.join("logs").join(format!("{container}.log"))
    }

    /// File holding the pid of a container's running process.
    pub fn pid_file(&self, container: &str) -> PathBuf {
        self.pod_dir.join("pids").join(container)
    }
}
