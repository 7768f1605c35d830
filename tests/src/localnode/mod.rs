//! `iq720-localnode`: a kubelet whose container runtime is "exec a local binary".
//!
//! It registers a Node (InternalIP 127.0.0.1, Hostname `localhost`, kubelet v1.34.4),
//! renews its Lease in `kube-node-lease` and its status every 10 s, creates the default
//! StorageClass `local-dir` and provisions hostPath PVs for it under
//! `<state>/volumes/pvc-<uid>` (deleted with their directory when released; the claim
//! is bound by the provisioner, see [`storage`]), and runs
//! the containers of the pods bound to it as local processes. The contract with the
//! cluster scripts is in `tests/scripts/README.md`.
//!
//! How a container runs:
//! - **Image → binary**: the image map (YAML, re-read at every start, see
//!   [`image_map`]). argv = mapped `args` + container `command` (its first element is
//!   dropped when its file name equals the binary's) + container `args`. An image that is
//!   not mapped waits with `ErrImagePull`/`ImagePullBackOff`.
//! - **Process**: own process group, stdout+stderr appended to
//!   `<state>/pods/<uid>/logs/<container>.log`, pid in `<state>/pods/<uid>/pids/<container>`
//!   and in `containerID` (`iq720://<pid>`), cwd `<state>/pods/<uid>/containers/<name>`
//!   (or `workingDir` when it lies in a mount), parent-death signal via `setpriv` so no
//!   process outlives the agent. Stop = SIGTERM to the group, grace, SIGKILL.
//! - **Network**: every pod gets its own loopback IP 127.1.x.y (`status.podIP`, env
//!   `IQ720_POD_IP`); pods share the host's network namespace, so programs must bind to
//!   their pod IP (or a port nobody else uses), not `0.0.0.0:<common port>`.
//!   `KUBERNETES_SERVICE_HOST/PORT` point at the real apiserver.
//! - **Volumes**: configMap, secret, downwardAPI, projected (incl. the default
//!   kube-api-access token via TokenRequest), emptyDir, hostPath and PVCs become
//!   directories under `<state>/pods/<uid>/volumes/` (PVCs: the PV's hostPath).
//!   Generated volumes are re-synced every 3 s from watched ConfigMaps and Secrets
//!   ([`objects`]) and swapped atomically (`..data`
//!   symlink, like the kubelet), with `defaultMode`/`items[].mode`.
//!   They reach the process two ways: (1) when the agent runs as root with `unshare`
//!   (checked once; `IQ720_LOCALNODE_MOUNT_NAMESPACES=0` disables it), each container
//!   gets a private mount namespace with every volume bind-mounted at its `mountPath`
//!   (mount points are created on the host file system, empty); (2) always, every env
//!   value, command element and argument that starts with a mount path (or is
//!   `--flag=<mount path>...`) is rewritten to the real directory. Without (1), paths
//!   a program reads from a config file or hard-codes are not rewritten.
//! - **Service account**: the default `kube-api-access` projection (token from the
//!   TokenRequest API, `ca.crt` from the `kube-root-ca.crt` ConfigMap, `namespace`) is
//!   mounted at `/var/run/secrets/kubernetes.io/serviceaccount` in the container's mount
//!   namespace and `KUBERNETES_SERVICE_HOST/PORT` name the apiserver, so in-cluster
//!   clients (kube-rs `Client::try_default()`, client-go, kubectl) act as the pod's
//!   ServiceAccount exactly as on a kubelet. Only without mount namespaces does such a
//!   container get `KUBECONFIG` (unless it sets one) pointing at a kubeconfig that uses
//!   the mounted token and CA at their real paths.
//! - **Env**: `value`, `valueFrom` (fieldRef, resourceFieldRef, configMapKeyRef,
//!   secretKeyRef, with `optional`), `envFrom` with prefix, `$(VAR)` expansion in env,
//!   command and args (`$$` escapes), image-map env as defaults.
//! - **Probes**: startup, liveness, readiness with httpGet (HTTP only), tcpSocket and
//!   exec (run in the container's mount namespace); thresholds, periods, timeouts.
//!   Liveness/startup failure restarts the container.
//! - **Restarts**: restartPolicy Always/OnFailure/Never; back-off 0 s, 10 s, 20 s ...
//!   5 min (`CrashLoopBackOff`), reset after 10 min of running. Init containers run one
//!   by one before the app containers (no sidecars).
//! - **Status**: phase, conditions (PodScheduled, PodReadyToStartContainers,
//!   Initialized, ContainersReady, Ready), container statuses with state/lastState,
//!   written with a merge patch to `pods/status` only when it changed.
//! - **Deletion**: on `deletionTimestamp` SIGTERM → grace → SIGKILL, then delete with
//!   grace 0 and a uid precondition. On SIGTERM to the agent every pod is stopped (grace
//!   capped at 10 s) and the pod objects are left as they are.
//! - **kubectl logs**: a kubelet API on 127.0.0.1 (TLS, self-signed, no client auth)
//!   serves `/containerLogs` (follow, tailLines, limitBytes); exec/attach/port-forward
//!   are not supported.
//! - **Scheduler race**: a pod the scheduler leaves `Unschedulable` on "unbound
//!   immediate PersistentVolumeClaims" after its claims got bound is bound to this node
//!   by the agent after 5 s ([`rescue`]).
//!
//! Not supported: container image changes of a running pod (delete the pod), resource
//! limits, security contexts, sidecar init containers, ephemeral containers, DNS,
//! Services (no kube-proxy: talk to pod IPs).

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
