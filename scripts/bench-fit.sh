#!/usr/bin/env bash
# Value-model benchmark against the Python `lifetimes` library (0.11.3), same machine, same data:
# summary (CSV → per-customer frequency/recency/T/monetary in days) + BG/NBD and Gamma-Gamma fit
# + per-customer predictions (P(alive), expected purchases, expected spend, CLV), timed per stage
# on both sides, then the numbers compared (scripts/clv_compare.py):
#   - Patron: target/release/clv-compare (crates/patron-bench/src/bin/clv-compare.rs), the
#     service's own code path (import parsers, summary rules, FitValueModel's fit, ActiveModel);
#   - lifetimes: scripts/clv_lifetimes.py run.
#
#   scripts/bench-fit.sh [CUSTOMERS | DIR]          (default 1000000)
#
# With a number, the data set is `patron generate --customers N --seed 42 --now 2026-11-01 --csv`,
# generated once into target/bench-data/csv-N and reused. A DIR holds transactions.csv (customer_id,timestamp,amount,order_id) and generate.json ({"now": …})
# as written by `patron generate --csv DIR`, or by `scripts/clv_lifetimes.py make-cdnow DIR` /
# `make-synthetic DIR --customers N`.
#
# Environment:
#   BENCH_PYTHON   a python with lifetimes 0.11.3; default: target/bench-fit/venv, created on first
#                  use with pip ("lifetimes==0.11.3" "setuptools<70" "numpy<2" "pandas<2.2").
#   BENCH_OUT      where results go (default target/bench-fit/results/<basename DIR>-<UTC time>).
#   BENCH_THREADS  Patron's worker threads (default 0: all cores, as the service).
#   BENCH_PATRON_ARGS  extra clv-compare options (e.g. "--gradient-tolerance 1e-12").
#   BENCH_TOLERANCE    relative tolerance of the comparison (default 1e-4).
#   BENCH_QUIET    before each side, wait up to this many seconds (default 0) for the machine to go
#                  idle (other processes below a tenth of a core over 5 s): the cores are shared.
# Each side's line on stderr tells how much CPU the whole machine used during its run, its own
# included, so a disturbed run shows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ARG=${1:-1000000}
PROFILE=${BENCH_PROFILE:-release}
cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron -p patron-bench --bin clv-compare
if [[ "$ARG" =~ ^[0-9]+$ ]]; then
  DIR=target/bench-data/csv-$ARG
  if [[ ! -f "$DIR/generate.json" ]]; then
    rm -rf "$DIR"
    "target/$PROFILE/patron" --log-level warn generate --customers "$ARG" --seed 42 \
      --now 2026-11-01 --csv "$DIR.tmp" >&2
    mv "$DIR.tmp" "$DIR"
  fi
else
  DIR=$ARG
fi
[[ -f "$DIR/transactions.csv" && -f "$DIR/generate.json" ]] ||
  { echo "bench-fit: $DIR needs transactions.csv and generate.json" >&2; exit 1; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-target/bench-fit/results/$(basename "$DIR")-$STAMP}
mkdir -p "$OUT"

PY=${BENCH_PYTHON:-}
if [[ -z "$PY" ]]; then
  PY=target/bench-fit/venv/bin/python
  if ! "$PY" -c 'import lifetimes' 2>/dev/null; then
    echo "bench-fit: creating $PY with lifetimes 0.11.3" >&2
    python3 -m venv target/bench-fit/venv
    "$PY" -m pip install -q "lifetimes==0.11.3" "setuptools<70" "numpy<2" "pandas<2.2"
  fi
fi
"$PY" -c 'import lifetimes; assert lifetimes.__version__ == "0.11.3", lifetimes.__version__'

CLV=target/$PROFILE/clv-compare

TICK=$(getconf CLK_TCK)
# Busy CPU seconds of the whole machine (all cores) so far, from /proc/stat.
busy() { awk -v t="$TICK" '/^cpu / {printf "%.3f", ($2 + $3 + $4 + $7 + $8 + $9) / t}' /proc/stat; }
wait_quiet() {
  local waited=0 b0 b1
  while ((waited < ${BENCH_QUIET:-0})); do
    b0=$(busy)
    sleep 5
    b1=$(busy)
    waited=$((waited + 5))
    if awk -v a="$b0" -v b="$b1" 'BEGIN {exit !(b - a < 0.5)}'; then
      echo "bench-fit: machine idle after ${waited} s" >&2
      return
    fi
  done
  ((${BENCH_QUIET:-0} == 0)) || echo "bench-fit: machine still busy after ${waited} s, measuring anyway" >&2
}
# `timed NAME CMD…`: runs CMD, then reports its wall time and the machine's busy CPU meanwhile.
timed() {
  local name=$1 b0 b1 t0 t1
  shift
  wait_quiet
  b0=$(busy)
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  b1=$(busy)
  awk -v n="$name" -v b="$(awk -v a="$b0" -v b="$b1" 'BEGIN {print b - a}')" \
    -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
    'BEGIN {printf "bench-fit: %s: %.1f s wall, machine busy %.1f CPU s meanwhile (its own included)\n", n, w, b}' >&2
}

echo "bench-fit: $(grep -c '' "$DIR/transactions.csv") lines in $DIR/transactions.csv; results in $OUT" >&2
# Each side runs alone (the machine's cores are shared; nothing else of ours runs meanwhile).
# shellcheck disable=SC2086
timed Patron "$CLV" "$DIR" --out "$OUT/patron.csv" --threads "${BENCH_THREADS:-0}" ${BENCH_PATRON_ARGS:-} \
  >"$OUT/patron.json"
timed lifetimes "$PY" scripts/clv_lifetimes.py run "$DIR" --out "$OUT/lifetimes.csv" >"$OUT/lifetimes.json"
"$PY" scripts/clv_compare.py \
  --patron-json "$OUT/patron.json" --patron-csv "$OUT/patron.csv" \
  --lifetimes-json "$OUT/lifetimes.json" --lifetimes-csv "$OUT/lifetimes.csv" \
  --tolerance "${BENCH_TOLERANCE:-1e-4}" --json-out "$OUT/compare.json" | tee "$OUT/compare.txt"
