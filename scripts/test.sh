#!/usr/bin/env bash
# The README's second command, and what CI runs: every test of the workspace.
# Tests that need root (the sandbox's uid/namespace checks) say so and skip when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export SELFCLOUD_LOG="${SELFCLOUD_LOG:-warn}"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
  cargo test --workspace --locked --no-fail-fast
fi
# nextest does not run doctests; the crate docs' examples must compile and pass too.
cargo test --workspace --locked --doc
