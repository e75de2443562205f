#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (no Node.js needed): builds the C++ core and
# its test executables with CMake (the CUDA kernels too, when nvcc is there), runs them against
# the golden outputs and the CPU serial oracle on the CPU provider and, where ONNX Runtime's CUDA
# provider libraries can be found, on the GPU; checks the CUDA MaxSim kernels against the serial
# oracle and the GPU heads against the CPU heads, runs compute-sanitizer on the kernels, and
# measures MaxSim against the README's H100 targets and PyTorch on the same GPU
# (scripts/gpu_peers.py). Prints a compact summary; finishes in a few minutes.
# FULL=1 adds CPU encoder throughput on a generated model; QUICK=1 skips every measurement;
# PEERS=0 skips PyTorch; NCU=1 profiles one launch of the default kernel with Nsight Compute
# (NCU_CONFIG=N: tile configuration N, numbered as maxsim_cuda_test lists them);
# SANITIZERS="memcheck" picks the compute-sanitizer tools.
# Logs go to $OUT when it is set.
#
# Needs: the ONNX Runtime headers (.deps/ort-headers, from scripts/fetch-ort-headers.sh) and a
# libonnxruntime.so.1 (ORT_LIBRARY, default: the one onnxruntime-node ships).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
ORT_LIBRARY=${ORT_LIBRARY:-$ROOT/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1}
ORT_HEADERS=${ORT_HEADERS:-$ROOT/.deps/ort-headers/include/onnxruntime}
WORK=${WORK:-/tmp/bge-m3-device}
mkdir -p "$WORK/lib"
summary=()
note() { summary+=("$1"); echo "== $1"; }
save() { [ -n "${OUT:-}" ] && cp "$1" "$OUT/" 2>/dev/null; return 0; }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | head -2
echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"; echo "cmake: $(cmake --version | head -1)"
echo "node: $(command -v node >/dev/null && node -v || echo 'not installed')"
python3 -c "import onnxruntime as o; print('python onnxruntime', o.__version__, o.get_available_providers())" 2>&1 | tail -1
nproc

# The runtime library in a private folder, so provider libraries can sit next to it.
cp "$ORT_LIBRARY" "$WORK/lib/libonnxruntime.so.1" || { note "no libonnxruntime at $ORT_LIBRARY"; exit 1; }
cuda_libs=$(find / -xdev \( -name 'libonnxruntime_providers_cuda.so' -o -name 'libonnxruntime_providers_shared.so' \) 2>/dev/null | head -4)
echo "CUDA provider libraries on this machine: ${cuda_libs:-none}"
for f in $cuda_libs; do cp "$f" "$WORK/lib/"; done

echo "== build"
build_start=$(date +%s)
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
archs=()
if nvidia-smi -L >/dev/null 2>&1; then  # this GPU's architecture only: a shorter build
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
  [ "$cc" = 90 ] && cc=90a  # Hopper: the wgmma kernel needs the architecture-specific target
  [ -n "$cc" ] && archs=(-DCMAKE_CUDA_ARCHITECTURES="$cc")
fi
cmake -S "$ROOT" -B "$WORK/build" "${gen[@]}" "${archs[@]}" -DCMAKE_BUILD_TYPE=Release -DBGE_M3_BUILD_ADDON=OFF -DBGE_M3_BUILD_TESTS=ON \
  -DORT_INCLUDE_DIR="$ORT_HEADERS" -DORT_LIBRARY="$WORK/lib/libonnxruntime.so.1" -DORT_RPATH="$WORK/lib" >"$WORK/cmake.log" 2>&1 \
  && cmake --build "$WORK/build" -j "$(nproc)" --target maxsim_cuda_test heads_cuda_test maxsim_test weight_readers_test encoder_golden_test >>"$WORK/cmake.log" 2>&1
if [ $? -ne 0 ]; then tail -30 "$WORK/cmake.log"; note "build FAILED"; exit 1; fi
note "build ok in $(( $(date +%s) - build_start )) s"
if command -v cuobjdump >/dev/null && [ -f "$WORK/build/libm3_cuda.a" ]; then  # what the tiled kernel compiled to
  cuobjdump -sass "$WORK/build/libm3_cuda.a" 2>/dev/null | awk '/Function : .*MaxSimTiledKernelILi128/{f=1;next} /Function :/{f=0} f' >"$WORK/tiled128.sass"
  note "tiled<128> SASS: $(for op in HMMA LDSM LDS LDGSTS ATOMG BAR; do printf '%s %s ' $op "$(grep -c "$op" "$WORK/tiled128.sass")"; done)"
  note "HGMMA instructions in the library: $(cuobjdump -sass "$WORK/build/libm3_cuda.a" 2>/dev/null | grep -c HGMMA)"
