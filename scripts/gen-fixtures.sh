#!/usr/bin/env bash
# Regenerate the tiny random model (demo-model/) and the test fixtures (test/fixtures/):
# BAAI-layout, safetensors and heads-baked exports, golden.json and malformed weight files.
# Needs python3-torch, python3-onnx, python3-numpy (Debian packages) and node_modules/tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-python.sh
"$PY" scripts/gen_fixtures.py --preset tiny --out demo-model --fixtures test/fixtures "$@"
