#!/usr/bin/env bash
# Runs a command with the local cluster up. Starts the cluster when none is running and
# then always stops it again on exit, also when the command fails; a cluster that was
# already running is left as it was.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
RUN="${IQ720_RUN_DIR:-$HERE/../../.run/cluster}"
started=0
if ! { [[ -f "$RUN/env" ]] && KUBECONFIG="$RUN/kubeconfig" kubectl get --raw /readyz >/dev/null 2>&1; }; then
  started=1
  trap 'bash "$HERE/cluster-down.sh" || true' EXIT
  bash "$HERE/cluster-up.sh"
fi
# shellcheck disable=SC1091
source "$RUN/env"
"$@"
