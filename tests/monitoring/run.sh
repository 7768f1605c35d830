#!/usr/bin/env bash
# make monitoring-test: the alert rules (promtool check + unit tests, on the rule file and
# on the chart's rendered PrometheusRule), the alerts' metric names and runbook anchors,
# and the Argo CD health checks (Lua, in gopher-lua). Installs promtool and helm into the
# cache on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CHART="$ROOT/charts/iq720-operator"
RULES="$CHART/files/alerts.yaml"
KUBE_VERSION="${KUBE_VERSION:-1.34.4}"
PROMTOOL="$(bash "$ROOT/tests/scripts/install-promtool.sh")"
HELM="$(bash "$ROOT/tests/scripts/install-helm.sh")"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
fail() { echo "monitoring-test: $*" >&2; exit 1; }

# 1. The rule file and its unit tests.
"$PROMTOOL" check rules "$RULES"
"$PROMTOOL" test rules "$ROOT/tests/monitoring/alerts_test.yaml"

# 2. The chart's PrometheusRule carries the same rules: its spec, as a rule file, passes
# the same unit tests.
"$HELM" template iq720 "$CHART" --kube-version "$KUBE_VERSION" --namespace iq720-system \
  --set metrics.prometheusRule.enabled=true --show-only templates/prometheusrule.yaml > "$OUT/rendered.yaml"
awk 'found {sub(/^  /, ""); print} /^spec:$/ {found = 1}' "$OUT/rendered.yaml" > "$OUT/rules.yaml"
"$PROMTOOL" check rules "$OUT/rules.yaml"
sed "s|\.\./\.\./charts/iq720-operator/files/alerts.yaml|$OUT/rules.yaml|" \
  "$ROOT/tests/monitoring/alerts_test.yaml" > "$OUT/alerts_test.yaml"
grep -q "$OUT/rules.yaml" "$OUT/alerts_test.yaml" || fail "could not point the tests at the rendered rules"
"$PROMTOOL" test rules "$OUT/alerts_test.yaml"

# 3. Every alert has a test that fires and one that does not, a README runbook section,
# and a runbook_url pointing at it.
alerts="$(sed -n 's/^ *- alert: *//p' "$RULES")"
[[ $(wc -l <<<"$alerts") -ge 13 ]] || fail "expected at least 13 alerts, found: $alerts"
for a in $alerts; do
  anchor="$(tr '[:upper:]' '[:lower:]' <<<"$a")"
  grep -q "^### $a\$" "$ROOT/README.md" || fail "README.md has no '### $a' runbook section"
  grep -q "runbook_url: .*#$anchor\$" "$RULES" || fail "$a: runbook_url does not point at #$anchor"
  awk -v a="$a" '
    /alertname:/ {cur = $2}
    cur == a && /exp_alerts: \[\]/ {none = 1}
    cur == a && /- exp_labels:/ {fires = 1}
    END {exit !(none && fires)}' "$ROOT/tests/monitoring/alerts_test.yaml" ||
    fail "$a needs a test case that fires and one that does not"
done

# 4. Every metric an alert uses is emitted by the operator or the bot, except the ones
# documented as not emitted yet (their descriptions say so).
NOT_EMITTED_YET=""
emitted="$(grep -ohE '"iq720_(operator|bot)_[a-z_]+"' "$ROOT/operator/src/shared/metrics.rs" "$ROOT/bot/src/metrics.rs" | tr -d '"' | sort -u)"
for m in $(grep -oE 'iq720_(operator|bot)_[a-z_]+' <(sed -n '/expr:/,/labels:/p' "$RULES") | sort -u); do
  if grep -qx "$m" <<<"$emitted"; then continue; fi
  if [[ " $NOT_EMITTED_YET " == *" $m "* ]]; then
    tr -s ' \n' ' ' <"$RULES" | grep -q "does not emit $m yet" || fail "$m is not emitted and its alert does not say so"
    echo "monitoring-test: note: $m is not emitted by the operator yet (documented)"
    continue
  fi
  fail "alert metric $m is emitted by neither the operator nor the bot"
done

# 5. The Argo CD health checks.
(cd "$ROOT/tests/argocd" && go test -count=1 ./...)
echo "monitoring-test: ok"
