#!/usr/bin/env bash
# Scoring-read benchmark. In one run, on one machine:
#   1. starts `patron serve` on a fresh SQLite file (127.0.0.1:50197) and `bare-server` (a tonic
#      server built like Patron's that answers only grpc.health.v1.Health; 127.0.0.1:50198), both
#      release builds;
#   2. serves a copy of the generated data set of scripts/bench-data.sh (CUSTOMERS customers
#      cust-000001 …, about 12 events each of every kind; generated once and cached);
#   3. fits a value model once (FitValueModel, which activates it) and reports its fit time;
#   4. BENCH_ROUNDS times, for each load level CONNECTIONSxCONCURRENCY: bare-server Health/Check,
#      then Patron GetCustomerValue for random existing ids (seeded), closed loop, BENCH_WARMUP s
#      unrecorded then BENCH_DURATION s recorded; the server's CPU time per call comes from /proc;
#   5. streams every customer's value profile once with StreamCustomerValues (customers/s), reading
#      the server's memory (VmRSS, VmHWM from /proc) before and after; the peak is reset just
#      before the stream (/proc/PID/clear_refs) so the peak after it is the stream's own;
#      then twice more: again (the prediction memo warm) and in the BASIC view (no drivers);
#   6. optionally profiles the server with `perf record` during extra, unrecorded runs;
#   7. prints a markdown table (medians over the rounds) and keeps every raw JSON line in a file.
# Loopback only; stops by itself; kills what it started on exit.
#
#   scripts/bench-scoring.sh [CUSTOMERS]            (default 1000000)
#
# Environment:
#   BENCH_DURATION (10) and BENCH_WARMUP (2) seconds per run; BENCH_LEVELS ("1x1 10x10 50x20");
#   BENCH_ROUNDS (3); BENCH_RESULTS (target/bench-scoring/results-<UTC time>.jsonl);
#   BENCH_PERF: what to profile, e.g. "10x10 stream" (a level and/or the stream); the reports go
#   next to the results file; BENCH_PERF_CALLGRAPH (dwarf,16384: Rust release builds keep no
#   frame pointers, so `-g` alone gives broken call chains; "fp" to use them anyway);
#   BENCH_BARE_FLAGS: extra bare-server flags (e.g. --no-tcp-nodelay, to match Patron before 2b64a6b);
#   PATRON_LOG: the server's log filter (unset: Patron's default, info,sqlx=warn).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-1000000}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
LEVELS=${BENCH_LEVELS:-"1x1 10x10 50x20"}
ROUNDS=${BENCH_ROUNDS:-3}
PERF=${BENCH_PERF:-}
PERF_CALLGRAPH=${BENCH_PERF_CALLGRAPH:-dwarf,16384}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-target/bench-scoring/results-$STAMP.jsonl}
PATRON_PORT=50197
BARE_PORT=50198
PATRON_ADDR=127.0.0.1:$PATRON_PORT
BARE_ADDR=127.0.0.1:$BARE_PORT

command -v jq >/dev/null || { echo "bench-scoring: needs jq" >&2; exit 1; }
if [[ -n "$PERF" ]] && ! command -v perf >/dev/null; then
  echo "bench-scoring: BENCH_PERF is set but perf is not installed" >&2
  exit 1
fi

# BENCH_PROFILE=debug: debug builds (the CI smoke run); figures from them mean nothing.
PROFILE=${BENCH_PROFILE:-release}
cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron -p patron-bench --bin bare-server --bin patron-load
PATRON=target/$PROFILE/patron
BARE=target/$PROFILE/bare-server
LOAD=target/$PROFILE/patron-load

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
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

wait_port() {
  for _ in $(seq 1 1800); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-scoring: nothing listens on port $1" >&2
  return 1
}

# `mem PID`: {"rss_kib":…,"hwm_kib":…} from /proc.
mem() {
  awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "{\"rss_kib\":%d,\"hwm_kib\":%d}", r, h}' "/proc/$1/status"
}

# Server CPU time (user + system) in seconds, from /proc.
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }

# `record STEP SERVER JSON`: appends JSON tagged with its step and server to the results file.
record() {
  jq -c --arg step "$1" --arg server "$2" '{step: $step, server: $server} + .' <<<"$3" | tee -a "$RESULTS"
}

