#!/usr/bin/env bash
# Start a real local Kubernetes cluster for tests and the demo:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler (one Go binary built
#   from k8s.io/kubernetes, see tests/controlplane), MinIO with the test bucket, and the
#   local node agent (iq720-localnode) that runs pods as local processes.
# Every component listens on free loopback ports only. Layout: tests/scripts/README.md.
#
# Idempotent: when the run dir's cluster is alive and healthy it does nothing; a
# partial or dead one is stopped and started afresh.
# Prints the env file path on stdout (source it: KUBECONFIG, S3 endpoint, ...).
#
# Usage: tests/scripts/cluster-up.sh
# Env:   IQ720_RUN_DIR (default <repo>/.run/cluster), IQ720_CACHE_DIR,
#        CARGO_TARGET_DIR (default <repo>/target),
#        KUBEBUILDER_ASSETS (optional: take kube-apiserver and etcd from there),
#        IQ720_UP_TIMEOUT (seconds for each wait, default 180),
#        IQ720_SKIP_NODE=1 (no node agent: control plane, MinIO and bucket only)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need kubectl openssl python3 setsid curl base64 flock
RUN=$IQ720_RUN_DIR
SCRIPTS=$IQ720_REPO/tests/scripts
TIMEOUT=${IQ720_UP_TIMEOUT:-180}
TARGET_DIR=${CARGO_TARGET_DIR:-$IQ720_REPO/target}
NODE_SRC=$IQ720_REPO/tests/src/bin/iq720-localnode.rs
t0=$SECONDS
# The node agent is started when its source exists, unless IQ720_SKIP_NODE=1
# (control plane alone: pods stay Pending).
with_node=false
if [[ ${IQ720_SKIP_NODE:-0} == 1 ]]; then
	warn "IQ720_SKIP_NODE=1: starting the control plane WITHOUT a node (pods stay Pending)"
elif [[ ! -f $NODE_SRC ]]; then
	warn "$NODE_SRC does not exist yet: starting the control plane WITHOUT a node (pods stay Pending)"
else
	with_node=true
fi

