#!/usr/bin/env bash
# Hold-out fit benchmark against the Python `lifetimes` library (0.11.3), same machine, same data,
# same run:
#   1. serves a copy of the generated data set of scripts/bench-data.sh (CUSTOMERS customers,
#      every event kind; generated once and cached) with `patron serve` (release build) on
#      127.0.0.1:50331, waiting for grpc.health.v1.Health to say SERVING;
#   2. times one FitValueModel call with calibration_end 2026-08-03T00:00:00Z and holdout_end
#      2026-11-01T00:00:00Z through `buf curl` (reflection; node_modules/.bin/buf, `npm ci`):
#      the call's wall time (buf curl's start-up and reflection included) and the server's
#      fitMillis, with the stored model's hold-out report; then the same call again: the first
#      reads the dated purchases, refunds and surveys of the customers changed since the
#      calibration end from the database, the second finds them in memory;
#   3. with the server stopped, runs scripts/holdout_lifetimes.py on the same file:
#      read purchases + calibration_and_holdout_data + BetaGeoFitter.fit +
#      conditional_expected_number_of_purchases_up_to_time, each timed, then (untimed) the same
#      report under Patron's rules for the agreement check;
#   4. prints a markdown table of both sides and keeps the raw outputs.
# Loopback only; stops by itself; kills what it started on exit.
#
#   scripts/bench-holdout.sh [CUSTOMERS]            (default 100000)
#
# Environment:
#   BENCH_PYTHON   a python with lifetimes 0.11.3 (default /tmp/lt/bin/python if it exists, else
#                  target/bench-fit/venv/bin/python as scripts/bench-fit.sh makes it).
#   BENCH_OUT      where results go (default target/bench-holdout/results/<CUSTOMERS>-<UTC time>).
#   BENCH_PORT     the server's port (50331).
#   BENCH_PROFILE  release (default) or production: the build measured.
#   CARGO_TARGET_DIR  honoured: the binaries are taken from it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-100000}
CAL_END=2026-08-03T00:00:00Z
HOLDOUT_END=2026-11-01T00:00:00Z
PORT=${BENCH_PORT:-50331}
ADDR=127.0.0.1:$PORT
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-target/bench-holdout/results/$CUSTOMERS-$STAMP}
TARGET=${CARGO_TARGET_DIR:-target}

command -v jq >/dev/null || { echo "bench-holdout: needs jq" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "bench-holdout: needs sqlite3" >&2; exit 1; }
[[ -x node_modules/.bin/buf ]] || npm ci --silent >&2
BUF=node_modules/.bin/buf

PY=${BENCH_PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x /tmp/lt/bin/python ]]; then PY=/tmp/lt/bin/python; else PY=target/bench-fit/venv/bin/python; fi
fi
"$PY" -c 'import lifetimes; assert lifetimes.__version__ == "0.11.3", lifetimes.__version__' ||
  { echo "bench-holdout: $PY has no lifetimes 0.11.3 (scripts/bench-fit.sh makes such a venv)" >&2; exit 1; }

PROFILE=${BENCH_PROFILE:-release}
cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron
PATRON=$TARGET/$PROFILE/patron

FILE=target/bench-data/gen-$CUSTOMERS-s42.db
if [[ ! -f "$FILE" && "$TARGET" != target ]]; then
  # scripts/bench-data.sh runs target/$PROFILE/patron; with another target dir, the same steps here.
  mkdir -p target/bench-data
  rm -f "$FILE.tmp"*
  "$PATRON" --log-level warn --database "sqlite://$FILE.tmp" \
    generate --customers "$CUSTOMERS" --seed 42 --now 2026-11-01 >&2
  sqlite3 "$FILE.tmp" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null 2>&1 || true
  rm -f "$FILE.tmp-wal" "$FILE.tmp-shm"
  mv "$FILE.tmp" "$FILE"
fi
DATA=$(scripts/bench-data.sh "$CUSTOMERS" "$PROFILE")

mkdir -p "$OUT"
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

cp "$DATA" "$WORK/bench.db"
EVENTS=$(sqlite3 "$WORK/bench.db" "SELECT count(*) FROM events")
PURCHASES=$(sqlite3 "$WORK/bench.db" "SELECT count(*) FROM events WHERE kind = 1")
echo "bench-holdout: $CUSTOMERS customers, $EVENTS events, $PURCHASES purchases (from $DATA); results in $OUT" >&2

curl_grpc() { "$BUF" curl --protocol grpc --http2-prior-knowledge "$@"; }
now() { date +%s.%N; }

