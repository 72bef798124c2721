#!/usr/bin/env bash
# Runs the spine's benchmarks in release mode; installs nginx (the peer) when root and missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || apt-get install -y -qq nginx
  else
    echo "bench: nginx missing and not root; the nginx comparison will be skipped" >&2
  fi
fi
./scripts/interop-deps.sh
cargo build --release --locked -p selfcloud
./target/release/selfcloud bench provision "$@"
./target/release/selfcloud bench gateway
./target/release/selfcloud bench ipfs
./target/release/selfcloud bench bitswap
./target/release/selfcloud bench db
