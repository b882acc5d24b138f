#!/usr/bin/env bash
# Goodput under overload (issue 13: "goodput at 2× the saturating load ≥ 90 % of the peak, p99 of
# a side probe reported"). In one run, on one machine, loopback only, stops by itself:
#   1. gets the generated data set of scripts/bench-data.sh (CUSTOMERS customers cust-000001 …),
#      copies it and fits a value model on it (FitValueModel, activated), so GetCustomerValue
#      does its full work;
#   2. BENCH_ROUNDS rounds; in each, two configurations of `patron serve`, each on a fresh
#      process (order alternating between rounds):
#        shed:   the default admission limits (--max-in-flight 512, 256 per connection);
#        noshed: the baseline, shedding effectively off (--max-in-flight 1000000
#                --max-in-flight-per-connection 1000000): every call queues;
#      against each, `overload-load`: GetCustomerValue for random existing ids by closed-loop
#      workers over BENCH_CONNECTIONS connections (a refused worker sleeps the RetryInfo delay);
#      the peak phase sweeps BENCH_SWEEP total workers (the peak goodput, the saturating
#      concurrency = the smallest within 5 % of it), then the overload phase runs
#      max(2 × saturating, BENCH_OVERLOAD_MIN) workers; each step BENCH_WARMUP s unrecorded then
#      DURATION s recorded, with a side probe on its own connection (one call every 10 ms, one
#      at a time: its latency and refusals). The server's peak RSS (VmHWM) is read at the end.
# Prints one JSON line per run (and appends them to BENCH_OUT if set), then a table of both
# configurations side by side (the median round by ratio).
#
#   scripts/bench-overload.sh [DURATION] [CUSTOMERS]        (defaults 5 s per step, 20000)
#
# Env: BENCH_PROFILE (release; production; "debug" for the smoke run), BENCH_ROUNDS (1), BENCH_WARMUP (1),
# BENCH_SWEEP ("8,32,128"), BENCH_CONNECTIONS (16), BENCH_OVERLOAD_MIN (2000), BENCH_OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${1:-5}
CUSTOMERS=${2:-20000}
PROFILE=${BENCH_PROFILE:-release}
CARGO_PROFILE=$(scripts/cargo-profile.sh "$PROFILE")
ROUNDS=${BENCH_ROUNDS:-1}
WARMUP=${BENCH_WARMUP:-1}
SWEEP=${BENCH_SWEEP:-8,32,128}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
OVERLOAD_MIN=${BENCH_OVERLOAD_MIN:-2000}
PORT=50321

cargo build --profile "$CARGO_PROFILE" -q -p patron-server --bin patron -p patron-bench --bin overload-load --bin patron-load
BIN=target/$PROFILE
DATA=$(scripts/bench-data.sh "$CUSTOMERS" "$PROFILE")

WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

out() {
  echo "$1"
  if [ -n "${BENCH_OUT:-}" ]; then echo "$1" >>"$BENCH_OUT"; fi
  echo "$1" >>"$WORK/results.jsonl"
}

wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-overload: nothing listens on $1" >&2
  return 1
}

kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

cp "$DATA" "$WORK/bench.db"
DB="sqlite://$WORK/bench.db"
start() { # start ARGS…
  PATRON_LOG=warn "$BIN/patron" serve --listen "127.0.0.1:$PORT" --database "$DB" "$@" &
  PID=$!
  wait_port "$PORT"
}
stop() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}

# The active model is kept in the database: fit once, every later server uses it.
start
"$BIN/patron-load" --target "127.0.0.1:$PORT" --scenario fit --timeout 600 --json >/dev/null
stop

run() { # run CONFIG ROUND SERVER-ARGS…
  local config=$1 round=$2
  shift 2
  start "$@"
  local rss0 r
  rss0=$(kib "$PID" VmRSS)
  r=$("$BIN/overload-load" --target "127.0.0.1:$PORT" --connections "$CONNECTIONS" --sweep "$SWEEP" \
    --overload-min "$OVERLOAD_MIN" --duration "$DURATION" --warmup "$WARMUP" \
    --id-prefix cust- --id-first 1 --id-count "$CUSTOMERS" --id-width 6 --seed "$round" \
    --server-pid "$PID" --clock-ticks "$(getconf CLK_TCK)" --json)
  local hwm rss1
  hwm=$(kib "$PID" VmHWM)
  rss1=$(kib "$PID" VmRSS)
  stop
  out "$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
r.update(config=sys.argv[2], round=int(sys.argv[3]), customers=int(sys.argv[4]),
         server_rss_start_kib=int(sys.argv[5]), server_rss_end_kib=int(sys.argv[6]),
         server_hwm_kib=int(sys.argv[7]))
print(json.dumps(r))' "$r" "$config" "$round" "$CUSTOMERS" "$rss0" "$rss1" "$hwm")"
}

