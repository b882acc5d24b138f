#!/usr/bin/env bash
# Segment benchmark. In one run, on one machine:
#   1. starts `patron serve` (release build) on a fresh SQLite file (127.0.0.1:50199);
#   2. serves a copy of the generated data set of scripts/bench-data.sh, as bench-scoring.sh does
#      (CUSTOMERS customers, about 12 events each of every kind);
#   3. fits a value model once (FitValueModel, which activates it: model scores and RFM need it);
#   4. runs `patron-load --scenario segments`: creates the segments of
#      crates/patron-bench/src/segments.rs (`everyone` = the rule `true`, the evaluation floor,
#      and rules over totals, purchase windows, a model score, in_segment, plus the built-in
#      rfm-champions), then BENCH_REPETITIONS rounds of CountSegmentMembers and of listing every
#      member through ListSegmentMembers (pages of BENCH_PAGE_SIZE, checking members == count),
#      and one PreviewSegment per rule, with the server's and the client's CPU time per call from
#      /proc; the server's memory (VmRSS, VmHWM) is read before and after, the peak reset in
#      between, and the whole machine's busy CPU time, so that what other processes took of the
#      two shared cores shows;
#   5. the SQL baseline: the equivalent query of each rule that SQL can express, over the SQLite
#      file the server uses (read-only, WAL), with the sqlite3 CLI, BENCH_REPETITIONS times each
#      as a count(*) and as the member list in id order (written to /dev/null), timed by `.timer`;
#      the count must equal the server's (sqlite3's own CPU time and the machine's are kept too);
#   6. prints a markdown table (medians over the repetitions) and keeps every raw JSON line.
# Loopback only; stops by itself; kills what it started on exit.
#
#   scripts/bench-segments.sh [CUSTOMERS]            (default 1000000)
#
# Environment:
#   BENCH_REPETITIONS (5); BENCH_PAGE_SIZE (10000, the largest); BENCH_RESULTS
#   (target/bench-segments/results-<UTC time>.jsonl); BENCH_SQL_CACHE_KIB (262144: the sqlite3
#   page cache, as large as the server's writer connection's); BENCH_COMMIT: the commit to record
#   when the tree is not a git checkout (e.g. built from `git archive`); BENCH_QUIET (0): before
#   measuring, wait up to this many seconds for other processes to leave the machine idle (the
#   two cores are shared); PATRON_LOG: the server's log filter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=${1:-1000000}
REPS=${BENCH_REPETITIONS:-5}
PAGE_SIZE=${BENCH_PAGE_SIZE:-10000}
SQL_CACHE_KIB=${BENCH_SQL_CACHE_KIB:-262144}
QUIET=${BENCH_QUIET:-0}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-target/bench-segments/results-$STAMP.jsonl}
PATRON_PORT=50199
PATRON_ADDR=127.0.0.1:$PATRON_PORT

command -v jq >/dev/null || { echo "bench-segments: needs jq" >&2; exit 1; }
SQLITE=$(command -v sqlite3 || true)
if [[ -z "$SQLITE" ]]; then
  echo "bench-segments: WARNING: no sqlite3 CLI (apt-get install -y sqlite3): no SQL baseline" >&2
fi

# BENCH_PROFILE=debug: debug builds (the CI smoke run); figures from them mean nothing.
PROFILE=${BENCH_PROFILE:-release}
cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron -p patron-bench --bin patron-load
PATRON=target/$PROFILE/patron
LOAD=target/$PROFILE/patron-load

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
WORK=$(mktemp -d)
DB=$WORK/bench.db
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
  echo "bench-segments: nothing listens on port $1" >&2
  return 1
}

# `mem PID`: {"rss_kib":…,"hwm_kib":…} from /proc.
mem() {
  awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "{\"rss_kib\":%d,\"hwm_kib\":%d}", r, h}' "/proc/$1/status"
}

# Server CPU time (user + system) in seconds, from /proc.
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
# Busy CPU time of the whole machine (every core) in seconds, from /proc/stat: what the server,
# the client and anything else running took. The remainder shows how quiet the machine was.
busy() { awk -v t="$TICK" '/^cpu / {printf "%.3f", ($2 + $3 + $4 + $7 + $8 + $9) / t}' /proc/stat; }

# `wait_quiet`: waits (at most BENCH_QUIET seconds) until the machine, the server aside, used less
# than a tenth of one core over 5 s; records how long it waited and whether it got quiet.
wait_quiet() {
  local waited=0 quiet=false b0 c0 other
  while ((waited < QUIET)); do
    b0=$(busy)
    c0=$(cpu "$PATRON_PID")
    sleep 5
    waited=$((waited + 5))
    other=$(awk -v b0="$b0" -v b1="$(busy)" -v c0="$c0" -v c1="$(cpu "$PATRON_PID")" 'BEGIN {print (b1 - b0 - (c1 - c0)) / 5}')
    if awk -v o="$other" 'BEGIN {exit !(o < 0.1)}'; then
      quiet=true
      break
    fi
  done
  record quiet patron "$(jq -cn --argjson w "$waited" --argjson q "$quiet" '{waited_seconds: $w, quiet: $q}')" >/dev/null
}

