#include "kernels/peak_probe.h"

#include <immintrin.h>

// GCC 12 reports its own _mm512_undefined_ps() (inside _mm512_reduce_add_ps) as uninitialized;
// the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <chrono>

namespace m3 {
namespace {

// Enough independent accumulators to cover FMA latency x throughput, few enough to stay in
// registers (AVX2 has 16 ymm registers, two of them taken by the constants).
constexpr int kChains = 16;
constexpr int kChainsAvx2 = 12;
constexpr long kInner = 1 << 16;

__attribute__((target("avx512f,fma"))) float RunAvx512(long rounds) {
  __m512 acc[kChains];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) float RunAvx2(long rounds) {
  __m256 acc[kChainsAvx2];
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kChainsAvx2; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < kChainsAvx2; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 sum = acc[0];
  for (int i = 1; i < kChainsAvx2; ++i) sum = _mm256_add_ps(sum, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  return lanes[0];
}

__attribute__((target("avx512f,avx512bf16"))) float RunBf16(long rounds) {
  __m512 acc[kChains];
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);  // 1, 1e-7
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}

float RunSerial(long rounds) {
  float acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = static_cast<float>(i);
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float sum = 0;
  for (float x : acc) sum += x;
  return sum;
}

}  // namespace

double MeasureFmaPeakGflops(IsaTier tier, double seconds) {
  if (tier > DetectedTier()) tier = DetectedTier();
  const int lanes = tier == IsaTier::kAvx512 ? 16 : tier == IsaTier::kAvx2 ? 8 : 1;
  const int chains = tier == IsaTier::kAvx2 ? kChainsAvx2 : kChains;
  volatile float sink = 0;
  double best = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto start = std::chrono::steady_clock::now();
    sink = sink + (tier == IsaTier::kAvx512 ? RunAvx512(kInner) : tier == IsaTier::kAvx2 ? RunAvx2(kInner) : RunSerial(kInner));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * lanes * chains * static_cast<double>(kInner) / s / 1e9);
  } while (std::chrono::steady_clock::now() < deadline);
  return best;
}

double MeasureBf16PeakGflops(double seconds) {
  if (DetectedTier() != IsaTier::kAvx512 || !DetectCpuFeatures().avx512_bf16) return 0;
  volatile float sink = 0;
  double best = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto start = std::chrono::steady_clock::now();
    sink = sink + RunBf16(kInner);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * 32 * kChains * static_cast<double>(kInner) / s / 1e9);
  } while (std::chrono::steady_clock::now() < deadline);
  return best;
}

}  // namespace m3
