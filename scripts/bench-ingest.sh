#!/usr/bin/env bash
# Ingest benchmark: the events of a generated data set (`patron generate`: CUSTOMERS customers,
# about 12 events each, seed 42, observation end 2026-11-01) streamed into a fresh Patron through
# StreamEvents, then the same rows inserted raw into a table shaped like Patron's events table in
# the same database (the storage limit), on SQLite and on Postgres. Prints one JSON line per run
# with events/s, the ratio to the raw insert and the server's peak RSS. Loopback only; stops by
# itself.
#   scripts/bench-ingest.sh [CUSTOMERS] [ROUNDS]
# Env: PATRON_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres; a database
# patron_bench is created and dropped), BENCH_BACKENDS (default "sqlite postgres"),
# BENCH_PROFILE (release; production; "debug" for the CI smoke run), BENCH_OUT (a JSONL file to append to).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-100000}
ROUNDS=${2:-1}
ADMIN_URL=${PATRON_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
PROFILE=${BENCH_PROFILE:-release}
PORT=${BENCH_PORT:-50199}
ADDR=127.0.0.1:$PORT

cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron -p patron-bench --bin ingest-load
BIN=target/$PROFILE
WORK=$(mktemp -d)
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill -TERM "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

out() {
  echo "$1"
  if [ -n "${BENCH_OUT:-}" ]; then echo "$1" >>"$BENCH_OUT"; fi
}

run() {
  local backend=$1 url=$2 round=$3
  PATRON_LOG=warn "$BIN/patron" serve --listen "$ADDR" --database "$url" &
  SERVER=$!
  for _ in $(seq 1 1800); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
  local grpc raw hwm
  grpc=$("$BIN/ingest-load" --customers "$CUSTOMERS" grpc --addr "$ADDR")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
  kill -TERM "$SERVER"
  wait "$SERVER" || true
  SERVER=
  raw=$("$BIN/ingest-load" --customers "$CUSTOMERS" raw --database "$url")
  python3 - "$backend" "$round" "$grpc" "$raw" "$hwm" <<'EOF'
import json, sys
backend, round_, grpc, raw, hwm = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
assert grpc["events"] == raw["events"], (grpc, raw)
print(json.dumps({
    "scenario": "ingest", "backend": backend, "round": round_,
    "customers": grpc["customers"], "events": grpc["events"], "recorded": grpc["recorded"],
    "patron_events_per_sec": round(grpc["events_per_sec"]),
    "raw_events_per_sec": round(raw["events_per_sec"]),
    "ratio": round(grpc["events_per_sec"] / raw["events_per_sec"], 3),
    "patron_seconds": round(grpc["seconds"], 2), "raw_seconds": round(raw["seconds"], 2),
    "server_peak_rss_mib": round(hwm / 1024),
}))
EOF
}

for round in $(seq 1 "$ROUNDS"); do
  for backend in $BACKENDS; do
    case $backend in
      sqlite)
        rm -f "$WORK"/bench.db*
        out "$(run sqlite "sqlite://$WORK/bench.db" "$round")"
        ;;
      postgres)
        psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS patron_bench WITH (FORCE)" -c "CREATE DATABASE patron_bench" >/dev/null
        out "$(run postgres "${ADMIN_URL%/*}/patron_bench" "$round")"
        psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS patron_bench WITH (FORCE)" >/dev/null
        ;;
      *) echo "unknown backend $backend" >&2; exit 2 ;;
    esac
  done
done
