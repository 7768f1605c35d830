#!/usr/bin/env bash
# `make demo`: local cluster, CRDs, the paper-trading sample, and (once the operator
# core has landed) the operator reconciling it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="${IQ720_RUN_DIR:-$ROOT/.run/cluster}"
bash "$ROOT/tests/scripts/cluster-up.sh"
# shellcheck disable=SC1091
source "$RUN/env"
kubectl apply --server-side -f "$ROOT/charts/iq720-operator/crds/"
kubectl wait --for condition=established --timeout=60s crd/tradingbots.trading.iq720.io \
  crd/backupschedules.trading.iq720.io crd/maintenancewindows.trading.iq720.io
kubectl apply --server-side -f "$ROOT/config/samples/"
kubectl get iq720
cat <<MSG

The local cluster is up (KUBECONFIG=$KUBECONFIG) and the samples are applied.
The operator ('iq720-operator run') is not available yet: it is the next milestone
(operator core). Until then nothing reconciles the TradingBot.

  source $RUN/env
  kubectl get iq720
  kubectl patch tb paper-btc --type merge -p '{"spec":{"emergencyStop":true}}'   # emergency stop
  make cluster-down                                                              # stop everything
MSG
