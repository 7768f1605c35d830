//! e2e: the operator as its users run it — `helm install` of `charts/iq720-operator`
//! into its own namespace, the chart's Deployment pod run by the local node (image map:
//! the operator image → the workspace's `iq720-operator`), configured in-cluster from
//! `KUBERNETES_SERVICE_HOST/PORT` and the projected ServiceAccount token.
//!
//! One test, in order: install (one Ready pod, in-cluster config, it leads) → a bot
//! lifecycle through that operator (create → Running, `spec.emergencyStop` →
//! EmergencyStopped with the StatefulSet at 0 replicas) → `helm upgrade` to 2 replicas
//! (both Ready, exactly one leads, the bots keep their state) → `helm uninstall`.
//!
//! What `helm uninstall` does (asserted here): it removes the operator's Deployment,
//! pods, ServiceAccount and RBAC, and nothing else. The CRDs stay (Helm never deletes
//! `crds/`), and so do the TradingBots and everything they own: a running bot keeps
//! running (same pod), a stopped bot stays at 0 replicas. Nothing reconciles them until
//! an operator is installed again; a TradingBot deleted meanwhile stays (deletion
//! timestamp set, finalizer `trading.iq720.io/close-positions` pending) until then —
//! reinstalling the chart completes the deletion.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::bots::{DEADLINE, bot_yaml, phase, stop_completed};
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{
    Cluster, TestNamespace, apply_yaml, container_pid, pod_log, poll_until, repo_root,
    wait_for_condition,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

/// The chart's image repository (values.yaml), mapped to the workspace binary.
const OPERATOR_IMAGE: &str = "ghcr.io/iq720/iq720-operator:*";
const RELEASE: &str = "iq720";
/// The chart's fullname for release `iq720`.
const FULLNAME: &str = "iq720-iq720-operator";
const LEASE: &str = "iq720-operator-leader";
const CONTAINER: &str = "operator";
const FINALIZER: &str = "trading.iq720.io/close-positions";

/// `helm` against the test cluster; uninstalls its release when dropped (also when the
/// test fails), so no operator outlives the test.
struct Helm {
    bin: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
}

impl Helm {
    fn new(cluster: &Cluster, namespace: &str) -> Self {
        Self {
            bin: common::helm(),
            kubeconfig: cluster.env.kubeconfig(),
            namespace: namespace.to_string(),
        }
    }

    /// Runs `helm ARGS --namespace NS`; panics with helm's output when it fails.
    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(&self.bin)
            .args(args)
            .args(["--namespace", &self.namespace])
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo_root())
            .output()
            .await
            .expect("helm");
        assert!(
            out.status.success(),
            "helm {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm install` (or upgrade) of the chart for one watched namespace, with the
    /// local node's bind address and short lease timings; waits for the Deployment.
    async fn install(&self, verb: &str, bots_ns: &str, replicas: u32) -> String {
        let watch = format!("watchNamespace={bots_ns}");
        let replicas = format!("replicaCount={replicas}");
        self.run(&[
            verb,
            RELEASE,
            "charts/iq720-operator",
            "--set",
            &watch,
            "--set",
            &replicas,
            // Pods of the local node share the host's network: bind the pod IP.
            "--set",
            "metrics.bindAddress=$(POD_IP)",
            "--set",
            "botPollInterval=1s",
            "--set",
            "leaderElection.leaseDuration=6s",
            "--set",
            "leaderElection.renewDeadline=4s",
            "--set",
            "leaderElection.retryPeriod=1s",
            "--wait",
            "--timeout",
            "180s",
        ])
        .await
    }
}

impl Drop for Helm {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.bin)
            .args(["uninstall", RELEASE, "--namespace", &self.namespace])
            .args(["--ignore-not-found", "--wait", "--timeout", "60s"])
            .env("KUBECONFIG", &self.kubeconfig)
            .output();
    }
}

