#!/usr/bin/env bash
# Fuzzes the parsers that read foreign bytes: CIDs, dag-pb/UnixFS, CAR, Bitswap messages.
#   scripts/fuzz.sh [seconds per target, default 60] [target...]
# Needs a nightly toolchain (libFuzzer's sanitizer flags); installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cid dag_pb car bitswap orbit_entry chain_tx)
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=65536
done
