#!/usr/bin/env bash
# Builds the native proof of Import API batches (native/push_proof, Rust without dependencies) into
# prequel_dagster/push/, where push/native.py loads it. Without cargo it says so and stops: the API
# answers the same without it, more slowly.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="$(command -v cargo || true)"
if [ -z "$CARGO" ] && [ -x "$HOME/.cargo/bin/cargo" ]; then CARGO="$HOME/.cargo/bin/cargo"; fi
if [ -z "$CARGO" ]; then
  echo "build_native: no cargo (Rust) here: the Import API runs without the native proof (slower)" >&2
  exit 0
fi
"$CARGO" build --release --offline --quiet --manifest-path native/push_proof/Cargo.toml
cp native/push_proof/target/release/libprequel_push_proof.so prequel_dagster/push/
echo "build_native: prequel_dagster/push/libprequel_push_proof.so"
