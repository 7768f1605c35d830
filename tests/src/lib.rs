//! Test harness for the IQ-720 operator, and the local node agent.
//!
//! - [`harness`]: find or start the local cluster ([`Cluster::shared`]), a namespace per
//!   test ([`TestNamespace`]), server-side apply of YAML ([`apply_yaml`]), waits
//!   ([`wait_for_condition`], [`poll_until`]), pod logs, S3 and HTTP helpers.
//! - [`localnode`]: the `iq720-localnode` agent that runs pods as local processes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iq720_tests::HarnessError> {
//! use iq720_tests::{Cluster, TestNamespace, apply_yaml};
//! let cluster = Cluster::shared().await?;
//! let ns = TestNamespace::new(&cluster).await?;
//! apply_yaml(&cluster.client, Some(ns.name()), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").await?;
//! # Ok(()) }
//! ```

pub mod harness;
pub mod localnode;

/// Selects rustls' `ring` crypto provider for the process. Both `ring` (kube) and
/// `aws-lc-rs` (aws-sdk-s3) are linked, so rustls cannot pick one by itself; call this
/// before building any TLS client (the harness and the node agent do). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use harness::apply::{apply_yaml, parse_documents};
pub use harness::cluster::{Cluster, ClusterEnv, FIELD_MANAGER, repo_root, run_dir};
pub use harness::error::HarnessError;
pub use harness::http;
pub use harness::logs::{container_pid, log_path, pid_alive, pod_ip, pod_log};
pub use harness::minio::{PrivateMinio, ThrottledRelay, minio_binary, multipart_uploads};
pub use harness::namespace::TestNamespace;
pub use harness::s3::{delete_object, get_object, list_keys, put_object, s3_bucket, s3_client};
pub use harness::wait::{pod_phase, pod_ready, poll_until, wait_for_condition, wait_for_deletion};
