#!/usr/bin/env bash
# helm lint + helm template of the chart with default and non-default values; checks
# that rendering fails where the chart refuses a combination.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CHART="$ROOT/charts/iq720-operator"
KUBE_VERSION="${KUBE_VERSION:-1.34.4}"
HELM="$(bash "$ROOT/tests/scripts/install-helm.sh")"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

"$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART"
for values in "" "$CHART/ci/single-namespace-values.yaml" "$CHART/ci/no-leader-election-values.yaml"; do
  args=()
  [[ -n "$values" ]] && args=(-f "$values") && "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" "${args[@]}"
  name="$(basename "${values:-default}" .yaml)"
  "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --namespace iq720-system --include-crds "${args[@]}" > "$OUT/$name.yaml"
  echo "rendered $name: $(grep -c '^kind:' "$OUT/$name.yaml") objects"
done

expect() { grep -q -- "$2" "$OUT/$1.yaml" || { echo "chart-test: $1 lacks: $2" >&2; exit 1; }; }
refute() { if grep -q -- "$2" "$OUT/$1.yaml"; then echo "chart-test: $1 must not contain: $2" >&2; exit 1; fi; }
expect default "kind: ClusterRole"
expect default "readOnlyRootFilesystem: true"
expect default "runAsNonRoot: true"
expect default "type: RuntimeDefault"
expect default "- --leader-election"
expect default "name: tradingbots.trading.iq720.io"
refute default "kind: ServiceMonitor"
refute default '"\*"'
expect single-namespace-values "kind: Role"
expect single-namespace-values "namespace: trading"
expect single-namespace-values "- --namespace=trading"
expect single-namespace-values "kind: ServiceMonitor"
refute single-namespace-values "kind: ClusterRole"
refute no-leader-election-values "kind: ServiceAccount"
refute no-leader-election-values "- --leader-election"
refute no-leader-election-values "kind: ClusterRole"

# Values the chart must refuse.
if "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --set replicaCount=2 --set leaderElection.enabled=false >/dev/null 2>&1; then
  echo "chart-test: replicaCount=2 without leader election must be refused" >&2; exit 1
fi
if "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --set image.pullPolicy=Sometimes >/dev/null 2>&1; then
  echo "chart-test: values.schema.json must refuse image.pullPolicy=Sometimes" >&2; exit 1
fi
echo "chart-test: ok"
