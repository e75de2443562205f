#!/usr/bin/env bash
# Regenerate the tiny random model (demo-model/) and the test fixtures (test/fixtures/):
# BAAI-layout, safetensors and heads-baked exports, golden.json and malformed weight files.
# Needs python3-torch, python3-onnx, python3-numpy (Debian packages) and node_modules/tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian torch packages live in the system interpreter; a python3 earlier on PATH (pyenv,
# venv) usually cannot import them. PYTHON overrides the choice.
pick_python() {
  local py
  for py in "${PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$py" ] || continue
    if "$py" -c 'import torch, onnx, numpy' 2>/dev/null; then echo "$py"; return 0; fi
  done
  echo "gen-fixtures: no python with torch, onnx and numpy (apt-get install python3-torch python3-onnx python3-numpy)" >&2
  return 1
}
PY="$(pick_python)"

"$PY" scripts/gen_fixtures.py --preset tiny --out demo-model --fixtures test/fixtures "$@"