# `record STEP SERVER JSON`: appends JSON tagged with its step and server to the results file.
record() {
  jq -c --arg step "$1" --arg server "$2" '{step: $step, server: $server} + .' <<<"$3" | tee -a "$RESULTS"
}

DATA=$(scripts/bench-data.sh "$CUSTOMERS" "$PROFILE")
cp "$DATA" "$DB"
EVENTS=$(sqlite3 "$DB" "SELECT count(*) FROM events")
echo "bench-segments: $CUSTOMERS customers, $EVENTS events (from $DATA); results in $RESULTS" >&2
"$PATRON" serve --listen "$PATRON_ADDR" --database "sqlite://$DB" \
  --request-timeout-secs 600 2>"$WORK/patron.log" &
PATRON_PID=$!
PIDS+=("$PATRON_PID")
wait_port "$PATRON_PORT"
record start patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" --arg rev "${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" \
  --arg dirty "$(git status --porcelain 2>/dev/null | grep -c . || true)" --arg host "$(uname -srm)" --arg cpus "$(nproc)" \
  --arg sqlite "$([[ -n "$SQLITE" ]] && "$SQLITE" --version | cut -d' ' -f1 || echo none)" \
  -n '{memory: $m, commit: $rev, changed_files: ($dirty | tonumber), kernel: $host, cpus: ($cpus | tonumber), sqlite3: $sqlite}')" >/dev/null

# The data set was generated before the server started; the server loaded it at start-up.
loaded=$(jq -cn --arg data "$DATA" --argjson customers "$CUSTOMERS" --argjson events "$EVENTS" \
  '{data_set: $data, customers: $customers, events: $events}')
record load patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" '. + {memory: $m}' <<<"$loaded")"

fitted=$("$LOAD" --target "$PATRON_ADDR" --scenario fit --timeout 600 --json)
record fit patron "$(jq -c --argjson m "$(mem "$PATRON_PID")" '. + {memory: $m}' <<<"$fitted")"

wait_quiet
before=$(mem "$PATRON_PID")
# Reset the peak (VmHWM) so the figure after the scenario is the scenario's own peak.
reset=false
if echo 5 2>/dev/null >"/proc/$PATRON_PID/clear_refs"; then reset=true; fi
c0=$(cpu "$PATRON_PID")
b0=$(busy)
load0=$(cut -d' ' -f1 /proc/loadavg)
started=$(date +%s.%N)
segments=$("$LOAD" --target "$PATRON_ADDR" --scenario segments --repetitions "$REPS" \
  --page-size "$PAGE_SIZE" --server-pid "$PATRON_PID" --clock-ticks "$TICK" --timeout 600 --json)
ended=$(date +%s.%N)
c1=$(cpu "$PATRON_PID")
b1=$(busy)
while IFS= read -r line; do
  record segments patron "$line" >/dev/null
done <<<"$segments"
client=$(jq -s 'map((.count_client_cpu_ms_per_call + .list_client_cpu_ms_per_call) * .repetitions
  + .preview_client_cpu_ms) | add / 1000' <<<"$segments")
record segments-totals patron "$(jq -cn --argjson b "$before" --argjson a "$(mem "$PATRON_PID")" --argjson reset "$reset" \
  --argjson c0 "$c0" --argjson c1 "$c1" --argjson s0 "$started" --argjson s1 "$ended" \
  --argjson b0 "$b0" --argjson b1 "$b1" --argjson client "$client" --argjson load "$load0" \
  '{memory_before: $b, memory_after: $a, hwm_reset_before: $reset, loadavg_1min_before: $load,
    seconds: (($s1 - $s0) * 1000 | round / 1000), server_cpu_seconds: (($c1 - $c0) * 1000 | round / 1000),
    client_cpu_seconds: ($client * 1000 | round / 1000),
    machine_busy_cpu_seconds: (($b1 - $b0) * 1000 | round / 1000),
    other_cpu_seconds: (($b1 - $b0 - ($c1 - $c0) - $client) * 1000 | round / 1000)}')"

