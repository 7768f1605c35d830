#!/usr/bin/env bash
# Installs kubeconform (validates Kubernetes manifests against JSON schemas) from the Go
# module proxy into the cache (keyed by version) and prints the binary path. Warm runs
# cost nothing. Its schemas are not downloaded: chart-validate.sh generates them from the
# local apiserver's OpenAPI document and from the chart's CRDs.
set -euo pipefail
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
CACHE="${IQ720_CACHE_DIR:-$HOME/.cache/iq720}"
BIN_DIR="$CACHE/kubeconform/$KUBECONFORM_VERSION"
if [[ ! -x "$BIN_DIR/kubeconform" ]]; then
  mkdir -p "$BIN_DIR"
  echo "installing kubeconform $KUBECONFORM_VERSION into $BIN_DIR (go install)" >&2
  GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" >&2
fi
echo "$BIN_DIR/kubeconform"