# `measure STEP SERVER PID patron-load ARGS…`: one run, tagged with the server's CPU per call.
measure() {
  local step=$1 server=$2 pid=$3
  shift 3
  local c0 c1 out
  c0=$(cpu "$pid")
  out=$("$LOAD" "$@")
  c1=$(cpu "$pid")
  record "$step" "$server" "$(jq -c --argjson c0 "$c0" --argjson c1 "$c1" \
    '. + {server_cpu_seconds: (($c1 - $c0) * 1000 | round / 1000),
          server_cpu_us_per_call: (($c1 - $c0) * 1e6 / ([.requests + (.warmup_requests // 0), 1] | max) | round)}' <<<"$out")"
}

# `perf_start`, then `perf_stop NAME`: profiles the Patron server in between.
perf_start() {
  local graph=(--call-graph "$PERF_CALLGRAPH")
  [[ "$PERF_CALLGRAPH" == fp ]] && graph=(-g)
  perf record "${graph[@]}" -F 499 -p "$PATRON_PID" -o "$WORK/perf.data" 2>"$WORK/perf.log" &
  PERF_PID=$!
  PIDS+=("$PERF_PID")
  sleep 0.5
}
perf_stop() {
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  local report="${RESULTS%.jsonl}-perf-$1.txt"
  {
    echo "# patron serve during $1 ($CUSTOMERS customers): self time, top symbols"
    perf report -i "$WORK/perf.data" --no-children --stdio -g none -F overhead,dso,sym \
      --percent-limit 0.5 2>/dev/null | sed 's/ *$//' | grep '%'
    echo
    echo "# inclusive time (children, then self), runtime plumbing left out"
    perf report -i "$WORK/perf.data" --children --stdio -g none --sort dso,sym \
      --percent-limit 1.5 2>/dev/null | sed 's/ *$//' | grep '%' | grep -v '(inlined)' |
      grep -v -E 'tokio::runtime|std::sys|clone3|start_thread|0xffffffff|call_once|vtable.shim' |
      cut -c1-240
  } >"$report" || true
  rm -f "$WORK/perf.data"
  echo "bench-scoring: perf report in $report" >&2
}

DATA=$(scripts/bench-data.sh "$CUSTOMERS" "$PROFILE")
cp "$DATA" "$WORK/bench.db"
EVENTS=$(sqlite3 "$WORK/bench.db" "SELECT count(*) FROM events")
echo "bench-scoring: $CUSTOMERS customers, $EVENTS events (from $DATA); results in $RESULTS" >&2
"$PATRON" serve --listen "$PATRON_ADDR" --database "sqlite://$WORK/bench.db" \
  --request-timeout-secs 600 2>"$WORK/patron.log" &
PATRON_PID=$!
PIDS+=("$PATRON_PID")
# shellcheck disable=SC2086 # BENCH_BARE_FLAGS holds flags to split
"$BARE" --listen "$BARE_ADDR" ${BENCH_BARE_FLAGS:-} 2>"$WORK/bare.log" &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_port "$PATRON_PORT"
wait_port "$BARE_PORT"
record start patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" --arg rev "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --arg dirty "$(git status --porcelain 2>/dev/null | grep -c . || true)" --arg host "$(uname -srm)" --arg cpus "$(nproc)" \
  -n '{memory: $m, commit: $rev, changed_files: ($dirty | tonumber), kernel: $host, cpus: ($cpus | tonumber)}')" >/dev/null

# The data set was generated before the server started; the server loaded it at start-up.
loaded=$(jq -cn --arg data "$DATA" --argjson customers "$CUSTOMERS" --argjson events "$EVENTS" \
  '{data_set: $data, customers: $customers, events: $events}')
record load patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" '. + {memory: $m}' <<<"$loaded")"

fitted=$("$LOAD" --target "$PATRON_ADDR" --scenario fit --timeout 600 --json)
record fit patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" '. + {memory: $m}' <<<"$fitted")"

ids=(--id-prefix cust- --id-first 1 --id-count "$CUSTOMERS" --id-width 6)
level_args() {
  echo --connections "${1%x*}" --concurrency "${1#*x}" --duration "$DURATION" --warmup "$WARMUP" --json
}
for round in $(seq 1 "$ROUNDS"); do
  for level in $LEVELS; do
    # shellcheck disable=SC2046 # level_args prints flags to split
    measure get bare "$BARE_PID" --target "$BARE_ADDR" --scenario health-check $(level_args "$level")
    # shellcheck disable=SC2046
    measure get patron "$PATRON_PID" --target "$PATRON_ADDR" --scenario get-customer-value \
      "${ids[@]}" --seed "$round" $(level_args "$level")
  done
done

before=$(mem "$PATRON_PID")
# Reset the peak (VmHWM) so the figure after the stream is the stream's own peak.
reset=false
if echo 5 2>/dev/null >"/proc/$PATRON_PID/clear_refs"; then reset=true; fi
c0=$(cpu "$PATRON_PID")
streamed=$("$LOAD" --target "$PATRON_ADDR" --scenario stream-customer-values --duration 600 --json)
c1=$(cpu "$PATRON_PID")
record stream patron "$(jq -c --argjson b "$before" --argjson a "$(mem "$PATRON_PID")" --argjson reset "$reset" \
  --argjson c0 "$c0" --argjson c1 "$c1" \
  '. + {memory_before: $b, memory_after: $a, hwm_reset_before_stream: $reset,
        server_cpu_seconds: (($c1 - $c0) * 1000 | round / 1000)}' <<<"$streamed")"
# Again (the prediction memo now holds every customer's shape), then the BASIC view (no drivers).
for view in warm basic; do
  flag=()
  [[ "$view" == basic ]] && flag=(--basic-view)
  c0=$(cpu "$PATRON_PID")
  streamed=$("$LOAD" --target "$PATRON_ADDR" --scenario stream-customer-values --duration 600 "${flag[@]}" --json)
  c1=$(cpu "$PATRON_PID")
  record "stream-$view" patron "$(jq -c --argjson c0 "$c0" --argjson c1 "$c1" \
    '. + {server_cpu_seconds: (($c1 - $c0) * 1000 | round / 1000)}' <<<"$streamed")"
done

# Profiles, in extra runs that the table leaves out.
for what in $PERF; do
  perf_start
  if [[ "$what" == stream ]]; then
    measure perf patron "$PATRON_PID" --target "$PATRON_ADDR" --scenario stream-customer-values --duration 600 --json
  else
    # shellcheck disable=SC2046
    measure perf patron "$PATRON_PID" --target "$PATRON_ADDR" --scenario get-customer-value \
      "${ids[@]}" --seed 99 $(level_args "$what")
  fi
  perf_stop "$what"
done

# The table: per level, the median round of each server (by req/s).
jq -rs --arg customers "$CUSTOMERS" --arg rounds "$ROUNDS" '
  def n: if . >= 1000 then ((. / 1000 | floor) | n) + "," + ((. % 1000) | tostring | ("00" + .)[-3:]) else tostring end;
  def mib: . / 1024 | floor | tostring + " MiB";
  def lat: "\(.p50_us) / \(.p90_us) / \(.p99_us)";
  def median: sort_by(.requests_per_second) | .[(length - 1) / 2 | floor];
  def range: map(.requests_per_second) | "\(min | floor | n)–\(max | floor | n)";
  (map(select(.step == "get")) | group_by("\(.connections)x\(.concurrency)") | sort_by(.[0].connections * .[0].concurrency)) as $levels
  | (map(select(.step == "load"))[0]) as $load
  | (map(select(.step == "fit"))[0]) as $fit
  | (map(select(.step == "stream"))[0]) as $stream
  | (map(select(.step == "stream-warm"))[0]) as $warm
  | (map(select(.step == "stream-basic"))[0]) as $basic
  | "| connections × concurrency | bare Check req/s | Patron GetCustomerValue req/s | ratio | bare p50 / p90 / p99 µs | Patron p50 / p90 / p99 µs | server CPU µs per call, bare / Patron | Patron errors |",
    "|---|---|---|---|---|---|---|---|",
    ($levels[] | map(select(.server == "bare")) as $bs | map(select(.server == "patron")) as $ps
      | ($bs | median) as $b | ($ps | median) as $p
      | "| \($p.connections) × \($p.concurrency) | \($b.requests_per_second | floor | n) (\($bs | range)) | \($p.requests_per_second | floor | n) (\($ps | range)) | \((100 * $p.requests_per_second / $b.requests_per_second) | round) % | \($b | lat) | \($p | lat) | \($b.server_cpu_us_per_call) / \($p.server_cpu_us_per_call) | \($ps | map(.errors) | add) |"),
    "",
    "Medians of \($rounds) rounds (the range of req/s over the rounds in brackets); latencies and CPU are the median round'"'"'s.",
    "",
    "| step | result |",
    "|---|---|",
    "| data set | \($load.events | n) events of \($customers | tonumber | n) customers (`patron generate --seed 42 --now 2026-11-01`, \($load.data_set)) |",
    "| FitValueModel | fit_millis \($fit.fit_millis | n) (wall \($fit.seconds) s) on \($fit.customers | n) customers; BG/NBD converged \($fit.bg_nbd.converged) after \($fit.bg_nbd.iterations) iterations, Gamma-Gamma on \($fit.gamma_gamma.customers | n) customers, converged \($fit.gamma_gamma.converged) |",
    "| StreamCustomerValues | \($stream.customers | n) customers in \($stream.seconds) s = \($stream.customers_per_second | floor | n) customers/s (\($stream.megabytes) MB in \($stream.messages) messages, first after \($stream.first_message_ms) ms; server CPU \($stream.server_cpu_seconds) s) |",
    "| StreamCustomerValues again (prediction memo warm) | \($warm.customers | n) customers in \($warm.seconds) s = \($warm.customers_per_second | floor | n) customers/s (server CPU \($warm.server_cpu_seconds) s) |",
    "| StreamCustomerValues, BASIC view (no drivers) | \($basic.customers | n) customers in \($basic.seconds) s = \($basic.customers_per_second | floor | n) customers/s (\($basic.megabytes) MB; server CPU \($basic.server_cpu_seconds) s) |",
    "| server memory after start (index loaded) | RSS \($load.memory.rss_kib | mib), peak \($load.memory.hwm_kib | mib) |",
    "| server memory after fit | RSS \($fit.memory.rss_kib | mib), peak \($fit.memory.hwm_kib | mib) |",
    "| server memory before stream (after the GetCustomerValue runs) | RSS \($stream.memory_before.rss_kib | mib), peak so far \($stream.memory_before.hwm_kib | mib) |",
    "| server memory after stream | RSS \($stream.memory_after.rss_kib | mib), peak \(if $stream.hwm_reset_before_stream then "during the stream" else "overall" end) \($stream.memory_after.hwm_kib | mib) |"
' "$RESULTS"
echo "bench-scoring: raw results in $RESULTS" >&2
