#!/usr/bin/env bash
# Generate the benchmark model (random weights, 6 layers, hidden 384, 512 tokens) into
# .cache/bench-model (git-ignored), in the BAAI/bge-m3 snapshot layout.
# Needs python3-torch, python3-onnx, python3-numpy (Debian packages) and node_modules/tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-python.sh
"$PY" scripts/gen_fixtures.py --preset bench --out .cache/bench-model "$@"