fi

B=$WORK/build
note "cmake: $(grep -o 'bge-m3: .*' "$WORK/cmake.log" | head -1)"
require_cuda=0; nvidia-smi -L >/dev/null 2>&1 && require_cuda=1
REQUIRE_CUDA=$require_cuda timeout 120 "$B/maxsim_cuda_test" >"$WORK/maxsim_cuda.log" 2>&1; rc=$?
tail -40 "$WORK/maxsim_cuda.log"; note "cuda maxsim (rc $rc): $(tail -1 "$WORK/maxsim_cuda.log")"
save "$WORK/maxsim_cuda.log"
disable=()  # what the benchmarks leave out: a failing kernel is not timed
if [ $rc != 0 ] && [ $require_cuda = 1 ]; then  # the rest without the tensor-map kernels, then without wgmma
  BGE_M3_CUDA_TMA=0 timeout 120 "$B/maxsim_cuda_test" >"$WORK/maxsim_cuda_notma.log" 2>&1; rc_notma=$?
  note "cuda maxsim without the tensor-map kernels (rc $rc_notma): $(tail -1 "$WORK/maxsim_cuda_notma.log")"
  save "$WORK/maxsim_cuda_notma.log"
  if [ $rc_notma = 0 ]; then disable=(env BGE_M3_CUDA_TMA=0); else disable=(env BGE_M3_CUDA_WGMMA=0); fi
fi
REQUIRE_CUDA=$require_cuda timeout 60 "$B/heads_cuda_test" >"$WORK/heads_cuda.log" 2>&1; rc_heads=$?
tail -8 "$WORK/heads_cuda.log"; note "cuda heads (rc $rc_heads): $(tail -1 "$WORK/heads_cuda.log")"
if [ "${QUICK:-0}" != 1 ] && [ $require_cuda = 1 ]; then
  timeout 150 "${disable[@]}" "$B/maxsim_cuda_test" --bench >"$WORK/maxsim_cuda_bench.log" 2>&1; echo "bench rc $?" >>"$WORK/maxsim_cuda_bench.log"
  while IFS= read -r line; do note "$line"; done < <(grep -E '^(device|bench|FAIL)' "$WORK/maxsim_cuda_bench.log")
  save "$WORK/maxsim_cuda_bench.log"
  if [ "${NCU:-0}" = 1 ] && command -v ncu >/dev/null; then  # one profiled launch at 16 queries: the default, or NCU_CONFIG
    timeout 120 ncu -k regex:'MaxSim(Tiled|Wgmma|Tma)' --launch-skip 2 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis --section LaunchStats \
      "$B/maxsim_cuda_test" --bench 16 ${NCU_CONFIG:-} >"$WORK/ncu.log" 2>&1
    note "ncu (rc $?): $(grep -E 'Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per' "$WORK/ncu.log" | tr -s ' ' | tr '\n' ';')"
    save "$WORK/ncu.log"
  fi
  if [ "${PEERS:-1}" = 1 ]; then  # PyTorch on the same GPU
    PYTHONUNBUFFERED=1 timeout 150 python3 scripts/gpu_peers.py >"$WORK/peers.log" 2>&1; echo "peers rc $?" >>"$WORK/peers.log"
    while IFS= read -r line; do note "$line"; done < <(grep -E '^peer|rc [1-9]|Error' "$WORK/peers.log")
    save "$WORK/peers.log"
  fi
  if command -v compute-sanitizer >/dev/null; then
    for tool in ${SANITIZERS:-memcheck racecheck synccheck}; do
      timeout 150 compute-sanitizer --tool $tool --error-exitcode 3 "$B/maxsim_cuda_test" --small >"$WORK/sanitizer-$tool.log" 2>&1
      note "compute-sanitizer $tool maxsim (rc $?): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$WORK/sanitizer-$tool.log" | head -1)"
      timeout 60 compute-sanitizer --tool $tool --error-exitcode 3 "$B/heads_cuda_test" >>"$WORK/sanitizer-$tool.log" 2>&1
      note "compute-sanitizer $tool heads (rc $?): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$WORK/sanitizer-$tool.log" | tail -1)"
      save "$WORK/sanitizer-$tool.log"
    done
  fi
