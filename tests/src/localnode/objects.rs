//! Per-operation cache of the ConfigMaps and Secrets a pod refers to, read from the
//! agent's watches.
//!
//! Why watches: every pod's volumes are resynced every few seconds (a changed
//! ConfigMap or Secret reaches the files, as with a kubelet), and reading each object
//! with a GET made that 2 GETs per pod per resync: 660 a second at 1,000 pods, the
//! largest load on the apiserver in `make bench-scale`. Like the kubelet's `Watch`
//! change-detection strategy, the agent now watches all ConfigMaps and Secrets once
//! ([`WatchedObjects`]) and a resync reads the stores; an object the store does not
//! have (not listed yet, just created) is still read with a GET, so "missing" is
//! never decided by a lagging store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::error::Result;

/// Reflector stores of every ConfigMap and Secret, filled by one watch each.
#[derive(Clone)]
pub struct WatchedObjects {
    configmaps: Watched<ConfigMap>,
    secrets: Watched<Secret>,
}

/// A store and whether it has its first full list (before that it is empty, and
/// "missing" must never be read from it).
#[derive(Clone)]
struct Watched<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    ready: Arc<AtomicBool>,
}

impl<K> Watched<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn start(api: Api<K>, shutdown: CancellationToken) -> Self {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        let ready = Arc::new(AtomicBool::new(false));
        let (flag, waiting) = (ready.clone(), store.clone());
        tokio::spawn(async move {
            if waiting.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = stream.next() => match ev {
                        None => return,
                        Some(Err(e)) => tracing::debug!(error = %e, "object watch error"),
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
        Self { store, ready }
    }

    /// An object from `watched` when it has it, else read from the apiserver
    /// (`None`: it does not exist).
    async fn or_read(
        watched: Option<&Self>,
        api: &Api<K>,
        ns: &str,
        name: &str,
    ) -> Result<Option<K>> {
        match watched.and_then(|w| w.get(ns, name)) {
            Some(found) => Ok(Some((*found).clone())),
            None => Ok(api.get_opt(name).await?),
        }
    }

    fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        if !self.ready.load(Ordering::SeqCst) {
            return None;
        }
        self.store.get(&ObjectRef::new(name).within(ns))
    }
}

impl WatchedObjects {
    /// Starts the two watches (until `shutdown`).
    pub fn start(client: &Client, shutdown: &CancellationToken) -> Self {
        Self {
            configmaps: Watched::start(Api::all(client.clone()), shutdown.clone()),
            secrets: Watched::start(Api::all(client.clone()), shutdown.clone()),
        }
    }
}

/// Fetches ConfigMaps and Secrets of one namespace, each at most once.
pub struct ObjectCache {
    ns: String,
    watched: Option<WatchedObjects>,
    configmaps: Api<ConfigMap>,
    secrets: Api<Secret>,
    cm: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    sec: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl ObjectCache {
    /// A cache for namespace `ns`, reading `watched` first when given.
    pub fn new(client: Client, ns: &str, watched: Option<&WatchedObjects>) -> Self {
        Self {
            ns: ns.to_string(),
            watched: watched.cloned(),
            configmaps: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client, ns),
            cm: HashMap::new(),
            sec: HashMap::new(),
        }
    }

    /// The data (and binaryData) of a ConfigMap; `None` if it does not exist.
    pub async fn configmap(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.cm.contains_key(name) {
            let watched = self.watched.as_ref().map(|w| &w.configmaps);
            let found = Watched::or_read(watched, &self.configmaps, &self.ns, name).await?;
            let data = found.map(|cm| {
                let mut out: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                out.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                out
            });
            self.cm.insert(name.to_string(), data);
        }
        Ok(self.cm.get(name).and_then(Option::as_ref))
    }

    /// The data (and stringData) of a Secret; `None` if it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.sec.contains_key(name) {
            let watched = self.watched.as_ref().map(|w| &w.secrets);
            let found = Watched::or_read(watched, &self.secrets, &self.ns, name).await?;
            let data = found.map(|s| {
                let mut out: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                out.extend(
                    s.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                out
            });
            self.sec.insert(name.to_string(), data);
        }
        Ok(self.sec.get(name).and_then(Option::as_ref))
    }
}
