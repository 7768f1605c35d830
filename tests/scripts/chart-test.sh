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

# Renderings with other values (no lint run): NAME --set ...
render() {
  local name=$1
  shift
  "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --namespace iq720-system "$@" > "$OUT/$name.yaml"
}
render name-override --set nameOverride=bots-operator
render fullname-override --set fullnameOverride=ops --set replicaCount=2
render scrapers --set 'networkPolicy.metricsScraperNamespaces={monitoring,observability}'
render recreate --set updateStrategy.type=Recreate
render monitoring --set metrics.prometheusRule.enabled=true --set metrics.podMonitor.enabled=true \
  --set 'networkPolicy.metricsScraperNamespaces={monitoring}' --set metrics.prometheusRule.backupMaxAgeHours=170 \
  --set 'metrics.prometheusRule.disabledAlerts={IQ720BotDown}' --set metrics.prometheusRule.additionalRuleLabels.team=trading \
  --set metrics.prometheusRule.runbookBaseUrl=https://wiki.example.com/iq720
render monitoring-ns --set metrics.podMonitor.enabled=true --set watchNamespace=trading \
  --set 'networkPolicy.metricsScraperNamespaces={monitoring}'

expect() { grep -q -- "$2" "$OUT/$1.yaml" || { echo "chart-test: $1 lacks: $2" >&2; exit 1; }; }
refute() { if grep -q -- "$2" "$OUT/$1.yaml"; then echo "chart-test: $1 must not contain: $2" >&2; exit 1; fi; }
# docs_of NAME KIND: the documents of one kind in a rendering.
docs_of() { awk -v kind="$2" '/^---/ {k = ""} /^kind: / {k = $2} k == kind' "$OUT/$1.yaml"; }
# verbs_of NAME KIND RESOURCE: the verbs of each rule of KIND that names RESOURCE.
verbs_of() {
  docs_of "$1" "$2" | awk -v res="\"$3\"" '
    /resources:/ && index($0, res) {want = 1; next}
    want && /verbs:/ {sub(/^ *verbs: */, ""); print; want = 0}'
}
# rule_is NAME KIND RESOURCE VERBS: exactly one rule of KIND names RESOURCE, with VERBS.
rule_is() {
  local got
  got="$(verbs_of "$1" "$2" "$3")"
  [[ $got == "$4" ]] || { echo "chart-test: $1 $2 $3 verbs are '${got//$'\n'/ | }', want '$4'" >&2; exit 1; }
}
# no_verb NAME KIND RESOURCE VERB: no rule of KIND grants VERB on RESOURCE.
no_verb() {
  if verbs_of "$1" "$2" "$3" | grep -qF "\"$4\""; then
    echo "chart-test: $1 $2 must not grant $4 on $3" >&2; exit 1
  fi
}
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
# Single-namespace mode: one ClusterRole, reading the operator's own Namespace only
# (fleet kill switch label); the default ClusterRole reads every Namespace.
[[ $(docs_of single-namespace-values ClusterRole | grep -c '^kind: ClusterRole$') -eq 1 ]] ||
  { echo "chart-test: single-namespace mode must have exactly one ClusterRole" >&2; exit 1; }
[[ $(docs_of single-namespace-values ClusterRole | grep -c 'resources:') -eq 1 ]] ||
  { echo "chart-test: the single-namespace ClusterRole must have one rule (namespaces)" >&2; exit 1; }
rule_is single-namespace-values ClusterRole namespaces '["get", "list", "watch"]'
docs_of single-namespace-values ClusterRole | grep -qF 'resourceNames: ["trading"]' ||
  { echo "chart-test: the single-namespace ClusterRole must name the watched namespace" >&2; exit 1; }
rule_is default ClusterRole namespaces '["get", "list", "watch"]'
refute no-leader-election-values "kind: ServiceAccount"
refute no-leader-election-values "- --leader-election"
refute no-leader-election-values "kind: ClusterRole"

