//! Test harness: find (or start) the local cluster, per-test namespaces, server-side
//! apply of YAML, waiting, pod logs, S3 and tiny HTTP helpers.

pub mod apiserver_metrics;
pub mod apply;
pub mod cluster;
pub mod error;
pub mod http;
pub mod logs;
pub mod minio;
pub mod namespace;
pub mod s3;
pub mod wait;
