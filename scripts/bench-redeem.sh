#!/usr/bin/env bash
# RedeemReward under contention, on SQLite and on Postgres, in one run:
#   1. builds `patron` and `redeem-load` (release);
#   2. for each backend, starts `patron serve` on a fresh database (SQLite file in a temp dir;
#      Postgres database `bench_redeem` on BENCH_POSTGRES_ADMIN_URL, dropped afterwards);
#   3. runs `redeem-load` with BENCH_CLIENTS (64) clients for BENCH_DURATION (10) s, first against
#      one hot balance, then spread over BENCH_MEMBERS (1000) balances; each run checks every
#      balance and ledger afterwards and fails on any overdraft or mismatch;
#   4. stops the server and runs the baseline `redeem-raw` on the same database, same clients,
#      same time, hot and spread: the smallest durable redemption transaction in raw SQL (a
#      conditional decrement and one ledger row), with the same checks;
#   5. prints one JSON line per run and keeps them in target/bench-redeem/results-<time>.jsonl.
# BENCH_PROFILE=debug builds and runs debug binaries (the CI smoke run).
# Loopback only; stops by itself; kills what it started on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLIENTS=${BENCH_CLIENTS:-64}
DURATION=${BENCH_DURATION:-10}
MEMBERS=${BENCH_MEMBERS:-1000}
ADMIN_URL=${BENCH_POSTGRES_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=target/bench-redeem/results-$STAMP.jsonl
mkdir -p "$(dirname "$RESULTS")"

PROFILE=${BENCH_PROFILE:-release}
cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron -p patron-bench --bin redeem-load --bin redeem-raw
BIN=target/$PROFILE
TMP=$(mktemp -d)
SERVER=
cleanup() {
  [[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null || true
  rm -rf "$TMP"
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS bench_redeem" >/dev/null 2>&1 || true
}
trap cleanup EXIT

run_backend() {
  local label=$1 url=$2 port=$3
  $BIN/patron serve --listen 127.0.0.1:$port --database "$url" >"$TMP/$label.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
  $BIN/redeem-load --addr 127.0.0.1:$port --clients "$CLIENTS" --members 1 \
    --seconds "$DURATION" --label "$label-hot" | tee -a "$RESULTS"
  $BIN/redeem-load --addr 127.0.0.1:$port --clients "$CLIENTS" --members "$MEMBERS" \
    --seconds "$DURATION" --label "$label-$MEMBERS" | tee -a "$RESULTS"
  kill "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  SERVER=
  $BIN/redeem-raw --database "$url" --clients "$CLIENTS" --members 1 \
    --seconds "$DURATION" --label "$label-hot-raw" | tee -a "$RESULTS"
  $BIN/redeem-raw --database "$url" --clients "$CLIENTS" --members "$MEMBERS" \
    --seconds "$DURATION" --label "$label-$MEMBERS-raw" | tee -a "$RESULTS"
}

run_backend sqlite "sqlite://$TMP/redeem.db" 50083
psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS bench_redeem" -c "CREATE DATABASE bench_redeem" >/dev/null
PG_URL="${ADMIN_URL%/*}/bench_redeem"
run_backend postgres "$PG_URL" 50084
echo "bench-redeem: results in $RESULTS"
