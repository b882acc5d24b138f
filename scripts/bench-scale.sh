#!/usr/bin/env bash
# Scale benchmark (issue 15): one replica holding every customer. In one run, on one machine:
#   1. takes the generated data set of scripts/bench-data.sh (CUSTOMERS customers; EVENTS all,
#      about 12 events of every kind each, or purchases, about 2.5 purchases and refunds each;
#      generated once and cached) and copies it;
#   2. with BENCH_BASELINE=PATH (another build of `patron`, e.g. the last commit's), starts that
#      build on the copy first: seconds until it says SERVING and its memory then; then stops it;
#   3. starts `patron serve` (production build, 127.0.0.1:50341) with --index-snapshot: seconds from
#      the process start until grpc.health.v1.Health says SERVING and the memory then (VmRSS),
#      reading the database; waits for the snapshot it then writes (its size and time); stops it
#      and starts it again, now from the snapshot: seconds and memory again. That second server is
#      measured below, beside `bare-server` (127.0.0.1:50342);
#   4. FitValueModel once (activating the model): wall seconds and memory after;
#   5. BENCH_ROUNDS rounds of GetCustomerValue at 10 x 10 (ids drawn from every customer) against
#      bare-server's Health/Check run just before and just after it (the ratio is against the mean
#      of the two), BENCH_WARMUP s unrecorded then BENCH_DURATION s recorded each;
#   6. the segment scenario of patron-load (CountSegmentMembers of rules with and without model
#      values, listing every member, PreviewSegment; BENCH_REPETITIONS rounds);
#   7. one StreamCustomerValues over everyone (the full view), then one in the BASIC view;
#   8. the peak memory of the whole run (VmHWM, from the process start).
# Every step's JSON goes to a results file; a summary is printed at the end. Loopback only; stops
# by itself; kills what it started on exit.
#
#   scripts/bench-scale.sh [CUSTOMERS] [EVENTS]      (default 1000000 all)
#   scripts/bench-scale.sh 10000000 purchases        (the 10,000,000-customer run)
#
# Environment: BENCH_BASELINE (unset: no baseline start); BENCH_PROFILE (production, the build
# deploy/Dockerfile ships: release linked whole; or release; debug for the CI smoke run);
# BENCH_ROUNDS (3); BENCH_DURATION (10); BENCH_WARMUP (2); BENCH_REPETITIONS (3);
# BENCH_RESULTS (target/bench-scale/results-<time>.jsonl);
# BENCH_DATABASE: a postgres:// URL to serve from instead of the SQLite copy (the data set must be
# there already: `patron generate --database URL …` with the same arguments).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-1000000}
EVENTS=${2:-all}
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
REPETITIONS=${BENCH_REPETITIONS:-3}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-target/bench-scale/results-$STAMP.jsonl}
PATRON_ADDR=127.0.0.1:50341
BARE_ADDR=127.0.0.1:50342

command -v jq >/dev/null || { echo "bench-scale: needs jq" >&2; exit 1; }
[[ -x node_modules/.bin/buf ]] || npm ci --silent >&2
BUF=node_modules/.bin/buf

# BENCH_PROFILE=debug: debug builds (the CI smoke run); figures from them mean nothing.
# Patron, the bare server and the load client are built alike, so a ratio compares like builds.
PROFILE=${BENCH_PROFILE:-production}
cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q \
  -p patron-server --bin patron -p patron-bench --bin bare-server --bin patron-load
PATRON=target/$PROFILE/patron
BARE=target/$PROFILE/bare-server
LOAD=target/$PROFILE/patron-load

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
mem() {
  awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "{\"rss_mib\":%.0f,\"hwm_mib\":%.0f}", r / 1024, h / 1024}' "/proc/$1/status"
}
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
record() {
  jq -c --arg step "$1" --arg server "$2" '{step: $step, server: $server} + .' <<<"$3" | tee -a "$RESULTS"
}

if [[ -n "${BENCH_DATABASE:-}" ]]; then
  DB=$BENCH_DATABASE
  DATA=$BENCH_DATABASE
