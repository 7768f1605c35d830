//! Helpers shared by the CRD/admission and operator e2e tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod backups;
pub mod bots;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use iq720_tests::{Cluster, apply_yaml, repo_root, wait_for_condition};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::runtime::conditions;

/// The CRD names of the operator.
pub const CRDS: [&str; 3] = [
    "tradingbots.trading.iq720.io",
    "backupschedules.trading.iq720.io",
    "maintenancewindows.trading.iq720.io",
];

/// Installs the chart's generated CRDs (server-side apply) and waits until they are
/// established.
pub async fn install_crds(cluster: &Cluster) {
    let dir = repo_root().join("charts/iq720-operator/crds");
    for name in CRDS {
        let yaml = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap();
        apply_yaml(&cluster.client, None, &yaml).await.unwrap();
    }
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    for name in CRDS {
        wait_for_condition(
            &api,
            name,
            conditions::is_crd_established(),
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("CRD {name} not established: {e}"));
    }
}

/// Cargo's target directory (as the Makefile and cluster-up use it).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The binaries the local node runs, built by one cargo invocation, the same one as
/// `build_cluster_binaries` in tests/scripts/lib.sh (a build of another package set
/// resolves features differently and compiles the shared dependencies again).
const CLUSTER_BUILD: &[&str] = &[
    "-p",
    "iq720-tests",
    "-p",
    "iq720-bot",
    "-p",
    "iq720-operator",
    "--bin",
    "iq720-localnode",
    "--bin",
    "iq720-testproc",
    "--bin",
    "iq720-bot",
    "--bin",
    "iq720-operator",
];

/// Builds (if needed) and returns the path of a workspace binary: the debug build, or
/// the release build when `IQ720_TEST_PROFILE=release` (benchmarks that report release
/// figures, e.g. `bench_fleet_stop` at N=100).
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let shared = CLUSTER_BUILD.contains(&bin);
    let release = std::env::var("IQ720_TEST_PROFILE").is_ok_and(|p| p == "release");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--locked"])
        .args(release.then_some("--release"))
        .args(if shared {
            CLUSTER_BUILD.to_vec()
        } else {
            vec!["-p", package, "--bin", bin]
        })
        .current_dir(repo_root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let path = target_dir()
        .join(if release { "release" } else { "debug" })
        .join(bin);
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// `helm` from the cache (installed with `go install` when missing).
pub fn helm() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/scripts/install-helm.sh"))
        .output()
        .expect("install-helm.sh");
    assert!(
        out.status.success(),
        "install-helm.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Renders the chart with `helm template` (extra `--set` values) for a namespace.
pub fn helm_template(namespace: &str, sets: &[&str]) -> String {
    let mut cmd = Command::new(helm());
    cmd.args([
        "template",
        "iq720",
        "charts/iq720-operator",
        "--namespace",
        namespace,
        "--kube-version",
        "1.34.4",
    ])
    .current_dir(repo_root());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm template");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

use std::process::Stdio;

use iq720_tests::{TestNamespace, poll_until};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Which of the chart's RBAC modes a test installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rbac {
    /// `watchNamespace` set: a Role and RoleBinding in the test namespace.
    Namespaced,
    /// The default: a ClusterRole and ClusterRoleBinding (named after the test namespace
    /// through `fullnameOverride`, so that parallel tests do not share them).
    ClusterWide,
}

/// Name of the ClusterRole (and binding) that lets a single-namespace operator read its
/// own Namespace (`Rbac::Namespaced`).
pub fn namespace_reader_name(ns: &str) -> String {
    format!("iq720-iq720-operator-namespace-{ns}")
}

/// Name of the cluster-scoped RBAC objects (and ServiceAccount) in `Rbac::ClusterWide`.
pub fn cluster_rbac_name(ns: &str) -> String {
    format!("iq720-op-{ns}")
}

/// Installs the chart's RBAC for single-namespace mode (ServiceAccount, Role,
/// RoleBinding, leader-election Role) and returns a kubeconfig that authenticates as
/// that ServiceAccount (token from the TokenRequest API).
pub async fn operator_kubeconfig(cluster: &Cluster, ns: &TestNamespace) -> PathBuf {
    operator_kubeconfig_with(cluster, ns, Rbac::Namespaced).await
}

/// Like [`operator_kubeconfig`], for either RBAC mode of the chart.
pub async fn operator_kubeconfig_with(
    cluster: &Cluster,
    ns: &TestNamespace,
    rbac: Rbac,
) -> PathBuf {
    let (set, sa, kinds): (String, String, &[&str]) = match rbac {
        Rbac::Namespaced => (
            format!("watchNamespace={}", ns.name()),
            "iq720-iq720-operator".to_string(),
            &[
                "kind: ServiceAccount",
                "kind: Role\n",
                "kind: RoleBinding",
                // read access to this namespace alone (fleet kill switch label)
                "kind: ClusterRole\n",
                "kind: ClusterRoleBinding",
            ],
        ),
        Rbac::ClusterWide => (
            format!("fullnameOverride={}", cluster_rbac_name(ns.name())),
            cluster_rbac_name(ns.name()),
            &[
                "kind: ServiceAccount",
                "kind: Role\n",
                "kind: RoleBinding",
                "kind: ClusterRole\n",
                "kind: ClusterRoleBinding",
            ],
        ),
    };
    let rendered = helm_template(ns.name(), &[&set]);
    let keep: Vec<&str> = rendered
        .split("\n---")
        .filter(|doc| kinds.iter().any(|k| doc.contains(k)))
        .collect();
    assert!(
        keep.len() >= 4,
        "chart did not render the RBAC objects: {keep:?}"
    );
    if rbac == Rbac::ClusterWide {
        assert!(
            keep.iter().any(|d| d.contains("kind: ClusterRole\n")),
            "no ClusterRole rendered"
        );
    }
    apply_yaml(&cluster.client, Some(ns.name()), &keep.join("\n---\n"))
        .await
        .unwrap();
    let sa = sa.as_str();
    let api: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), ns.name());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .unwrap();
    let token = token.status.unwrap().token;
    let admin = std::fs::read_to_string(cluster.env.kubeconfig()).unwrap();
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    for user in kc["users"].as_sequence_mut().unwrap() {
        user["user"] = serde_yaml::from_str(&format!("{{token: {token}}}")).unwrap();
    }
    kc["contexts"][0]["context"]["namespace"] = ns.name().into();
    let dir = target_dir().join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("kubeconfig-{}", ns.name()));
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path
}

