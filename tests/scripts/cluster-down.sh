#!/usr/bin/env bash
# Stop the local cluster started by cluster-up.sh: every component's process group
# (SIGTERM, then SIGKILL after a deadline), node agent first so it can stop its pods
# gracefully. Leaves no process behind. Keeps the run dir (logs) unless --purge.
#
# Usage: tests/scripts/cluster-down.sh [--purge]
# Env:   IQ720_RUN_DIR (default <repo>/.run/cluster)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=false
case ${1:-} in
--purge) purge=true ;;
"") ;;
*) die "usage: $0 [--purge]" ;;
esac
RUN=$IQ720_RUN_DIR
case $(realpath -m "$RUN") in
/ | "$(realpath -m "$HOME")" | "$IQ720_REPO") die "refusing to use IQ720_RUN_DIR=$RUN" ;;
esac

# group_alive PGID: true while any process of the group is alive.
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# ours PID: false when PID's group leader is alive but is not one of this run dir's
# components (every component has the run dir in its arguments), i.e. a stale pid
# file whose number now belongs to somebody else.
ours() {
	[[ -r /proc/$1/cmdline ]] || return 0
	tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$RUN/"
}

# stop_all TIMEOUT NAME...: SIGTERM each named component's process group, wait for
# all of them to exit, SIGKILL what is left after TIMEOUT seconds.
stop_all() {
	local timeout=$1 name pid
	shift
	local pids=()
	for name in "$@"; do
		local f=$RUN/pids/$name.pid
		[[ -s $f ]] || continue
		pid=$(<"$f")
		if [[ $pid =~ ^[0-9]+$ ]] && group_alive "$pid" && ! ours "$pid"; then
			warn "pid file $f names process $pid, which is not part of this cluster: leaving it alone"
		elif [[ $pid =~ ^[0-9]+$ ]] && group_alive "$pid"; then
			log "stopping $name (process group $pid)"
			kill -TERM -- "-$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		rm -f "$f"
	done
	((${#pids[@]})) || return 0
	local deadline=$((SECONDS + timeout)) left
	while :; do
		left=()
		for pid in "${pids[@]}"; do group_alive "$pid" && left+=("$pid"); done
		((${#left[@]})) || return 0
		if ((SECONDS >= deadline)); then
			warn "process groups ${left[*]} still alive after ${timeout}s: SIGKILL"
			for pid in "${left[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
			sleep 0.2
			return 0
		fi
		sleep 0.2
	done
}

# Processes a crashed node agent may have left: anything whose working directory is
# in the node agent's state dir (pod processes run there). Never this shell's ancestors.
kill_strays() {
	local node_dir proc pid cwd self_chain=" $$ " p=$$
	node_dir=$(realpath -m "$RUN/node")
	while [[ $p -gt 1 ]]; do
		p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || break
		self_chain+="$p "
	done
	for proc in /proc/[0-9]*; do
		pid=${proc#/proc/}
		[[ $self_chain == *" $pid "* ]] && continue
		cwd=$(readlink "$proc/cwd" 2>/dev/null) || continue
		if [[ $cwd == "$node_dir" || $cwd == "$node_dir"/* ]]; then
			warn "killing stray process $pid ($(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | cut -c1-120)) in $cwd"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
}

# One cluster-up/cluster-down at a time per run dir (cluster-up holds the lock already
# when it calls this script).
if [[ ${IQ720_CLUSTER_LOCKED:-} != "$RUN" ]]; then
	need flock
	mkdir -p "$(dirname "$RUN")"
	exec 8>"$RUN.lock"
	flock 8
fi

if [[ ! -d $RUN ]]; then
	log "no cluster in $RUN"
	exit 0
fi

if [[ -d $RUN/pids ]]; then
	# The demo operator first, while the apiserver is up: it finishes its reconciles and
	# releases its Lease.
	stop_all 30 operator
	# The node agent stops its pods on SIGTERM; give it time for their grace periods.
	stop_all 60 localnode
	stop_all 30 kube-scheduler kube-controller-manager minio kube-apiserver
	stop_all 30 etcd
	# Anything else that left a pid file (a component added later).
	shopt -s nullglob
	rest=("$RUN"/pids/*.pid)
	shopt -u nullglob
	if ((${#rest[@]})); then
		names=()
		for f in "${rest[@]}"; do
			n=${f##*/}
			names+=("${n%.pid}")
		done
		stop_all 30 "${names[@]}"
	fi
fi
kill_strays
rm -f "$RUN/env"

if $purge; then
	rm -rf "$RUN"
	log "cluster stopped; removed $RUN"
else
	log "cluster stopped (logs kept in $RUN/logs; --purge removes $RUN)"
fi
