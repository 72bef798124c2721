#!/usr/bin/env bash
# The Debian packages selfcloud builds and tests with; installs whichever are missing (as root),
# or names them (otherwise). Called by setup.sh and test.sh.
set -euo pipefail
need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# OpenSSL 3's headers and libraries: data at rest is sealed with its ChaCha20-Poly1305.
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
# `ip netns` for the chain test that partitions a validator (root only).
command -v ip >/dev/null || need_apt+=(iproute2)
# llama.cpp (vendored by llama-cpp-2) builds with cmake; its bindings are generated with libclang.
command -v cmake >/dev/null || need_apt+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
# The browser tests drive Debian's Chromium with playwright-core (which never downloads a browser).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "please install these Debian packages: ${need_apt[*]}" >&2
    exit 1
  fi
fi
