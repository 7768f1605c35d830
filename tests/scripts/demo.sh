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

say "starting the local cluster (first run builds Kubernetes from Go modules: 10-25 min)"
bash "$ROOT/tests/scripts/cluster-up.sh"
# shellcheck disable=SC1091
source "$RUN/env"

say "building the operator and the bot"
(cd "$ROOT" && cargo build --quiet --locked -p iq720-operator -p iq720-bot)

say "installing the CRDs and the chart's RBAC"
kubectl apply --server-side -f "$ROOT/charts/iq720-operator/crds/" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/tradingbots.trading.iq720.io \
  crd/backupschedules.trading.iq720.io crd/maintenancewindows.trading.iq720.io >/dev/null
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
if [[ -s $RUN/pids/operator.pid ]] && kill -0 "$(<"$RUN/pids/operator.pid")" 2>/dev/null; then
  kill -TERM -- "-$(<"$RUN/pids/operator.pid")" 2>/dev/null || true
  sleep 1
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
POD_NAMESPACE=$NS setsid "$TARGET_DIR/debug/iq720-operator" run --kubeconfig "$OPCFG" \
  --namespace default --metrics-address "127.0.0.1:$PORT" --leader-election --lease-namespace "$NS" \
  --bot-poll-interval 2s >"$RUN/logs/operator.log" 2>&1 &
echo $! >"$RUN/pids/operator.pid"
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "operator did not become ready; see $RUN/logs/operator.log" >&2; exit 1; }

say "applying the paper-trading sample"
kubectl apply -n default -f "$ROOT/config/samples/tradingbot-paper.yaml"
echo "waiting until the bot runs and answers its API (condition Ready)"
kubectl wait -n default --for=condition=Ready tb/paper-btc --timeout=180s ||
  { echo "the bot did not become Ready; see $RUN/logs/operator.log" >&2; exit 1; }
kubectl get iq720 -n default

cat <<MSG

The demo is running: a local Kubernetes $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'),
the iq720 operator (metrics: http://127.0.0.1:$PORT/metrics, log: $RUN/logs/operator.log)
and the paper-trading bot paper-btc.

  source $RUN/env
  kubectl get iq720                                                              # watch it trade
  kubectl describe tb paper-btc                                                  # events and conditions
  kubectl patch tb paper-btc --type merge -p '{"spec":{"emergencyStop":true}}'   # EMERGENCY STOP
  make cluster-down                                                              # stop everything
MSG