/// A running `iq720-operator run` process (killed on drop).
pub struct Operator {
    pub child: tokio::process::Child,
    pub metrics_addr: String,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator for one namespace with the chart's ServiceAccount.
    pub async fn start(
        kubeconfig: &std::path::Path,
        ns: &str,
        identity: &str,
        extra: &[&str],
    ) -> Self {
        let bin = workspace_binary("iq720-operator", "iq720-operator");
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let log = target_dir()
            .join("e2e")
            .join(format!("operator-{ns}-{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(bin)
            .args([
                "run",
                "--namespace",
                ns,
                "--metrics-address",
                &metrics_addr,
                "--bot-poll-interval",
                "1s",
                "--close-all-deadline",
                "5s",
                "--lease-namespace",
                ns,
                "--identity",
                identity,
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,iq720_operator=debug")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let op = Operator {
            child,
            metrics_addr,
            log,
        };
        op.wait_http("/healthz", 200).await;
        op
    }

    /// Polls an endpoint of the operator until it answers `status`.
    pub async fn wait_http(&self, path: &str, status: u16) {
        let addr = self.metrics_addr.clone();
        let path = path.to_string();
        poll_until(
            &format!("operator {path} = {status}"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let addr = addr.clone();
                let path = path.clone();
                async move {
                    match iq720_tests::http::get(&addr, &path).await {
                        Ok(r) if r.status == status => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; log: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        });
    }

    /// Current value of a metric series (sum of matching lines), 0 when absent.
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = iq720_tests::http::get(&self.metrics_addr, "/metrics")
            .await
            .map(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name_and_labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One request with a bearer token to a bot's API (`Connection: close`).
pub async fn bot_api(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let resp = iq720_tests::http::parse_response(&buf).unwrap();
    let json = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (resp.status, json)
}

/// The bot's `/metrics` (unauthenticated) as `name{labels}` → value.
pub async fn bot_metrics(addr: &str) -> std::collections::BTreeMap<String, f64> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let resp = iq720_tests::http::parse_response(&buf).unwrap();
    String::from_utf8_lossy(&resp.body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
