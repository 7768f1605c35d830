//! Leader election and readiness of the operator against the real apiserver.
//!
//! Real operator processes in their own namespace, with the Helm chart's RBAC (so the
//! chart's Lease Role is proven sufficient). What is checked: a standby is Ready but
//! not the leader (a one-replica rolling update can finish); a clean shutdown hands the
//! Lease over at once; expiry is judged by when this replica saw the Lease change, not
//! by the holder's `renewTime` (a clock far in the future does not block a takeover, a
//! clock in the past does not depose a holder that keeps renewing); a leader that
//! cannot renew exits before a standby takes over.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::Operator;
use iq720_tests::{Cluster, TestNamespace, poll_until};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

const LEASE: &str = "iq720-operator-leader";
/// Lease 4 s, renew deadline 2.66 s (two thirds), retry 0.5 s.
const ELECTION: [&str; 5] = [
    "--leader-election",
    "--lease-duration",
    "4s",
    "--lease-renew-every",
    "500ms",
];
const LEASE_DURATION: Duration = Duration::from_secs(4);

struct Env {
    cluster: Cluster,
    ns: TestNamespace,
    /// Authenticates as the chart's ServiceAccount (namespaced Role + Lease Role).
    kubeconfig: std::path::PathBuf,
}

async fn env() -> Env {
    let cluster = Cluster::shared().await.unwrap();
    common::install_crds(&cluster).await;
    let ns = TestNamespace::with_prefix(&cluster, "iq720-le")
        .await
        .unwrap();
    let kubeconfig = common::operator_kubeconfig(&cluster, &ns).await;
    Env {
        cluster,
        ns,
        kubeconfig,
    }
}

async fn status(op: &Operator, path: &str) -> Option<u16> {
    iq720_tests::http::get(&op.metrics_addr, path)
        .await
        .ok()
        .map(|r| r.status)
}

