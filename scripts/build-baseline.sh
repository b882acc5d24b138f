#!/usr/bin/env bash
# Builds `patron` as it was at REV with PROFILE (debug, release or production) and copies the
# binary to OUT: the baseline of a benchmark that compares this commit with an earlier one
# (bench-feed.sh, bench-streams.sh).
#   scripts/build-baseline.sh REV PROFILE OUT
# REV is checked out in a temporary git worktree and built in its own target directory,
# target/baseline-<REV's hash>, kept so that the next run rebuilds little. Not in target/ itself:
# cargo names a workspace crate's artifacts after its path inside the workspace, so an old
# revision's crates would take the names of this commit's, and the next build of this commit
# could link them as if they were fresh. A revision older than the production profile is given
# its definition (scripts/cargo-profile.sh --args).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $# -ne 3 ]]; then
  echo "usage: scripts/build-baseline.sh REV PROFILE OUT" >&2
  exit 2
fi
REV=$1
PROFILE=$2
OUT=$3
scripts/cargo-profile.sh "$PROFILE" >/dev/null
mapfile -t args < <(scripts/cargo-profile.sh "$PROFILE" --args)
SHA=$(git rev-parse --short=12 --verify "$REV^{commit}")
TARGET="$(pwd)/target/baseline-$SHA"
TREE=$(mktemp -d)
cleanup() {
  git worktree remove --force "$TREE/src" >/dev/null 2>&1 || true
  rm -rf "$TREE"
}
trap cleanup EXIT

git worktree add --detach -q "$TREE/src" "$SHA"
CARGO_TARGET_DIR="$TARGET" cargo build "${args[@]}" -q --manifest-path "$TREE/src/Cargo.toml" \
  -p patron-server --bin patron
cp "$TARGET/$PROFILE/patron" "$OUT"
