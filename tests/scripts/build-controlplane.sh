#!/usr/bin/env bash
# Build the iq720-controlplane binary (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler from upstream Go modules) into the cache and print its path.
#
# The cache entry is keyed by the Kubernetes version and a hash of the module's
# sources plus the build recipe, so a warm call costs well under a second and a
# changed go.mod/go.sum/main.go builds a new entry (Go's build cache keeps that
# incremental). Progress goes to stderr; stdout is only the binary path.
#
# Usage: tests/scripts/build-controlplane.sh
# Env:   IQ720_CACHE_DIR (default ~/.cache/iq720)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need go sha256sum flock
src=$IQ720_REPO/tests/controlplane
v=$IQ720_KUBE_VERSION
major=${v#v}
major=${major%%.*}
minor=${v#v*.}
minor=${minor%%.*}

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

recipe="CGO_ENABLED=0 -trimpath -mod=readonly ldflags=$ldflags $(go env GOVERSION GOOS GOARCH | tr '\n' ' ')"
hash=$(
	cd "$src" || exit
	{
		printf '%s\n' "$recipe"
		sha256sum go.mod go.sum ./*.go
	} | sha256sum | cut -c1-16
)
dir=$IQ720_CACHE_DIR/controlplane/$v-$hash
bin=$dir/iq720-controlplane

if [[ ! -x $bin ]]; then
	mkdir -p "$dir"
	# One builder at a time per cache entry; a second caller waits, then reuses it.
	exec 9>"$dir/.lock"
	flock 9
	if [[ ! -x $bin ]]; then
		log "building iq720-controlplane $v into $dir (cold: 10-25 min on 2 cores; Go build cache makes rebuilds fast)"
		start=$SECONDS
		(
			cd "$src" || exit
			CGO_ENABLED=0 go build -trimpath -mod=readonly -ldflags "$ldflags" -o "$bin.tmp" .
		)
		mv -f "$bin.tmp" "$bin"
		log "built $bin in $((SECONDS - start))s"
	fi
	exec 9>&-
fi
printf '%s\n' "$bin"
