//! A fresh namespace per test, deleted when the guard is dropped.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use super::cluster::{Cluster, client_from_kubeconfig};
use super::error::Result;

/// Label put on every test namespace.
pub const TEST_LABEL: &str = "iq720.io/test";

/// A random lowercase suffix of `len` characters.
pub fn random_suffix(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let mut n = h.finish();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            let c = alphabet[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// Guard of a test namespace. Dropping it deletes the namespace (without waiting),
/// unless `IQ720_KEEP_NAMESPACES=1`.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: PathBuf,
    deleted: bool,
}

impl TestNamespace {
    /// Creates `iq720-t-<random>`.
    pub async fn new(cluster: &Cluster) -> Result<Self> {
        Self::with_prefix(cluster, "iq720-t").await
    }

    /// Creates `<prefix>-<random>`.
    pub async fn with_prefix(cluster: &Cluster, prefix: &str) -> Result<Self> {
        let name = format!("{prefix}-{}", random_suffix(6));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    TEST_LABEL.to_string(),
                    "true".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(cluster.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Self {
            name,
            client: cluster.client.clone(),
            kubeconfig: cluster.env.kubeconfig(),
            deleted: false,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace now (does not wait for it to be gone).
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        if keep() {
            return Ok(());
        }
        match Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn keep() -> bool {
    std::env::var("IQ720_KEEP_NAMESPACES").is_ok_and(|v| v == "1")
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted || keep() {
            return;
        }
        // Drop cannot await: delete from a helper thread with its own runtime (the
        // test's runtime may be shutting down).
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = client_from_kubeconfig(&kubeconfig).await {
                    let _ = Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::default())
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_dns_safe_and_differ() {
        let a = random_suffix(6);
        let b = random_suffix(6);
        assert_eq!(a.len(), 6);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, b);
    }
}
