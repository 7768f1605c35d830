#!/usr/bin/env bash
# make chart-validate: the chart's rendered manifests checked against the schemas of the
# Kubernetes version we run (1.34), the way a cluster admin would before installing:
#   1. kubeconform -strict, offline: schemas generated from this apiserver's /openapi/v2
#      and from the chart's CRDs (tests/scripts/k8s-json-schemas.py); the renderings of
#      several value sets, the CRDs and config/samples. A broken manifest must fail.
#   2. helm install --dry-run=server into a scratch namespace (lookups, conflicts).
#   3. kubectl apply --dry-run=server --validate=strict of every rendering and sample:
#      the apiserver itself decodes, defaults and validates each object (admission
#      included) and persists nothing.
# Needs the local cluster: run it as `bash tests/scripts/with-cluster.sh bash
# tests/scripts/chart-validate.sh` (make chart-validate does). The Prometheus Operator
# kinds (ServiceMonitor, PodMonitor, PrometheusRule) are skipped: their CRDs are not
# part of this repository or cluster (promtool checks the rules, chart-test.sh the rest).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CHART="$ROOT/charts/iq720-operator"
CACHE="${IQ720_CACHE_DIR:-$HOME/.cache/iq720}"
HELM="$(bash "$ROOT/tests/scripts/install-helm.sh")"
KUBECONFORM="$(bash "$ROOT/tests/scripts/install-kubeconform.sh")"
OUT="$(mktemp -d)"
NS="iq720-chart-validate-$$"
cleanup() {
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT
fail() { echo "chart-validate: $*" >&2; exit 1; }
[[ -n "${KUBECONFIG:-}" ]] || fail "KUBECONFIG is not set (run under tests/scripts/with-cluster.sh)"

# The server's version decides the schemas (and must be the 1.34 we support).
server="$(kubectl get --raw /version | python3 -c 'import json,sys; print(json.load(sys.stdin)["gitVersion"])')"
[[ $server == v1.34.* ]] || fail "the local apiserver is $server, expected v1.34.x"
KUBE_VERSION="${server#v}"
KUBE_VERSION="${KUBE_VERSION%%[-+]*}"

# 1. kubeconform against schemas made here from the apiserver and the CRDs.
SCHEMAS="$CACHE/k8s-json-schemas/$server-v1"
if [[ ! -f "$SCHEMAS/.complete" ]]; then
  rm -rf "$SCHEMAS" && mkdir -p "$SCHEMAS"
  kubectl get --raw /openapi/v2 > "$SCHEMAS/swagger.json"
  python3 "$ROOT/tests/scripts/k8s-json-schemas.py" openapi "$SCHEMAS/swagger.json" "$SCHEMAS/builtin"
  touch "$SCHEMAS/.complete"
fi
python3 "$ROOT/tests/scripts/k8s-json-schemas.py" crd "$SCHEMAS/swagger.json" "$OUT/crd-schemas" "$CHART"/crds/*.yaml
LOCATION='{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'
kubeconform() {
  "$KUBECONFORM" -strict -kubernetes-version "$KUBE_VERSION" \
    -schema-location "$SCHEMAS/builtin/$LOCATION" -schema-location "$OUT/crd-schemas/$LOCATION" \
    -skip ServiceMonitor,PodMonitor,PrometheusRule "$@"
}

# Renderings: NAME [helm args]. Rendered into the scratch namespace for step 3.
mkdir -p "$OUT/rendered"
render() {
  local name=$1
  shift
  "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NS" "$@" > "$OUT/rendered/$name.yaml"
}
render default
render single-namespace -f "$CHART/ci/single-namespace-values.yaml" --set "watchNamespace=$NS"
render no-leader-election -f "$CHART/ci/no-leader-election-values.yaml"
render two-replicas --set replicaCount=2 --set fullnameOverride=ops --set updateStrategy.type=Recreate
render monitoring --set metrics.prometheusRule.enabled=true --set metrics.podMonitor.enabled=true \
  --set metrics.serviceMonitor.enabled=true --set 'networkPolicy.metricsScraperNamespaces={monitoring}' \
  --set grafana.dashboard.enabled=true --set-string 'grafana.dashboard.labels.team=trading'
for f in "$CHART"/crds/*.yaml; do echo "---"; cat "$f"; done > "$OUT/crds.yaml"

kubeconform -summary "$OUT/rendered" "$OUT/crds.yaml" "$ROOT/config/samples"
n="$(kubeconform -output json -verbose "$OUT/rendered" "$OUT/crds.yaml" "$ROOT/config/samples" |
  python3 -c 'import json,sys; print(sum(r["status"] == "statusValid" for r in json.load(sys.stdin)["resources"]))')"
# Every object but the skipped kinds was validated (none went unnoticed).
want="$(python3 - "$OUT"/rendered/*.yaml "$OUT/crds.yaml" "$ROOT"/config/samples/*.yaml <<'EOF'
import sys, yaml
skip = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
print(sum(1 for p in sys.argv[1:] for d in yaml.safe_load_all(open(p)) if d and d["kind"] not in skip))
EOF
)"
[[ $n -eq $want && $n -ge 30 ]] || fail "kubeconform validated $n objects, the renderings have $want"

# The schemas must bite: every mistake below must be reported, with its path.
cat > "$OUT/broken.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replicas: two
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers:
        - name: c
          image: busybox
          imagePullPolicy: Sometimes
          resoures: {}
          resources: {requests: {cpu: lots}}
---
apiVersion: trading.iq720.io/v1alpha1
kind: TradingBot
metadata: {name: broken, labelz: {a: b}}
spec:
  version: "0.1.0"
  pairs: [BTC/USDT]
  strategy: {name: rsi}
  paperTrading: true
EOF
if kubeconform -output json "$OUT/broken.yaml" > "$OUT/broken.json"; then
  fail "kubeconform accepted broken manifests"
fi
for want in "/spec/replicas': got string, want null or integer" \
  "imagePullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'" \
  "additional properties 'resoures' not allowed" \
  "/requests/cpu'" \
  "additional properties 'paperTrading' not allowed" \
  "additional properties 'labelz' not allowed"; do
  grep -qF -- "$want" "$OUT/broken.json" || fail "kubeconform did not report: $want ($(cat "$OUT/broken.json"))"
done
echo "chart-validate: kubeconform $("$KUBECONFORM" -v) -strict: $n objects valid against Kubernetes $server schemas; broken manifests refused"

# 2. helm install --dry-run=server (the release is not created).
kubectl create namespace "$NS" >/dev/null
for values in "" "$CHART/ci/no-leader-election-values.yaml"; do
  args=()
  [[ -n "$values" ]] && args=(-f "$values")
  "$HELM" install iq720 "$CHART" --namespace "$NS" --dry-run=server "${args[@]}" > "$OUT/dry-run.txt" ||
    fail "helm install --dry-run=server ${values:-(default values)} failed"
  grep -q '^kind: Deployment' "$OUT/dry-run.txt" || fail "helm install --dry-run=server rendered no Deployment"
done
[[ -z "$("$HELM" list --namespace "$NS" -q)" ]] || fail "helm install --dry-run=server created a release"
echo "chart-validate: helm install --dry-run=server ok"

# 3. The apiserver validates every object (strict field validation, nothing persisted).
# The samples need the CRDs: installed as the e2e tests install them.
kubectl apply --server-side --force-conflicts --field-manager=iq720-tests -f "$CHART/crds" >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f "$CHART/crds" >/dev/null
server_dry_run() {
  local file=$1
  kubectl apply --dry-run=server --validate=strict --namespace "$NS" -f "$file" > "$OUT/apply.txt" 2>&1 ||
    fail "the apiserver refused $(basename "$file"): $(cat "$OUT/apply.txt")"
}
for f in "$OUT"/rendered/*.yaml; do
  # The Prometheus Operator kinds have no CRD here (see above).
  python3 - "$f" > "$OUT/core.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] not in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
yaml.safe_dump_all(docs, sys.stdout)
EOF
  server_dry_run "$OUT/core.yaml"
done
server_dry_run "$OUT/crds.yaml"
for f in "$ROOT"/config/samples/*.yaml; do server_dry_run "$f"; done
if kubectl apply --dry-run=server --validate=strict --namespace "$NS" -f "$OUT/broken.yaml" > "$OUT/apply.txt" 2>&1; then
  fail "the apiserver accepted broken manifests"
fi
grep -q 'unknown field "spec.paperTrading"\|unknown field "spec.template.spec.containers\[0\].resoures"\|quantities must match' "$OUT/apply.txt" ||
  fail "the apiserver refused the broken manifests for another reason: $(cat "$OUT/apply.txt")"
echo "chart-validate: kubectl apply --dry-run=server --validate=strict ok ($(ls "$OUT"/rendered | wc -l) renderings, CRDs, $(ls "$ROOT"/config/samples/*.yaml | wc -l) samples)"
echo "chart-validate: ok"
