#!/usr/bin/env bash
# `make bench-backup`: BackupSchedule benchmarks on a new local cluster in its own run
# dir (never the dev cluster at .run/cluster), torn down at the end.
#
#  1. One bot with a 1 GiB trade database (the bot's own schema, grown with synthetic
#     closed trades by seed-trades.py), backed up on demand with verification. Reports
#     the operator's RSS growth (sampled every 100 ms from /proc/<pid>/status, peak
#     minus the idle baseline; VmHWM too), each phase from the operator's log (bot
#     snapshot, upload = stream + complete + metadata copy, verification), and the
#     upload throughput next to `aws s3 cp` of the same archive to the same MinIO, run
#     right after in the same run (and of the raw 1 GiB database, for reference).
#  2. BOTS (default 100) real bots selected by one BackupSchedule whose cron slot is
#     the next minute: the whole run from the slot to the last verified backup,
#     per-bot attempt durations (p50, p99) and the peak number of attempts in flight
#     (the operator's backup concurrency is 4 per run).
#
# The operator and the bots are release builds; the operator runs with the cluster
# admin kubeconfig, watching one namespace. AWS CLI: pip's `awscli` in a venv in the
# cache (installed on first use).
#
# Env: DB_BYTES (default 1073741824), BOTS (default 100), BENCH_OUT (report dir,
#      default <repo>/.run/bench-backup), IQ720_BENCH_KEEP=1 keeps the cluster.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SCRIPTS="$ROOT/tests/scripts"
DB_BYTES=${DB_BYTES:-1073741824}
BOTS=${BOTS:-100}
BENCH_OUT=${BENCH_OUT:-$ROOT/.run/bench-backup}
BASE="$(mktemp -d "${TMPDIR:-/tmp}/iq720-bench-backup.XXXXXX")"
export IQ720_RUN_DIR="$BASE/cluster"
RUN="$IQ720_RUN_DIR"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
REL="$TARGET_DIR/release"
NS=bench
# shellcheck source-path=SCRIPTDIR
source "$SCRIPTS/lib.sh"
need kubectl curl python3
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