# ---------------------------------------------------------------- health check
apiserver_ready() { curl -fsS --max-time 5 --cacert "$RUN/pki/ca.crt" "$KUBE_URL/readyz" >/dev/null; }
etcd_ready() { curl -fsS --max-time 5 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
https_ok() { curl -fsSk --max-time 5 "https://127.0.0.1:$1/healthz" >/dev/null; }
minio_ready() { curl -fsS --max-time 5 "http://127.0.0.1:$MINIO_PORT/minio/health/ready" >/dev/null; }
node_ready() {
	[[ $(kubectl --kubeconfig "$RUN/kubeconfig" get node "$IQ720_NODE_NAME" \
		-o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
default_sa() { kubectl --kubeconfig "$RUN/kubeconfig" -n default get serviceaccount default >/dev/null 2>&1; }

components=(etcd kube-apiserver kube-controller-manager kube-scheduler minio)

healthy() {
	[[ -s $RUN/env && -s $RUN/state ]] || return 1
	# shellcheck disable=SC1091
	source "$RUN/state"
	local c
	for c in "${components[@]}"; do pid_alive "$RUN/pids/$c.pid" || return 1; done
	if $with_node; then
		pid_alive "$RUN/pids/localnode.pid" && node_ready || return 1
	fi
	apiserver_ready && etcd_ready && minio_ready && https_ok "$KCM_PORT" && https_ok "$SCHED_PORT"
}

# One cluster-up/cluster-down at a time per run dir (the lock file sits beside it, so
# --purge keeps it). cluster-down called from here is told it already holds the lock.
mkdir -p "$(dirname "$RUN")"
exec 8>"$RUN.lock"
flock 8

if healthy; then
	log "cluster in $RUN is already up and healthy"
	printf '%s\n' "$RUN/env"
	exit 0
fi
if [[ -d $RUN ]]; then
	log "run dir $RUN holds a stopped or partial cluster: stopping it and starting afresh"
	IQ720_CLUSTER_LOCKED=$RUN bash "$SCRIPTS/cluster-down.sh" --purge
fi

mkdir -p "$RUN"/{logs,pids,pki,node}
log "starting a local cluster in $RUN"

# ----------------------------------------------------------------- on failure
up_ok=false
rust_pid=
minio_build_pid=
# kill_tree PID: stop a background build of ours and everything it spawned.
kill_tree() {
	local child
	for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
	kill -TERM "$1" 2>/dev/null || true
}
on_exit() {
	$up_ok && return
	local pid
	for pid in $rust_pid $minio_build_pid; do kill_tree "$pid"; done
	warn "cluster-up failed; last lines of each component log:"
	local f
	for f in "$RUN"/logs/*.log; do
		[[ -s $f ]] || continue
		printf '\n==> %s <==\n' "$f" >&2
		tail -n 15 "$f" >&2
	done
	warn "stopping what was started (logs kept in $RUN/logs)"
	IQ720_CLUSTER_LOCKED=$RUN bash "$SCRIPTS/cluster-down.sh" >&2 || true
}
trap on_exit EXIT

# ----------------------------------------------------------------- binaries
# Rust binaries (node agent, test process, bot, operator) build in the background while the
# Go binaries are fetched or built and the control plane starts.
if $with_node; then
	need cargo
	(
		cd "$IQ720_REPO"
		build_cluster_binaries || exit 1
	) >"$RUN/logs/build-rust.log" 2>&1 8>&- &
	rust_pid=$!
fi

minio_out=$RUN/logs/build-minio.log
bash "$SCRIPTS/install-minio.sh" >"$RUN/minio-bin" 2>"$minio_out" 8>&- &
minio_build_pid=$!
CP=$(bash "$SCRIPTS/build-controlplane.sh") || die "control-plane build failed"
if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
	for b in kube-apiserver etcd; do
		[[ -x $KUBEBUILDER_ASSETS/$b ]] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b"
	done
	log "using kube-apiserver and etcd from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
	ETCD_CMD=("$KUBEBUILDER_ASSETS/etcd")
	APISERVER_CMD=("$KUBEBUILDER_ASSETS/kube-apiserver")
else
	ETCD_CMD=("$CP" etcd)
	APISERVER_CMD=("$CP" kube-apiserver)
fi

# ----------------------------------------------------------------- ports, PKI
read -r ETCD_PORT ETCD_PEER_PORT KUBE_PORT KCM_PORT SCHED_PORT MINIO_PORT MINIO_CONSOLE_PORT \
	<<<"$(free_ports 7 | tr '\n' ' ')"
KUBE_URL=https://127.0.0.1:$KUBE_PORT
ADMIN_TOKEN=$(openssl rand -hex 32)
S3_ACCESS_KEY=iq720admin
S3_SECRET_KEY=$(openssl rand -hex 20)
cat >"$RUN/state" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
KUBE_PORT=$KUBE_PORT
KUBE_URL=$KUBE_URL
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
MINIO_PORT=$MINIO_PORT
MINIO_CONSOLE_PORT=$MINIO_CONSOLE_PORT
EOF

pki=$RUN/pki
# sign NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: NAME.key/.crt signed by the CA.
sign() {
	openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$3"
		[[ -z ${4:-} ]] || echo "subjectAltName=$4"
	} >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
		-out "$1.crt" -days 3650 -extfile "$1.ext"
	rm -f "$1.csr" "$1.ext"
}
(
	set -e
	cd "$pki"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
		-subj "/CN=iq720-local-ca" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
	sign apiserver "/CN=kube-apiserver" serverAuth \
		"IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	# The apiserver's client identity towards kubelets (kubectl logs/exec via the node agent)
	# and towards aggregated API servers (front proxy).
	sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
	sign front-proxy-client "/CN=front-proxy-client" clientAuth
	openssl genrsa -out sa.key 2048
	openssl rsa -in sa.key -pubout -out sa.pub
	printf '%s,admin,admin,"system:masters"\n' "$ADMIN_TOKEN" >tokens.csv
	chmod 600 ./*.key tokens.csv
) >"$RUN/logs/pki.log" 2>&1 || die "PKI generation failed (see $RUN/logs/pki.log)"

cat >"$RUN/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: iq720-local
  cluster:
    server: $KUBE_URL
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    token: $ADMIN_TOKEN
contexts:
- name: iq720-local
  context:
    cluster: iq720-local
    user: admin
    namespace: default
current-context: iq720-local
EOF
chmod 600 "$RUN/kubeconfig"

# start NAME CMD...: run CMD in its own session/process group (so cluster-down can
# stop it with everything it spawned); log to logs/NAME.log, pid to pids/NAME.pid.
start() {
	local name=$1
	shift
	setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null 8>&- &
	echo $! >"$RUN/pids/$name.pid"
}

# ----------------------------------------------------------------- etcd
start etcd "${ETCD_CMD[@]}" \
	--name iq720 \
	--data-dir "$RUN/etcd" \
	--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster "iq720=http://127.0.0.1:$ETCD_PEER_PORT" \
	--unsafe-no-fsync \
	--log-level warn
WAIT_PIDFILE=$RUN/pids/etcd.pid wait_for "$TIMEOUT" "etcd /health" etcd_ready || die "etcd did not become healthy"
log "etcd up on 127.0.0.1:$ETCD_PORT"

# ----------------------------------------------------------------- kube-apiserver
start kube-apiserver "${APISERVER_CMD[@]}" \
	--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
	--bind-address 127.0.0.1 \
	--advertise-address 127.0.0.1 \
	--secure-port "$KUBE_PORT" \
	--cert-dir "$pki" \
	--tls-cert-file "$pki/apiserver.crt" \
	--tls-private-key-file "$pki/apiserver.key" \
	--client-ca-file "$pki/ca.crt" \
	--token-auth-file "$pki/tokens.csv" \
	--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
	--kubelet-client-key "$pki/apiserver-kubelet-client.key" \
	--requestheader-client-ca-file "$pki/ca.crt" \
	--requestheader-allowed-names front-proxy-client \
	--requestheader-username-headers X-Remote-User \
	--requestheader-group-headers X-Remote-Group \
	--requestheader-extra-headers-prefix X-Remote-Extra- \
	--proxy-client-cert-file "$pki/front-proxy-client.crt" \
	--proxy-client-key-file "$pki/front-proxy-client.key" \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-account-key-file "$pki/sa.pub" \
	--service-account-signing-key-file "$pki/sa.key" \
	--service-cluster-ip-range 10.96.0.0/16 \
	--endpoint-reconciler-type none \
	--authorization-mode Node,RBAC \
	--allow-privileged=true \
	--profiling=false
# MinIO: its install may still be running; start it as soon as it is there.
wait "$minio_build_pid" || die "MinIO install failed (see $minio_out)"
MINIO_BIN=$(<"$RUN/minio-bin")
rm -f "$RUN/minio-bin"
start minio env MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
	MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
	"$MINIO_BIN" server \
	--address "127.0.0.1:$MINIO_PORT" \
	--console-address "127.0.0.1:$MINIO_CONSOLE_PORT" \
	"$RUN/minio"

WAIT_PIDFILE=$RUN/pids/kube-apiserver.pid wait_for "$TIMEOUT" "kube-apiserver /readyz" apiserver_ready || die "kube-apiserver did not become ready"
log "kube-apiserver ready at $KUBE_URL"

# ----------------------------------------------------------------- controllers
# The controller-manager's client is rate-limited to 20 requests/s by default, which
# made it the bound of how fast many bots start (each costs a PVC and a pod create,
# a PV bind and StatefulSet status updates): `make bench-scale` measured pods created
# at about 4/s. Large clusters raise it the same way.
start kube-controller-manager "$CP" kube-controller-manager \
	--kube-api-qps 200 \
	--kube-api-burst 400 \
	--concurrent-statefulset-syncs 20 \
	--kubeconfig "$RUN/kubeconfig" \
	--authentication-kubeconfig "$RUN/kubeconfig" \
	--authorization-kubeconfig "$RUN/kubeconfig" \
	--bind-address 127.0.0.1 \
	--secure-port "$KCM_PORT" \
	--leader-elect=false \
	--service-account-private-key-file "$pki/sa.key" \
	--root-ca-file "$pki/ca.crt" \
	--use-service-account-credentials=true \
	--cluster-signing-cert-file "$pki/ca.crt" \
	--cluster-signing-key-file "$pki/ca.key" \
	--controllers '*,-nodeipam' \
	--profiling=false
start kube-scheduler "$CP" kube-scheduler \
	--kubeconfig "$RUN/kubeconfig" \
	--authentication-kubeconfig "$RUN/kubeconfig" \
	--authorization-kubeconfig "$RUN/kubeconfig" \
	--bind-address 127.0.0.1 \
	--secure-port "$SCHED_PORT" \
	--leader-elect=false \
	--profiling=false

# ----------------------------------------------------------------- MinIO bucket
WAIT_PIDFILE=$RUN/pids/minio.pid wait_for "$TIMEOUT" "MinIO /minio/health/ready" minio_ready || die "MinIO did not become ready"
S3_ENDPOINT=http://127.0.0.1:$MINIO_PORT
code=$(s3_request PUT "$S3_ENDPOINT/$IQ720_S3_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$IQ720_S3_REGION")
[[ $code == 200 || $code == 409 ]] || die "creating bucket $IQ720_S3_BUCKET failed: HTTP $code"
code=$(s3_request HEAD "$S3_ENDPOINT/$IQ720_S3_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$IQ720_S3_REGION")
[[ $code == 200 ]] || die "bucket $IQ720_S3_BUCKET is not there after creation: HTTP $code"
log "MinIO up at $S3_ENDPOINT with bucket $IQ720_S3_BUCKET"

WAIT_PIDFILE=$RUN/pids/kube-controller-manager.pid wait_for "$TIMEOUT" "kube-controller-manager /healthz" https_ok "$KCM_PORT" ||
	die "kube-controller-manager did not become healthy"
WAIT_PIDFILE=$RUN/pids/kube-scheduler.pid wait_for "$TIMEOUT" "kube-scheduler /healthz" https_ok "$SCHED_PORT" ||
	die "kube-scheduler did not become healthy"
log "kube-controller-manager and kube-scheduler healthy"

# ----------------------------------------------------------------- node agent
{
	echo "# Image map for iq720-localnode: image -> local binary (re-read at every container start)."
	echo "images:"
	if [[ -n $rust_pid ]]; then
		wait "$rust_pid" || die "building the node agent failed (see $RUN/logs/build-rust.log)"
		if [[ -x $TARGET_DIR/debug/iq720-bot ]]; then
			printf '  "ghcr.io/iq720/iq720-bot:*":\n    command: "%s"\n' "$TARGET_DIR/debug/iq720-bot"
		fi
		# The chart's operator image (any tag): `helm install` runs the workspace operator.
		if [[ -x $TARGET_DIR/debug/iq720-operator ]]; then
			printf '  "ghcr.io/iq720/iq720-operator:*":\n    command: "%s"\n' "$TARGET_DIR/debug/iq720-operator"
		fi
		if [[ -x $TARGET_DIR/debug/iq720-testproc ]]; then
			printf '  "iq720.io/testproc:latest":\n    command: "%s"\n' "$TARGET_DIR/debug/iq720-testproc"
		fi
	fi
} >"$RUN/images.yaml"
grep -q '^  "' "$RUN/images.yaml" || echo "  {}" >>"$RUN/images.yaml"
if [[ -n $rust_pid ]]; then
	start localnode "$TARGET_DIR/debug/iq720-localnode" \
		--kubeconfig "$RUN/kubeconfig" \
		--node-name "$IQ720_NODE_NAME" \
		--state-dir "$RUN/node" \
		--image-map "$RUN/images.yaml"
	WAIT_PIDFILE=$RUN/pids/localnode.pid wait_for "$TIMEOUT" "node $IQ720_NODE_NAME Ready" node_ready || die "node $IQ720_NODE_NAME did not become Ready"
	log "node $IQ720_NODE_NAME Ready"
fi

wait_for "$TIMEOUT" "ServiceAccount default/default" default_sa || die "the default ServiceAccount did not appear"

# ----------------------------------------------------------------- env file
cat >"$RUN/env.tmp" <<EOF
export KUBECONFIG=$RUN/kubeconfig
export IQ720_RUN_DIR=$RUN
export IQ720_S3_ENDPOINT=$S3_ENDPOINT
export IQ720_S3_BUCKET=$IQ720_S3_BUCKET
export IQ720_S3_ACCESS_KEY=$S3_ACCESS_KEY
export IQ720_S3_SECRET_KEY=$S3_SECRET_KEY
export IQ720_S3_REGION=$IQ720_S3_REGION
export IQ720_IMAGE_MAP=$RUN/images.yaml
export IQ720_NODE_NAME=$IQ720_NODE_NAME
export IQ720_KUBE_APISERVER=$KUBE_URL
EOF
mv -f "$RUN/env.tmp" "$RUN/env"
up_ok=true
log "cluster up in $((SECONDS - t0))s (source $RUN/env)"
printf '%s\n' "$RUN/env"
