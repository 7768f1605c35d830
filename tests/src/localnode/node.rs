//! The Node object, its status heartbeat and its Lease in `kube-node-lease`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use super::context::AgentContext;
use super::downward::NodeCapacity;
use super::error::Result;

/// Kubernetes version the node reports.
pub const KUBELET_VERSION: &str = "v1.34.4";
/// How often the lease and status are renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Lease duration.
pub const LEASE_SECONDS: i32 = 40;
/// Max pods by default (a kubelet's default); `--max-pods` raises it for scale tests.
pub const MAX_PODS: u32 = 110;

/// Reads the machine's capacity (CPU count, MemTotal, a nominal disk) and takes at most
/// `max_pods` pods.
pub fn machine_capacity(max_pods: u32) -> NodeCapacity {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(8 * 1024 * 1024);
    NodeCapacity {
        cpu_cores: cpus as f64,
        memory_bytes: mem_kib as f64 * 1024.0,
        ephemeral_bytes: 100.0 * 1024.0 * 1024.0 * 1024.0,
        max_pods,
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn resources(cap: &NodeCapacity) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(format!("{}", cap.cpu_cores as u64)),
        ),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", (cap.memory_bytes / 1024.0) as u64)),
        ),
        (
            "ephemeral-storage".to_string(),
            Quantity(format!("{}Gi", (cap.ephemeral_bytes / 1073741824.0) as u64)),
        ),
        ("pods".to_string(), Quantity(cap.max_pods.to_string())),
    ])
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The node status this agent reports (conditions stamped `now`).
pub fn node_status(ctx: &AgentContext, now: Timestamp) -> NodeStatus {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(ctx.started)),
    };
    let os_image = read_trimmed("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string());
    NodeStatus {
        capacity: Some(resources(&ctx.capacity)),
        allocatable: Some(resources(&ctx.capacity)),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "iq720-localnode is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            },
            // The apiserver dials the first address of its preferred types (Hostname
            // first by default) for `kubectl logs`: the node name does not resolve.
            NodeAddress {
                type_: "Hostname".into(),
                address: "localhost".into(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(ctx.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: read_trimmed("/etc/machine-id"),
            system_uuid: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image,
            container_runtime_version: format!("iq720-local://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: KUBELET_VERSION.to_string(),
            kube_proxy_version: String::new(),
            operating_system: "linux".to_string(),
            architecture: arch().to_string(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Creates the Node if it does not exist and writes its status.
pub async fn register(ctx: &AgentContext) -> Result<Node> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(ctx.node_name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), ctx.node_name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("kubernetes.io/arch".to_string(), arch().to_string()),
                ("iq720.io/localnode".to_string(), "true".to_string()),
            ])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(node_status(ctx, Timestamp::now())),
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %ctx.node_name, "node registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = %ctx.node_name, "node exists")
        }
        Err(e) => return Err(e.into()),
    }
    update_status(ctx).await
}

async fn update_status(ctx: &AgentContext) -> Result<Node> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({ "status": node_status(ctx, Timestamp::now()) });
    Ok(api
        .patch_status(
            &ctx.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

async fn renew_lease(ctx: &AgentContext, node: &Node) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(ctx.node_name.clone()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..LeaseSpec::default()
    };
    let patch = serde_json::json!({ "spec": spec });
    match api
        .patch(
            &ctx.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(ctx.node_name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: node.metadata.uid.clone().map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: ctx.node_name.clone(),
                            uid,
                            ..OwnerReference::default()
                        }]
                    }),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Renews the lease and the node status every [`HEARTBEAT`] until shutdown.
pub async fn heartbeat_loop(ctx: Arc<AgentContext>, mut node: Node, shutdown: CancellationToken) {
    loop {
        if let Err(e) = renew_lease(&ctx, &node).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
        match update_status(&ctx).await {
            Ok(n) => node = n,
            Err(e) => {
                tracing::warn!(error = %e, "node status update failed");
                if let Err(e) = register(&ctx).await.map(|n| node = n) {
                    tracing::warn!(error = %e, "node re-registration failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
