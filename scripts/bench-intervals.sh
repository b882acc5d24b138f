#!/usr/bin/env bash
# What 90 % intervals cost through the server (issue 14), in one run, on one machine:
#   1. serves a copy of the generated data set of scripts/bench-data.sh (CUSTOMERS customers) with
#      `patron serve` (release) on 127.0.0.1:50199 and fits a value model (which activates it);
#   2. BENCH_ROUNDS times: GetCustomerValue for random existing ids at 10 connections × 10 calls in
#      flight (BENCH_WARMUP s unrecorded, BENCH_DURATION s recorded), without and then with
#      `intervals: true`; the server's CPU per call comes from /proc;
#   3. BENCH_ROUNDS times: StreamCustomerValues over every customer, without and then with
#      `intervals: true` (after a first unrecorded pass of each, so both prediction memos are warm);
#   4. prints a markdown table (medians over the rounds) and keeps every raw JSON line.
# Loopback only; stops by itself; kills what it started on exit.
#
#   scripts/bench-intervals.sh [CUSTOMERS]          (default 100000)
#
# Environment: BENCH_ROUNDS (3), BENCH_DURATION (5), BENCH_WARMUP (1),
# BENCH_RESULTS (target/bench-intervals/results-<UTC time>.jsonl). BENCH_PROFILE=debug: debug
# builds (the CI smoke run); figures from them mean nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-100000}
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
RESULTS=${BENCH_RESULTS:-target/bench-intervals/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
ADDR=127.0.0.1:50199
command -v jq >/dev/null || { echo "bench-intervals: needs jq" >&2; exit 1; }

PROFILE=${BENCH_PROFILE:-release}
cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron -p patron-bench --bin patron-load
LOAD=target/$PROFILE/patron-load
DATA=$(scripts/bench-data.sh "$CUSTOMERS" "$PROFILE")
mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
WORK=$(mktemp -d)
SERVER=
cleanup() {
  [[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cp "$DATA" "$WORK/db.sqlite"
"target/$PROFILE/patron" --log-level warn serve --listen "$ADDR" --database "sqlite://$WORK/db.sqlite" \
  >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 1800); do
  (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && break
  sleep 0.1
done
"$LOAD" --target "$ADDR" --scenario fit --timeout 600 --json >/dev/null

TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$SERVER/stat"; }
# `run STEP INTERVALS patron-load ARGS…`: one run, tagged, with the server's CPU per call or
# per streamed customer.
run() {
  local step=$1 intervals=$2 c0 c1 out
  shift 2
  local flag=()
  [[ "$intervals" == true ]] && flag=(--intervals)
  c0=$(cpu)
  out=$("$LOAD" --target "$ADDR" "$@" "${flag[@]}" --json)
  c1=$(cpu)
  jq -c --arg step "$step" --argjson intervals "$intervals" --argjson c0 "$c0" --argjson c1 "$c1" \
    '{step: $step, intervals: $intervals} + . + {server_cpu_seconds: ($c1 - $c0)}' <<<"$out" |
    tee -a "$RESULTS"
}

ids=(--id-prefix cust- --id-first 1 --id-count "$CUSTOMERS" --id-width 6)
for round in $(seq 1 "$ROUNDS"); do
  for intervals in false true; do
    run get "$intervals" --scenario get-customer-value "${ids[@]}" --seed "$round" \
      --connections 10 --concurrency 10 --duration "$DURATION" --warmup "$WARMUP"
  done
done
for intervals in false true; do
  run warm-up "$intervals" --scenario stream-customer-values --duration 600 >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  for intervals in false true; do
    run stream "$intervals" --scenario stream-customer-values --duration 600
  done
done

# Intervals came back when asked, and only then.
jq -es 'map(select(.step == "stream")) | all(if .intervals then .customers_with_intervals > 0
  else .customers_with_intervals == 0 end)' "$RESULTS" >/dev/null ||
  { echo "bench-intervals: a stream's intervals are not as asked" >&2; exit 1; }

jq -rs '
  def median(f): map(f) | sort | .[(length - 1) / 2 | floor];
  def row(name; rate; unit; per):
    (map(select(.intervals == false)) | median(rate)) as $a
    | (map(select(.intervals == true)) | median(rate)) as $b
    | (map(select(.intervals == false)) | median(per)) as $ca
    | (map(select(.intervals == true)) | median(per)) as $cb
    | "| \(name) | \($a | floor) | \($b | floor) | \($b / $a * 100 | round) % | \($ca | . * 10 | round / 10) | \($cb | . * 10 | round / 10) |";
  "| median over rounds | without intervals, /s | with intervals, /s | with / without | server CPU µs, without | with |",
  "|---|---:|---:|---:|---:|---:|",
  (map(select(.step == "get")) | row("GetCustomerValue at 10 × 10 (per call)"; .requests_per_second; "req"; .server_cpu_seconds * 1e6 / (.requests + .warmup_requests))),
  (map(select(.step == "stream")) | row("StreamCustomerValues, full view (per customer)"; .customers_per_second; "customers"; .server_cpu_seconds * 1e6 / .customers))
' "$RESULTS"
echo "raw results: $RESULTS"
