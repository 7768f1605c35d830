#!/usr/bin/env bash
# `make demo-test`: runs `make demo` as a new user would, against a brand-new cluster in
# its own run dir (so the apiserver has never seen the CRDs: `helm install` creates
# them), and checks that the demo ends with the operator running as the pod of the
# chart's Deployment, that pod leading, and the paper bot Ready. Then, on the same cluster,
# checks that `helm upgrade`s of the operator finish with 1 and 2 replicas
# (upgrade-test.sh). The cluster is always torn down; its logs are kept on failure.
#
# Env: IQ720_DEMO_TEST_KEEP=1 keeps the cluster running afterwards (prints its env file).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SCRIPTS="$ROOT/tests/scripts"
BASE="$(mktemp -d "${TMPDIR:-/tmp}/iq720-demo-test.XXXXXX")"
export IQ720_RUN_DIR="$BASE/cluster"
RUN="$IQ720_RUN_DIR"
# shellcheck source-path=SCRIPTDIR
source "$SCRIPTS/lib.sh"

finish() {
  local status=$?
  if [[ ${IQ720_DEMO_TEST_KEEP:-0} == 1 ]]; then
    log "demo-test: cluster kept running: source $RUN/env"
    exit "$status"
  fi
  if ((status != 0)); then
    if [[ -s $RUN/env ]]; then
      printf '\n==> operator pods (kubectl -n iq720-system logs) <==\n' >&2
      (
        # shellcheck disable=SC1091
        source "$RUN/env"
        kubectl -n iq720-system get pods -o wide >&2
        kubectl -n iq720-system logs -l app.kubernetes.io/instance=iq720 --tail 40 --prefix >&2
      ) || true
    fi
    for f in "$RUN/logs/localnode.log"; do
      [[ -s $f ]] && { printf '\n==> %s <==\n' "$f" >&2; tail -n 40 "$f" >&2; }
    done
  fi
  # (cluster-down.sh stops the node agent first, which stops the operator pods.)
  if ((status == 0)); then
    bash "$SCRIPTS/cluster-down.sh" --purge >&2 || true
    rm -rf "$BASE"
  else
    bash "$SCRIPTS/cluster-down.sh" >&2 || true
    warn "demo-test failed; logs kept in $RUN/logs"
  fi
  exit "$status"
}
trap finish EXIT

[[ ! -e $RUN ]] || die "run dir $RUN is not new"
log "demo-test: running the demo against a new cluster in $RUN"
bash "$SCRIPTS/demo.sh"

# shellcheck disable=SC1091
source "$RUN/env"
fail() { echo "demo-test: $*" >&2; exit 1; }
for crd in tradingbots.trading.iq720.io backupschedules.trading.iq720.io maintenancewindows.trading.iq720.io; do
  [[ $(kubectl get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}') == True ]] ||
    fail "CRD $crd is not established"
done
[[ $(kubectl -n default get tb paper-btc -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] ||
  fail "the paper bot is not Ready"
[[ $("$(bash "$SCRIPTS/install-helm.sh")" status iq720 -n iq720-system -o json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["status"])') == deployed ]] ||
  fail "Helm release iq720 in iq720-system is not deployed"
addr="$(<"$RUN/operator-metrics-address")"
# The address is the pod IP of the Deployment's Ready pod that holds the Lease.
read -r pod ready <<<"$(kubectl -n iq720-system get pods -l app.kubernetes.io/instance=iq720 \
  --field-selector "status.podIP=${addr%:*}" \
  -o 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')"
[[ -n ${pod:-} ]] || fail "no operator pod of the Helm release has the IP of $addr"
[[ $ready == True ]] || fail "operator pod $pod is not Ready"
[[ $(kubectl -n iq720-system get lease iq720-operator-leader -o 'jsonpath={.spec.holderIdentity}') == "$pod" ]] ||
  fail "operator pod $pod does not hold the Lease"
curl -fsS "http://$addr/readyz" >/dev/null || fail "operator /readyz is not 200"
curl -fsS "http://$addr/leader" >/dev/null || fail "operator /leader is not 200"
curl -fsS "http://$addr/metrics" | grep -qx 'iq720_operator_leader 1' || fail "iq720_operator_leader is not 1"
log "demo-test: demo ok (CRDs established on a new cluster by helm install, operator pod $pod leading, bot Ready)"

bash "$SCRIPTS/upgrade-test.sh"
log "demo-test: ok"
