//! The agent's main loop: set-up, pod watch and orderly shutdown.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config};
use tokio_util::sync::CancellationToken;

use super::context::AgentContext;
use super::error::{NodeError, Result};
use super::ipam::IpPool;
use super::node::{heartbeat_loop, machine_capacity, register};
use super::pod_worker::{self, PodHandle};
use super::storage::{ensure_storage_class, provisioner_loop};

/// Command-line settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Node name.
    pub node_name: String,
    /// State directory.
    pub state_dir: PathBuf,
    /// Image map file.
    pub image_map: PathBuf,
    /// Kubelet API port on 127.0.0.1 (0: any free port).
    pub kubelet_port: u16,
    /// Most pods the node takes ([`super::node::MAX_PODS`] unless raised).
    pub max_pods: u32,
}

async fn client_from(path: &std::path::Path) -> Result<(Client, Option<(String, u16)>)> {
    crate::install_crypto_provider();
    let kc = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let endpoint = config
        .cluster_url
        .host()
        .map(|h| (h.to_string(), config.cluster_url.port_u16().unwrap_or(443)));
    let client = Client::try_from(config)?;
    Ok((client, endpoint))
}

/// Retries `f` every second until it succeeds or `shutdown` fires.
async fn retry<T, F, Fut>(what: &str, shutdown: &CancellationToken, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => tracing::warn!(error = %e, "{what} failed, retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Runs the agent until `shutdown` fires, then stops every pod process.
pub async fn run(opts: AgentOptions, shutdown: CancellationToken) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir).map_err(|e| NodeError::io(&opts.state_dir, e))?;
    let state_dir = opts
        .state_dir
        .canonicalize()
        .map_err(|e| NodeError::io(&opts.state_dir, e))?;
    let image_map =
        std::path::absolute(&opts.image_map).map_err(|e| NodeError::io(&opts.image_map, e))?;
    let (client, api_endpoint) = client_from(&opts.kubeconfig).await?;
    let listener = super::kubelet_api::bind(opts.kubelet_port).await?;
    let kubelet_port = listener
        .local_addr()
        .map_err(|e| NodeError::io("kubelet listener", e))?
        .port();
    let state_dir_for_ips = state_dir.clone();
    let objects = Some(super::objects::WatchedObjects::start(&client, &shutdown));
    let ctx = Arc::new(AgentContext {
        client,
        node_name: opts.node_name.clone(),
        state_dir,
        image_map_path: image_map,
        api_endpoint,
        capacity: machine_capacity(opts.max_pods),
        ips: Mutex::new(IpPool::new(super::ipam::octet_for(&state_dir_for_ips))),
        kubelet_port,
        started: k8s_openapi::jiff::Timestamp::now(),
        objects,
    });
    let kubelet_api = match super::kubelet_api::ensure_certificate(
        &ctx.state_dir.join("kubelet"),
        &ctx.node_name,
    ) {
        Ok((cert, key)) => Some(tokio::spawn(super::kubelet_api::serve(
            listener,
            cert,
            key,
            ctx.client.clone(),
            ctx.state_dir.clone(),
            shutdown.clone(),
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "no serving certificate: kubectl logs will not work");
            None
        }
    };
    tracing::info!(
        node = %ctx.node_name,
        state_dir = %ctx.state_dir.display(),
        pod_ips = %format!("127.{}.0.0/16", super::ipam::octet_for(&ctx.state_dir)),
        kubelet_port,
        "starting"
    );

    let Some(node) = retry("node registration", &shutdown, || register(&ctx)).await else {
        return Ok(());
    };
    if retry("storage class", &shutdown, || ensure_storage_class(&ctx))
        .await
        .is_none()
    {
        return Ok(());
    }
    let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone(), node, shutdown.clone()));
    let provisioner = tokio::spawn(provisioner_loop(ctx.clone(), shutdown.clone()));
    let rescue = tokio::spawn(super::rescue::rescue_loop(ctx.clone(), shutdown.clone()));

    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut stream = std::pin::pin!(watcher::watcher(pods, cfg).default_backoff());
    let mut handles: HashMap<String, PodHandle> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = stream.next() => ev,
        };
        match ev {
            None => break,
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch error"),
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                dispatch(&ctx, &mut handles, &finished, pod, &shutdown);
            }
            Some(Ok(Event::InitDone)) => {
                for (uid, h) in &handles {
                    if !listed.contains(uid) {
                        h.gone.cancel();
                    }
                }
            }
            Some(Ok(Event::Apply(pod))) => dispatch(&ctx, &mut handles, &finished, pod, &shutdown),
            Some(Ok(Event::Delete(pod))) => {
                if let Some(h) = pod.metadata.uid.as_ref().and_then(|u| handles.get(u)) {
                    let _ = h.pod_tx.send(pod.clone());
                    h.gone.cancel();
                }
            }
        }
        handles.retain(|uid, h| {
            if h.task.is_finished() {
                finished.insert(uid.clone());
                false
            } else {
                true
            }
        });
    }

    tracing::info!(
        pods = handles.len(),
        "shutting down: stopping pod processes"
    );
    shutdown.cancel();
    for (_, h) in handles {
        if tokio::time::timeout(Duration::from_secs(40), h.task)
            .await
            .is_err()
        {
            tracing::warn!("a pod task did not stop in time");
        }
    }
    let _ = heartbeat.await;
    let _ = provisioner.await;
    let _ = rescue.await;
    if let Some(k) = kubelet_api {
        let _ = k.await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn dispatch(
    ctx: &Arc<AgentContext>,
    handles: &mut HashMap<String, PodHandle>,
    finished: &HashSet<String>,
    pod: Pod,
    shutdown: &CancellationToken,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if finished.contains(&uid) {
        return;
    }
    match handles.get(&uid) {
        Some(h) => {
            let _ = h.pod_tx.send(pod);
        }
        None => {
            handles.insert(uid, pod_worker::start(ctx.clone(), pod, shutdown.clone()));
        }
    }
}
