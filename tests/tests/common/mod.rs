//! Helpers shared by the CRD/admission and operator e2e tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

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

/// Builds (if needed) and returns the path of a workspace binary.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(repo_root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let path = target_dir().join("debug").join(bin);
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
