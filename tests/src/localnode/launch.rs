//! Turning a container spec into a process to start: image map, env, mounts, argv.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::context::PodShared;
use super::env::{EnvList, resolve_container_env};
use super::image_map::{ImageMap, build_args};
use super::mount_paths::MountMap;
use super::objects::ObjectCache;
use super::probes::ProbeTarget;
use super::process::LaunchSpec;

/// Everything needed to start and probe one container.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The process to start.
    pub spec: LaunchSpec,
    /// `imageID` to report.
    pub image_id: String,
    /// Context for probes.
    pub probe_target: ProbeTarget,
}

/// Why a container could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchFailure {
    /// No local binary is mapped for the image (reported as ErrImagePull).
    #[error("{0}")]
    ImageNotMapped(String),
    /// The container's configuration cannot be resolved (CreateContainerConfigError).
    #[error("{0}")]
    Config(String),
}

/// Environment every container starts with (the container's own env may override it).
fn base_env(shared: &PodShared, pod: &Pod, cwd: &std::path::Path) -> EnvList {
    let mut env = EnvList::default();
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    env.set("PATH", path);
    env.set("HOME", cwd.to_string_lossy());
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    env.set("HOSTNAME", hostname);
    env.set("IQ720_POD_IP", shared.pod_ip.clone());
    if let Some((host, port)) = &shared.agent.api_endpoint {
        env.set("KUBERNETES_SERVICE_HOST", host.clone());
        env.set("KUBERNETES_SERVICE_PORT", port.to_string());
        env.set("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string());
        env.set("KUBERNETES_PORT", format!("tcp://{host}:{port}"));
    }
    env
}

/// Where Kubernetes mounts a pod's service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Renders a kubeconfig that authenticates with the pod's service-account token file.
pub fn render_kubeconfig(server: &str, sa_dir: &std::path::Path, namespace: &str) -> String {
    let ca = sa_dir.join("ca.crt");
    let token = sa_dir.join("token");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: service-account\n  user:\n    tokenFile: {token}\ncontexts:\n- name: in-cluster\n  context:\n    cluster: local\n    user: service-account\n    namespace: {namespace}\ncurrent-context: in-cluster\n",
        ca = ca.display(),
        token = token.display(),
    )
}

/// Whether a container needs `KUBECONFIG` to find its service account: only when it
/// has the service-account mount but no private mount namespace shows that mount at
/// its in-cluster path. With mount namespaces the token, `ca.crt` and `namespace` are
/// at [`SERVICE_ACCOUNT_DIR`] and `KUBERNETES_SERVICE_HOST/PORT` are set, so in-cluster
/// clients (kube-rs `Client::try_default`, client-go `rest.InClusterConfig`) work as on
/// a real kubelet and no `KUBECONFIG` is given.
pub fn needs_service_account_kubeconfig(has_sa_mount: bool, mount_namespaces: bool) -> bool {
    has_sa_mount && !mount_namespaces
}

/// Without mount namespaces programs on the host cannot read the token at its
/// in-cluster path, so a container with the service-account mount gets `KUBECONFIG`
/// pointing at a kubeconfig that uses the mounted token and CA (clients such as kube-rs'
/// `Config::infer` and kubectl read it).
fn service_account_kubeconfig(
    shared: &PodShared,
    mounts: &MountMap,
    namespace: &str,
    container: &str,
) -> Result<Option<PathBuf>, LaunchFailure> {
    if !needs_service_account_kubeconfig(
        mounts.real_dir(SERVICE_ACCOUNT_DIR).is_some(),
        super::process::mount_namespaces(),
    ) {
        return Ok(None);
    }
    let (Some(sa_dir), Some((host, port))) = (
        mounts.real_dir(SERVICE_ACCOUNT_DIR),
        &shared.agent.api_endpoint,
    ) else {
        return Ok(None);
    };
    let dir = shared.pod_dir.join("kube");
    let path = dir.join(format!("{container}.kubeconfig"));
    let text = render_kubeconfig(&format!("https://{host}:{port}"), sa_dir, namespace);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| LaunchFailure::Config(format!("writing {}: {e}", path.display())))?;
    Ok(Some(path))
}

