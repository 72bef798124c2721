#!/usr/bin/env bash
# Installs the JavaScript peers the interop tests and benchmarks run against (interop/js, pinned by
# its package-lock.json). Skips the install when node_modules already matches the lock file.
# `--ignore-scripts`: no package here needs an install script, and some (webrtc) download binaries.
set -euo pipefail
cd "$(dirname "$0")/../interop/js"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
  else
    echo "interop-deps: please install nodejs and npm" >&2
    exit 1
  fi
fi
stamp=node_modules/.selfcloud-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "interop-deps: npm ci in interop/js…"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