else
  DATA=$(scripts/bench-data.sh "$CUSTOMERS" "$PROFILE" "$EVENTS")
  cp "$DATA" "$WORK/bench.db"
  DB=sqlite://$WORK/bench.db
fi
echo "bench-scale: $CUSTOMERS customers ($EVENTS events) from $DATA; results in $RESULTS" >&2

# `serve BINARY LOG [FLAGS…]`: starts BINARY serving $DB on $PATRON_ADDR; sets SERVER_PID and SERVING_S,
# the seconds from the start until the server logged that it serves and Health/Check said SERVING
# (the log is polled, not the server: a client started every few tenths of a second would take
# CPU from the start it measures).
serve() {
  local t0 t1
  t0=$(now)
  "$1" serve --listen "$PATRON_ADDR" --database "$DB" --request-timeout-secs 600 "${@:3}" 2>"$2" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 6000); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    grep -q 'patron serving' "$2" && break
    sleep 0.05
  done
  t1=$(now)
  "$BUF" curl --protocol grpc --http2-prior-knowledge -d '{}' \
    "http://$PATRON_ADDR/grpc.health.v1.Health/Check" | grep -q '"SERVING"' ||
    { echo "bench-scale: $1 did not become SERVING (see $2)" >&2; exit 1; }
  SERVING_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
}

meta=$(jq -cn --arg rev "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --arg dirty "$(git status --porcelain 2>/dev/null | grep -c . || true)" --arg data "$DATA" \
  --argjson customers "$CUSTOMERS" --arg events "$EVENTS" --arg cpus "$(nproc)" \
  '{commit: $rev, changed_files: ($dirty | tonumber), data_set: $data, customers: $customers,
    events: $events, cpus: ($cpus | tonumber)}')

if [[ -n "${BENCH_BASELINE:-}" ]]; then
  serve "$BENCH_BASELINE" "$WORK/baseline.log"
  record start baseline "$(jq -c --argjson m "$(mem "$SERVER_PID")" --argjson s "$SERVING_S" \
    --arg bin "$BENCH_BASELINE" '. + {binary: $bin, serving_seconds: $s, memory: $m}' <<<"$meta")"
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
fi

# From the database (no snapshot yet); the server then writes its snapshot in the background.
SNAPSHOT=(--index-snapshot "$WORK/index.snapshot")
serve "$PATRON" "$WORK/patron-first.log" "${SNAPSHOT[@]}"
record start patron "$(jq -c --argjson m "$(mem "$SERVER_PID")" --argjson s "$SERVING_S" \
  '. + {from: "database", serving_seconds: $s, memory: $m}' <<<"$meta")"
for _ in $(seq 1 6000); do
  grep -q 'index snapshot written' "$WORK/patron-first.log" && break
  sleep 0.1
done
written=$(grep 'index snapshot written' "$WORK/patron-first.log" | head -1 | sed 's/\x1b\[[0-9;]*m//g')
record snapshot-written patron "$(jq -cn --arg line "$written" --argjson m "$(mem "$SERVER_PID")" \
  --argjson bytes "$(stat -c %s "$WORK/index.snapshot")" '{log: $line, bytes: $bytes, memory: $m}')"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true

# Again, from the snapshot: this server is the one measured below.
serve "$PATRON" "$WORK/patron.log" "${SNAPSHOT[@]}"
PATRON_PID=$SERVER_PID
record start patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" --argjson s "$SERVING_S" \
  '. + {from: "snapshot", serving_seconds: $s, memory: $m}' <<<"$meta")"
"$BARE" --listen "$BARE_ADDR" 2>"$WORK/bare.log" &
BARE_PID=$!
PIDS+=("$BARE_PID")

fitted=$("$LOAD" --target "$PATRON_ADDR" --scenario fit --timeout 600 --json)
record fit patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" '. + {memory: $m}' <<<"$fitted")"

