#!/usr/bin/env bash
# `make bench-scale N=1000`: one operator, N TradingBots, on a new local cluster in its
# own run dir (never the dev cluster at .run/cluster), then torn down.
#
# Measures (iq720-bench-scale, tests/src/bin/iq720-bench-scale.rs): converge time from
# the end of the apply to all N bots Running with figures, stage by stage (operator ->
# kube-controller-manager -> kube-scheduler -> node agent -> operator) and the CPU of
# every component, to say which one bounds it; the operator's RSS (/proc, peak and
# steady); its CPU while polling N bots; the status write rate of N running bots; and
# the write requests of N idle (paused) bots, counted by the apiserver's own
# apiserver_request_total by verb and resource.
#
# Every bot is a real release iq720-bot process (about 10 MiB RSS each), run by the
# node agent (release build, --max-pods raised to N); the operator is the release build.
#
# Env: N (default 1000), RUN_SECONDS (running-bots window, default 180),
#      IDLE_SECONDS (idle window, default 600), SETTLE_SECONDS (default 30),
#      CONVERGE_TIMEOUT (default 900), BENCH_OUT (report dir, default <repo>/.run/bench-scale),
#      IQ720_BENCH_KEEP=1 keeps the cluster running afterwards,
#      IQ720_BENCH_NO_BUILD=1 uses the release binaries already built (no cargo build),
#      PROFILE=debug runs the debug builds instead (a quick look: slower and larger
#      than release; never the README's release figures).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SCRIPTS="$ROOT/tests/scripts"
N=${N:-1000}
RUN_SECONDS=${RUN_SECONDS:-180}
IDLE_SECONDS=${IDLE_SECONDS:-600}
SETTLE_SECONDS=${SETTLE_SECONDS:-30}
CONVERGE_TIMEOUT=${CONVERGE_TIMEOUT:-900}
BENCH_OUT=${BENCH_OUT:-$ROOT/.run/bench-scale}
BASE="$(mktemp -d "${TMPDIR:-/tmp}/iq720-bench-scale.XXXXXX")"
export IQ720_RUN_DIR="$BASE/cluster"
RUN="$IQ720_RUN_DIR"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE=${PROFILE:-release}
REL="$TARGET_DIR/$PROFILE"
NS=iq720-bench
OPNS=iq720-system
# shellcheck source-path=SCRIPTDIR
source "$SCRIPTS/lib.sh"
need kubectl curl python3 getconf
[[ $N =~ ^[0-9]+$ ]] && ((N > 0)) || die "N must be a positive number, not '$N'"
[[ $PROFILE == release || $PROFILE == debug ]] || die "PROFILE is release or debug, not '$PROFILE'"

# Real bots only: refuse up front when N of them (about 10 MiB each, 16 MiB budgeted)
# cannot fit in the memory available now.
avail_mib=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
((N * 16 + 2048 < avail_mib)) ||
  die "N=$N real bots need about $((N * 16 + 2048)) MiB; only $avail_mib MiB available"
# Disk: each bot's volume and logs (~2.5 MiB), etcd (~400 MiB at N=1000), 2 GiB spare.
free_mib=$(df -Pm "$BASE" | awk 'NR == 2 {print $4}')
((N * 3 + 2048 < free_mib)) ||
  die "N=$N bots need about $((N * 3 + 2048)) MiB of disk in $BASE; only $free_mib MiB free"
# Each bot is a process with a handful of threads and open files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

finish() {
  local status=$?
  # The operator stops first (SIGTERM, up to 15 s), so its log ends with its shutdown
  # and whatever it prints at exit (jemalloc's statistics with
  # `_RJEM_MALLOC_CONF=stats_print:true`: how much of the RSS is live heap).
  local op_pid
  op_pid=$(cat "$RUN/pids/operator.pid" 2>/dev/null || true)
  if [[ ${IQ720_BENCH_KEEP:-0} != 1 && $op_pid =~ ^[0-9]+$ ]] && kill -TERM "$op_pid" 2>/dev/null; then
    for _ in $(seq 150); do kill -0 "$op_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # The operator's log stays with the report: with the cache's debug lines it says
  # why each owned object was applied (the idle-write figure's evidence).
  [[ -s $RUN/logs/operator.log ]] && mkdir -p "$BENCH_OUT" &&
    gzip -c "$RUN/logs/operator.log" >"$BENCH_OUT/operator-N$N.log.gz"
  if [[ ${IQ720_BENCH_KEEP:-0} == 1 ]]; then
    log "bench-scale: cluster kept running: source $RUN/env"
    exit "$status"
  fi
  if ((status != 0)); then
    for f in "$RUN/logs/operator.log" "$RUN/logs/localnode.log"; do
      [[ -s $f ]] && { printf '\n==> %s <==\n' "$f" >&2; tail -n 30 "$f" >&2; }
    done
  fi
  log "bench-scale: tearing down (stops the operator, then $N bots, then the control plane)"
  if ((status == 0)); then
    bash "$SCRIPTS/cluster-down.sh" --purge >&2 || true
    rm -rf "$BASE"
  else
    bash "$SCRIPTS/cluster-down.sh" >&2 || true
    warn "bench-scale failed; logs kept in $RUN/logs"
  fi
  exit "$status"
}
trap finish EXIT

