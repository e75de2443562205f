#!/usr/bin/env bash
# Sanitizer and fuzzing check of the C++ core, sized for CI: configures and builds the
# sanitizer build (CMake option M3_SANITIZE: ASan + UBSan, any report fatal) in build-sanitize/,
# runs the C++ tests under it, then each fuzz target of native/fuzz for a bounded time with a
# fixed seed, starting from its seed corpus in native/fuzz/corpus/<target>/.
#
#   scripts/fuzz-native.sh [SECONDS_PER_TARGET]      (default 20)
#
# Where clang can link libFuzzer the targets run under it (coverage-guided); with only g++
# they run under native/fuzz/standalone_driver.cc (seed corpus, then seeded mutations). Exits
# non-zero on any finding: a failed test, a sanitizer report, an abort or foreign exception in
# a target (see native/fuzz/fuzz_support.h), a hang or an out-of-memory. Inputs that crash or
# hang are saved under fuzz-findings/<target>/ (git-ignored), with the commands to replay them
# and to keep them as regression seeds.
#
# Environment:
#   FUZZ_ENGINE=auto|libfuzzer|standalone   default auto: libfuzzer when clang can link it
#   FUZZ_SEED=N                             mutation seed (default 1)
#   FUZZ_TARGETS="safetensors mini_json"    run only these targets
#   SKIP_TESTS=1                            fuzz only
#   ORT_INCLUDE_DIR, ORT_LIBRARY            ONNX Runtime headers and library (default: what
#                                           scripts/ort-paths.js finds, as npm install does)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
start_time=$(date +%s)

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz-native.sh [SECONDS_PER_TARGET]   (a positive whole number of seconds)" >&2
  exit 2
fi
seed=${FUZZ_SEED:-1}
all_targets=(zip_reader torch_pickle safetensors mini_json onnx_wire index_import)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"

# clang alone is not enough: some distributions ship libFuzzer's runtime in a separate package.
libfuzzer_links() {
  command -v clang++ >/dev/null && command -v clang >/dev/null || return 1
  local probe; probe=$(mktemp -d) || return 1
  printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
    'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }' >"$probe/probe.cc"
  clang++ -fsanitize=fuzzer,address,undefined "$probe/probe.cc" -o "$probe/probe" >/dev/null 2>&1
  local rc=$?
  rm -rf "$probe"
  return $rc
}
engine=${FUZZ_ENGINE:-auto}
if [ "$engine" = auto ]; then
  if libfuzzer_links; then engine=libfuzzer; else engine=standalone; fi
fi
# Full paths: a compiler named differently from the one in CMake's cache makes it drop the cache
# and every -D option with it.
case $engine in
  libfuzzer) compiler=(-DCMAKE_C_COMPILER="$(command -v clang)" -DCMAKE_CXX_COMPILER="$(command -v clang++)")
             BUILD=$ROOT/build-sanitize/clang ;;
  standalone) compiler=(-DCMAKE_CXX_COMPILER="$(command -v "${CXX:-g++}")"); BUILD=$ROOT/build-sanitize/gcc ;;
  *) echo "FUZZ_ENGINE must be auto, libfuzzer or standalone, not '$engine'" >&2; exit 2 ;;
esac
FINDINGS=$ROOT/fuzz-findings
mkdir -p "$BUILD" "$FINDINGS"

# ---- build ----
ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR:-$(node scripts/ort-paths.js include)} || exit 1
ORT_LIBRARY=${ORT_LIBRARY:-$(node scripts/ort-paths.js library)} || exit 1
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
# Builds of the real addon and of this tree share the machine: take turns on the same lock.
lock=(); command -v flock >/dev/null && lock=(flock /tmp/m3-build.lock)
tests=(weight_readers_test maxsim_test encoder_golden_test)
echo "== sanitizer build ($engine engine, $(basename "$BUILD"))"
build_start=$(date +%s)
if ! { cmake -S "$ROOT" -B "$BUILD" "${generator[@]}" "${compiler[@]}" -DCMAKE_BUILD_TYPE=Release \
         -DBGE_M3_BUILD_ADDON=OFF -DBGE_M3_BUILD_TESTS=ON -DBGE_M3_CUDA=OFF -DM3_SANITIZE=ON -DM3_FUZZ=ON \
         -DM3_FUZZ_ENGINE="$engine" -DORT_INCLUDE_DIR="$ORT_INCLUDE_DIR" -DORT_LIBRARY="$ORT_LIBRARY" \
         -DORT_RPATH="$(dirname "$ORT_LIBRARY")" &&
       "${lock[@]}" nice cmake --build "$BUILD" -j "$(nproc)" --target "${tests[@]}" "${targets[@]/#/fuzz_}"; } \
     >"$BUILD/build.log" 2>&1; then
  tail -40 "$BUILD/build.log"
  echo "sanitizer build FAILED (log: $BUILD/build.log)"
  exit 1
fi
echo "built in $(( $(date +%s) - build_start )) s"

# Any sanitizer report ends the process with an error. Allocations above 2 GiB are reported
# rather than attempted: the readers must refuse sizes they cannot have read from the file.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:max_allocation_size_mb=2048:detect_stack_use_after_return=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/native/tests/lsan-suppressions.txt}

