#!/usr/bin/env bash
# The encoder on a GPU machine, end to end, in one call once scripts/device-stage.sh has staged
# and unpacked its payload there (Node, ONNX Runtime 1.29 with its CUDA provider, the GPU addon,
# dist/ and the npm packages the run loads):
#
#   scripts/device-node-check.sh STAGED_ROOT    there: STAGED_ROOT is the DIR/root that
#                                               `scripts/device-stage.sh unpack DIR` made
#   scripts/device-node-check.sh --cpu          here: the same steps with this machine's Node and
#                                               addon on the CPU (the GPU-only steps report a skip)
#
# Steps, each under its own time limit; logs and JSON results go to $OUT (else /tmp/bge-m3-node-check):
#   machine   the GPU, the NVIDIA libraries found in PyTorch's wheels (put on LD_LIBRARY_PATH)
#   runtime   runtimeInfo(): ONNX Runtime's version and whether the CUDA provider is usable
#   models    the bench model and BGE-M3's full shape, generated with the repository's generator
#   tests     test/19 (MaxSim), test/47 (the goldens on CUDA, fp32 within 1e-4), test/46 under
#             BGE_M3_TEST_DEVICE=cuda (fp16 within its bound)
#   fusions   which of ONNX Runtime's fusions fire on the bench model on CUDA, fp32 and fp16
#   encode    bench/gpu_encode.js on the full shape: ours fp16 and fp32 against PyTorch
#             (transformers' XLMRobertaModel, SDPA, fp16) at 512 tokens, a mixed corpus, 8,192 tokens
#   cpu-peer  on that machine's CPU (all cores): ours in fp32 against transformers' XLMRobertaModel
#             (SDPA, fp32, same weights) on the bench model
#   serve     the server load test at 1, 16 and 64 clients, on the GPU and on this machine's CPU
# STEPS="tests fusions" runs only those; SKIP_FULL=1 benchmarks the bench model instead of the full shape;
# CHECK_DEVICE=cpu runs a staged payload on the CPU.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/bge-m3-node-check}
mkdir -p "$OUT"
STEPS=${STEPS:-machine runtime models tests fusions encode cpu-peer serve}
want() { [[ " $STEPS " == *" $1 "* ]]; }
summary=()
note() { summary+=("$1"); echo "== $1"; }
started=$(date +%s)
elapsed() { echo "$(( $(date +%s) - started )) s"; }

if [ "${1:-}" = "--cpu" ]; then
  DEVICE=cpu
  NODE=$(command -v node)
