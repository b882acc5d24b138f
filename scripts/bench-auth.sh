#!/usr/bin/env bash
# Authentication and TLS cost (issue 12). In one run, on one machine, loopback only, stops by
# itself:
#   1. a generated data set (`patron generate`, CUSTOMERS customers, seed 42) in a SQLite file and
#      a value model fitted on it (FitValueModel), so GetCustomerValue does its full work;
#   2. BENCH_ROUNDS rounds, each measuring in turn, at 10 connections x 10 calls in flight, for
#      BENCH_DURATION s after BENCH_WARMUP s: bare-server Health/Check (the tonic floor); Patron
#      GetCustomerValue with authentication off; with an API key (`--auth`); with an API key over
#      TLS (a CA and server certificate made with openssl at run time). One server at a time, on
#      the same data file.
# Prints one JSON line per measurement (and appends them to BENCH_OUT if set), then the medians and
# the ratios: auth on / auth off (goal >= 95 %), TLS + auth / auth off (the TLS cost), each / bare.
#
#   scripts/bench-auth.sh [CUSTOMERS]        (default 20000)
#
# Env: BENCH_PROFILE (release; production; "debug" for the smoke run), BENCH_ROUNDS (3), BENCH_DURATION (10),
# BENCH_WARMUP (2), BENCH_LEVEL (10x10).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-20000}
PROFILE=${BENCH_PROFILE:-release}
CARGO_PROFILE=$(scripts/cargo-profile.sh "$PROFILE")
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
LEVEL=${BENCH_LEVEL:-10x10}
CONNS=${LEVEL%x*}
INFLIGHT=${LEVEL#*x}
PORT=50311
BARE_PORT=50312

cargo build --profile "$CARGO_PROFILE" -q -p patron-server --bin patron -p patron-bench --bin bare-server --bin patron-load
BIN=target/$PROFILE

WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

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
  echo "bench-auth: nothing listens on $1" >&2
  return 1
}

# Certificates for 127.0.0.1/localhost, made now.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/ext.cnf"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$WORK/ext.cnf" -out "$WORK/server.pem" 2>/dev/null

KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
HASH=$(printf '%s\n' "$KEY" | "$BIN/patron" hash-key | awk '/sha256/ {print $2}')
DB="sqlite://$WORK/bench.db"
PATRON_LOG=warn "$BIN/patron" generate --customers "$CUSTOMERS" --seed 42 --now 2026-11-01 --database "$DB" >/dev/null

start() { # start NAME ARGS…
  PATRON_LOG=warn "$BIN/patron" serve --listen "127.0.0.1:$PORT" --database "$DB" "$@" &
  PID=$!
  wait_port "$PORT"
}
stop() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}

start
"$BIN/patron-load" --target "127.0.0.1:$PORT" --scenario fit --timeout 600 --json >/dev/null
stop

ids=(--id-prefix cust- --id-first 1 --id-count "$CUSTOMERS" --id-width 6)
load() { # load TAG ARGS…
  local tag=$1
  shift
  local r
  r=$("$BIN/patron-load" --connections "$CONNS" --concurrency "$INFLIGHT" --duration "$DURATION" \
    --warmup "$WARMUP" --json "$@")
  out "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["config"]=sys.argv[2]; print(json.dumps(r))' "$r" "$tag")"
}

for round in $(seq 1 "$ROUNDS"); do
  "$BIN/bare-server" --listen "127.0.0.1:$BARE_PORT" &
  PID=$!
  wait_port "$BARE_PORT"
  load bare --target "127.0.0.1:$BARE_PORT" --scenario health-check
  stop

  start
  load auth-off --target "127.0.0.1:$PORT" --scenario get-customer-value "${ids[@]}"
  stop

  start --auth --api-key "bench:$HASH:scoring:read"
  load auth-on --target "127.0.0.1:$PORT" --scenario get-customer-value "${ids[@]}" \
    --authorization "Bearer $KEY"
  stop

  start --auth --api-key "bench:$HASH:scoring:read" --tls-cert-file "$WORK/server.pem" \
    --tls-key-file "$WORK/server.key"
  load tls-auth-on --target "127.0.0.1:$PORT" --scenario get-customer-value "${ids[@]}" \
    --authorization "Bearer $KEY" --tls-ca "$WORK/ca.pem"
  stop
done

python3 - "$WORK/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pick(r, *names):
    for n in names:
        if n in r:
            return r[n]
    return None
by = {}
for r in rows:
    assert r["errors"] == 0 and r["requests"] > 0, r
    by.setdefault(r["config"], []).append(r)
med = {}
for config, rs in by.items():
    rate = statistics.median(r["requests_per_second"] for r in rs)
    p50 = statistics.median(r["p50_us"] for r in rs)
    p99 = statistics.median(r["p99_us"] for r in rs)
    med[config] = (rate, p50, p99)
print("| configuration | calls/s (median) | p50 µs | p99 µs | / auth off | / bare |")
print("|---|---|---|---|---|---|")
for config in ["bare", "auth-off", "auth-on", "tls-auth-on"]:
    if config not in med:
        continue
    rate, p50, p99 = med[config]
    off = med.get("auth-off", (rate,))[0]
    bare = med.get("bare", (rate,))[0]
    print(f"| {config} | {rate:,.0f} | {p50} | {p99} | {rate / off:.1%} | {rate / bare:.1%} |")
# Paired: each round's ratio (its configurations ran back to back), then the median over rounds.
per_round = []
group = {}
for r in rows:
    group[r["config"]] = r["requests_per_second"]
    if r["config"] == "tls-auth-on":
        per_round.append(dict(group))
        group = {}
if per_round:
    on = statistics.median(g["auth-on"] / g["auth-off"] for g in per_round)
    tls = statistics.median(g["tls-auth-on"] / g["auth-off"] for g in per_round)
    off = statistics.median(g["auth-off"] / g["bare"] for g in per_round)
    print()
    print(f"median of the per-round ratios: auth on / off {on:.1%}; TLS + auth / off {tls:.1%}; auth off / bare {off:.1%}")
EOF
