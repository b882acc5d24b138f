#!/usr/bin/env bash
# Prints the cargo profile (`cargo build --profile …`) whose binaries are in target/PROFILE:
# `dev` for debug, else PROFILE itself (release, production). Refuses any other name.
#   scripts/cargo-profile.sh PROFILE
set -euo pipefail
case "${1:-}" in
  debug) echo dev ;;
  release | production) echo "$1" ;;
  *) echo "cargo-profile: PROFILE is debug, release or production, not '${1:-}'" >&2; exit 2 ;;
esac
