//! The CRDs on a real apiserver: they install, the samples apply, invalid specs are
//! rejected at admission with their CEL message, and the chart passes a server-side
//! dry run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use iq720_tests::{Cluster, TestNamespace, apply_yaml, repo_root};
use kube::discovery::Discovery;

#[tokio::test]
async fn crds_install_samples_apply_and_category_lists_all_three() {
    let cluster = Cluster::shared().await.unwrap();
    common::install_crds(&cluster).await;
    let ns = TestNamespace::new(&cluster).await.unwrap();
    let dir = repo_root().join("config/samples");
    let mut applied = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let yaml = std::fs::read_to_string(&path).unwrap();
        let objs = apply_yaml(&cluster.client, Some(ns.name()), &yaml)
            .await
            .unwrap_or_else(|e| panic!("{} does not apply: {e}", path.display()));
        applied.extend(objs.into_iter().map(|o| o.types.unwrap().kind));
    }
    for kind in ["TradingBot", "BackupSchedule", "MaintenanceWindow"] {
        assert!(
            applied.iter().any(|k| k == kind),
            "no {kind} sample applied"
        );
    }

    // `kubectl get iq720` works because all three resources are in the category
    // (polled: the apiserver's discovery document follows new CRDs with a short lag).
    let client = cluster.client.clone();
    let in_category = iq720_tests::poll_until(
        "all three kinds in discovery",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(200),
        || {
            let client = client.clone();
            async move {
                let discovery = Discovery::new(client)
                    .filter(&["trading.iq720.io"])
                    .run()
                    .await
                    .ok()?;
                let mut plurals: Vec<String> = discovery
                    .groups()
                    .flat_map(|g| g.recommended_resources())
                    .map(|(ar, _)| ar.plural)
                    .collect();
                plurals.sort();
                (plurals.len() == 3).then_some(plurals)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        in_category,
        ["backupschedules", "maintenancewindows", "tradingbots"]
    );
    // kubectl resolves the category from discovery; give it its own cache so that a
    // stale cache of an earlier cluster on the same port cannot answer.
    let cache = tempfile::tempdir().unwrap();
    let kubeconfig = cluster.env.kubeconfig();
    let nsname = ns.name().to_string();
    let text = iq720_tests::poll_until(
        "kubectl get iq720",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(500),
        || {
            let (cache, kubeconfig, nsname) = (
                cache.path().to_path_buf(),
                kubeconfig.clone(),
                nsname.clone(),
            );
            async move {
                let out = Command::new("kubectl")
                    .args(["get", "iq720", "-n", &nsname, "-o", "name", "--cache-dir"])
                    .arg(&cache)
                    .env("KUBECONFIG", &kubeconfig)
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            }
        },
    )
    .await
    .unwrap();
    for want in [
        "tradingbot.trading.iq720.io/paper-btc",
        "backupschedule.trading.iq720.io/nightly",
        "maintenancewindow.trading.iq720.io/weekly",
    ] {
        assert!(
            text.contains(want),
            "kubectl get iq720 lacks {want}: {text}"
        );
    }
    ns.delete().await.unwrap();
}

const BOT_HEADER: &str =
    "apiVersion: trading.iq720.io/v1alpha1\nkind: TradingBot\nmetadata: {name: bad}\nspec:\n";

fn bot(spec: &str) -> String {
    format!("{BOT_HEADER}{spec}")
}

#[tokio::test]
async fn invalid_specs_are_rejected_at_admission_with_their_message() {
    let cluster = Cluster::shared().await.unwrap();
    common::install_crds(&cluster).await;
    let ns = TestNamespace::new(&cluster).await.unwrap();
    let cases: Vec<(String, &str)> = vec![
        (bot("  version: \"0.1.0\"\n  pairs: []\n"), "pairs must list at least one market"),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT, BTC/USDT]\n"), "pairs must not contain the same market twice"),
        (bot("  version: \"0.1.0\"\n  pairs: [btc-usdt]\n"), "each pair must be BASE/QUOTE"),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT]\n  mode: live\n  exchange: {name: binance}\n"), "live mode requires spec.exchange.credentialsSecretRef"),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT]\n  mode: yolo\n"), "Unsupported value: \"yolo\""),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT]\n  risk: {positionRiskPercent: 150}\n"), "positionRiskPercent must be greater than 0 and at most 100"),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT]\n  risk: {maxDrawdownPercent: 0}\n"), "maxDrawdownPercent must be greater than 0"),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT]\n  risk: {maxPositions: 0}\n"), "maxPositions must be between 1 and 100"),
        (bot("  version: \"not a version\"\n  pairs: [BTC/USDT]\n"), "version must be a release"),
        (bot("  version: latest\n  pairs: [BTC/USDT]\n"), "version 'latest' is not allowed"),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT]\n  logs: {compressAfter: 7days}\n"), "must be a duration"),
        (bot("  version: \"0.1.0\"\n  pairs: [BTC/USDT]\n  marketData: {primary: {type: exchange}}\n"), "needs an endpoint"),
        (
            "apiVersion: trading.iq720.io/v1alpha1\nkind: BackupSchedule\nmetadata: {name: bad}\nspec:\n  schedule: \"0 3 * * *\"\n  destination: {bucket: b-ok, credentialsSecretRef: {name: s}}\n  retention: {keepLast: 0}\n".to_string(),
            "retention.keepLast must be at least 1",
        ),
        (
            "apiVersion: trading.iq720.io/v1alpha1\nkind: BackupSchedule\nmetadata: {name: bad}\nspec:\n  schedule: \"0 3 * * *\"\n  destination: {bucket: Bad_Bucket, credentialsSecretRef: {name: s}}\n".to_string(),
            "bucket must be 3 to 63 lowercase",
        ),
        (
            "apiVersion: trading.iq720.io/v1alpha1\nkind: MaintenanceWindow\nmetadata: {name: bad}\nspec:\n  schedule: \"0 2 * * 0\"\n  duration: two hours\n".to_string(),
            "must be a duration",
        ),
        (
            "apiVersion: trading.iq720.io/v1alpha1\nkind: MaintenanceWindow\nmetadata: {name: bad}\nspec:\n  schedule: \"0 2 * * 0\"\n  duration: 2h\n  tasks: {pruneTradeHistory: {olderThanDays: 0}}\n".to_string(),
            "olderThanDays must be at least 1",
        ),
    ];
    let mut failures = Vec::new();
    for (yaml, message) in &cases {
        match apply_yaml(&cluster.client, Some(ns.name()), yaml).await {
            Ok(_) => failures.push(format!(
                "accepted, expected rejection with {message:?}:\n{yaml}"
            )),
            Err(e) => {
                let text = e.to_string();
                if !text.contains(message) {
                    failures.push(format!("rejected with {text:?}, expected {message:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn chart_passes_server_side_dry_run() {
    let cluster = Cluster::shared().await.unwrap();
    common::install_crds(&cluster).await;
    let ns = TestNamespace::new(&cluster).await.unwrap();
    for sets in [vec![], vec!["watchNamespace=trading-dry", "replicaCount=2"]] {
        let rendered = common::helm_template(ns.name(), &sets);
        let mut child = Command::new("kubectl")
            .args(["apply", "--dry-run=server", "-f", "-"])
            .env("KUBECONFIG", cluster.env.kubeconfig())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rendered.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A Role in a namespace that does not exist is the only acceptable failure
        // (single-namespace mode targets another namespace).
        let real_errors: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("namespaces \"trading-dry\" not found"))
            .collect();
        assert!(
            real_errors.is_empty(),
            "dry run with {sets:?} failed: {stderr}"
        );
        assert!(
            stdout.contains("deployment.apps/iq720-iq720-operator created (server dry run)"),
            "{stdout}"
        );
    }
    ns.delete().await.unwrap();
}
