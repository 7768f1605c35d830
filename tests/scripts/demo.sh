#!/usr/bin/env bash
# `make demo`: local cluster, CRDs, the operator (as a local process authenticated as
# the Helm chart's ServiceAccount), and the paper-trading sample bot.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export IQ720_RUN_DIR="${IQ720_RUN_DIR:-$ROOT/.run/cluster}"
RUN="$IQ720_RUN_DIR"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
NS=iq720-system
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# shellcheck source-path=SCRIPTDIR
source "$ROOT/tests/scripts/lib.sh" # wait_for: poll with a deadline

say "starting the local cluster (first run builds Kubernetes from Go modules: 10-25 min)"
bash "$ROOT/tests/scripts/cluster-up.sh"
# shellcheck disable=SC1091
source "$RUN/env"

say "building the operator and the bot"
(cd "$ROOT" && cargo build --quiet --locked -p iq720-operator -p iq720-bot)

# established CRD: true once the apiserver serves the CRD. Polled, because a CRD that was
# created a moment ago has no status yet, and `kubectl wait --for condition=established`
# then fails outright (".status.conditions accessor error: <nil>") instead of waiting.
established() {
  [[ $(kubectl get crd "$1" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]]
}

say "installing the CRDs and the chart's RBAC"
kubectl apply --server-side -f "$ROOT/charts/iq720-operator/crds/" >/dev/null
for crd in tradingbots.trading.iq720.io backupschedules.trading.iq720.io maintenancewindows.trading.iq720.io; do
  wait_for 60 "CRD $crd to be established" established "$crd"
done
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
HELM="$(bash "$ROOT/tests/scripts/install-helm.sh")"
# Single-namespace mode (the demo bot lives in `default`), so that a demo operator never
# touches the namespaces of tests run against the same cluster.
"$HELM" template iq720 "$ROOT/charts/iq720-operator" --namespace "$NS" --kube-version 1.34.4 \
  --set watchNamespace=default --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml | kubectl apply -f - >/dev/null

say "starting the operator with the chart's ServiceAccount"
OPCFG="$RUN/operator-kubeconfig"
cp "$RUN/kubeconfig" "$OPCFG"
TOKEN="$(kubectl -n "$NS" create token iq720-iq720-operator --duration 24h)"
kubectl --kubeconfig "$OPCFG" config set-credentials admin --token="$TOKEN" >/dev/null
group_gone() { ! kill -0 -- "-$1" 2>/dev/null; }
if [[ -s $RUN/pids/operator.pid ]] && kill -0 "$(<"$RUN/pids/operator.pid")" 2>/dev/null; then
  # A previous demo operator: SIGTERM makes it finish its reconciles and release the Lease.
  old="$(<"$RUN/pids/operator.pid")"
  kill -TERM -- "-$old" 2>/dev/null || true
  wait_for 30 "the previous operator to exit" group_gone "$old" || kill -KILL -- "-$old" 2>/dev/null || true
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
POD_NAMESPACE=$NS setsid "$TARGET_DIR/debug/iq720-operator" run --kubeconfig "$OPCFG" \
  --namespace default --metrics-address "127.0.0.1:$PORT" --leader-election --lease-namespace "$NS" \
  --bot-poll-interval 2s >"$RUN/logs/operator.log" 2>&1 &
echo $! >"$RUN/pids/operator.pid"
echo "127.0.0.1:$PORT" >"$RUN/operator-metrics-address"
answers() { curl -fsS "http://127.0.0.1:$PORT$1" >/dev/null 2>&1; }
# /readyz: up and reaching the apiserver; /leader: holds the Lease and runs the controllers.
wait_for 30 "operator /readyz" answers /readyz ||
  { echo "operator did not become ready; see $RUN/logs/operator.log" >&2; exit 1; }
wait_for 60 "operator /leader" answers /leader ||
  { echo "operator did not become the leader; see $RUN/logs/operator.log" >&2; exit 1; }

say "applying the paper-trading sample"
kubectl apply -n default -f "$ROOT/config/samples/tradingbot-paper.yaml"
echo "waiting until the bot runs and answers its API (condition Ready)"
kubectl wait -n default --for=condition=Ready tb/paper-btc --timeout=180s ||
  { echo "the bot did not become Ready; see $RUN/logs/operator.log" >&2; exit 1; }
kubectl get iq720 -n default

cat <<MSG

The demo is running: a local Kubernetes $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'),
the iq720 operator (metrics: http://127.0.0.1:$PORT/metrics, leadership: /leader, log: $RUN/logs/operator.log)
and the paper-trading bot paper-btc.

  source $RUN/env
  kubectl get iq720                                                              # watch it trade
  kubectl describe tb paper-btc                                                  # events and conditions
  kubectl patch tb paper-btc --type merge -p '{"spec":{"emergencyStop":true}}'   # EMERGENCY STOP
  make cluster-down                                                              # stop everything
MSG