t0=$(now)
"$PATRON" serve --listen "$ADDR" --database "sqlite://$WORK/bench.db" \
  --request-timeout-secs 1200 2>"$OUT/patron.log" &
PATRON_PID=$!
PIDS+=("$PATRON_PID")
serving=false
for _ in $(seq 1 1200); do
  if ! kill -0 "$PATRON_PID" 2>/dev/null; then break; fi
  if curl_grpc -d '{}' "http://$ADDR/grpc.health.v1.Health/Check" 2>/dev/null | grep -q '"SERVING"'; then
    serving=true
    break
  fi
  sleep 0.2
done
$serving || { echo "bench-holdout: the server did not become SERVING (see $OUT/patron.log)" >&2; exit 1; }
t1=$(now)
echo "bench-holdout: serving after $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s" >&2

# The call, timed end to end.
REQ=$(jq -cn --arg c "$CAL_END" --arg h "$HOLDOUT_END" '{calibration_end: $c, holdout_end: $h}')
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / t}' "/proc/$PATRON_PID/stat"; }
rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$PATRON_PID/status"; }
r0=$(rss)
c0=$(cpu)
t0=$(now)
curl_grpc -d "$REQ" "http://$ADDR/patron.scoring.v1.ScoringService/FitValueModel" >"$OUT/patron-fit.json"
t1=$(now)
c1=$(cpu)
r1=$(rss)
# The same call again: the dated histories are in memory now.
c6=$(cpu)
t6=$(now)
curl_grpc -d "$REQ" "http://$ADDR/patron.scoring.v1.ScoringService/FitValueModel" >"$OUT/patron-fit-again.json"
t7=$(now)
c7=$(cpu)
# buf curl's own share: a call that does nothing (reflection and connection included).
t2=$(now)
curl_grpc -d '{}' "http://$ADDR/grpc.health.v1.Health/Check" >/dev/null
t3=$(now)
# For reference, untimed in the ratio: a plain fit as of now (no hold-out, no rebuild as of an
# earlier instant).
t4=$(now)
curl_grpc -d '{}' "http://$ADDR/patron.scoring.v1.ScoringService/FitValueModel" >"$OUT/patron-fit-now.json"
t5=$(now)
kill -TERM "$PATRON_PID" 2>/dev/null || true
wait "$PATRON_PID" 2>/dev/null || true
PIDS=()

jq --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" \
  --argjson health "$(awk -v a="$t2" -v b="$t3" 'BEGIN {printf "%.3f", b - a}')" \
  --argjson plain "$(awk -v a="$t4" -v b="$t5" 'BEGIN {printf "%.3f", b - a}')" \
  --slurpfile now "$OUT/patron-fit-now.json" \
  --slurpfile again "$OUT/patron-fit-again.json" \
  --argjson wall2 "$(awk -v a="$t6" -v b="$t7" 'BEGIN {printf "%.3f", b - a}')" \
  --argjson cpu2 "$(awk -v a="$c6" -v b="$c7" 'BEGIN {printf "%.3f", b - a}')" \
  --argjson rss0 "$r0" --argjson rss1 "$r1" \
  --argjson cpu "$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f", b - a}')" --argjson customers "$CUSTOMERS" --argjson events "$EVENTS" \
  --argjson purchases "$PURCHASES" --arg data "$DATA" \
  '{data_set: $data, customers_generated: $customers, events: $events, purchase_events: $purchases,
    call_wall_s: $wall, buf_curl_health_check_wall_s: $health, server_cpu_s_during_call: $cpu,
    fit_millis: (.model.fitMillis | tonumber),
    rss_mib_before_call: $rss0, rss_mib_after_call: $rss1,
    again: {call_wall_s: $wall2, server_cpu_s_during_call: $cpu2,
            fit_millis: ($again[0].model.fitMillis | tonumber),
            same_report: ($again[0].model.holdout == .model.holdout and $again[0].model.bgNbd == .model.bgNbd)},
    plain_fit_now: {call_wall_s: $plain, fit_millis: ($now[0].model.fitMillis | tonumber),
                    customers: ($now[0].model.customers | tonumber)}, model_customers: (.model.customers | tonumber),
    bg_nbd: (.model.bgNbd | {r, alpha, a, b, converged}), holdout: .model.holdout}' \
  "$OUT/patron-fit.json" >"$OUT/patron.json"