failures=0
# ---- C++ tests under the sanitizers ----
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  echo "== C++ tests under ASan/UBSan"
  run_test() {  # label, command...: a sanitizer report makes the exit status non-zero
    local label=$1; shift
    local log="$BUILD/test-${label//[^A-Za-z0-9_.-]/_}.log"
    local rc=0
    { timeout 300 "$@" >"$log" 2>&1; } 2>/dev/null || rc=$?
    if [ $rc = 0 ]; then
      echo "ok    $label: $(tail -1 "$log")"
    else
      echo "FAIL  $label (exit $rc, log $log):"
      grep -E -A30 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error|^FAIL' "$log" | head -60
      [ $rc = 124 ] && echo "      (timed out after 300 s)"
      failures=$((failures + 1))
    fi
  }
  run_test weight_readers "$BUILD/weight_readers_test" test/fixtures/weight-readers
  run_test maxsim "$BUILD/maxsim_test"
  for dir in demo-model test/fixtures/tiny-m3-safetensors test/fixtures/tiny-m3-baked test/fixtures/tiny-m3-int32-inputs \
      test/fixtures/tiny-m3-attention-sdpa test/fixtures/tiny-m3-attention-partial test/fixtures/tiny-m3-linear-variants; do
    run_test "golden $dir" "$BUILD/encoder_golden_test" "$dir" test/fixtures/golden.json --device cpu
  done
  # The bf16 kernels (hosts with AVX-512 BF16; elsewhere the test says "skipped").
  run_test "golden bf16 demo-model" "$BUILD/encoder_golden_test" demo-model test/fixtures/bf16-golden.json --device cpu \
    --precision bf16 --reference snapshot --tolerance 2e-5
  run_test "golden bf16 tiny-m3-baked" "$BUILD/encoder_golden_test" test/fixtures/tiny-m3-baked test/fixtures/bf16-golden.json \
    --device cpu --precision bf16 --reference baked --tolerance 2e-3
fi

# ---- fuzzing ----
echo "== fuzzing: ${seconds} s per target, seed $seed, $engine"
summary=()
for target in "${targets[@]}"; do
  exe=$BUILD/fuzz/fuzz_$target
  corpus=$ROOT/native/fuzz/corpus/$target
  artifacts=$FINDINGS/$target
  log=$BUILD/fuzz-$target.log
  # Fresh folders each run: the same seed and corpus give the same cases, and the findings
  # listed are this run's.
  rm -rf "$artifacts" "$BUILD/fuzz-work/$target"
  mkdir -p "$artifacts" "$BUILD/fuzz-work/$target"
  flags=(-seed="$seed" -max_total_time="$seconds" -timeout=10 -artifact_prefix="$artifacts/")
  if [ $engine = libfuzzer ]; then
    # The first folder receives what libFuzzer learns; the committed corpus is only read.
    flags+=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 "$BUILD/fuzz-work/$target")
  fi
  target_start=$(date +%s)
  rc=0
  # The braces take bash's own "Aborted" notice; the target's report is in the log.
  { timeout $((seconds + 120)) "$exe" "${flags[@]}" "$corpus" >"$log" 2>&1; } 2>/dev/null || rc=$?
  elapsed=$(( $(date +%s) - target_start ))
  if [ $engine = libfuzzer ]; then
    cases=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  else
    cases=$(grep -o -E 'DONE cases=[0-9]+|written to .* \(case [0-9]+\)' "$log" | grep -o -E '[0-9]+\)?$' | tr -d ')' | tail -1)
  fi
  crashes=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' -o -name 'deadly-signal*' \) | wc -l)
  hangs=$(find "$artifacts" -type f \( -name 'timeout-*' -o -name 'slow-unit-*' \) | wc -l)
  if [ $rc != 0 ] && [ "$crashes" = 0 ] && [ "$hangs" = 0 ]; then
    crashes=1  # failed without an input to show, e.g. a leak found at exit or the run itself killed
  fi
  summary+=("$(printf '%-14s %10s cases  %2d crashes  %2d hangs  %4d s' "$target" "${cases:-?}" "$crashes" "$hangs" "$elapsed")")
  echo "${summary[-1]}"
  if [ $rc != 0 ] || [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
    failures=$((failures + 1))
    echo "---- fuzz_$target FAILED (exit $rc); the report (full log: $log):"
    # From the first report line to the sanitizer's SUMMARY (the shadow-memory dump after it
    # stays in the log).
    awk '/ERROR: (Address|Leak|Undefined)Sanitizer|runtime error|FUZZ FINDING|deadly signal|ALARM|out-of-memory|standalone_driver: (a case|abort|std::terminate|the report)/ { on = 1 }
         on { print; if (/^SUMMARY:/ || ++shown >= 60) exit }' "$log"
    for input in "$artifacts"/*; do
      [ -f "$input" ] || continue
      name=$(basename "$input")
      echo "  input: fuzz-findings/$target/$name"
      echo "    replay:  ASAN_OPTIONS='$ASAN_OPTIONS' ${exe#"$ROOT"/} fuzz-findings/$target/$name"
      echo "    once fixed, keep it as a regression case (every run replays the corpus first):"
      echo "      cp fuzz-findings/$target/$name native/fuzz/corpus/$target/regress-<what-it-found>"
    done
    echo "----"
  fi
done

echo
echo "== summary (${engine}, ${seconds} s per target, seed ${seed})"
printf '%s\n' "${summary[@]}"
echo "total $(( $(date +%s) - start_time )) s"
if [ $failures != 0 ]; then
  echo "FAILED: $failures test(s) or target(s) with findings"
  exit 1
fi
echo "no findings"
