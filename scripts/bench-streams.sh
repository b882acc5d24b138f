#!/usr/bin/env bash
# Server memory under many concurrent StreamCustomerValues calls (issue 13: "200 concurrent
# streams over 1,000,000 customers, read or unread, add at most 200 MB").
#
#   1. gets the generated data set of scripts/bench-data.sh (CUSTOMERS customers), copies it;
#   2. serves it with `patron serve` (limits raised so no stream is refused: --max-streams and
#      --max-streams-per-connection 100000) and fits a value model, so profiles are complete;
#   3. runs `stream-memory`: STREAMS streams over everyone at once on 20 connections (10 for
#      the streams read once and then held open unread for HOLD seconds, 10 for those read for HOLD
#      seconds or to the end), while the
#      server's VmRSS is sampled every 20 ms; prints the RSS before, the peak and what was added;
#   4. with BENCH_BASELINE=1, the same against BASELINE_REV's `patron serve` (the streams before
#      they were lazy; built by scripts/build-baseline.sh), in the same run.
#
#   scripts/bench-streams.sh [CUSTOMERS] [STREAMS] [HOLD]   (defaults 1000000, 200, 20)
#
# Env: BENCH_PROFILE (release; production; "debug" for the smoke run), BENCH_BASELINE (0), BASELINE_REV
# (9214900: the commit before lazy streams), BENCH_CHUNK (0: the server's default), BENCH_OUT
# (append the JSON lines there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-1000000}
STREAMS=${2:-200}
HOLD=${3:-20}
PROFILE=${BENCH_PROFILE:-release}
CARGO_PROFILE=$(scripts/cargo-profile.sh "$PROFILE")
BASELINE=${BENCH_BASELINE:-0}
BASELINE_REV=${BASELINE_REV:-9214900}
CHUNK=${BENCH_CHUNK:-0}
PORT=50311

WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --profile "$CARGO_PROFILE" -q -p patron-server --bin patron -p patron-bench --bin stream-memory --bin patron-load
BIN=target/$PROFILE/patron
LOAD=target/$PROFILE/stream-memory
FIT=target/$PROFILE/patron-load
DATA=$(scripts/bench-data.sh "$CUSTOMERS" "$PROFILE")

BASE_BIN=
if [ "$BASELINE" = 1 ]; then
  BASE_BIN="$WORK/patron-baseline"
  scripts/build-baseline.sh "$BASELINE_REV" "$PROFILE" "$BASE_BIN"
fi

wait_serving() {
  # The port opens once the views are loaded.
  for _ in $(seq 1 3000); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    if ! kill -0 "$PID" 2>/dev/null; then
      echo "bench-streams: the server exited" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "bench-streams: nothing listens on port $PORT" >&2
  return 1
}

# `run NAME BINARY`: serves a fresh copy of the data with BINARY and measures.
run() {
  local name=$1 bin=$2
  cp "$DATA" "$WORK/data.db"
  "$bin" --log-level warn --database "sqlite://$WORK/data.db" serve --listen "127.0.0.1:$PORT" \
    --max-streams 100000 --max-streams-per-connection 100000 >"$WORK/$name.log" 2>&1 &
  PID=$!
  wait_serving
  "$FIT" --target "127.0.0.1:$PORT" --scenario fit --timeout 600 --json >/dev/null
  sleep 1
  local out
  out=$("$LOAD" --target "127.0.0.1:$PORT" --server-pid "$PID" --streams "$STREAMS" \
    --connections 20 --unread-fraction 0.5 --hold "$HOLD" --chunk-size "$CHUNK" --json)
  out=$(jq -c --arg server "$name" --argjson customers "$CUSTOMERS" \
    '{server: $server, customers: $customers} + .' <<<"$out")
  echo "$out"
  if [ -n "${BENCH_OUT:-}" ]; then echo "$out" >>"$BENCH_OUT"; fi
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}

run current "$BIN"
if [ -n "$BASE_BIN" ]; then
  run "baseline-$BASELINE_REV" "$BASE_BIN"
fi