# The SQL baseline. Days are days since 1970-01-01 (UTC), as in the orders table; a window of N
# days is today and the N - 1 days before it, as purchases.count(N) counts. An order counts while
# it is not wholly refunded, as the store reads it for the in-memory index.
if [[ -n "$SQLITE" ]]; then
  wait_quiet
  today=$(($(date -u +%s) / 86400))
  win() { echo "o.day BETWEEN $((today - $1 + 1)) AND $today AND (o.refunded = 0 OR o.refunded < o.amount)"; }
  lapsed="s.net_revenue >= 50000 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = s.customer_id AND $(win 90))"
  two_years="$lapsed AND (SELECT coalesce(sum(o.amount - o.refunded), 0) FROM orders o WHERE o.customer_id = s.customer_id AND $(win 730)) >= 50000"
  # Per segment: the count and the member list in id order. Windowed rules read orders directly
  # (count(DISTINCT) over its (customer_id, order_id) key): 4× faster than EXISTS per customer.
  declare -A COUNT=(
    [everyone]="SELECT count(*) FROM customers"
    [lapsed-big-spenders]="SELECT count(*) FROM customer_summaries s WHERE $lapsed"
    [recent]="SELECT count(DISTINCT o.customer_id) FROM orders o WHERE $(win 30)"
    [active-500d]="SELECT count(DISTINCT o.customer_id) FROM orders o WHERE $(win 500)"
    [lapsed-big-spenders-2y]="SELECT count(*) FROM customer_summaries s WHERE $two_years"
  )
  declare -A LIST=(
    [everyone]="SELECT customer_id FROM customers ORDER BY customer_id"
    [lapsed-big-spenders]="SELECT s.customer_id FROM customer_summaries s WHERE $lapsed ORDER BY s.customer_id"
    [recent]="SELECT DISTINCT o.customer_id FROM orders o WHERE $(win 30) ORDER BY o.customer_id"
    [active-500d]="SELECT DISTINCT o.customer_id FROM orders o WHERE $(win 500) ORDER BY o.customer_id"
    [lapsed-big-spenders-2y]="SELECT s.customer_id FROM customer_summaries s WHERE $two_years ORDER BY s.customer_id"
  )
  # `sql SEGMENT COUNT_QUERY LIST_QUERY`: REPS × (count, list), one sqlite3 process, read-only.
  sql() {
    local script="PRAGMA cache_size=-$SQL_CACHE_KIB;"$'\n'".timer on"$'\n'
    for _ in $(seq 1 "$REPS"); do
      script+=".output stdout"$'\n'"$2;"$'\n'".output /dev/null"$'\n'"$3;"$'\n'
    done
    local out b0 b1
    b0=$(busy)
    out=$("$SQLITE" -readonly -bail "file:$DB" <<<"$script")
    b1=$(busy)
    jq -cn --arg seg "$1" --arg cq "$2" --arg lq "$3" --arg out "$out" --argjson today "$today" \
      --argjson b0 "$b0" --argjson b1 "$b1" '
      def stats: sort as $s | ($s | length) as $n
        | {median: (if $n % 2 == 1 then $s[($n - 1) / 2] else ($s[$n / 2 - 1] + $s[$n / 2]) / 2 end),
           min: $s[0], max: $s[-1]};
      ($out | split("\n") | map(select(length > 0))) as $lines
      | ($lines | map(select(startswith("Run Time:")) | capture("real (?<s>[0-9.]+)").s | tonumber * 1000)) as $t
      | ($lines | map(select(startswith("Run Time:")) | capture("user (?<u>[0-9.]+) sys (?<s>[0-9.]+)")
         | (.u | tonumber) + (.s | tonumber)) | add) as $sql_cpu
      | ($lines | map(select(startswith("Run Time:") | not) | tonumber)) as $counts
      | ([range(0; $t | length; 2) | $t[.]]) as $count_ms
      | ([range(1; $t | length; 2) | $t[.]]) as $list_ms
      | {segment: $seg, today_day: $today, count: $counts[0], counts_stable: ($counts | unique | length == 1),
         count_ms: ($count_ms | stats + {runs: $count_ms}), list_ms: ($list_ms | stats + {runs: $list_ms}),
         sqlite3_cpu_seconds: ($sql_cpu * 1000 | round / 1000),
         other_cpu_seconds: (($b1 - $b0 - $sql_cpu) * 1000 | round / 1000),
         count_query: $cq, list_query: $lq}'
  }
  record sql-files sqlite3 "$(jq -cn --arg db "$(stat -c %s "$DB")" --arg wal "$(stat -c %s "$DB-wal" 2>/dev/null || echo 0)" \
    '{db_bytes: ($db | tonumber), wal_bytes: ($wal | tonumber)}')" >/dev/null
  for seg in everyone lapsed-big-spenders recent active-500d lapsed-big-spenders-2y; do
    record sql sqlite3 "$(sql "$seg" "${COUNT[$seg]}" "${LIST[$seg]}")" >/dev/null
  done
fi