shed() { run shed "$1"; }
noshed() { run noshed "$1" --max-in-flight 1000000 --max-in-flight-per-connection 1000000; }
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which goes first, so neither always gets the warmer machine.
  if [ $((round % 2)) = 1 ]; then
    shed "$round"
    noshed "$round"
  else
    noshed "$round"
    shed "$round"
  fi
done

python3 - "$WORK/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    for s in r["steps"] + [r["overload"]]:
        assert s["ok"] > 0, (r["config"], s)
        assert s["errors"] == 0, (r["config"], s["error_codes"], s["first_error"])
        assert s["probe"]["ok"] > 0, (r["config"], s["probe"])
    if r["config"] == "shed":
        # Every refusal carries its RetryInfo. (Past the server-wide limit there should be
        # refusals, but a starved server, say a debug build, may never hold 512 calls at once.)
        if r["overload_concurrency"] > 512 and r["overload"]["refused"] == 0:
            print(f"bench-overload: round {r['round']}: no refusals at {r['overload_concurrency']} workers", file=sys.stderr)
        assert all(s["refused_without_retry_info"] == 0 for s in r["steps"] + [r["overload"]])
    else:
        assert all(s["refused"] == 0 for s in r["steps"] + [r["overload"]]), "noshed refused calls"
    by.setdefault(r["config"], []).append(r)

def median_run(rs):
    return sorted(rs, key=lambda r: r["ratio"])[(len(rs) - 1) // 2]

def ms(us):
    return f"{us / 1000:,.1f}"

picked = {c: median_run(rs) for c, rs in by.items()}
configs = [c for c in ["shed", "noshed"] if c in picked]
names = {"shed": "shedding on (default limits)", "noshed": "shedding off (baseline)"}
print()
print("| | " + " | ".join(names[c] for c in configs) + " |")
print("|---|" + "---|" * len(configs))
def row(label, f):
    print(f"| {label} | " + " | ".join(f(picked[c]) for c in configs) + " |")
row("peak goodput, OK/s (workers)", lambda r: f"{r['peak_ok_per_second']:,.0f} ({r['peak_concurrency']})")
row("saturating workers (≥ 95 % of peak)", lambda r: f"{r['saturating_concurrency']}")
row("overload workers", lambda r: f"{r['overload_concurrency']}")
row("overload goodput, OK/s", lambda r: f"{r['overload_ok_per_second']:,.0f}")
row("**ratio overload / peak** (goal ≥ 90 %)", lambda r: f"**{r['ratio']:.1%}**")
row("overload refusals/s", lambda r: f"{r['overload']['refused_per_second']:,.0f}")
row("overload OK-call latency p50 / p99 ms", lambda r: f"{ms(r['overload']['ok_latency']['p50_us'])} / {ms(r['overload']['ok_latency']['p99_us'])}")
row("probe at the peak step: p50 / p99 ms", lambda r: (lambda s: f"{ms(s['probe']['latency']['p50_us'])} / {ms(s['probe']['latency']['p99_us'])}")(next(s for s in r["steps"] if s["concurrency"] == r["peak_concurrency"])))
row("**probe under overload: p50 / p99 / max ms**", lambda r: f"**{ms(r['overload']['probe']['latency']['p50_us'])} / {ms(r['overload']['probe']['latency']['p99_us'])}** / {ms(r['overload']['probe']['latency']['max_us'])}")
row("probe under overload: calls, refused", lambda r: f"{r['overload']['probe']['calls']}, {r['overload']['probe']['refused']}")
row("server CPU µs per OK call, peak step / overload", lambda r: (lambda s: f"{s['server_cpu_us_per_ok']} / {r['overload']['server_cpu_us_per_ok']}")(next(s for s in r["steps"] if s["concurrency"] == r["peak_concurrency"])))
row("server RSS at start / peak (VmHWM), MiB", lambda r: f"{r['server_rss_start_kib'] // 1024} / {r['server_hwm_kib'] // 1024}")
print()
print("Peak-phase sweep, OK/s per workers:")
for c in configs:
    for r in by[c]:
        sweep = ", ".join(f"{s['concurrency']}: {s['ok_per_second']:,.0f}" for s in r["steps"])
        print(f"  {c} round {r['round']}: {sweep}; overload {r['overload_concurrency']}: "
              f"{r['overload_ok_per_second']:,.0f} ({r['ratio']:.1%}); probe p99 "
              f"{ms(r['overload']['probe']['latency']['p99_us'])} ms")
EOF