else
  STAGED=$(cd "${1:?usage: $0 STAGED_ROOT | --cpu}" && pwd)
  DEVICE=${CHECK_DEVICE:-cuda}  # cpu: the staged files on a machine without a GPU (device-stage.sh dry-run)
  NODE=$STAGED/bin/node
  export BGE_M3_ADDON=$STAGED/build-gpu/Release/bge_m3.node
  # The repository copy there has no build outputs: the staged ones stand in (dist/ copied, as it
  # finds package.json above its real path; the packages linked).
  [ -e dist ] || cp -r "$STAGED/dist" dist
  [ -e node_modules ] || ln -s "$STAGED/node_modules" node_modules
  # CUDA 13's runtime, cuBLAS and cuRAND from the NVIDIA wheels PyTorch installed.
  nvidia_libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)
  export LD_LIBRARY_PATH=${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
TEST_DEVICE=$DEVICE
run() {  # run NAME SECONDS COMMAND...: logs to $OUT/NAME.log, notes the exit status
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: rc $rc in $(( $(date +%s) - t0 )) s$( [ $rc = 124 ] && echo " (timed out after $limit s)")"
  return $rc
}

if want machine; then
  echo "== machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
  echo "node $("$NODE" -v), $(nproc) cores, python $(python3 -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1)"
  echo "NVIDIA libraries: ${nvidia_libs:-none found}" | cut -c1-400
fi

cuda_ok=0
if want runtime; then
  "$NODE" -e "
    const { runtimeInfo, cudaInfo } = require('./dist/lib');
    const r = runtimeInfo(), c = cudaInfo();
    console.log(JSON.stringify({ ort: r.ortVersion, from: r.ortLibraryDir, usable: r.usableProviders, cudaError: r.cudaProviderError, gpus: c.names }));
    process.exit(r.usableProviders.includes('CUDAExecutionProvider') && c.devices > 0 ? 0 : 3);" >"$OUT/runtime.log" 2>&1 && cuda_ok=1
  note "runtime: $(cut -c1-300 "$OUT/runtime.log")"
fi
[ $cuda_ok = 1 ] || { [ "$DEVICE" = cuda ] && note "the CUDA provider is not usable: the GPU steps will fail or skip"; }

FULL=.cache/bench-model-full
if want models; then
  [ -f .cache/bench-model/onnx/model.onnx ] || run gen-bench 240 scripts/gen-bench-model.sh
  if [ "${SKIP_FULL:-0}" != 1 ] && [ "$DEVICE" = cuda ] && [ ! -f "$FULL/onnx/model.onnx" ]; then
    run gen-full 360 scripts/gen-bench-model.sh full
  fi
fi
[ -f "$FULL/onnx/model.onnx" ] || FULL=.cache/bench-model

if want tests; then
  run test-cuda 240 "$NODE" --test --test-reporter=spec dist/test/19.cuda.test.js dist/test/47.cuda_encoder.test.js
  BGE_M3_TEST_DEVICE=$TEST_DEVICE run test-fp16 240 "$NODE" --test --test-reporter=spec dist/test/46.fp16.test.js
  for log in test-cuda test-fp16; do note "$log: $(grep -E '^ℹ (pass|fail|skipped)' "$OUT/$log.log" | tr '\n' ' ')"; done
fi

if want fusions; then
  for p in fp32 fp16; do
    run "fusions-$p" 120 "$NODE" scripts/ort-fusions.js .cache/bench-model --device "$DEVICE" --precision $p --out "$OUT/fusions-$DEVICE-$p.json"
    note "fusions $DEVICE $p: $("$NODE" -p "JSON.stringify(require('$OUT/fusions-$DEVICE-$p.json').fused)" 2>/dev/null)"
  done
fi

if want encode; then
  peer=python3; [ "$DEVICE" = cuda ] || peer=none
  BGE_M3_BENCH_RESULTS=$OUT run encode 420 "$NODE" dist/bench/gpu_encode.js --model "$FULL" --device "$DEVICE" --peer $peer --texts 256 \
    $( [ "$DEVICE" = cpu ] && echo "--texts 16 --precision fp32" )
  while IFS= read -r line; do note "$line"; done < <(grep -E '^(ours|pytorch|first dense|PyTorch peer)' "$OUT/encode.log")
fi

if want cpu-peer; then
  peer=python3; python3 -c 'import torch, transformers' 2>/dev/null || peer=none
  BGE_M3_BENCH_RESULTS=$OUT run cpu-peer 300 "$NODE" dist/bench/gpu_encode.js --model .cache/bench-model --device cpu \
    --precision fp32 --peer $peer --texts 64
  while IFS= read -r line; do note "cpu: $line"; done < <(grep -E '^(ours|pytorch|first dense|PyTorch peer)' "$OUT/cpu-peer.log")
fi

if want serve; then
  seconds=10; [ "$DEVICE" = cpu ] && seconds=2
  for d in $( [ "$DEVICE" = cuda ] && echo cuda ) cpu; do
    BGE_M3_BENCH_RESULTS=$OUT run "serve-$d" 240 "$NODE" dist/bench/serve_load.js --device $d --model .cache/bench-model \
      --concurrency 1,16,64 --seconds $seconds
    while IFS= read -r line; do note "serve $d: $line"; done < <(grep -E '^\{"concurrency"' "$OUT/serve-$d.log" | \
      "$NODE" -e "require('readline').createInterface({ input: process.stdin }).on('line', (l) => { const r = JSON.parse(l);
        console.log('c=' + r.concurrency + ' ' + r.textsPerSecond.toFixed(0) + ' texts/s p50 ' + r.latencyMs.p50.toFixed(1) + ' ms p99 ' + r.latencyMs.p99.toFixed(1) + ' ms'); })")
  done
fi

echo
echo "== summary ($DEVICE, $(elapsed))"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
