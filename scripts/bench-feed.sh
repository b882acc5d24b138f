#!/usr/bin/env bash
# Change-feed benchmark (issue 11). In one run, on one machine, loopback only; stops everything it
# started, by itself:
#   1. Propagation: three `patron serve` replicas A, B, C on one fresh Postgres database
#      (127.0.0.1:PORT+1..3). `feed-lag` writes a paced load through A (BENCH_LOAD events/s in
#      calls of BENCH_BATCH events, purchases and engagement over BENCH_LOAD_CUSTOMERS customers)
#      and every 20 ms one event of a new customer through A, then polls B and C (no consistency
#      token) until they show it: delay from A's acknowledgement and from the send, p50/p90/p99/max
#      per reader, and the load actually acknowledged. The CPU each replica used comes from /proc.
#   2. GetCustomerValue on replica B against `bare-server` (Health/Check, 127.0.0.1:PORT+4): a
#      model is fitted on A first (FitValueModel, activated; B follows it through the feed); then
#      per level of BENCH_GET_LEVELS bare then B, closed loop, 1 s warm-up, BENCH_GET_DURATION s.
#   3. Ingest with the feed against without it (skipped with BENCH_BASELINE=0): the commit before
#      the feed (BENCH_BASELINE_REV, 4d21416) is built in a temporary git worktree into a target
#      directory of its own (BENCH_BASELINE_TARGET, kept between runs; seeded from target/ so only
#      Patron's crates compile); then `ingest-load` streams a generated data set (CUSTOMERS
#      customers, about 12 events each, StreamEvents) into a fresh database through this tree's
#      `patron serve` and through the baseline's, alternating which goes first, BENCH_ROUNDS
#      rounds, on each of BENCH_BACKENDS.
# Every result is one JSON line, tagged with its step, printed and kept in BENCH_RESULTS; a
# summary follows. Fails (after printing everything) when a probe was never seen on a reader, no
# probe was seen at all, or a GetCustomerValue call failed.
#
#   scripts/bench-feed.sh [DURATION] [CUSTOMERS]        (defaults: 30 s of probing, 100000)
#
# Env: BENCH_PROFILE (release; "debug" for the smoke run: its figures mean nothing),
#   BENCH_LOAD (10000), BENCH_BATCH (200), BENCH_WRITERS (8), BENCH_LOAD_CUSTOMERS (10000),
#   BENCH_FEED_POLL_MILLIS (unset: the replicas' default, 200), BENCH_GET_LEVELS ("1x1 10x10"),
#   BENCH_GET_DURATION (5), BENCH_BASELINE (1), BENCH_BASELINE_REV (4d21416),
#   BENCH_BASELINE_TARGET (target/bench-feed/baseline-target), BENCH_ROUNDS (1),
#   BENCH_BACKENDS ("sqlite postgres"), BENCH_PORT (50320), BENCH_RESULTS
#   (target/bench-feed/results-<UTC time>.jsonl), PATRON_BENCH_POSTGRES_URL
#   (postgres://postgres@127.0.0.1:5432/postgres; databases patron_bench_feed and
#   patron_bench_feed_ingest are created and dropped).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${1:-30}
CUSTOMERS=${2:-100000}
PROFILE=${BENCH_PROFILE:-release}
LOAD=${BENCH_LOAD:-10000}
BATCH=${BENCH_BATCH:-200}
WRITERS=${BENCH_WRITERS:-8}
LOAD_CUSTOMERS=${BENCH_LOAD_CUSTOMERS:-10000}
GET_LEVELS=${BENCH_GET_LEVELS:-"1x1 10x10"}
GET_DURATION=${BENCH_GET_DURATION:-5}
BASELINE=${BENCH_BASELINE:-1}
BASELINE_REV=${BENCH_BASELINE_REV:-4d21416}
BASELINE_TARGET=${BENCH_BASELINE_TARGET:-target/bench-feed/baseline-target}
ROUNDS=${BENCH_ROUNDS:-1}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
PORT=${BENCH_PORT:-50320}
ADMIN_URL=${PATRON_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-target/bench-feed/results-$STAMP.jsonl}
A=127.0.0.1:$((PORT + 1))
B=127.0.0.1:$((PORT + 2))
C=127.0.0.1:$((PORT + 3))
BARE=127.0.0.1:$((PORT + 4))
INGEST=127.0.0.1:$((PORT + 5))