sampler_pid=
finish() {
  local status=$?
  [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null || true
  if [[ ${IQ720_BENCH_KEEP:-0} == 1 ]]; then
    log "bench-backup: cluster kept running: source $RUN/env"
    exit "$status"
  fi
  if [[ -s $RUN/pids/operator.pid ]]; then
    mkdir -p "$BENCH_OUT"
    cp "$RUN/logs/operator.log" "$BENCH_OUT/operator.log" 2>/dev/null || true
  fi
  if ((status != 0)); then
    [[ -s $RUN/logs/operator.log ]] && { printf '\n==> operator.log <==\n' >&2; tail -n 30 "$RUN/logs/operator.log" >&2; }
  fi
  log "bench-backup: tearing down"
  if ((status == 0)); then
    bash "$SCRIPTS/cluster-down.sh" --purge >&2 || true
    rm -rf "$BASE"
  else
    bash "$SCRIPTS/cluster-down.sh" >&2 || true
    warn "bench-backup failed; logs kept in $RUN/logs"
  fi
  exit "$status"
}
trap finish EXIT

# ------------------------------------------------------------------ tools and binaries
AWS_VENV=$IQ720_CACHE_DIR/awscli
if [[ ! -x $AWS_VENV/bin/aws ]]; then
  log "bench-backup: installing the AWS CLI (pip awscli) into $AWS_VENV"
  python3 -m venv "$AWS_VENV"
  "$AWS_VENV/bin/pip" install --quiet awscli
fi
AWS="$AWS_VENV/bin/aws"
log "bench-backup: $("$AWS" --version 2>&1)"
log "bench-backup: building release binaries"
(cd "$ROOT" && cargo build --quiet --release --locked -p iq720-operator -p iq720-bot \
  --bin iq720-operator --bin iq720-bot)

bash "$SCRIPTS/cluster-up.sh" >/dev/null
# shellcheck disable=SC1091
source "$RUN/env"
# Release bots (the node agent re-reads the image map at each container start).
cat >"$RUN/images.yaml" <<EOF
images:
  "ghcr.io/iq720/iq720-bot:*":
    command: "$REL/iq720-bot"
EOF

established() {
  [[ $(kubectl get crd "$1" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]]
}
kubectl apply --server-side -f "$ROOT/charts/iq720-operator/crds/" >/dev/null
for crd in tradingbots.trading.iq720.io backupschedules.trading.iq720.io maintenancewindows.trading.iq720.io; do
  wait_for 60 "CRD $crd to be established" established "$crd" || die "CRD $crd not established"
done
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic bench-s3 \
  --from-literal=AWS_ACCESS_KEY_ID="$IQ720_S3_ACCESS_KEY" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$IQ720_S3_SECRET_KEY" >/dev/null

PORT=$(free_ports 1)
RUST_LOG=info setsid "$REL/iq720-operator" run --kubeconfig "$RUN/kubeconfig" \
  --namespace "$NS" --metrics-address "127.0.0.1:$PORT" --bot-poll-interval 10s \
  >"$RUN/logs/operator.log" 2>&1 </dev/null &
echo $! >"$RUN/pids/operator.pid"
OP_PID=$!
answers() { curl -fsS "http://127.0.0.1:$PORT$1" >/dev/null 2>&1; }
WAIT_PIDFILE=$RUN/pids/operator.pid wait_for 60 "operator /readyz" answers /readyz ||
  die "the operator did not become ready"

bot_yaml() { # name label
  cat <<EOF
apiVersion: trading.iq720.io/v1alpha1
kind: TradingBot
metadata: {name: $1, labels: {bench: $2}}
spec:
  version: "0.1.0"
  pairs: [BTC/USDT, ETH/USDT]
  strategy:
    name: rsi
    params: {rsiPeriod: 14, rsiBuy: 48, rsiSell: 95}
  marketData: {staleAfter: 5s}
  storage: {size: 4Gi}
---
EOF
}
schedule_yaml() { # name cron label
  cat <<EOF
apiVersion: trading.iq720.io/v1alpha1
kind: BackupSchedule
metadata: {name: $1}
spec:
  schedule: "$2"
  timeZone: UTC
  botSelector: {matchLabels: {bench: $3}}
  destination:
    bucket: $IQ720_S3_BUCKET
    prefix: bench
    endpoint: $IQ720_S3_ENDPOINT
    forcePathStyle: true
    credentialsSecretRef: {name: bench-s3}
  retention: {keepLast: 2}
  verify: true
EOF
}
running_count() {
  kubectl -n "$NS" get tb -l "bench=$1" -o 'jsonpath={range .items[*]}{.status.phase}{"\n"}{end}' |
    grep -c '^Running$' || true
}
all_running() { (($(running_count "$1") == $2)); }
mkdir -p "$BENCH_OUT"
report="$BENCH_OUT/report.md"
: >"$report"

# ================================================================== 1. one 1 GiB bot
log "bench-backup: 1/2 one bot with a $((DB_BYTES / 1048576)) MiB database"
bot_yaml big big | kubectl -n "$NS" apply -f - >/dev/null
wait_for 180 "bot big Running" all_running big 1 || die "bot big did not run"
pv=$(kubectl -n "$NS" get pvc data-big-0 -o 'jsonpath={.spec.volumeName}' 2>/dev/null ||
  kubectl -n "$NS" get pvc -o 'jsonpath={.items[0].spec.volumeName}')
DB="$(kubectl get pv "$pv" -o 'jsonpath={.spec.hostPath.path}')/trades.db"
db_there() { [[ -s $DB ]]; }
wait_for 60 "the bot's database" db_there || die "no database at $DB"
t=$SECONDS
db_size=$(python3 "$SCRIPTS/seed-trades.py" "$DB" "$DB_BYTES")
log "bench-backup: database grown to $db_size bytes in $((SECONDS - t)) s"
schedule_yaml big "0 3 * * *" big | kubectl -n "$NS" apply -f - >/dev/null

# RSS sampler (kB), from before the trigger until the run is recorded.
rss_file="$BASE/rss.txt"
(
  while kill -0 "$OP_PID" 2>/dev/null; do
    printf '%s %s\n' "$(date +%s.%N)" "$(awk '/^VmRSS:/ {print $2}' "/proc/$OP_PID/status")"
    sleep 0.1
  done
) >"$rss_file" &
sampler_pid=$!
sleep 5 # the idle baseline: five seconds of samples before the trigger
trigger_at=$(date +%s.%N)
kubectl -n "$NS" annotate bks big trading.iq720.io/backup-now=bench --overwrite >/dev/null
big_done() {
  [[ $(kubectl -n "$NS" get bks big -o 'jsonpath={.status.lastOnDemandRequest}/{.status.lastResult}') =~ ^bench/.+ ]]
}
wait_for 1800 "the 1 GiB backup" big_done || die "the backup did not finish"
done_at=$(date +%s.%N)
sleep 1
kill "$sampler_pid" 2>/dev/null || true
sampler_pid=
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$OP_PID/status")
result=$(kubectl -n "$NS" get bks big -o 'jsonpath={.status.lastResult}')
[[ $result == Succeeded ]] || die "the backup ended $result: $(kubectl -n "$NS" get bks big -o 'jsonpath={.status.conditions}')"
key=$(kubectl -n "$NS" get bks big -o 'jsonpath={.status.recentBackups[0].key}')
verified=$(kubectl -n "$NS" get bks big -o 'jsonpath={.status.recentBackups[0].verified}')
[[ $verified == true ]] || die "the backup is not verified"

# aws s3 cp of the same archive (and of the raw database) to the same MinIO.
export AWS_ACCESS_KEY_ID=$IQ720_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$IQ720_S3_SECRET_KEY
export AWS_DEFAULT_REGION=$IQ720_S3_REGION AWS_EC2_METADATA_DISABLED=true
archive="$BASE/archive.tar.gz"
"$AWS" --endpoint-url "$IQ720_S3_ENDPOINT" s3 cp --only-show-errors "s3://$IQ720_S3_BUCKET/$key" "$archive"
timed_cp() { # file key -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$AWS" --endpoint-url "$IQ720_S3_ENDPOINT" s3 cp --only-show-errors "$1" "s3://$IQ720_S3_BUCKET/$2"
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
aws_archive_s=$(timed_cp "$archive" bench-awscli/archive.tar.gz)
aws_db_s=$(timed_cp "$DB" bench-awscli/trades.db)

python3 - "$RUN/logs/operator.log" "$rss_file" "$trigger_at" "$done_at" "$hwm" "$key" \
  "$aws_archive_s" "$(stat -c %s "$archive")" "$aws_db_s" "$db_size" >>"$report" <<'PY'
import json, sys
from datetime import datetime
log, rss_file, trig, done, hwm, key, aws_s, arch_size, aws_db_s, db_size = sys.argv[1:]
trig, done, aws_s, aws_db_s = float(trig), float(done), float(aws_s), float(aws_db_s)
arch_size, db_size, hwm = int(arch_size), int(db_size), int(hwm)
ev = {}
for line in open(log):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    f = j.get("fields", {})
    if f.get("bot") != "big":
        continue
    t = datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00")).timestamp()
    ev.setdefault(f.get("message"), t)
start = ev["backup started"]; snap = ev["snapshot received; streaming it to S3"]
up = ev["backup uploaded"]; ver = ev["backup verified"]
samples = [tuple(map(float, l.split())) for l in open(rss_file) if len(l.split()) == 2]
base = [kb for t, kb in samples if t < trig]
during = [kb for t, kb in samples if trig <= t <= done]
baseline = sum(base) / len(base)
peak = max(during)
mib = 1 / 1024
upload_s = up - snap
op_mibs = arch_size / upload_s / 1048576
aws_mibs = arch_size / aws_s / 1048576
print("## 1. One bot, %.0f MiB database\n" % (db_size / 1048576))
print("| figure | value |")
print("| --- | --- |")
print("| database (trades.db) | %d bytes (%.0f MiB) |" % (db_size, db_size / 1048576))
print("| archive (object) | %d bytes (%.0f MiB) |" % (arch_size, arch_size / 1048576))
print("| operator RSS idle baseline | %.1f MiB |" % (baseline * mib))
print("| operator RSS peak during the backup (100 ms samples) | %.1f MiB |" % (peak * mib))
print("| **operator RSS growth (peak - baseline)** | **%.1f MiB** (limit 64 MiB: %s) |" % ((peak - baseline) * mib, "ok" if (peak - baseline) * mib <= 64 else "EXCEEDED"))
print("| operator VmHWM after the backup | %.1f MiB |" % (hwm * mib))
print("| bot snapshot + tar.gz (started -> snapshot received) | %.1f s |" % (snap - start))
print("| upload: stream + complete + metadata copy (snapshot received -> uploaded) | %.1f s |" % upload_s)
print("| verification (download, sha256, integrity_check) | %.1f s |" % (ver - up))
print("| whole attempt (started -> verified) | %.1f s |" % (ver - start))
print("| **operator upload throughput** | **%.1f MiB/s** |" % op_mibs)
print("| `aws s3 cp` of the same archive, same MinIO, same run | %.1f s = %.1f MiB/s |" % (aws_s, aws_mibs))
print("| **operator / aws s3 cp** | **%.0f %%** (target >= 80 %%: %s) |" % (100 * op_mibs / aws_mibs, "ok" if op_mibs >= 0.8 * aws_mibs else "MISSED"))
print("| `aws s3 cp` of the raw database (reference) | %.1f s = %.1f MiB/s |" % (aws_db_s, db_size / aws_db_s / 1048576))
print()
PY
cat "$report"
# Free the big bot's disk before the fleet run.
kubectl -n "$NS" delete bks big --wait=true >/dev/null
kubectl -n "$NS" delete tb big --wait=true --timeout=120s >/dev/null || true

# ================================================================== 2. BOTS bots
log "bench-backup: 2/2 $BOTS bots in one schedule"
for i in $(seq -f '%03g' 1 "$BOTS"); do bot_yaml "fleet-$i" fleet; done | kubectl -n "$NS" apply -f - >/dev/null
wait_for 900 "$BOTS bots Running" all_running fleet "$BOTS" || die "only $(running_count fleet) of $BOTS bots run"
now=$(date +%s)
slot=$(((now / 60 + 1) * 60))
((slot - now >= 20)) || slot=$((slot + 60))
cron="$(date -u -d "@$slot" +%-M) $(date -u -d "@$slot" +%-H) * * *"
log "bench-backup: schedule \"$cron\" UTC (slot $(date -u -d "@$slot" +%H:%M:%S))"
schedule_yaml fleet "$cron" fleet | kubectl -n "$NS" apply -f - >/dev/null
fleet_done() {
  local s
  s=$(kubectl -n "$NS" get bks fleet -o 'jsonpath={.status.lastScheduleTime}/{.status.lastResult}')
  [[ $s =~ ^[0-9].*/.+ ]]
}
wait_for 1800 "the scheduled run of $BOTS bots" fleet_done || die "the scheduled run did not finish"
kubectl -n "$NS" get bks fleet -o json >"$BASE/fleet.json"
python3 - "$RUN/logs/operator.log" "$BASE/fleet.json" "$slot" "$BOTS" >>"$report" <<'PY'
import json, sys
from datetime import datetime
log, status_file, slot, bots = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
st = json.load(open(status_file))["status"]
start, end = {}, {}
for line in open(log):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    f = j.get("fields", {})
    bot = f.get("bot", "")
    if not bot.startswith("fleet-"):
        continue
    t = datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00")).timestamp()
    if f.get("message") == "backup started":
        start[bot] = t
    elif f.get("message") == "backup verified":
        end[bot] = t
verified = [r for r in st.get("recentBackups", []) if r["bot"].startswith("fleet-") and r.get("verified")]
durs = sorted(end[b] - start[b] for b in end if b in start)
def pct(p):
    return durs[min(len(durs) - 1, int(round(p / 100 * (len(durs) - 1))))]
points = sorted([(t, 1) for t in start.values()] + [(t, -1) for t in end.values()])
cur = peak = 0
for _, d in points:
    cur += d
    peak = max(peak, cur)
print("## 2. %d bots in one schedule (scheduled slot, verify on)\n" % bots)
print("| figure | value |")
print("| --- | --- |")
print("| result | %s, %d verified backups recorded, %d attempts verified in the log |" % (st.get("lastResult"), len(verified), len(durs)))
print("| slot -> first attempt started | %.1f s |" % (min(start.values()) - slot))
print("| **slot -> last backup verified (the run's window)** | **%.1f s** |" % (max(end.values()) - slot))
print("| per-bot attempt (started -> verified) p50 / p99 / max | %.2f s / %.2f s / %.2f s |" % (pct(50), pct(99), durs[-1]))
print("| **peak attempts in flight** | **%d** (operator backup concurrency: 4) |" % peak)
print("| archive size per bot | %s bytes (median) |" % sorted(r["sizeBytes"] for r in verified)[len(verified) // 2])
print()
PY
{
  echo "command: make bench-backup (DB_BYTES=$DB_BYTES BOTS=$BOTS)"
  echo "machine: $(nproc) cores, $(awk '/^MemTotal:/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $("$AWS" --version 2>&1)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >>"$report"
cat "$report"
log "bench-backup: done; report in $report"
