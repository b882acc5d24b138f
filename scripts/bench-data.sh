#!/usr/bin/env bash
# Prints the path of a SQLite file holding the generated data set of CUSTOMERS customers
# (`patron generate --customers CUSTOMERS --seed 42 --now 2026-11-01`, every event kind, about 12
# events per customer), creating it on first use under target/bench-data/ and reusing it after.
# Benchmarks copy it before serving from it, so the cached file stays as generated.
#   scripts/bench-data.sh CUSTOMERS [PROFILE] [EVENTS]
# PROFILE: the build that generates it (production, release, or debug for smoke runs; the data
# set is the same whichever). EVENTS: all (the default) or purchases (purchases and refunds only,
# `--events purchases`: the 10,000,000-customer set of scripts/bench-scale.sh, about 2.5 events
# per customer), cached as gen-CUSTOMERS-purchases-s42.db.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CUSTOMERS=$1
PROFILE=${2:-release}
EVENTS=${3:-all}
DIR=target/bench-data
case "$EVENTS" in
  all) FILE=$DIR/gen-$CUSTOMERS-s42.db ;;
  purchases) FILE=$DIR/gen-$CUSTOMERS-purchases-s42.db ;;
  *) echo "bench-data: EVENTS is all or purchases, not $EVENTS" >&2; exit 2 ;;
esac
if [ ! -f "$FILE" ]; then
  mkdir -p "$DIR"
  cargo build --profile "$(scripts/cargo-profile.sh "$PROFILE")" -q -p patron-server --bin patron
  rm -f "$FILE.tmp"*
  "target/$PROFILE/patron" --log-level warn --database "sqlite://$FILE.tmp" \
    generate --customers "$CUSTOMERS" --seed 42 --now 2026-11-01 --events "$EVENTS" >&2
  # One self-contained file: fold the WAL in before renaming.
  sqlite3 "$FILE.tmp" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null 2>&1 || true
  rm -f "$FILE.tmp-wal" "$FILE.tmp-shm"
  mv "$FILE.tmp" "$FILE"
fi
echo "$FILE"