command -v jq >/dev/null || { echo "bench-feed: needs jq" >&2; exit 1; }
command -v psql >/dev/null || { echo "bench-feed: needs psql" >&2; exit 1; }

flag=()
[[ "$PROFILE" == release ]] && flag=(--release)
cargo build "${flag[@]}" -q -p patron-server --bin patron \
  -p patron-bench --bin feed-lag --bin patron-load --bin bare-server --bin ingest-load
BIN=target/$PROFILE

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
WORK=$(mktemp -d)
PIDS=()
WORKTREE=
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS patron_bench_feed WITH (FORCE)" \
    -c "DROP DATABASE IF EXISTS patron_bench_feed_ingest WITH (FORCE)" >/dev/null 2>&1 || true
  if [[ -n "$WORKTREE" ]]; then
    git worktree remove --force "$WORKTREE" 2>/dev/null || true
    git worktree prune 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `record STEP JSON`: the JSON tagged with its step, printed and appended to the results.
record() { jq -c --arg step "$1" '{step: $step} + .' <<<"$2" | tee -a "$RESULTS"; }

wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-feed: nothing listens on port $1" >&2
  return 1
}

fresh_db() {
  psql -q -v ON_ERROR_STOP=1 "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" \
    -c "CREATE DATABASE $1" >/dev/null
  echo "${ADMIN_URL%/*}/$1"
}

# `stop PID`: stops one server this script started.
stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local kept=()
  for pid in "${PIDS[@]}"; do [[ "$pid" == "$1" ]] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
}

TICK=$(getconf CLK_TCK)
# CPU seconds (user + system) of one process, and busy seconds of the whole machine.
cpu() { awk -v t="$TICK" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
machine_busy() { awk -v t="$TICK" '/^cpu / {printf "%.2f", ($2 + $3 + $4 + $7 + $8) / t}' /proc/stat; }

# The baseline (the commit before the feed), built first: a worktree of its own and a target
# directory of its own, so this tree's binaries are never replaced.
BASE_BIN=
if [[ "$BASELINE" != 0 ]]; then
  WORKTREE=$WORK/baseline
  git worktree add --detach -q "$WORKTREE" "$BASELINE_REV"
  if [[ ! -d "$BASELINE_TARGET/$PROFILE" && -d "target/$PROFILE" ]]; then
    echo "bench-feed: seeding $BASELINE_TARGET from target/$PROFILE (compiled dependencies)" >&2
    mkdir -p "$BASELINE_TARGET"
    cp -a "target/$PROFILE" "$BASELINE_TARGET/"
  fi
  base_target=$(cd "$BASELINE_TARGET" 2>/dev/null && pwd || echo "$(pwd)/$BASELINE_TARGET")
  echo "bench-feed: building $BASELINE_REV (no feed) into $base_target" >&2
  (cd "$WORKTREE" && CARGO_TARGET_DIR="$base_target" cargo build "${flag[@]}" -q -p patron-server --bin patron)
  BASE_BIN=$base_target/$PROFILE/patron
fi

record start "$(jq -cn --arg rev "$(git rev-parse --short HEAD)" \
  --arg dirty "$(git status --porcelain | grep -c . || true)" --arg kernel "$(uname -srm)" \
  --arg cpus "$(nproc)" --arg pg "$(psql -qtA "$ADMIN_URL" -c 'SHOW server_version')" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg profile "$PROFILE" --arg base "$BASELINE_REV" \
  '{commit: $rev, changed_files: ($dirty | tonumber), kernel: $kernel, cpus: ($cpus | tonumber),
    postgres: $pg, loadavg_before: $load, profile: $profile, baseline: $base}')" >/dev/null

# 1. Propagation across three replicas on one Postgres database.
URL=$(fresh_db patron_bench_feed)
# Migrate once, so that the replicas do not start by racing to create the schema.
PATRON_LOG=warn "$BIN/patron" migrate --database "$URL" >/dev/null
serve_args=()
[[ -n "${BENCH_FEED_POLL_MILLIS:-}" ]] && serve_args=(--feed-poll-millis "$BENCH_FEED_POLL_MILLIS")
REPLICAS=()
for addr in "$A" "$B" "$C"; do
  PATRON_LOG=warn "$BIN/patron" serve --listen "$addr" --database "$URL" "${serve_args[@]}" \
    2>"$WORK/replica-${addr##*:}.log" &
  PIDS+=("$!")
  REPLICAS+=("$!")
