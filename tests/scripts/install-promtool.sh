#!/usr/bin/env bash
# Installs promtool (Prometheus' rule and config checker) from the Go module proxy into
# the cache (keyed by version) and prints the binary path. Warm runs cost nothing.
set -euo pipefail
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
CACHE="${IQ720_CACHE_DIR:-$HOME/.cache/iq720}"
BIN_DIR="$CACHE/promtool/$PROMTOOL_VERSION"
if [[ ! -x "$BIN_DIR/promtool" ]]; then
  mkdir -p "$BIN_DIR"
  echo "installing promtool $PROMTOOL_VERSION into $BIN_DIR (go install)" >&2
  GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" >&2
fi
echo "$BIN_DIR/promtool"
