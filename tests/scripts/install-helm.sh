#!/usr/bin/env bash
# Installs helm from the Go module proxy into the cache (keyed by version) and prints
# the binary path. Warm runs cost nothing.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
CACHE="${IQ720_CACHE_DIR:-$HOME/.cache/iq720}"
BIN_DIR="$CACHE/helm/$HELM_VERSION"
if [[ ! -x "$BIN_DIR/helm" ]]; then
  mkdir -p "$BIN_DIR"
  echo "installing helm $HELM_VERSION into $BIN_DIR (go install)" >&2
  GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi
echo "$BIN_DIR/helm"
