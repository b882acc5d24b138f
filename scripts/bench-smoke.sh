#!/usr/bin/env bash
# Smoke run of every benchmark (the CI step): each scenario's one command, on debug builds and
# tiny sizes, so that the tools, scripts and checks keep working. It proves they run and that
# their own checks (event counts, ledger invariants, member counts, number comparisons) hold; the
# figures it prints mean nothing. The real runs and their results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BENCH_PROFILE=debug
START=$SECONDS
step() { echo; echo "==> bench smoke: $1 (t+$((SECONDS - START)) s)"; }

step "ingest (StreamEvents and the raw insert; SQLite and Postgres)"
scripts/bench-ingest.sh 300

step "scoring reads (GetCustomerValue vs bare, StreamCustomerValues, FitValueModel)"
BENCH_ROUNDS=1 BENCH_LEVELS="1x1 2x2" BENCH_DURATION=1 BENCH_WARMUP=0 \
  BENCH_RESULTS=target/bench-smoke/scoring.jsonl scripts/bench-scoring.sh 2000

step "intervals (GetCustomerValue and StreamCustomerValues with and without intervals)"
BENCH_ROUNDS=1 BENCH_DURATION=1 BENCH_WARMUP=0 \
  BENCH_RESULTS=target/bench-smoke/intervals.jsonl scripts/bench-intervals.sh 2000

step "segments (CountSegmentMembers, ListSegmentMembers, PreviewSegment, SQL baseline)"
BENCH_REPETITIONS=1 BENCH_RESULTS=target/bench-smoke/segments.jsonl scripts/bench-segments.sh 2000

step "RedeemReward under contention (and the raw-SQL baseline)"
BENCH_DURATION=1 BENCH_MEMBERS=10 BENCH_CLIENTS=16 scripts/bench-redeem.sh

step "value models against lifetimes (summary + fit + predictions, numbers to 1e-4)"
scripts/bench-fit.sh 2000

step "change feed (three replicas on Postgres: propagation under a write load)"
BENCH_BASELINE=0 BENCH_LOAD=500 scripts/bench-feed.sh 4

step "authentication and TLS (GetCustomerValue with auth off, on, over TLS; bare server)"
BENCH_ROUNDS=1 BENCH_DURATION=1 BENCH_WARMUP=0 BENCH_LEVEL=2x2 scripts/bench-auth.sh 300

step "overload (GetCustomerValue goodput past the admission limit, side probe; shedding on and off)"
BENCH_WARMUP=0 BENCH_SWEEP=2,8 BENCH_CONNECTIONS=4 BENCH_OVERLOAD_MIN=600 scripts/bench-overload.sh 1 300

step "scale (start from the database and from the index snapshot, fit, reads, counts, streams)"
BENCH_ROUNDS=1 BENCH_DURATION=1 BENCH_WARMUP=0 BENCH_REPETITIONS=1 \
  BENCH_RESULTS=target/bench-smoke/scale.jsonl scripts/bench-scale.sh 2000 purchases

step "model math micro-benchmarks (criterion, one iteration each)"
cargo test -q -p patron-domain --bench clv

echo
echo "==> bench smoke: OK in $((SECONDS - START)) s"