done
"$BIN/bare-server" --listen "$BARE" 2>"$WORK/bare.log" &
BARE_PID=$!
PIDS+=("$BARE_PID")
for addr in "$A" "$B" "$C" "$BARE"; do wait_port "${addr##*:}"; done

c0=()
for pid in "${REPLICAS[@]}"; do c0+=("$(cpu "$pid")"); done
m0=$(machine_busy)
t0=$(date +%s.%N)
lag=$("$BIN/feed-lag" --write "$A" --read "$B" --read "$C" --duration "$DURATION" \
  --load-events-per-sec "$LOAD" --batch "$BATCH" --writers "$WRITERS" \
  --load-customers "$LOAD_CUSTOMERS" --tag postgres-3-replicas)
t1=$(date +%s.%N)
m1=$(machine_busy)
c1=()
for pid in "${REPLICAS[@]}"; do c1+=("$(cpu "$pid")"); done
record lag "$(jq -c --argjson t0 "$t0" --argjson t1 "$t1" --argjson m0 "$m0" --argjson m1 "$m1" \
  --argjson c0 "[${c0[0]}, ${c0[1]}, ${c0[2]}]" --argjson c1 "[${c1[0]}, ${c1[1]}, ${c1[2]}]" \
  --arg feed_poll "${BENCH_FEED_POLL_MILLIS:-default}" '
  def r: . * 100 | round / 100;
  . + {feed_poll_millis: $feed_poll, cpu_seconds: {wall: ($t1 - $t0 | r), machine_busy: ($m1 - $m0 | r),
       replica_a: ($c1[0] - $c0[0] | r), replica_b: ($c1[1] - $c0[1] | r), replica_c: ($c1[2] - $c0[2] | r)}}' <<<"$lag")"

# 2. GetCustomerValue on replica B against the bare server.
fit=$("$BIN/patron-load" --target "$A" --scenario fit --timeout 600 --json 2>"$WORK/fit.log" ||
  jq -cn --arg e "$(tail -1 "$WORK/fit.log")" '{scenario: "fit", error: $e}')
record fit "$fit" >/dev/null
sleep 1 # B follows the model through the feed
ids=(--id-prefix load- --id-first 0 --id-count "$LOAD_CUSTOMERS" --id-width 6)
for level in $GET_LEVELS; do
  args=(--connections "${level%x*}" --concurrency "${level#*x}" --duration "$GET_DURATION" --warmup 1 --json)
  record get "$(jq -c '. + {server: "bare"}' <<<"$("$BIN/patron-load" --target "$BARE" --scenario health-check "${args[@]}")")"
  record get "$(jq -c '. + {server: "replica-b"}' <<<"$("$BIN/patron-load" --target "$B" \
    --scenario get-customer-value "${ids[@]}" --seed 42 "${args[@]}")")"
done
for pid in "${PIDS[@]}"; do stop "$pid"; done
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS patron_bench_feed WITH (FORCE)" >/dev/null

# 3. Ingest through this tree's server (the feed) and the baseline's (no feed).
ingest() {
  local which=$1 bin=$2 backend=$3 round=$4 url
  if [[ "$backend" == sqlite ]]; then
    rm -f "$WORK"/ingest.db*
    url="sqlite://$WORK/ingest.db"
  else
    url=$(fresh_db patron_bench_feed_ingest)
  fi
  PATRON_LOG=warn "$bin" serve --listen "$INGEST" --database "$url" 2>"$WORK/ingest-$which.log" &
  local pid=$!
  PIDS+=("$pid")
  wait_port "${INGEST##*:}"
  local out hwm
  out=$("$BIN/ingest-load" --customers "$CUSTOMERS" grpc --addr "$INGEST" 2>/dev/null)
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  stop "$pid"
  if [[ "$backend" == postgres ]]; then
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS patron_bench_feed_ingest WITH (FORCE)" >/dev/null
  fi
  record ingest "$(jq -c --arg which "$which" --arg backend "$backend" --argjson round "$round" \
    --argjson hwm "$hwm" '{which: $which, backend: $backend, round: $round} + .
      + {events_per_sec: (.events_per_sec | round), server_peak_rss_mib: ($hwm / 1024 | round)}' <<<"$out")"
}
if [[ -n "$BASE_BIN" ]]; then
  for round in $(seq 1 "$ROUNDS"); do
    for backend in $BACKENDS; do
      # Alternate which goes first, so that neither always meets the warmer machine.
      if ((round % 2)); then order=(feed baseline); else order=(baseline feed); fi
      for which in "${order[@]}"; do
        if [[ "$which" == feed ]]; then ingest feed "$BIN/patron" "$backend" "$round"
        else ingest baseline "$BASE_BIN" "$backend" "$round"; fi
      done
    done
  done