/// Resolves a container for a (re)start.
pub async fn prepare(shared: &PodShared, container: &Container) -> Result<Prepared, LaunchFailure> {
    let pod = shared.pod.borrow().clone();
    let image = container.image.clone().unwrap_or_default();
    let map = ImageMap::load(&shared.agent.image_map_path)
        .map_err(|e| LaunchFailure::ImageNotMapped(e.to_string()))?;
    let entry = map.resolve(&image).cloned().ok_or_else(|| {
        LaunchFailure::ImageNotMapped(format!(
            "image {image:?} is not in the image map {}",
            shared.agent.image_map_path.display()
        ))
    })?;

    // Mounts.
    let dirs = shared.volume_dirs();
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let base = dirs.get(&m.name).ok_or_else(|| {
            LaunchFailure::Config(format!("volume {:?} is not ready or not defined", m.name))
        })?;
        let sub = m.sub_path.clone().filter(|s| !s.is_empty());
        let real = match sub {
            Some(s) if super::atomic_writer::valid_relative_path(&s) => {
                let p = base.join(&s);
                if !p.exists() {
                    std::fs::create_dir_all(&p)
                        .map_err(|e| LaunchFailure::Config(format!("subPath {s}: {e}")))?;
                }
                p
            }
            Some(s) => return Err(LaunchFailure::Config(format!("invalid subPath {s:?}"))),
            None => base.clone(),
        };
        mounts.push((m.mount_path.clone(), real));
    }
    let binds: Vec<(PathBuf, String)> = mounts
        .iter()
        .filter(|(path, _)| path.starts_with('/') && path != "/")
        .map(|(path, real)| (real.clone(), path.clone()))
        .collect();
    let mounts = MountMap::new(mounts);

    let cwd = container
        .working_dir
        .as_deref()
        .and_then(|w| mounts.rewrite_path(w))
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.pod_dir.join("containers").join(&container.name));

    // Environment.
    let mut env = base_env(shared, &pod, &cwd);
    for (k, v) in &entry.env {
        env.set(k.clone(), v.clone());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(kc) = service_account_kubeconfig(shared, &mounts, &ns, &container.name)? {
        env.set("KUBECONFIG", kc.to_string_lossy());
    }
    let mut objects = ObjectCache::new(
        shared.agent.client.clone(),
        &ns,
        shared.agent.objects.as_ref(),
    );
    resolve_container_env(
        &mut env,
        &pod,
        container,
        &shared.pod_ip,
        &shared.agent.capacity,
        &mut objects,
    )
    .await
    .map_err(|e| LaunchFailure::Config(e.to_string()))?;
    let expand_rewrite = |s: &String| mounts.rewrite(&env.expand(s));
    let command: Vec<String> = container
        .command
        .iter()
        .flatten()
        .map(expand_rewrite)
        .collect();
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(expand_rewrite)
        .collect();
    let env: BTreeMap<String, String> = env
        .into_map()
        .into_iter()
        .map(|(k, v)| {
            let v = mounts.rewrite(&v);
            (k, v)
        })
        .collect();

    let exec_program = entry
        .command
        .file_name()
        .map(|n| (n.to_string_lossy().into_owned(), entry.command.clone()));
    Ok(Prepared {
        image_id: format!("iq720-local://{}", entry.command.display()),
        spec: LaunchSpec {
            program: entry.command.clone(),
            args: build_args(&entry, &command, &args),
            env: env.clone(),
            cwd: cwd.clone(),
            log_file: shared.log_file(&container.name),
            binds,
        },
        probe_target: ProbeTarget {
            pod_ip: shared.pod_ip.clone(),
            ports: container.ports.clone().unwrap_or_default(),
            cwd,
            env,
            exec_program,
            mounts,
            mount_ns_pid: None,
        },
    })
}