# Least privilege (README "RBAC"): Secrets are never listed, watched or deleted, at
# cluster scope (default) or namespace scope; nothing but drill pods is deleted; PVCs
# are only read and expanded.
for case in "default ClusterRole" "single-namespace-values Role"; do
  read -r name kind <<<"$case"
  rule_is "$name" "$kind" secrets '["get", "create", "update"]'
  rule_is "$name" "$kind" persistentvolumeclaims '["get", "patch"]'
  # pods: the bot pods watched into the cache; throwaway restore-drill pods created
  # and deleted (the only delete the operator has)
  rule_is "$name" "$kind" pods '["get", "list", "watch", "create", "delete"]'
  rule_is "$name" "$kind" pods/log '["get"]'
  for verb in list watch delete deletecollection patch '*'; do no_verb "$name" "$kind" secrets "$verb"; done
  for res in statefulsets configmaps services networkpolicies persistentvolumeclaims tradingbots backupschedules maintenancewindows; do
    no_verb "$name" "$kind" "$res" delete
  done
  if docs_of "$name" "$kind" | grep -q '"deletecollection"'; then
    echo "chart-test: $name $kind grants deletecollection" >&2; exit 1
  fi
done
# The bots' NetworkPolicy admits the operator by this pod label; it must not depend on
# the chart's name.
for name in default name-override fullname-override single-namespace-values no-leader-election-values; do
  expect "$name" 'trading.iq720.io/operator: "true"'
  expect "$name" "fieldPath: metadata.namespace"
done
expect name-override "app.kubernetes.io/name: bots-operator"
refute name-override "app.kubernetes.io/name: iq720-operator"
# Metrics scrapers: only from the namespaces the chart names.
expect scrapers "- --metrics-scraper-namespaces=monitoring,observability"
refute default "--metrics-scraper-namespaces"
# Readiness is "reaches the apiserver", never leadership; upgrades surge one standby pod.
for name in default fullname-override; do
  expect "$name" "path: /readyz"
  refute "$name" "path: /leader"
  expect "$name" "type: RollingUpdate"
  expect "$name" "maxSurge: 1"
  expect "$name" "maxUnavailable: 0"
done
expect fullname-override "replicas: 2"
expect recreate "type: Recreate"
refute recreate "rollingUpdate:"
expect default "- --lease-renew-deadline=10s"

# Monitoring (README "Monitoring and alerts"): off by default; the PrometheusRule embeds
# files/alerts.yaml (make monitoring-test runs promtool on it) with the values applied;
# the PodMonitor scrapes the bots' API port as job iq720-bot.
refute default "kind: PrometheusRule"
refute default "kind: PodMonitor"
expect monitoring "kind: PrometheusRule"
expect monitoring "alert: IQ720EmergencyStopPositionsMayRemain"
expect monitoring "> 170 \* 3600"
refute monitoring "> 26 \* 3600"
refute monitoring "alert: IQ720BotDown"
expect monitoring "alert: IQ720BotHalted"
expect monitoring "team: trading"
expect monitoring "runbook_url: https://wiki.example.com/iq720#iq720operatornotleading"
refute monitoring "github.com/iq720/iq720-operator/blob/main/README.md"
expect monitoring 'summary: Bot {{ $labels.namespace }}/{{ $labels.pod }} halted new entries'
[[ $(docs_of monitoring PrometheusRule | grep -c '^        - alert: ') -eq 12 ]] ||
  { echo "chart-test: monitoring PrometheusRule should have 12 alerts (13 less one disabled)" >&2; exit 1; }
expect monitoring "kind: PodMonitor"
expect monitoring "port: api"
expect monitoring "replacement: iq720-bot"
expect monitoring "app.kubernetes.io/name: iq720-bot"
expect monitoring "any: true"
expect monitoring "- --metrics-scraper-namespaces=monitoring"
expect monitoring-ns "matchNames:"
refute monitoring-ns "any: true"

# Values the chart must refuse.
if "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --set metrics.podMonitor.enabled=true >/dev/null 2>&1; then
  echo "chart-test: a PodMonitor without networkPolicy.metricsScraperNamespaces must be refused (the NetworkPolicy would block it)" >&2; exit 1
fi
if "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --set metrics.prometheusRule.enabled=true \
  --set 'metrics.prometheusRule.disabledAlerts={IQ720NoSuchAlert}' >/dev/null 2>&1; then
  echo "chart-test: disabling an alert that does not exist must be refused" >&2; exit 1
fi
if "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --set replicaCount=2 --set leaderElection.enabled=false >/dev/null 2>&1; then
  echo "chart-test: replicaCount=2 without leader election must be refused" >&2; exit 1
fi
if "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --set image.pullPolicy=Sometimes >/dev/null 2>&1; then
  echo "chart-test: values.schema.json must refuse image.pullPolicy=Sometimes" >&2; exit 1
