# shellcheck shell=bash
# Shared helpers for the local-cluster scripts (sourced, never run).
# Layout and names follow tests/scripts/README.md (the interface contract).

set -euo pipefail

IQ720_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IQ720_CACHE_DIR=$(realpath -m "${IQ720_CACHE_DIR:-$HOME/.cache/iq720}")
IQ720_RUN_DIR=$(realpath -m "${IQ720_RUN_DIR:-$IQ720_REPO/.run/cluster}")

# Pinned versions (used by the scripts that source this file).
# shellcheck disable=SC2034
IQ720_KUBE_VERSION=v1.34.4
# shellcheck disable=SC2034
# MinIO publishes no semver tags; this is the Go proxy pseudo-version of the
# newest commit on its default branch when it was pinned (2026-02-12).
IQ720_MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

# shellcheck disable=SC2034
IQ720_NODE_NAME=${IQ720_NODE_NAME:-iq720-local}
IQ720_S3_BUCKET=${IQ720_S3_BUCKET:-iq720-test}
IQ720_S3_REGION=${IQ720_S3_REGION:-us-east-1}

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
	printf '[%s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
	exit 1
}

# need CMD...: fail early with a clear message when a tool is missing.
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not on PATH"
	done
}

# wait_for SECONDS DESCRIPTION CMD...: run CMD every 0.5 s until it succeeds or
# the deadline passes (then return 1). With WAIT_PIDFILE set, also give up as soon
# as the process it names has exited.
wait_for() {
	local timeout=$1 what=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	while ! "$@" >/dev/null 2>&1; do
		if [[ -n ${WAIT_PIDFILE:-} ]] && ! pid_alive "$WAIT_PIDFILE"; then
			warn "gave up waiting for $what: its process exited"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			warn "timed out after ${timeout}s waiting for $what"
			return 1
		fi
		sleep 0.5
	done
}

# free_ports N: print N distinct free TCP ports on 127.0.0.1, one per line.
# All sockets are held open until every port is chosen, so the N are distinct.
free_ports() {
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
PY
}

# pid_alive PIDFILE: true when the pid file names a live process.
pid_alive() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# s3_request METHOD URL ACCESS_KEY SECRET_KEY REGION: send an AWS SigV4-signed
# request with an empty body and print the HTTP status code (python3 stdlib only).
s3_request() {
	python3 - "$@" <<'PY'
import datetime, hashlib, hmac, sys, urllib.error, urllib.parse, urllib.request
method, url, ak, sk, region = sys.argv[1:6]
u = urllib.parse.urlsplit(url)
now = datetime.datetime.now(datetime.timezone.utc)
amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
payload = hashlib.sha256(b"").hexdigest()
headers = {"host": u.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
signed = ";".join(sorted(headers))
canonical = "\n".join([method, u.path or "/", u.query, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
scope = f"{day}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
key = ("AWS4" + sk).encode()
for part in (day, region, "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(url, method=method, data=b"" if method == "PUT" else None)
for k, v in headers.items():
    req.add_header(k, v)
req.add_header("Authorization", f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}")
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
PY
}

# map_operator_image RUN OPERATOR_BINARY: make sure the image map of the cluster in RUN
# sends the chart's operator image (ghcr.io/iq720/iq720-operator, any tag) to the
# workspace binary. cluster-up.sh writes that entry; this adds it to a cluster started
# before it did (or when the operator had not built then). Atomic: the node agent
# re-reads the map at every container start.
map_operator_image() {
	local run=$1 bin=$2 tmp
	# Quoted (cluster-up.sh) or not (the Rust harness rewrites the map with serde_yaml): a
	# second entry for the same key would make the whole map invalid YAML.
	grep -qE '^  "?ghcr\.io/iq720/iq720-operator:\*"?:' "$run/images.yaml" && return 0
	tmp=$(mktemp "$run/images.yaml.XXXXXX")
	{
		grep -vx '  {}' "$run/images.yaml"
		printf '  "ghcr.io/iq720/iq720-operator:*":\n    command: "%s"\n' "$bin"
	} >"$tmp"
	mv "$tmp" "$run/images.yaml"
}

# operator_leader_address NAMESPACE INSTANCE [PORT]: print "podIP:PORT" of the one
# live pod of the Helm release INSTANCE in NAMESPACE that answers /leader with 200;
# fail when there is none (or more than one).
operator_leader_address() {
	local ns=$1 instance=$2 port=${3:-8080} name ip dt found=
	while read -r name ip dt; do
		[[ -n $name && -n $ip && -z $dt ]] || continue
		if curl -fsS --max-time 2 "http://$ip:$port/leader" >/dev/null 2>&1; then
			[[ -z $found ]] || return 1
			found=$ip:$port
		fi
	done <<<"$(kubectl -n "$ns" get pods -l "app.kubernetes.io/instance=$instance" \
		-o 'jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}')"
	[[ -n $found ]] && printf '%s\n' "$found"
}

# build_cluster_binaries [cargo flags]: the debug binaries the local node runs (node
# agent, test process, bot, operator), in ONE cargo invocation from the repository
# root. cluster-up.sh, demo.sh and upgrade-test.sh all call this: separate invocations
# with other package sets resolve features differently, and shared dependencies (kube,
# aws-sdk-s3, ...) would each be compiled again.
build_cluster_binaries() {
	(cd "$IQ720_REPO" && cargo build "$@" --locked \
		-p iq720-tests -p iq720-bot -p iq720-operator \
		--bin iq720-localnode --bin iq720-testproc --bin iq720-bot --bin iq720-operator)
}
