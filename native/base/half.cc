#include "base/half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <cstring>

#include "base/cpu_features.h"

namespace m3 {

static float FloatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

uint16_t FloatToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float Bf16ToFloat(uint16_t bits) { return FloatFromBits(static_cast<uint32_t>(bits) << 16); }

float HalfBitsToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu;
  uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0x1F) {
    // Inf and NaN: widen the payload in place so NaN bits survive the conversion.
    return FloatFromBits(sign | 0x7F800000u | (mantissa << 13));
  }
  if (exponent != 0) {
    return FloatFromBits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }
  if (mantissa == 0) return FloatFromBits(sign);
  // Subnormal half: every one is a normal float, so shift the leading 1 into the implicit bit.
  uint32_t float_exponent = 113;  // the exponent a half subnormal would have if normalised
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --float_exponent;
  }
  mantissa &= 0x3FFu;
  return FloatFromBits(sign | (float_exponent << 23) | (mantissa << 13));
}

uint16_t FloatToHalfBits(float x, bool* clamped) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));  // NaN
  if (magnitude == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);                            // inf
  // 65520 and above round to infinity in IEEE arithmetic; a weight or constant that large is
  // held at the largest finite half instead.
  if (magnitude >= 0x477ff000u) {
    if (clamped) *clamped = true;
    return static_cast<uint16_t>(sign | 0x7bffu);
  }
  if (magnitude < 0x38800000u) {
    // A subnormal half (or zero): the value in units of 2^-24, rounded to nearest even.
    if (magnitude < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exponent;  // 113 - exponent + 13
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t midpoint = 1u << (shift - 1u);
    if (rest > midpoint || (rest == midpoint && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  // Normal: rebias the exponent, then round the 13 dropped bits to nearest even (a carry into
  // the exponent is the correctly rounded result).
  const uint32_t rebased = magnitude - (112u << 23);
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx,f16c"))) static void WidenHalfsF16c(const uint16_t* src, size_t count, float* dst) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < count; ++i) dst[i] = HalfBitsToFloat(src[i]);
}
#endif

void WidenHalfs(const uint16_t* src, size_t count, float* dst) {
#if defined(__x86_64__) || defined(__i386__)
  if (DetectCpuFeatures().f16c) {
    WidenHalfsF16c(src, count, dst);
    return;
  }
#endif
  for (size_t i = 0; i < count; ++i) dst[i] = HalfBitsToFloat(src[i]);
}

void WidenBf16s(const uint16_t* src, size_t count, float* dst) {
  for (size_t i = 0; i < count; ++i) dst[i] = Bf16ToFloat(src[i]);
}

}  // namespace m3
