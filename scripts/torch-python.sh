# Sourced by the fixture scripts: sets PY to a Python that can import torch, onnx and numpy.
# The Debian torch packages live in the system interpreter; a python3 earlier on PATH (pyenv,
# venv) usually cannot import them. PYTHON overrides the choice.
PY=""
for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
  [ -n "$candidate" ] || continue
  if "$candidate" -c 'import torch, onnx, numpy' 2>/dev/null; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  echo "$(basename "$0"): no python with torch, onnx and numpy (apt-get install python3-torch python3-onnx python3-numpy)" >&2
  exit 1
fi