# Checks: every list gave as many ids as the count, in ascending order; SQL counts agree.
jq -rs '
  (map(select(.step == "segments")) | map({key: .segment, value: .count}) | from_entries) as $patron
  | (map(select(.step == "segments" and (.list_members_match_count and .list_ids_ascending and .counts_stable | not)))[]
     | "bench-segments: WARNING: \(.segment): members \(.list_members) vs count \(.count), ascending \(.list_ids_ascending), stable \(.counts_stable)"),
    (map(select(.step == "sql" and .count != $patron[.segment]))[]
     | "bench-segments: WARNING: \(.segment): SQL counts \(.count), Patron \($patron[.segment])")
' "$RESULTS" >&2

# The table: medians over the repetitions.
jq -rs --arg customers "$CUSTOMERS" --arg reps "$REPS" '
  def n: if . >= 1000 then ((. / 1000 | floor) | n) + "," + ((. % 1000) | tostring | ("00" + .)[-3:]) else tostring end;
  def f: if . == null then "—" elif . >= 100 then (round | n) elif . >= 10 then (. * 10 | round / 10 | tostring) else (. * 100 | round / 100 | tostring) end;
  def mib: . / 1024 | floor | tostring + " MiB";
  def range: "\(.median | f) (\(.min | f)–\(.max | f))";
  def x($a; $b): if $a == null or $b == null or $b == 0 then "—" elif $a == 0 then "<\(1 / $b | f)×" else ($a / $b | f) + "×" end;
  def sqlms: if . < 1 then "<1" else f end;
  def sqlrange: "\(.median | sqlms) (\(.min | sqlms)–\(.max | sqlms))";
  (map(select(.step == "segments"))) as $segs
  | (map(select(.step == "sql")) | map({key: .segment, value: .}) | from_entries) as $sql
  | ($segs | map(select(.segment == "everyone"))[0]) as $floor
  | (map(select(.step == "load"))[0]) as $load
  | (map(select(.step == "fit"))[0]) as $fit
  | (map(select(.step == "segments-totals"))[0]) as $m
  | (map(select(.step == "sql"))) as $sqls
  | "| segment | rule | members | CountSegmentMembers ms | ÷ `true` | SQL count ms | Patron ÷ SQL | list all ms (pages) | ÷ `true` | SQL list ms | Patron ÷ SQL | PreviewSegment ms | server CPU ms per count / list |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ($segs[] | . as $s | $sql[$s.segment] as $q
      | "| \(.segment) | `\(.rule)` | \(.count | n) | \(.count_ms | range) | \(x(.count_ms.median; $floor.count_ms.median)) | \(if $q then ($q.count_ms | sqlrange) else "—" end) | \(x(.count_ms.median; $q.count_ms.median)) | \(.list_ms | range) (\(.list_pages)) | \(x(.list_ms.median; $floor.list_ms.median)) | \(if $q then ($q.list_ms | sqlrange) else "—" end) | \(x(.list_ms.median; $q.list_ms.median)) | \(.preview_ms | f) | \(.count_server_cpu_ms_per_call | f) / \(.list_server_cpu_ms_per_call | f) |"),
    "",
    "\($customers | tonumber | n) customers; medians of \($reps) repetitions (min–max in brackets); SQL: sqlite3 \(.[0].sqlite3) on the same file, read-only, timed by `.timer` to 1 ms.",
    "",
    "| step | result |",
    "|---|---|",
    "| data set | \($load.events | n) events of \($customers | tonumber | n) customers (`patron generate --seed 42 --now 2026-11-01`, \($load.data_set)) |",
    "| FitValueModel | fit_millis \($fit.fit_millis | n) (wall \($fit.seconds) s) on \($fit.customers | n) customers |",
    "| segments scenario | \($m.seconds) s wall; CPU: server \($m.server_cpu_seconds) s, client \($m.client_cpu_seconds) s, other processes \($m.other_cpu_seconds) s (1-min load average before: \($m.loadavg_1min_before)) |",
    (if ($sqls | length) > 0 then "| SQL baseline | CPU: sqlite3 \($sqls | map(.sqlite3_cpu_seconds) | add * 1000 | round / 1000) s, other processes \($sqls | map(.other_cpu_seconds) | add * 1000 | round / 1000) s |" else empty end),
    "| server memory after start (index loaded) | RSS \($load.memory.rss_kib | mib), peak \($load.memory.hwm_kib | mib) |",
    "| server memory after fit | RSS \($fit.memory.rss_kib | mib), peak \($fit.memory.hwm_kib | mib) |",
    "| server memory before / after the segments scenario | RSS \($m.memory_before.rss_kib | mib) / \($m.memory_after.rss_kib | mib), peak \(if $m.hwm_reset_before then "during the scenario" else "overall" end) \($m.memory_after.hwm_kib | mib) |"
' "$RESULTS"
echo "bench-segments: raw results in $RESULTS" >&2
