#!/usr/bin/env bash
# Install the pinned MinIO server into the cache (go install from the Go module
# proxy; MinIO ships as source only) and print the binary path.
#
# Usage: tests/scripts/install-minio.sh
# Env:   IQ720_CACHE_DIR (default ~/.cache/iq720)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need go flock
dir=$IQ720_CACHE_DIR/minio/$IQ720_MINIO_VERSION
bin=$dir/minio

if [[ ! -x $bin ]]; then
	mkdir -p "$dir"
	exec 9>"$dir/.lock"
	flock 9
	if [[ ! -x $bin ]]; then
		log "installing minio@$IQ720_MINIO_VERSION into $dir (cold: several minutes)"
		start=$SECONDS
		tmp=$(mktemp -d "$dir/.gobin.XXXXXX")
		CGO_ENABLED=0 GOBIN=$tmp go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$IQ720_MINIO_VERSION"
		mv -f "$tmp/minio" "$bin"
		rmdir "$tmp"
		log "installed $bin in $((SECONDS - start))s"
	fi
	exec 9>&-
fi
printf '%s\n' "$bin"