# The lifetimes side, alone on the machine (the server has stopped).
"$PY" scripts/holdout_lifetimes.py "$WORK/bench.db" --calibration-end 2026-08-03 \
  --holdout-end 2026-11-01 >"$OUT/lifetimes.json"

jq -rn --slurpfile p "$OUT/patron.json" --slurpfile l "$OUT/lifetimes.json" '
  $p[0] as $p | $l[0] as $l | $l.times as $t | $p.holdout as $h | $l.patron_rules as $c
  | def f(n): (. * pow(10; n) | round) / pow(10; n);
    def s: f(3) | tostring + " s";
    ($p.call_wall_s) as $pw
  | "| side | stage | wall |",
    "|---|---|---|",
    "| Patron | FitValueModel call (buf curl, end to end) | \($pw | s) |",
    "| Patron | of which the server'"'"'s fitMillis (the model computation) | \($p.fit_millis / 1000 | s) |",
    "| Patron | server CPU during the call | \($p.server_cpu_s_during_call | s) |",
    "| Patron | server RSS before the call, after it | \($p.rss_mib_before_call) MiB, \($p.rss_mib_after_call) MiB |",
    "| Patron | the same call again (dated histories in memory): call, fitMillis, server CPU | \($p.again.call_wall_s | s), \($p.again.fit_millis / 1000 | s), \($p.again.server_cpu_s_during_call | s) |",
    "| Patron, for reference | a plain FitValueModel as of now (no hold-out) on \($p.plain_fit_now.customers) customers: call, fitMillis | \($p.plain_fit_now.call_wall_s | s), \($p.plain_fit_now.fit_millis / 1000 | s) |",
    "| lifetimes | (a) read purchases from SQLite into pandas | \($t.read.wall_s | s) |",
    "| lifetimes | (b) calibration_and_holdout_data | \($t.holdout.wall_s | s) |",
    "| lifetimes | (c) BetaGeoFitter.fit | \($t.fit.wall_s | s) |",
    "| lifetimes | (d) conditional_expected_number_of_purchases_up_to_time | \($t.predict.wall_s | s) |",
    "| lifetimes | (b)+(c)+(d) | \($t.total_without_read_s | s) |",
    "| lifetimes | (a)+(b)+(c)+(d) | \($t.total_s | s) |",
    "",
    "ratio lifetimes (b+c+d) / Patron call: \($t.total_without_read_s / $pw | f(1))×; (a+b+c+d) / Patron call: \($t.total_s / $pw | f(1))×",
    "ratio lifetimes (b+c+d) / Patron second call: \($t.total_without_read_s / $p.again.call_wall_s | f(1))×; (a+b+c+d) / Patron second call: \($t.total_s / $p.again.call_wall_s | f(1))× (same report and parameters as the first: \($p.again.same_report))",
    "(against fitMillis: \($t.total_without_read_s * 1000 / $p.fit_millis | f(1))× and \($t.total_s * 1000 / $p.fit_millis | f(1))×; buf curl alone, a Health/Check: \($p.buf_curl_health_check_wall_s | s))",
    "",
    "| figure | Patron | lifetimes (timed run) | lifetimes, Patron'"'"'s rules |",
    "|---|---|---|---|",
    "| customers | \($h.customers) | \($l.report.customers) | \($c.report.customers // "-") |",
    "| hold-out days | \($h.holdoutDays) | \($l.holdout_days) | \($l.holdout_days) |",
    "| actual purchases | \($h.actualPurchases) | \($l.report.actual_purchases) | \($c.report.actual_purchases // "-") |",
    "| predicted purchases | \($h.predictedPurchases | f(3)) | \($l.report.predicted_purchases | f(3)) | \($c.report.predicted_purchases // 0 | f(3)) |",
    "| MAE | \($h.meanAbsoluteError | f(6)) | \($l.report.mean_absolute_error | f(6)) | \($c.report.mean_absolute_error // 0 | f(6)) |",
    "| RMSE | \($h.rootMeanSquaredError | f(6)) | \($l.report.root_mean_squared_error | f(6)) | \($c.report.root_mean_squared_error // 0 | f(6)) |",
    "| BG/NBD r, α, a, b | \($p.bg_nbd | [.r, .alpha, .a, .b] | map(f(6)) | join(", ")) | \($l.bg_nbd | [.r, .alpha, .a, .b] | map(f(6)) | join(", ")) | \($c.bg_nbd // {} | [.r, .alpha, .a, .b] | map(. // 0 | f(6)) | join(", ")) |"
' | tee "$OUT/table.md"
echo "bench-holdout: raw outputs in $OUT" >&2
