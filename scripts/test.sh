#!/usr/bin/env bash
# The README's second command, and what CI runs: every test of the workspace.
# Tests that need root (the sandbox's uid/namespace checks) say so and skip that part when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export SELFCLOUD_LOG="${SELFCLOUD_LOG:-warn}"
# `ip netns` for the chain partition test (it runs as root only, like the sandbox checks).
# cmake and libclang build llama.cpp for the AI crate.
need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v cmake >/dev/null || need_apt+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "test: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi
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
