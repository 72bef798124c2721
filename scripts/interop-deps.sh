#!/usr/bin/env bash
# Installs the JavaScript peers the interop tests and benchmarks run against (interop/js, pinned by
# its package-lock.json), playwright-core for the browser tests (e2e/), examples/notes' link to the
# SDK, and the OpenAI Python client (interop/python). Skips each install when it already matches
# its lock or requirements file.
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
# `npm ci` in a directory unless its node_modules already matches its lock file.
npm_ci() {
  local dir=$1 stamp want
  stamp=$dir/node_modules/.selfcloud-lock.sha256
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "interop-deps: npm ci in $dir…"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
}
npm_ci .
# playwright-core for the browser tests (e2e/) and the example app's link to the SDK.
npm_ci ../../e2e
npm_ci ../../examples/notes

# The official OpenAI Python client (interop/python, in a virtualenv of its own).
cd ../python
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "interop-deps: please install python3-venv" >&2
    exit 1
  fi
fi
stamp=.venv/.selfcloud-requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "interop-deps: pip install in interop/python/.venv…"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
