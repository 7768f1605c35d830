//! Waiting with deadlines: on watched objects (`await_condition`) or by polling.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::error::{HarnessError, Result};

/// Waits (watching the object) until `cond` holds for `name`, or `timeout` passes.
pub async fn wait_for_condition<K>(
    api: &Api<K>,
    name: &str,
    cond: impl Condition<K>,
    timeout: Duration,
) -> Result<K>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err(HarnessError::Deleted(name.to_string())),
        Ok(Err(e)) => Err(HarnessError::Cluster(format!("watching {name}: {e}"))),
        Err(_) => Err(HarnessError::Timeout {
            what: name.to_string(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// Waits until `name` does not exist any more (or has a different uid than `uid`).
pub async fn wait_for_deletion<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    timeout: Duration,
) -> Result<()>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    let cond = kube::runtime::conditions::is_deleted(uid);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(HarnessError::Cluster(format!("watching {name}: {e}"))),
        Err(_) => Err(HarnessError::Timeout {
            what: format!("deletion of {name}"),
            seconds: timeout.as_secs(),
        }),
    }
}

/// Calls `probe` every `interval` until it returns `Some`, or `timeout` passes.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// Condition: the pod's Ready condition is True.
pub fn pod_ready() -> impl Condition<Pod> {
    |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }
}

/// Condition: the pod's phase is `phase`.
pub fn pod_phase(phase: &'static str) -> impl Condition<Pod> {
    move |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some(phase)
    }
}