log "bench-scale: N=$N, run dir $RUN"
if [[ ${IQ720_BENCH_NO_BUILD:-0} != 1 ]]; then
  log "bench-scale: building $PROFILE binaries"
  profile_flag=()
  [[ $PROFILE == release ]] && profile_flag=(--release)
  # The package set of build_cluster_binaries (lib.sh): a debug build then reuses
  # what the test cluster built.
  (cd "$ROOT" && cargo build --quiet "${profile_flag[@]}" --locked \
    -p iq720-tests -p iq720-bot -p iq720-operator \
    --bin iq720-localnode --bin iq720-testproc --bin iq720-bot --bin iq720-operator \
    --bin iq720-bench-scale)
fi
for b in iq720-operator iq720-bot iq720-localnode iq720-bench-scale; do
  [[ -x $REL/$b ]] || die "$REL/$b is missing (run without IQ720_BENCH_NO_BUILD)"
done

# Control plane and MinIO only; the node agent is started below in its release build,
# with room for N pods and an image map pointing at the release bot.
IQ720_SKIP_NODE=1 bash "$SCRIPTS/cluster-up.sh" >/dev/null
# shellcheck disable=SC1091
source "$RUN/env"

cat >"$RUN/images.yaml" <<EOF
images:
  "ghcr.io/iq720/iq720-bot:*":
    command: "$REL/iq720-bot"
EOF
setsid "$REL/iq720-localnode" --kubeconfig "$RUN/kubeconfig" --node-name "$IQ720_NODE_NAME" \
  --state-dir "$RUN/node" --image-map "$RUN/images.yaml" --max-pods $((N + 20)) \
  >"$RUN/logs/localnode.log" 2>&1 </dev/null &
echo $! >"$RUN/pids/localnode.pid"
node_ready() {
  [[ $(kubectl get node "$IQ720_NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
WAIT_PIDFILE=$RUN/pids/localnode.pid wait_for 120 "node $IQ720_NODE_NAME Ready" node_ready ||
  die "the node agent did not become Ready"

# CRDs and the chart's RBAC for one watched namespace (as `make demo` does).
established() {
  [[ $(kubectl get crd "$1" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]]
}
kubectl apply --server-side -f "$ROOT/charts/iq720-operator/crds/" >/dev/null
for crd in tradingbots.trading.iq720.io backupschedules.trading.iq720.io maintenancewindows.trading.iq720.io; do
  wait_for 60 "CRD $crd to be established" established "$crd" || die "CRD $crd not established"
done
for ns in "$NS" "$OPNS"; do kubectl create namespace "$ns" >/dev/null; done
HELM="$(bash "$SCRIPTS/install-helm.sh")"
"$HELM" template iq720 "$ROOT/charts/iq720-operator" --namespace "$OPNS" --kube-version 1.34.4 \
  --set watchNamespace="$NS" --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml |
  kubectl apply -f - >/dev/null
OPCFG="$RUN/operator-kubeconfig"
cp "$RUN/kubeconfig" "$OPCFG"
TOKEN="$(kubectl -n "$OPNS" create token iq720-iq720-operator --duration 24h)"
kubectl --kubeconfig "$OPCFG" config set-credentials admin --token="$TOKEN" >/dev/null

# The operator with its defaults (poll every 10 s, figures to the status at most every
# 60 s, 32 concurrent reconciles); one replica, so no leader-election Lease writes.
PORT=$(free_ports 1)
# RUST_LOG: the cache's debug lines say why an owned object is applied (one line per
# apply, none while nothing changes).
POD_NAMESPACE=$OPNS RUST_LOG=${RUST_LOG:-info,iq720_operator::shared::cache=debug} \
  setsid "$REL/iq720-operator" run --kubeconfig "$OPCFG" \
  --namespace "$NS" --metrics-address "127.0.0.1:$PORT" \
  >"$RUN/logs/operator.log" 2>&1 </dev/null &
echo $! >"$RUN/pids/operator.pid"
answers() { curl -fsS "http://127.0.0.1:$PORT$1" >/dev/null 2>&1; }
WAIT_PIDFILE=$RUN/pids/operator.pid wait_for 60 "operator /readyz" answers /readyz ||
  die "the operator did not become ready"

pid() { cat "$RUN/pids/$1.pid"; }
mkdir -p "$BENCH_OUT"
report="$BENCH_OUT/report-N$N.md"
log "bench-scale: applying $N TradingBots and measuring (report: $report)"
"$REL/iq720-bench-scale" --kubeconfig "$RUN/kubeconfig" --namespace "$NS" --count "$N" \
  --operator-pid "$(pid operator)" --operator-metrics "127.0.0.1:$PORT" \
  --component "kube-apiserver=$(pid kube-apiserver)" \
  --component "kube-controller-manager=$(pid kube-controller-manager)" \
  --component "kube-scheduler=$(pid kube-scheduler)" \
  --component "etcd=$(pid etcd)" \
  --component "node-agent=$(pid localnode)" \
  --bot-exe "$REL/iq720-bot" --clk-tck "$(getconf CLK_TCK)" \
  --converge-timeout "$CONVERGE_TIMEOUT" --run-seconds "$RUN_SECONDS" \
  --idle-seconds "$IDLE_SECONDS" --settle-seconds "$SETTLE_SECONDS" --out "$report"
{
  echo
  echo "command: make bench-scale N=$N RUN_SECONDS=$RUN_SECONDS IDLE_SECONDS=$IDLE_SECONDS PROFILE=$PROFILE"
  echo "machine: $(nproc) cores, $(awk '/^MemTotal:/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >>"$report"
log "bench-scale: done; report in $report"