fi
out=$("$B/weight_readers_test" 2>&1 | tail -1); note "weight readers: $out"
out=$("$B/maxsim_test" 2>&1 | tail -1); note "maxsim tiers: $out"
grep -m1 -o 'model name.*' /proc/cpuinfo | head -1
grep -m1 -o -w -E 'avx512_bf16|avx512_vnni|avx512_vp2intersect|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
for dir in demo-model test/fixtures/tiny-m3-safetensors test/fixtures/tiny-m3-baked test/fixtures/tiny-m3-int32-inputs \
    test/fixtures/tiny-m3-attention-sdpa test/fixtures/tiny-m3-attention-partial test/fixtures/tiny-m3-linear-variants; do
  out=$("$B/encoder_golden_test" "$dir" test/fixtures/golden.json --device cpu 2>&1 | tail -1); note "cpu $dir: $out"
done
# precision bf16 (AVX-512 BF16 hosts; it says "skipped" elsewhere) against PyTorch's bf16 reference.
# In the heads-baked graph the last rounding to bf16 feeds the outputs, so a value that two
# summation orders put on either side of a rounding boundary shows directly: up to about 1e-3.
out=$("$B/encoder_golden_test" demo-model test/fixtures/bf16-golden.json --device cpu --precision bf16 --reference snapshot \
  --tolerance 2e-5 2>&1 | tail -1); note "cpu bf16 demo-model: $out"
out=$("$B/encoder_golden_test" test/fixtures/tiny-m3-baked test/fixtures/bf16-golden.json --device cpu --precision bf16 \
  --reference baked --tolerance 2e-3 2>&1 | tail -1); note "cpu bf16 tiny-m3-baked: $out"
out=$("$B/encoder_golden_test" demo-model test/fixtures/golden.json --device cuda --tolerance 1e-4 2>&1 | tail -1)
note "cuda demo-model: $out"

echo "== encoder throughput (generated 6-layer, hidden-384 model)"
if [ "${FULL:-0}" != 1 ]; then
  note "CPU throughput skipped (FULL=1 runs it)"
elif python3 scripts/gen_fixtures.py --preset bench --out "$WORK/bench-model" --skip-tokenizer-check >"$WORK/gen.log" 2>&1; then
  vocab=$(python3 -c "import json;print(json.load(open('$WORK/bench-model/config.json'))['vocab_size'])")
  for threads in 1 8 16; do
    out=$("$B/encoder_golden_test" "$WORK/bench-model" --bench --vocab "$vocab" --threads "$threads" --texts 256 --length 256 2>&1 | tail -1)
    note "cpu threads $threads: $out"
    out=$("$B/encoder_golden_test" "$WORK/bench-model" --bench --precision bf16 --vocab "$vocab" --threads "$threads" --texts 256 --length 256 2>&1 | tail -1)
    note "cpu bf16 threads $threads: $out"
  done
  out=$("$B/encoder_golden_test" "$WORK/bench-model" --bench --device cuda --vocab "$vocab" --texts 1024 --length 256 --batch 64 2>&1 | tail -1)
  note "cuda: $out"
else
  tail -5 "$WORK/gen.log"; note "bench model generation FAILED"
fi

if [ -n "${OUT:-}" ] && [ -f "$WORK/maxsim_cuda_bench.log" ]; then  # the figures as JSON, for bench/results
  python3 scripts/device_results.py "$WORK/maxsim_cuda_bench.log" $( [ -f "$WORK/peers.log" ] && echo "$WORK/peers.log") >"$OUT/device-results.json" 2>&1
  while IFS= read -r line; do note "$line"; done < <(python3 -c '
import json, sys
for f in json.load(open(sys.argv[1])).get("fastest", []):
    print("fastest at %d queries: %s %.3f ms (%.0f TFLOP/s), default %s ms" % (f["queries"], f["kernel"], f["kernel_ms_median"], f["tflops"], f.get("default_ms_median", "?")))
' "$OUT/device-results.json" 2>&1)
fi
echo; echo "== summary"; printf '%s\n' "${summary[@]}"
