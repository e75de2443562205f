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
