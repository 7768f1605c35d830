//! `iq720-localnode`: a kubelet whose container runtime is "exec a local binary".
//!
//! It registers a Node, keeps its Lease and status fresh, provisions hostPath volumes
//! for the `local-dir` StorageClass and runs the containers of the pods bound to it as
//! local processes (one process group each), mapping images to binaries with the image
//! map. See `tests/scripts/README.md` for the contract with the cluster scripts.

pub mod agent;
pub mod atomic_writer;
pub mod backoff;
pub mod container;
pub mod context;
pub mod downward;
pub mod env;
pub mod error;
pub mod expansion;
pub mod image_map;
pub mod ipam;
pub mod kubelet_api;
pub mod launch;
pub mod mount_paths;
pub mod node;
pub mod objects;
pub mod pod_status;
pub mod pod_worker;
pub mod probes;
pub mod process;
pub mod rescue;
pub mod storage;
pub mod volumes;
