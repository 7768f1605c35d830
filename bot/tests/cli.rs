//! Command-line behaviour: config errors name the field, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cli, config_yaml};

fn run_with(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    let (code, _, err) = cli(&["check-config", "--config", p.to_str().unwrap()]);
    let (run_code, _, run_err) = cli(&[
        "run",
        "--config",
        p.to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--log-dir",
        dir.path().join("l").to_str().unwrap(),
    ]);
    assert_eq!(
        code, run_code,
        "check-config and run agree: {err} / {run_err}"
    );
    (run_code, run_err)
}

#[test]
fn invalid_config_exits_non_zero_naming_the_field() {
    for (overrides, field) in [
        ("risk: {maxPositions: 0}", "risk.maxPositions"),
        ("risk: {maxPositions: many}", "risk.maxPositions"),
        ("risk: {maxPosition: 3}", "maxPosition"),
        ("pairs: []", "pairs"),
        ("mode: live", "mode"),
        ("strategy: {name: moon}", "strategy.name"),
        ("marketData: {tickRate: 0}", "marketData.tickRate"),
        (
            "logs: {compressAfter: 10d, deleteAfter: 5d}",
            "logs.deleteAfter",
        ),
    ] {
        let (code, err) = run_with(&config_yaml(overrides));
        assert_eq!(code, 2, "{overrides}: {err}");
        assert!(
            err.contains(field),
            "{overrides}: stderr `{err}` should name `{field}`"
        );
    }
    let (code, err) = run_with("risk: {}\n");
    assert_eq!(code, 2);
    assert!(err.contains("pairs"), "{err}");
    let (code, err) = run_with(": : not yaml [");
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(&["run", "--config", "/nonexistent/iq720.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/iq720.yaml"), "{err}");
}

#[test]
fn valid_config_round_trips_and_version_prints() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, config_yaml("")).unwrap();
    let (code, out, err) = cli(&["check-config", "--config", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("maxPositions: 3"), "{out}");
    let (code, out, _) = cli(&["version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("iq720-bot "));
    let (code, _, err) = cli(&["verify-backup", "/nonexistent.tar.gz"]);
    assert_eq!(code, 1);
    assert!(err.contains("nonexistent"), "{err}");
}

#[test]
fn port_in_use_fails_cleanly() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, config_yaml("")).unwrap();
    let (code, _, err) = cli(&[
        "run",
        "--config",
        p.to_str().unwrap(),
        "--listen-addr",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--log-dir",
        dir.path().join("l").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen"), "{err}");
}
