#!/usr/bin/env bash
# The README's second command, and what CI runs: every test of the workspace.
# Tests that need root (the sandbox's uid/namespace checks) say so and skip that part when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export SELFCLOUD_LOG="${SELFCLOUD_LOG:-warn}"
# Compilers, cmake and libclang (llama.cpp), iproute2 (the chain partition test).
./scripts/system-deps.sh
# The JavaScript peers of the interop tests (real npm packages, pinned by a lock file).
./scripts/interop-deps.sh
# The AI models the LLM tests run (downloaded once, checked, converted by this checkout's binary).
./scripts/models.sh
# Doctests first (nextest does not run them): the crate docs' examples must compile and pass.
cargo test --workspace --locked --doc
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
  cargo test --workspace --locked --no-fail-fast
fi
