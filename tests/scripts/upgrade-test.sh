#!/usr/bin/env bash
# Operator upgrades finish: installs the chart on the local cluster (the operator image
# runs the workspace's iq720-operator through the node agent's image map), then forces
# rollouts with `helm upgrade --wait`, with 1 and with 2 replicas. Each must finish (a
# new pod is Ready as a standby, the old leader hands the Lease over on SIGTERM), and
# afterwards exactly one pod of the new revision leads.
#
# Runs against the cluster of $IQ720_RUN_DIR (demo-test.sh calls it on its new cluster);
# removes what it installed (the image map sends the operator image to the workspace
# binary: cluster-up.sh writes that entry).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR
source "$ROOT/tests/scripts/lib.sh"
RUN="$IQ720_RUN_DIR"
[[ -s $RUN/env ]] || die "no cluster in $RUN (start one with cluster-up.sh)"
# shellcheck disable=SC1091
source "$RUN/env"
TARGET_DIR="${CARGO_TARGET_DIR:-$IQ720_REPO/target}"
HELM="$(bash "$ROOT/tests/scripts/install-helm.sh")"
NS=iq720-upgrade
BOTS=iq720-upgrade-bots
RELEASE=up
LEASE=iq720-operator-leader
TIMEOUT=${IQ720_UPGRADE_TIMEOUT:-180}

(cd "$ROOT" && build_cluster_binaries --quiet) # what cluster-up.sh builds (no rebuild)
OPERATOR="$TARGET_DIR/debug/iq720-operator"
[[ -x $OPERATOR ]] || die "$OPERATOR missing"
map_operator_image "$RUN" "$OPERATOR" # cluster-up.sh maps it; older clusters get it here

cleanup() {
  "$HELM" uninstall "$RELEASE" --namespace "$NS" --wait --timeout 60s >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" "$BOTS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
kubectl create namespace "$BOTS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# Pods of the local node share the host's network: bind the pod IP, not 0.0.0.0:8080.
# Short lease timings keep the test quick; the rollout logic is the chart's default.
values=(--namespace "$NS" --set "watchNamespace=$BOTS" --set 'metrics.bindAddress=$(POD_IP)'
  --set leaderElection.leaseDuration=6s --set leaderElection.renewDeadline=4s
  --set leaderElection.retryPeriod=1s --skip-crds --create-namespace --wait --timeout "${TIMEOUT}s")

pods() {
  kubectl -n "$NS" get pods -l "app.kubernetes.io/instance=$RELEASE" \
    -o 'jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.labels.pod-template-hash} {.metadata.deletionTimestamp}{"\n"}{end}'
}
holder() { kubectl -n "$NS" get lease "$LEASE" -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null; }
revision_hash() {
  kubectl -n "$NS" get rs -l "app.kubernetes.io/instance=$RELEASE" \
    -o 'jsonpath={range .items[?(@.status.replicas>0)]}{.metadata.labels.pod-template-hash}{"\n"}{end}'
}
# one_new_leader WANT: WANT live pods, all of the current template, and exactly one of
# them (the Lease holder) answers /leader with 200.
one_new_leader() {
  local want=$1 hash name ip h dt leaders=0 n=0 holder_now
  hash="$(revision_hash)"
  [[ $(wc -w <<<"$hash") == 1 ]] || return 1
  holder_now="$(holder)"
  while read -r name ip h dt; do
    [[ -n $name ]] || continue
    [[ -z $dt && $h == "$hash" && -n $ip ]] || return 1
    n=$((n + 1))
    if curl -fsS --max-time 2 "http://$ip:8080/leader" >/dev/null 2>&1; then
      leaders=$((leaders + 1))
      [[ $name == "$holder_now" ]] || return 1
    fi
  done <<<"$(pods)"
  ((n == want && leaders == 1))
}

rollout() {
  local replicas=$1 round=$2 t0=$SECONDS
  log "upgrade-test: helm upgrade with $replicas replica(s), rollout $round"
  "$HELM" upgrade --install "$RELEASE" "$ROOT/charts/iq720-operator" "${values[@]}" \
    --set "replicaCount=$replicas" --set "podAnnotations.rollout=r$round" >/dev/null ||
    die "helm upgrade with $replicas replica(s) failed or did not finish within ${TIMEOUT}s"
  wait_for 60 "exactly one leader among $replicas new pod(s)" one_new_leader "$replicas" || {
    pods >&2
    echo "lease holder: $(holder)" >&2
    die "no single new leader after the rollout"
  }
  log "upgrade-test: $replicas replica(s): rollout $round finished, $(holder) leads ($((SECONDS - t0)) s)"
}

rollout 1 0 # install
rollout 1 1 # a new pod cannot lead while the old one holds the Lease: it must be Ready anyway
rollout 2 2 # scale up (no rollout of the template)
rollout 2 3
log "upgrade-test: ok"
