#!/usr/bin/env bash
# Generate benchmark models (random weights) in the BAAI/bge-m3 snapshot layout, git-ignored:
#   scripts/gen-bench-model.sh            small: 6 layers x 384, 512 tokens -> .cache/bench-model
#   scripts/gen-bench-model.sh full       BGE-M3's shape: 24 layers x 1024, 8192 tokens, 250,002
#                                         embeddings (about 2.2 GB) -> .cache/bench-model-full
# Needs python3-torch, python3-onnx, python3-numpy (Debian packages) and node_modules/tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-python.sh
case "${1:-small}" in
  small) shift || true; "$PY" scripts/gen_fixtures.py --preset bench --out .cache/bench-model "$@" ;;
  full) shift; "$PY" scripts/gen_fixtures.py --preset full --out .cache/bench-model-full "$@" ;;
  *) echo "usage: $0 [small|full] [gen_fixtures.py options]" >&2; exit 2 ;;
esac
