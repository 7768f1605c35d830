#!/usr/bin/env bash
# `make demo`: local cluster, then the operator installed the way its users install it —
# `helm upgrade --install` of charts/iq720-operator into iq720-system (CRDs from the
# chart, the Deployment's pod run by the local node agent, in-cluster config from its
# projected ServiceAccount token) — and the paper-trading sample bot.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export IQ720_RUN_DIR="${IQ720_RUN_DIR:-$ROOT/.run/cluster}"
RUN="$IQ720_RUN_DIR"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
NS=iq720-system
RELEASE=iq720
DEPLOY=iq720-iq720-operator # the chart's fullname for release iq720
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# shellcheck source-path=SCRIPTDIR
source "$ROOT/tests/scripts/lib.sh" # wait_for: poll with a deadline

say "starting the local cluster (first run builds Kubernetes from Go modules: 10-25 min)"
bash "$ROOT/tests/scripts/cluster-up.sh"
# shellcheck disable=SC1091
source "$RUN/env"

say "building the operator and the bot"
(cd "$ROOT" && build_cluster_binaries --quiet) # what cluster-up.sh builds (no rebuild)
OPERATOR="$TARGET_DIR/debug/iq720-operator"
[[ -x $OPERATOR ]] || die "$OPERATOR missing"
# The chart's image ghcr.io/iq720/iq720-operator:<appVersion> runs this binary on the node.
map_operator_image "$RUN" "$OPERATOR"
HELM="$(bash "$ROOT/tests/scripts/install-helm.sh")"

# A demo operator of an earlier version of this script ran as a local process with the
# chart's RBAC applied by `kubectl apply`: stop it (SIGTERM: it finishes its reconciles
# and releases the Lease), and let Helm adopt those objects.
group_gone() { ! kill -0 -- "-$1" 2>/dev/null; }
if [[ -s $RUN/pids/operator.pid ]] && kill -0 "$(<"$RUN/pids/operator.pid")" 2>/dev/null; then
  old="$(<"$RUN/pids/operator.pid")"
  kill -TERM -- "-$old" 2>/dev/null || true
  wait_for 30 "the previous local operator to exit" group_gone "$old" || kill -KILL -- "-$old" 2>/dev/null || true
fi
rm -f "$RUN/pids/operator.pid"
if ! "$HELM" status "$RELEASE" --namespace "$NS" >/dev/null 2>&1; then
  "$HELM" template "$RELEASE" "$ROOT/charts/iq720-operator" --namespace "$NS" --kube-version 1.34.4 \
    --set watchNamespace=default --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml |
    kubectl get -f - --ignore-not-found -o 'jsonpath={range .items[*]}{.kind} {.metadata.name} {.metadata.namespace}{"\n"}{end}' 2>/dev/null |
    while read -r kind name ns; do
      [[ -n $name ]] || continue
      kubectl ${ns:+-n "$ns"} annotate --overwrite "$kind/$name" \
        "meta.helm.sh/release-name=$RELEASE" "meta.helm.sh/release-namespace=$NS" >/dev/null
      kubectl ${ns:+-n "$ns"} label --overwrite "$kind/$name" app.kubernetes.io/managed-by=Helm >/dev/null
    done || true # nothing to adopt on a new cluster
fi

# established CRD: true once the apiserver serves the CRD. Polled, because a CRD that was
# created a moment ago has no status yet, and `kubectl wait --for condition=established`
# then fails outright (".status.conditions accessor error: <nil>") instead of waiting.
established() {
  [[ $(kubectl get crd "$1" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]]
}
CRDS=(tradingbots.trading.iq720.io backupschedules.trading.iq720.io maintenancewindows.trading.iq720.io)
# Helm installs the chart's crds/ only when they are missing and never upgrades them; on
# a cluster that has them, update them first, as the README says for upgrades.
if kubectl get crd "${CRDS[@]}" >/dev/null 2>&1; then
  say "updating the CRDs (helm never upgrades crds/)"
  kubectl apply --server-side --force-conflicts -f "$ROOT/charts/iq720-operator/crds/" >/dev/null
fi

say "helm install: the operator chart into $NS (watching namespace default)"
# Single-namespace mode (the demo bot lives in `default`), so that the demo operator never
# touches the namespaces of tests run against the same cluster. Pods of the local node
# share the host's network: the operator binds its pod IP (status.podIP via the downward
# API), not 0.0.0.0:8080. The annotation rolls the pod when the binary was rebuilt.
"$HELM" upgrade --install "$RELEASE" "$ROOT/charts/iq720-operator" --namespace "$NS" --create-namespace \
  --set watchNamespace=default --set 'metrics.bindAddress=$(POD_IP)' --set botPollInterval=2s \
  --set-string "podAnnotations.iq720-local-binary=$(stat -c %Y "$OPERATOR")" \
  --wait --timeout 180s >/dev/null ||
  { kubectl -n "$NS" get pods -o wide >&2 || true; die "helm install did not finish; see: kubectl -n $NS logs deploy/$DEPLOY"; }
for crd in "${CRDS[@]}"; do
  wait_for 60 "CRD $crd to be established" established "$crd" || die "CRD $crd is not established"
done
# --wait: the Deployment's pod is Ready (/readyz: it reaches the apiserver); now it must
# lead (/leader: holds the Lease and runs the controllers).
wait_for 60 "the operator pod to lead (/leader)" operator_leader_address "$NS" "$RELEASE" ||
  die "the operator did not become the leader; see: kubectl -n $NS logs deploy/$DEPLOY"
ADDR="$(operator_leader_address "$NS" "$RELEASE")"
echo "$ADDR" >"$RUN/operator-metrics-address"
kubectl -n "$NS" get deploy,pods -o wide

say "applying the paper-trading sample"
kubectl apply -n default -f "$ROOT/config/samples/tradingbot-paper.yaml"
echo "waiting until the bot runs and answers its API (condition Ready)"
kubectl wait -n default --for=condition=Ready tb/paper-btc --timeout=180s ||
  die "the bot did not become Ready; see: kubectl -n $NS logs deploy/$DEPLOY"
kubectl get iq720 -n default

cat <<MSG

The demo is running: a local Kubernetes $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'),
the iq720 operator installed by Helm (release $RELEASE in namespace $NS; the leading pod's
metrics: http://$ADDR/metrics, leadership: /leader) and the paper-trading bot paper-btc.

  source $RUN/env
  kubectl get iq720                                                              # watch it trade
  kubectl describe tb paper-btc                                                  # events and conditions
  kubectl -n $NS logs deploy/$DEPLOY                                    # the operator's log
  kubectl patch tb paper-btc --type merge -p '{"spec":{"emergencyStop":true}}'   # EMERGENCY STOP
  $HELM -n $NS upgrade $RELEASE charts/iq720-operator --reuse-values --set replicaCount=2
  make cluster-down                                                              # stop everything
MSG
