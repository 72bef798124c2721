#!/usr/bin/env bash
# The README's first command: set up, then run `selfcloud up` on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec ./target/release/selfcloud up "$@"