/// The release's pods that are not being deleted.
async fn live_pods(cluster: &Cluster, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// `podIP:8080` of a pod (the chart's metrics port, bound to the pod IP).
fn metrics_addr(pod: &Pod) -> Option<String> {
    Some(format!("{}:8080", pod.status.as_ref()?.pod_ip.as_ref()?))
}

async fn http_status(addr: &str, path: &str) -> Option<u16> {
    iq720_tests::http::get(addr, path)
        .await
        .ok()
        .map(|r| r.status)
}

async fn lease_holder(cluster: &Cluster, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(cluster.client.clone(), ns)
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// The last lines of every operator pod's log, for failure messages.
async fn operator_logs(cluster: &Cluster, ns: &str) -> String {
    let mut out = String::new();
    for pod in live_pods(cluster, ns).await {
        let n = name(&pod);
        let log = pod_log(cluster, ns, &n, CONTAINER)
            .await
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        out.push_str(&format!("--- {n}\n"));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Waits until the release has exactly `want` live pods, all Ready, and exactly one of
/// them answers `/leader` with 200 and holds the Lease; returns that pod.
async fn one_leader(cluster: &Cluster, ns: &str, want: usize) -> Pod {
    let found = poll_until(
        &format!("{want} Ready operator pod(s), exactly one leading"),
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async move {
            let pods = live_pods(cluster, ns).await;
            if pods.len() != want || !pods.iter().all(ready) {
                return None;
            }
            let mut leaders = Vec::new();
            for pod in &pods {
                // Every pod serves its own IP: /readyz answers on each, /leader on one.
                let addr = metrics_addr(pod)?;
                if http_status(&addr, "/readyz").await != Some(200) {
                    return None;
                }
                if http_status(&addr, "/leader").await == Some(200) {
                    leaders.push(pod.clone());
                }
            }
            let holder = lease_holder(cluster, ns).await?;
            match leaders.as_slice() {
                [leader] if name(leader) == holder => Some(leader.clone()),
                _ => None,
            }
        },
    )
    .await;
    match found {
        Ok(pod) => pod,
        Err(e) => panic!(
            "{e}\npods: {:?}\n{}",
            live_pods(cluster, ns)
                .await
                .iter()
                .map(|p| (name(p), metrics_addr(p), ready(p)))
                .collect::<Vec<_>>(),
            operator_logs(cluster, ns).await
        ),
    }
}

/// The operator process got the in-cluster configuration a kubelet gives: the
/// apiserver in `KUBERNETES_SERVICE_HOST/PORT` and, in its own mount namespace, the
/// projected token, CA and namespace at `/var/run/secrets/kubernetes.io/serviceaccount`
/// (and then no `KUBECONFIG`). Without mount namespaces on this machine the node falls
/// back to a `KUBECONFIG` with the mounted token.
fn assert_in_cluster_config(pod: &Pod, ns: &str) {
    let pid = container_pid(pod, CONTAINER).expect("operator container pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let has = |k: &str| vars.iter().any(|v| v.starts_with(&format!("{k}=")));
    assert!(
        has("KUBERNETES_SERVICE_HOST") && has("KUBERNETES_SERVICE_PORT"),
        "no KUBERNETES_SERVICE_HOST/PORT in the operator's environment: {vars:?}"
    );
    let own_mount_ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap()
        != std::fs::read_link("/proc/self/ns/mnt").unwrap();
    if own_mount_ns {
        assert!(
            !has("KUBECONFIG"),
            "the operator pod got a KUBECONFIG although its mount namespace has the token: {vars:?}"
        );
        // The mount is in the process' namespace, at the in-cluster path (/var/run is
        // often a symlink to /run, so the mount table may name either).
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let mount_point = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .find(|m| {
                ["/var/run", "/run"]
                    .iter()
                    .any(|r| *m == format!("{r}/secrets/kubernetes.io/serviceaccount"))
            })
            .unwrap_or_else(|| {
                panic!("no service-account mount in the operator's mount namespace:\n{mountinfo}")
            })
            .to_string();
        let sa = format!("/proc/{pid}/root{mount_point}");
        let read = |f: &str| {
            std::fs::read_to_string(format!("{sa}/{f}"))
                .unwrap_or_else(|e| panic!("{sa}/{f} in the operator's mount namespace: {e}"))
        };
        assert_eq!(read("namespace"), ns);
        assert!(read("ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
        // A JWT: header.payload.signature.
        assert_eq!(read("token").trim().split('.').count(), 3);
    } else {
        eprintln!("no mount namespaces on this machine: the node gives a KUBECONFIG");
        assert!(has("KUBECONFIG"), "{vars:?}");
    }
}

async fn wait_bot(
    cluster: &Cluster,
    bots_ns: &str,
    op_ns: &str,
    bot: &str,
    what: &str,
    pred: impl Fn(&TradingBot) -> bool + Send + 'static,
) -> TradingBot {
    let api: Api<TradingBot> = Api::namespaced(cluster.client.clone(), bots_ns);
    match wait_for_condition(
        &api,
        bot,
        move |b: Option<&TradingBot>| b.is_some_and(&pred),
        DEADLINE,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => panic!(
            "bot {bot}: {what}: {e}\nstatus: {:#?}\n{}",
            api.get_opt(bot).await.ok().flatten().and_then(|b| b.status),
            operator_logs(cluster, op_ns).await
        ),
    }
}

async fn sts_replicas(cluster: &Cluster, ns: &str, bot: &str) -> Option<i32> {
    Api::<StatefulSet>::namespaced(cluster.client.clone(), ns)
        .get_opt(bot)
        .await
        .ok()
        .flatten()?
        .spec?
        .replicas
}

async fn bot_pod_uid(cluster: &Cluster, ns: &str, bot: &str) -> Option<String> {
    let pod = Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .get_opt(&format!("{bot}-0"))
        .await
        .ok()
        .flatten()?;
    ready(&pod).then_some(pod.metadata.uid?)
}

#[tokio::test]
async fn helm_installed_operator_runs_bots_scales_and_uninstalls() {
    let cluster = Cluster::shared().await.unwrap();
    common::install_crds(&cluster).await;
    common::workspace_binary("iq720-bot", "iq720-bot");
    let operator = common::workspace_binary("iq720-operator", "iq720-operator");
    // cluster-up.sh maps the chart's image already; the same entry, for older clusters.
    cluster.map_image(OPERATOR_IMAGE, &operator, &[]).unwrap();
    let op_ns = TestNamespace::with_prefix(&cluster, "iq720-helm")
        .await
        .unwrap();
    let bots_ns = TestNamespace::with_prefix(&cluster, "iq720-helm-bots")
        .await
        .unwrap();
    let (op, bns) = (op_ns.name().to_string(), bots_ns.name().to_string());
    let helm = Helm::new(&cluster, &op);

    // ---------------------------------------------------------------- install
    helm.install("install", &bns, 1).await;
    let leader = one_leader(&cluster, &op, 1).await;
    assert_in_cluster_config(&leader, &op);
    let deploy = Api::<Deployment>::namespaced(cluster.client.clone(), &op)
        .get(FULLNAME)
        .await
        .unwrap();
    assert_eq!(
        deploy.status.and_then(|s| s.ready_replicas),
        Some(1),
        "the Deployment has one Ready replica after helm install --wait"
    );

    // ---------------------------------------------------------------- bot lifecycle
    for bot in ["lifecycle", "survivor"] {
        apply_yaml(&cluster.client, Some(&bns), &bot_yaml(bot, ""))
            .await
            .unwrap();
    }
    for bot in ["lifecycle", "survivor"] {
        wait_bot(&cluster, &bns, &op, bot, "Running", |b| {
            phase(b) == Some(TradingBotPhase::Running)
        })
        .await;
    }
    let bots: Api<TradingBot> = Api::namespaced(cluster.client.clone(), &bns);
    bots.patch(
        "lifecycle",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"emergencyStop": true}})),
    )
    .await
    .unwrap();
    wait_bot(
        &cluster,
        &bns,
        &op,
        "lifecycle",
        "EmergencyStopped",
        stop_completed,
    )
    .await;
    poll_until(
        "StatefulSet lifecycle at 0 replicas",
        DEADLINE,
        Duration::from_millis(200),
        || async { (sts_replicas(&cluster, &bns, "lifecycle").await == Some(0)).then_some(()) },
    )
    .await
    .unwrap();

    // ---------------------------------------------------------------- 2 replicas
    helm.install("upgrade", &bns, 2).await;
    let leader = one_leader(&cluster, &op, 2).await;
    assert_in_cluster_config(&leader, &op);
    let survivor_uid = poll_until(
        "survivor's pod Ready",
        DEADLINE,
        Duration::from_millis(200),
        || async { bot_pod_uid(&cluster, &bns, "survivor").await },
    )
    .await
    .unwrap();
    let survivor = bots.get("survivor").await.unwrap();
    assert_eq!(phase(&survivor), Some(TradingBotPhase::Running));
    let stopped = bots.get("lifecycle").await.unwrap();
    assert!(stop_completed(&stopped), "{:?}", stopped.status);

    // ---------------------------------------------------------------- uninstall
    helm.run(&["uninstall", RELEASE, "--wait", "--timeout", "120s"])
        .await;
    poll_until(
        "operator pods gone",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { live_pods(&cluster, &op).await.is_empty().then_some(()) },
    )
    .await
    .unwrap();
    assert!(
        Api::<Deployment>::namespaced(cluster.client.clone(), &op)
            .get_opt(FULLNAME)
            .await
            .unwrap()
            .is_none(),
        "the Deployment outlived helm uninstall"
    );
    assert!(
        Api::<ServiceAccount>::namespaced(cluster.client.clone(), &op)
            .get_opt(FULLNAME)
            .await
            .unwrap()
            .is_none(),
        "the ServiceAccount outlived helm uninstall"
    );
    // CRDs stay (Helm never deletes crds/), and so do the bots and what they own.
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    for crd in common::CRDS {
        assert!(
            crds.get_opt(crd).await.unwrap().is_some(),
            "CRD {crd} was deleted by helm uninstall"
        );
    }
    let names: BTreeSet<String> = bots
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|b| b.metadata.name)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["lifecycle".to_string(), "survivor".to_string()])
    );
    assert_eq!(
        bot_pod_uid(&cluster, &bns, "survivor").await,
        Some(survivor_uid.clone()),
        "the running bot's pod changed or is not Ready after helm uninstall"
    );
    assert_eq!(sts_replicas(&cluster, &bns, "lifecycle").await, Some(0));

    // A TradingBot deleted while no operator runs waits for its finalizer.
    let deleted = bots
        .delete("survivor", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("a TradingBot with a finalizer is not deleted at once");
    assert!(deleted.metadata.deletion_timestamp.is_some());
    assert!(
        deleted
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER),
        "{:?}",
        deleted.metadata.finalizers
    );
    assert_eq!(
        bot_pod_uid(&cluster, &bns, "survivor").await,
        Some(survivor_uid),
        "the bot's pod went away without an operator"
    );

    // ---------------------------------------------------------------- reinstall
    // An operator installed again completes the deletion (and cleans up the test).
    helm.install("install", &bns, 1).await;
    one_leader(&cluster, &op, 1).await;
    bots.delete("lifecycle", &DeleteParams::default())
        .await
        .unwrap();
    let all_gone = poll_until(
        "TradingBots deleted by the reinstalled operator",
        DEADLINE,
        Duration::from_millis(200),
        || async {
            bots.list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
    if let Err(e) = all_gone {
        panic!("{e}\n{}", operator_logs(&cluster, &op).await);
    }
    helm.run(&["uninstall", RELEASE, "--wait", "--timeout", "120s"])
        .await;
    drop(helm);
    bots_ns.delete().await.unwrap();
    op_ns.delete().await.unwrap();
}
