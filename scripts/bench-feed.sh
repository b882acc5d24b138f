#!/usr/bin/env bash
# Change-feed benchmark (issue 11). In one run, on one machine, loopback only, stops by itself:
#   1. propagation: three `patron serve` replicas (A, B, C) on one fresh Postgres database;
#      `feed-lag` writes a background load through A (BENCH_LOAD events/s, default 10,000) and,
#      every 20 ms, one purchase of a new customer through A, then polls B and C (GetCustomerValue,
#      no consistency token) until it is visible: delay from A's acknowledgement (A has committed)
#      and from the send, p50/p90/p99/max;
#   2. ingest with the feed against without it: the events of a generated data set
#      (`ingest-load`, CUSTOMERS customers, StreamEvents) into a fresh database through this
#      commit's `patron serve` and through the commit before the feed (BASELINE_REV, built in a
#      temporary git worktree by scripts/build-baseline.sh), alternating, BENCH_ROUNDS rounds, on
#      SQLite and Postgres.
# Prints one JSON line per measurement and appends them to BENCH_OUT if set.
#
#   scripts/bench-feed.sh [DURATION] [CUSTOMERS]      (defaults 30 s, 50000 customers)
#
# Env: PATRON_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres; databases
# patron_bench_feed* are created and dropped), BENCH_PROFILE (release; production; "debug" for the smoke run),
# BENCH_BASELINE (1; 0 skips step 2), BENCH_LAG (1; 0 skips step 1), BENCH_BACKENDS of step 2
# ("sqlite postgres"), BENCH_ROUNDS (2), BENCH_LOAD (10000), BENCH_BATCH (events per load call,
# 250), BASELINE_REV (4d21416).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${1:-30}
CUSTOMERS=${2:-50000}
ADMIN_URL=${PATRON_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PROFILE=${BENCH_PROFILE:-release}
CARGO_PROFILE=$(scripts/cargo-profile.sh "$PROFILE")
BASELINE=${BENCH_BASELINE:-1}
ROUNDS=${BENCH_ROUNDS:-2}
LOAD=${BENCH_LOAD:-10000}
BASELINE_REV=${BASELINE_REV:-4d21416}
PORTS=(50301 50302 50303)
INGEST_PORT=50304

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

out() {
  echo "$1"
  if [ -n "${BENCH_OUT:-}" ]; then echo "$1" >>"$BENCH_OUT"; fi
}

build() {
  cargo build --profile "$CARGO_PROFILE" -q -p patron-server --bin patron -p patron-bench --bin feed-lag --bin ingest-load
}

BIN=target/$PROFILE
BASE_BIN=
if [ "$BASELINE" != 0 ]; then
  BASE_BIN="$WORK/patron-baseline"
  scripts/build-baseline.sh "$BASELINE_REV" "$PROFILE" "$BASE_BIN"
fi
build

psql_admin() { psql -q -v ON_ERROR_STOP=1 "$ADMIN_URL" -c "$1" >/dev/null; }
db_url() { echo "${ADMIN_URL%/*}/$1"; }

wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

# 1. Propagation across three replicas on Postgres.
if [ "${BENCH_LAG:-1}" != 0 ]; then
psql_admin "DROP DATABASE IF EXISTS patron_bench_feed"
psql_admin "CREATE DATABASE patron_bench_feed"
URL=$(db_url patron_bench_feed)
# Migrate once, so the replicas do not race to create the schema.
PATRON_LOG=warn "$BIN/patron" migrate --database "$URL" >/dev/null
for port in "${PORTS[@]}"; do
  PATRON_LOG=warn "$BIN/patron" serve --listen "127.0.0.1:$port" --database "$URL" &
  PIDS+=($!)
done
for port in "${PORTS[@]}"; do wait_port "$port"; done
sleep 1
lag=$("$BIN/feed-lag" --write "127.0.0.1:${PORTS[0]}" --read "127.0.0.1:${PORTS[1]}" \
  --read "127.0.0.1:${PORTS[2]}" --duration "$DURATION" --load-events-per-sec "$LOAD" --batch "${BENCH_BATCH:-250}" --tag "postgres-3-replicas-batch-${BENCH_BATCH:-250}")
out "$lag"
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
psql_admin "DROP DATABASE IF EXISTS patron_bench_feed"
python3 - "$lag" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
assert r["probes"] > 0 and r["all_readers_from_ack"]["count"] > 0, r
assert r["probes_never_seen"] == 0, r
EOF
fi

# 2. Ingest with the feed against without it.
ingest() {
  local which=$1 bin=$2 backend=$3 round=$4 url
  if [ "$backend" = sqlite ]; then
    url="sqlite://$WORK/ingest-$which-$round.db"
  else
    psql_admin "DROP DATABASE IF EXISTS patron_bench_feed_ingest"
    psql_admin "CREATE DATABASE patron_bench_feed_ingest"
    url=$(db_url patron_bench_feed_ingest)
  fi
  PATRON_LOG=warn "$bin" serve --listen "127.0.0.1:$INGEST_PORT" --database "$url" &
  local pid=$!
  PIDS+=($pid)
  wait_port "$INGEST_PORT"
  local r
  r=$("$BIN/ingest-load" --customers "$CUSTOMERS" grpc --addr "127.0.0.1:$INGEST_PORT")
  kill -TERM "$pid"
  wait "$pid" || true
  PIDS=()
  [ "$backend" = postgres ] && psql_admin "DROP DATABASE IF EXISTS patron_bench_feed_ingest"
  rm -f "$WORK"/ingest-*.db*
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(tool="ingest", which=sys.argv[2], backend=sys.argv[3], round=int(sys.argv[4])); print(json.dumps(r))' \
    "$r" "$which" "$backend" "$round"
}

if [ -n "$BASE_BIN" ]; then
  for backend in ${BENCH_BACKENDS:-sqlite postgres}; do
    for round in $(seq 1 "$ROUNDS"); do
      # Alternate which goes first, so neither always gets the warmer machine.
      if [ $((round % 2)) = 1 ]; then
        out "$(ingest feed "$BIN/patron" "$backend" "$round")"
        out "$(ingest baseline "$BASE_BIN" "$backend" "$round")"
      else
        out "$(ingest baseline "$BASE_BIN" "$backend" "$round")"
        out "$(ingest feed "$BIN/patron" "$backend" "$round")"
      fi
    done
  done
fi
