#!/usr/bin/env bash
# Ingest benchmark: streams EVENTS generated purchases (over CUSTOMERS customers) into a fresh
# Patron through StreamEvents, on SQLite and on Postgres, and reports events/s and the server's
# peak resident memory (VmHWM). Loopback only; stops by itself.
#   scripts/bench-ingest.sh [EVENTS] [CUSTOMERS]
# Postgres: PATRON_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres); a
# database patron_bench is created and dropped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

EVENTS=${1:-1000000}
CUSTOMERS=${2:-100000}
ADMIN_URL=${PATRON_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
ADDR=127.0.0.1:50199

cargo build --release -q -p patron-server --bin patron --example ingest
PATRON=target/release/patron
INGEST=target/release/examples/ingest
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

run() {
  local name=$1 url=$2
  PATRON_LOG=warn "$PATRON" serve --listen "$ADDR" --database "$url" &
  local pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/50199) 2>/dev/null && break
    sleep 0.1
  done
  local result
  result=$("$INGEST" "$ADDR" "$EVENTS" "$CUSTOMERS" 5000)
  local hwm
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid" || true
  echo "{\"backend\":\"$name\",\"result\":$result,\"server_peak_rss_kib\":$hwm}"
}

run sqlite "sqlite://$WORK/bench.db"
psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS patron_bench WITH (FORCE)" -c "CREATE DATABASE patron_bench" >/dev/null
run postgres "${ADMIN_URL%/*}/patron_bench"
psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS patron_bench WITH (FORCE)" >/dev/null
