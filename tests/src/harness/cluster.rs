//! Finding the local cluster (starting it with `tests/scripts/cluster-up.sh` when none
//! runs) and connecting to it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::OnceCell;

use super::error::{HarnessError, Result};

/// Field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "iq720-tests";

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// The run dir: `$IQ720_RUN_DIR` or `<repo>/.run/cluster`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("IQ720_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".run").join("cluster"))
}

/// Contents of the cluster's `env` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEnv {
    /// All `export K=V` pairs.
    pub vars: BTreeMap<String, String>,
    /// Run dir.
    pub run_dir: PathBuf,
}

impl ClusterEnv {
    /// Parses `export K=V` lines (quotes around V are removed).
    pub fn parse(text: &str, run_dir: &Path) -> Self {
        let vars = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
            .map(|(k, v)| {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                (k.trim().to_string(), v.to_string())
            })
            .collect();
        Self {
            vars,
            run_dir: run_dir.to_path_buf(),
        }
    }

    /// Reads `<run_dir>/env`.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("env");
        let text = std::fs::read_to_string(&path).map_err(|e| HarnessError::io(&path, e))?;
        Ok(Self::parse(&text, run_dir))
    }

    /// A variable, or an error naming it.
    pub fn var(&self, key: &str) -> Result<&str> {
        self.vars.get(key).map(String::as_str).ok_or_else(|| {
            HarnessError::Cluster(format!("{key} missing from {}/env", self.run_dir.display()))
        })
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.vars
            .get("KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.run_dir.join("kubeconfig"))
    }

    /// The image map file.
    pub fn image_map(&self) -> PathBuf {
        self.vars
            .get("IQ720_IMAGE_MAP")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.run_dir.join("images.yaml"))
    }

    /// The node agent's state dir.
    pub fn node_dir(&self) -> PathBuf {
        self.run_dir.join("node")
    }

    /// The node's name.
    pub fn node_name(&self) -> String {
        self.vars
            .get("IQ720_NODE_NAME")
            .cloned()
            .unwrap_or_else(|| "iq720-local".to_string())
    }
}

/// Builds a client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    crate::install_crypto_provider();
    let kc = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn usable(env: &ClusterEnv) -> bool {
    let check = async {
        let client = client_from_kubeconfig(&env.kubeconfig()).await.ok()?;
        client.apiserver_version().await.ok()?;
        let node = Api::<Node>::all(client)
            .get_opt(&env.node_name())
            .await
            .ok()??;
        node.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), check).await,
        Ok(Some(()))
    )
}

async fn start_cluster(run_dir: &Path) -> Result<ClusterEnv> {
    if std::env::var("IQ720_NO_AUTOSTART").is_ok_and(|v| v == "1") {
        return Err(HarnessError::Cluster(format!(
            "no healthy cluster in {} and IQ720_NO_AUTOSTART=1",
            run_dir.display()
        )));
    }
    let lock_dir = run_dir
        .parent()
        .map_or_else(|| run_dir.to_path_buf(), Path::to_path_buf);
    std::fs::create_dir_all(&lock_dir).map_err(|e| HarnessError::io(&lock_dir, e))?;
    let lock_path = lock_dir.join(".cluster-up.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| HarnessError::io(&lock_path, e))?;
    // Serialise cluster start-up between test binaries running in parallel.
    let lock = tokio::task::spawn_blocking(move || Flock::lock(file, FlockArg::LockExclusive))
        .await
        .map_err(|e| HarnessError::Cluster(format!("lock task: {e}")))?
        .map_err(|(_, e)| HarnessError::io(&lock_path, std::io::Error::from(e)))?;
    if let Ok(env) = ClusterEnv::load(run_dir)
        && usable(&env).await
    {
        drop(lock);
        return Ok(env);
    }
    let script = repo_root().join("tests/scripts/cluster-up.sh");
    eprintln!(
        "iq720-tests: starting the local cluster with {}",
        script.display()
    );
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .env("IQ720_RUN_DIR", run_dir)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| HarnessError::io(&script, e))?;
    drop(lock);
    if !out.status.success() {
        return Err(HarnessError::Cluster(format!(
            "{} failed with {}",
            script.display(),
            out.status
        )));
    }
    ClusterEnv::load(run_dir)
}

async fn ensure_cluster() -> Result<ClusterEnv> {
    let run_dir = run_dir();
    if let Ok(env) = ClusterEnv::load(&run_dir)
        && usable(&env).await
    {
        return Ok(env);
    }
    start_cluster(&run_dir).await
}

static ENV: OnceCell<ClusterEnv> = OnceCell::const_new();

/// A connection to the local cluster.
#[derive(Clone)]
pub struct Cluster {
    /// Client (admin) bound to the calling test's runtime.
    pub client: Client,
    /// The env file.
    pub env: ClusterEnv,
}

impl Cluster {
    /// The cluster of this test process: found once (started if needed), then a new
    /// client per call, since every `#[tokio::test]` has its own runtime.
    pub async fn shared() -> Result<Self> {
        let env = ENV.get_or_try_init(ensure_cluster).await?.clone();
        let client = client_from_kubeconfig(&env.kubeconfig()).await?;
        Ok(Self { client, env })
    }

    /// Adds or replaces an image map entry (`repository:tag` → local binary). The node
    /// agent re-reads the map at each container start.
    pub fn map_image(&self, image: &str, command: &Path, args: &[&str]) -> Result<()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = self.env.image_map();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut doc: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
        if !doc.is_mapping() {
            doc = serde_yaml::Value::Mapping(Default::default());
        }
        let images = doc
            .as_mapping_mut()
            .map(|m| {
                m.entry("images".into())
                    .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()))
            })
            .ok_or_else(|| HarnessError::Manifest("image map is not a mapping".into()))?;
        if !images.is_mapping() {
            *images = serde_yaml::Value::Mapping(Default::default());
        }
        let mut entry = serde_yaml::Mapping::new();
        entry.insert(
            "command".into(),
            command.to_string_lossy().into_owned().into(),
        );
        if !args.is_empty() {
            entry.insert(
                "args".into(),
                serde_yaml::Value::Sequence(args.iter().map(|a| (*a).into()).collect()),
            );
        }
        if let Some(m) = images.as_mapping_mut() {
            m.insert(image.into(), serde_yaml::Value::Mapping(entry));
        }
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, serde_yaml::to_string(&doc)?)
            .map_err(|e| HarnessError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| HarnessError::io(&path, e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_file() {
        let env = ClusterEnv::parse(
            "# comment\nexport KUBECONFIG=/r/kubeconfig\nexport IQ720_S3_BUCKET=\"iq720-test\"\nIQ720_NODE_NAME='n1'\n",
            Path::new("/r"),
        );
        assert_eq!(env.kubeconfig(), PathBuf::from("/r/kubeconfig"));
        assert_eq!(env.var("IQ720_S3_BUCKET").unwrap(), "iq720-test");
        assert_eq!(env.node_name(), "n1");
        assert_eq!(env.image_map(), PathBuf::from("/r/images.yaml"));
        assert!(env.var("NOPE").is_err());
    }
}