/// Polls every 50 ms until `path` answers `want`; returns when it did.
async fn until_status(op: &Operator, path: &str, want: u16, timeout: Duration) -> Instant {
    poll_until(
        &format!("{path} = {want}"),
        timeout,
        Duration::from_millis(50),
        || async move { (status(op, path).await == Some(want)).then(Instant::now) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", op.log_text()))
}

async fn holder(e: &Env) -> Option<String> {
    Api::<Lease>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get_opt(LEASE)
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

fn ts(secs: i64) -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

/// Writes the Lease as a foreign holder `ghost` would: renewTime `renew`, 3 s lease.
async fn ghost_writes(e: &Env, renew: MicroTime) {
    let api: Api<Lease> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let spec = LeaseSpec {
        holder_identity: Some("ghost".into()),
        lease_duration_seconds: Some(3),
        renew_time: Some(renew),
        acquire_time: Some(ts(0)),
        ..LeaseSpec::default()
    };
    match api.get_opt(LEASE).await.unwrap() {
        Some(mut l) => {
            l.spec = Some(spec);
            api.replace(LEASE, &PostParams::default(), &l)
                .await
                .unwrap();
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &l).await.unwrap();
        }
    }
}

fn sigterm(op: &Operator) {
    let pid = i32::try_from(op.child.id().unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

#[tokio::test]
async fn a_standby_is_ready_and_a_clean_shutdown_hands_over_at_once() {
    let e = env().await;
    let a = Operator::start(&e.kubeconfig, e.ns.name(), "le-a", &ELECTION).await;
    until_status(&a, "/leader", 200, Duration::from_secs(30)).await;
    assert_eq!(a.metric("iq720_operator_leader").await, 1.0);
    let b = Operator::start(&e.kubeconfig, e.ns.name(), "le-b", &ELECTION).await;
    // Ready while standing by: this is what lets a one-replica rolling update finish.
    until_status(&b, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(status(&b, "/leader").await, Some(503), "b must stand by");
    assert_eq!(b.metric("iq720_operator_leader").await, 0.0);
    assert_eq!(status(&a, "/readyz").await, Some(200));
    assert_eq!(holder(&e).await.as_deref(), Some("le-a"));

    // SIGTERM (what a rolling update sends): a finishes and releases the Lease, so b
    // leads within a retry period or two, long before the Lease could expire.
    let t0 = Instant::now();
    sigterm(&a);
    let took = until_status(&b, "/leader", 200, Duration::from_secs(20)).await - t0;
    println!(
        "BENCH leader-handover-on-sigterm: {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took < LEASE_DURATION - Duration::from_secs(1),
        "handover took {took:?}: the Lease was not released"
    );
    assert_eq!(holder(&e).await.as_deref(), Some("le-b"));
    assert_eq!(b.metric("iq720_operator_leader").await, 1.0);
    let mut a = a;
    let exit = tokio::time::timeout(Duration::from_secs(20), a.child.wait())
        .await
        .expect("a exits after SIGTERM")
        .unwrap();
    assert!(
        exit.success(),
        "a clean shutdown exits 0: {exit:?}\n{}",
        a.log_text()
    );
    e.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_holder_clock_far_in_the_future_does_not_block_a_takeover() {
    let e = env().await;
    // a dead holder whose clock ran 75 years ahead
    ghost_writes(&e, ts(4_102_444_800)).await;
    let t0 = Instant::now();
    let c = Operator::start(&e.kubeconfig, e.ns.name(), "le-c", &ELECTION).await;
    let took = until_status(&c, "/leader", 200, Duration::from_secs(30)).await - t0;
    assert!(
        took >= Duration::from_secs(3),
        "took over after {took:?}, before the record was 3 s old"
    );
    assert_eq!(holder(&e).await.as_deref(), Some("le-c"));
    e.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_renewing_holder_with_a_clock_in_the_past_is_not_deposed() {
    let e = env().await;
    ghost_writes(&e, ts(0)).await;
    let d = Operator::start(&e.kubeconfig, e.ns.name(), "le-d", &ELECTION).await;
    until_status(&d, "/readyz", 200, Duration::from_secs(30)).await;
    // ghost keeps renewing (every write changes the resourceVersion) with a clock stuck
    // in 1970, for three lease durations; d must stand by throughout
    let until = Instant::now() + 3 * LEASE_DURATION;
    let mut n = 1;
    while Instant::now() < until {
        ghost_writes(&e, ts(n)).await;
        n += 1;
        assert_eq!(
            status(&d, "/leader").await,
            Some(503),
            "deposed a holder that renews\n{}",
            d.log_text()
        );
        assert_eq!(holder(&e).await.as_deref(), Some("ghost"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ghost stops renewing: d takes over once the record is 3 s old
    let t0 = Instant::now();
    let took = until_status(&d, "/leader", 200, Duration::from_secs(30)).await - t0;
    assert!(
        took >= Duration::from_millis(2500),
        "took over after {took:?}"
    );
    e.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_leader_that_cannot_renew_exits_before_a_standby_takes_over() {
    let e = env().await;
    let mut a = Operator::start(&e.kubeconfig, e.ns.name(), "le-a", &ELECTION).await;
    until_status(&a, "/leader", 200, Duration::from_secs(30)).await;
    // the standby authenticates as the admin, so it keeps its access
    let b = Operator::start(&e.cluster.env.kubeconfig(), e.ns.name(), "le-b", &ELECTION).await;
    until_status(&b, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(status(&b, "/leader").await, Some(503));

    // Revoke the leader's access to its Lease: every renewal now fails (403).
    let bindings: Api<RoleBinding> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let name = bindings
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|rb| rb.metadata.name)
        .find(|n| n.ends_with("-leader-election"))
        .expect("the chart's leader-election RoleBinding");
    let revoked = Instant::now();
    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();

    // Watch both at once from the revocation on: when a exits, when b leads.
    let a_exits = async {
        let exit = tokio::time::timeout(Duration::from_secs(20), a.child.wait())
            .await
            .expect("a leader that cannot renew must exit")
            .unwrap();
        (exit, Instant::now())
    };
    let b_leads = until_status(&b, "/leader", 200, Duration::from_secs(30));
    let ((exit, exited), took_over) = tokio::join!(a_exits, b_leads);
    println!(
        "BENCH leader-stop-vs-takeover: a exited {:.2} s, b led {:.2} s after the revocation",
        (exited - revoked).as_secs_f64(),
        (took_over - revoked).as_secs_f64()
    );
    assert!(!exit.success(), "losing the lease is a failure exit");
    assert!(
        a.log_text().contains("renew"),
        "the log says why:\n{}",
        a.log_text()
    );
    // within its renew deadline (2.67 s) plus one retry, i.e. inside the lease duration
    assert!(
        exited - revoked < LEASE_DURATION,
        "a acted for {:?} after its last possible renewal",
        exited - revoked
    );
    assert!(
        exited < took_over,
        "the standby took over before the old leader stopped"
    );
    assert_eq!(holder(&e).await.as_deref(), Some("le-b"));
    e.ns.delete().await.unwrap();
}
