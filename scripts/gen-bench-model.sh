#!/usr/bin/env bash
# Generate the benchmark model (random weights, 6 layers, hidden 384, 512 tokens) into
# .cache/bench-model (git-ignored), in the BAAI/bge-m3 snapshot layout.
# Needs python3-torch, python3-onnx, python3-numpy (Debian packages) and node_modules/tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  local py
  for py in "${PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$py" ] || continue
    if "$py" -c 'import torch, onnx, numpy' 2>/dev/null; then echo "$py"; return 0; fi
  done
  echo "gen-bench-model: no python with torch, onnx and numpy (apt-get install python3-torch python3-onnx python3-numpy)" >&2
  return 1
}
PY="$(pick_python)"

"$PY" scripts/gen_fixtures.py --preset bench --out .cache/bench-model "$@"
