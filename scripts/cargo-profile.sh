#!/usr/bin/env bash
# Prints the cargo profile (`cargo build --profile …`) whose binaries are in target/PROFILE:
# `dev` for debug, else PROFILE itself (release, production). Refuses any other name.
#   scripts/cargo-profile.sh PROFILE
# With --args, prints instead the `cargo build` arguments one per line, for a checkout that may
# predate the production profile (a benchmark's baseline revision): `--profile NAME` and, for
# production, the profile's definition as --config, the same as the root Cargo.toml's.
#   mapfile -t args < <(scripts/cargo-profile.sh PROFILE --args)
set -euo pipefail
case "${1:-}" in
  debug) name=dev ;;
  release | production) name=$1 ;;
  *) echo "cargo-profile: PROFILE is debug, release or production, not '${1:-}'" >&2; exit 2 ;;
esac
case "${2:-}" in
  "") echo "$name" ;;
  --args)
    printf '%s\n' --profile "$name"
    if [[ "$name" == production ]]; then
      printf '%s\n' --config 'profile.production.inherits="release"' \
        --config 'profile.production.lto="fat"' --config 'profile.production.codegen-units=1'
    fi
    ;;
  *) echo "cargo-profile: the only option is --args, not '$2'" >&2; exit 2 ;;
esac