ids=(--id-prefix cust- --id-first 1 --id-count "$CUSTOMERS" --id-width 6)
level=(--connections 10 --concurrency 10 --duration "$DURATION" --warmup "$WARMUP" --json)
# Each round runs the bare server before and after Patron and compares Patron with the mean of the
# two: this machine's speed drifts by a quarter within minutes, and a bare run on one side only
# made single rounds read 0.66 and 1.06 in one run.
bare=$("$LOAD" --target "$BARE_ADDR" --scenario health-check "${level[@]}")
record get bare "$(jq -c '. + {round: 0}' <<<"$bare")" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  before=$(jq '.requests_per_second' <<<"$bare")
  got=$("$LOAD" --target "$PATRON_ADDR" --scenario get-customer-value "${ids[@]}" --seed "$round" "${level[@]}")
  bare=$("$LOAD" --target "$BARE_ADDR" --scenario health-check "${level[@]}")
  record get bare "$(jq -c --argjson r "$round" '. + {round: $r}' <<<"$bare")" >/dev/null
  record get patron "$(jq -c --argjson r "$round" --argjson m "$(mem "$PATRON_PID")" \
    --argjson before "$before" --argjson after "$(jq '.requests_per_second' <<<"$bare")" \
    '. + {round: $r, memory: $m, bare_before: $before, bare_after: $after,
          bare_requests_per_second: (($before + $after) / 2 | round),
          ratio: (.requests_per_second / (($before + $after) / 2) * 1000 | round / 1000)}' <<<"$got")"
done

"$LOAD" --target "$PATRON_ADDR" --scenario segments --repetitions "$REPETITIONS" \
  --server-pid "$PATRON_PID" --timeout 600 --json | while read -r line; do
  record segments patron "$line" >/dev/null
done
record segments-memory patron "$(jq -cn --argjson m "$(mem "$PATRON_PID")" '{memory: $m}')"

for view in full basic; do
  flag=()
  [[ "$view" == basic ]] && flag=(--basic-view)
  c0=$(cpu "$PATRON_PID")
  streamed=$("$LOAD" --target "$PATRON_ADDR" --scenario stream-customer-values --duration 900 "${flag[@]}" --json)
  c1=$(cpu "$PATRON_PID")
  record stream patron "$(jq -c --arg view "$view" --argjson m "$(mem "$PATRON_PID")" \
    --argjson c0 "$c0" --argjson c1 "$c1" \
    '. + {view: $view, memory: $m, server_cpu_seconds: (($c1 - $c0) * 1000 | round / 1000)}' <<<"$streamed")"
done

echo >&2
jq -rs --argjson customers "$CUSTOMERS" '
  def med: sort | .[length / 2 | floor];
  (map(select(.step == "start")) | map("start (\(.server), from \(.from // "database")): SERVING after \(.serving_seconds) s, RSS \(.memory.rss_mib) MiB (\(.memory.rss_mib * 1048576 / $customers | round) bytes per customer)") | .[]),
  (map(select(.step == "snapshot-written"))[0] | "snapshot: \(.bytes) bytes (\(.bytes / $customers | round) per customer); \([.log | scan("elapsed_ms=([0-9]+)")] | .[0][0] // "?") ms to write"),
  (map(select(.step == "fit"))[0] | "FitValueModel: \(.seconds) s on \(.customers) customers; RSS after \(.memory.rss_mib) MiB"),
  (map(select(.step == "get" and .server == "patron")) | "GetCustomerValue 10 x 10: \(map(.requests_per_second) | med) req/s against bare \(map(.bare_requests_per_second) | med): ratios \(map(.ratio) | sort)"),
  (map(select(.step == "segments" and .segment != null)) | map("CountSegmentMembers \(.segment): \(.count_ms.median) ms median (\(.count) members; \(.rule))") | .[]),
  (map(select(.step == "stream")) | map("StreamCustomerValues \(.view): \(.customers) customers in \(.seconds) s = \(.customers_per_second) customers/s; CPU s server \(.server_cpu_seconds), client \(.client_cpu_seconds)") | .[]),
  (map(select(.server == "patron" and .memory != null)) | "peak RSS (VmHWM, whole run): \(map(.memory.hwm_mib) | max) MiB")
' "$RESULTS" >&2