fi
for bad in 'networkPolicy.metricsScraperNamespaces={Not_A_Namespace}' updateStrategy.type=Sometimes \
  leaderElection.renewDeadline=soon metrics.prometheusRule.backupMaxAgeHours=0 \
  metrics.podMonitor.interval=often metrics.prometheusRule.runbookBaseUrl=wiki; do
  if "$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --set "$bad" >/dev/null 2>&1; then
    echo "chart-test: values.schema.json must refuse $bad" >&2; exit 1
  fi
done
# refuses MESSAGE HELM-ARGS...: the values are refused, and the error names the value
# and what is wrong with it (what a user reads after a typo).
refuses() {
  local want=$1 err
  shift
  if err="$("$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" "$@" 2>&1 >/dev/null)"; then
    echo "chart-test: values.schema.json must refuse $*" >&2; exit 1
  fi
  grep -qF -- "$want" <<<"$err" || { echo "chart-test: refusing $* should say '$want', said: $err" >&2; exit 1; }
}
refuses "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'" --set image.pullPolicy=Sometimes
refuses "at '/replicaCount': got string, want integer" --set replicaCount=two
refuses "at '/replicaCount': minimum: got -1, want 0" --set replicaCount=-1
refuses "at '/metrics/port': maximum: got 70,000, want 65,535" --set metrics.port=70000
refuses "at '/watchNamespace': 'Trading_Bots' does not match pattern" --set watchNamespace=Trading_Bots
refuses "at '/leaderElection/renewDeadline': 'soon' does not match pattern" --set leaderElection.renewDeadline=soon
refuses "at '/metrics': additional properties 'servicemonitor' not allowed" --set metrics.servicemonitor.enabled=true
refuses "at '/grafana/dashboard/enabled': got string, want boolean" --set-string grafana.dashboard.enabled=yes
refuses "at '/grafana/dashboard': additional properties 'enable' not allowed" --set grafana.dashboard.enable=true
refuses "at '/grafana/dashboard/namespace': 'Monitoring' does not match pattern" --set grafana.dashboard.enabled=true --set grafana.dashboard.namespace=Monitoring
refuses "at '/workerThreads': minimum: got 0, want 1" --set workerThreads=0
refuses "at '/statusFiguresInterval': 'hourly' does not match pattern" --set statusFiguresInterval=hourly

# Scale knobs (README "Scale"): the defaults the operator has, and a user's values.
expect default "- --worker-threads=1$"
expect default "- --max-concurrent-reconciles=32$"
expect default "- --status-figures-interval=60s$"
render scale --set workerThreads=2 --set maxConcurrentReconciles=64 --set statusFiguresInterval=5m
expect scale "- --worker-threads=2$"
expect scale "- --max-concurrent-reconciles=64$"
expect scale "- --status-figures-interval=5m$"

printf 'metrics:\n  podMonitor:\n    enabled: true\n    intervall: 30s\n' > "$OUT/typo-values.yaml"
refuses "at '/metrics/podMonitor': additional properties 'intervall' not allowed" -f "$OUT/typo-values.yaml"

# The Grafana dashboard (README "Grafana dashboard"): off by default; a ConfigMap with
# the sidecar's label whose JSON is dashboards/iq720.json unchanged.
refute default "grafana_dashboard"
render dashboard --set grafana.dashboard.enabled=true --set grafana.dashboard.namespace=monitoring \
  --set grafana.dashboard.annotations.grafana_folder=Trading --set grafana.dashboard.labels.team=trading
render dashboard-label --set grafana.dashboard.enabled=true --set grafana.dashboard.sidecarLabel=example.com/dashboard \
  --set grafana.dashboard.sidecarLabelValue=1
expect dashboard 'grafana_dashboard: "1"'
expect dashboard "namespace: monitoring"
expect dashboard "grafana_folder: Trading"
expect dashboard "team: trading"
expect dashboard-label 'example.com/dashboard: "1"'
refute dashboard-label "grafana_dashboard"
python3 - "$OUT/dashboard.yaml" "$CHART/dashboards/iq720.json" <<'EOF'
import json, sys, yaml
cms = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"]
assert len(cms) == 1, f"expected one ConfigMap, got {len(cms)}"
shipped = json.loads(cms[0]["data"]["iq720.json"])
assert shipped == json.load(open(sys.argv[2])), "the ConfigMap's dashboard differs from dashboards/iq720.json"
assert shipped["panels"], "the dashboard has no panels"
EOF
echo "chart-test: ok"