fi

# Summary.
jq -rs '
  def ms: tostring + " ms";
  def n: if . >= 1000 then ((. / 1000 | floor) | n) + "," + ((. % 1000) | tostring | ("00" + .)[-3:]) else tostring end;
  (map(select(.step == "lag"))[0]) as $l
  | "load through A: \($l.load.achieved_events_per_sec | floor | n) events/s acknowledged (target \($l.load.target_events_per_sec | n), \($l.load.batch) per call, \($l.load.writers) writers; per second \($l.load.per_second_min | n)–\($l.load.per_second_max | n)); failed calls \($l.load.failed_calls | tojson); probes \($l.probes.sent)",
    "| reader | seen | never seen | from ack p50 / p90 / p99 / max | from send p50 / p90 / p99 / max |",
    "|---|---|---|---|---|",
    ($l.lag[] | "| \(.reader) | \(.seen) | \(.never_seen) | \(.from_ack.p50_ms) / \(.from_ack.p90_ms) / \(.from_ack.p99_ms) / \(.from_ack.max_ms) ms | \(.from_send.p50_ms) / \(.from_send.p90_ms) / \(.from_send.p99_ms) / \(.from_send.max_ms) ms |"),
    "goals: \($l.goals | tojson)",
    "CPU seconds in \($l.cpu_seconds.wall) s: machine \($l.cpu_seconds.machine_busy), A \($l.cpu_seconds.replica_a), B \($l.cpu_seconds.replica_b), C \($l.cpu_seconds.replica_c)",
    "",
    "| level | bare Check req/s | replica B GetCustomerValue req/s | ratio | p99 bare / B | errors |",
    "|---|---|---|---|---|---|",
    (map(select(.step == "get")) | group_by("\(.connections)x\(.concurrency)")[]
      | (map(select(.server == "bare"))[0]) as $b | (map(select(.server == "replica-b"))[0]) as $p
      | "| \($p.connections) × \($p.concurrency) | \($b.requests_per_second | floor | n) | \($p.requests_per_second | floor | n) | \(100 * $p.requests_per_second / $b.requests_per_second | round) % | \($b.p99_us) / \($p.p99_us) µs | \($p.errors) |"),
    (if any(.[]; .step == "ingest") then
      "",
      "| backend | round | with the feed events/s | without (baseline) events/s | ratio |",
      "|---|---|---|---|---|",
      (map(select(.step == "ingest")) | group_by("\(.backend) \(.round)")[]
        | (map(select(.which == "feed"))[0]) as $f | (map(select(.which == "baseline"))[0]) as $b
        | "| \($f.backend) | \($f.round) | \($f.events_per_sec | n) | \($b.events_per_sec | n) | \(1000 * $f.events_per_sec / $b.events_per_sec | round / 10) % |")
    else empty end)
' "$RESULTS"
echo "bench-feed: raw results in $RESULTS" >&2

# Checks: propagation must have been observed on every reader, and every probe seen.
jq -se '
  (map(select(.step == "lag"))[0].lag | all(.seen > 0 and .never_seen == 0))
  and (map(select(.step == "get" and .server == "replica-b")) | all(.errors == 0))
' "$RESULTS" >/dev/null || {
  echo "bench-feed: FAILED: a probe was never seen on a reader, or GetCustomerValue failed" >&2
  exit 1
}
