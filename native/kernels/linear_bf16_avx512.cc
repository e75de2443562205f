// AVX-512 BF16 kernel of linear_bf16.h: 6 rows x 64 columns per register tile, 24 accumulators,
// each `vdpbf16ps` adding two input features' products into 16 columns. A pass covers up to
// kBf16KChunk input features: x's rows for it are rounded to bf16 into the scratch (L1/L2
// resident), then every panel of the unit streams past them; later passes add to y.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/linear_bf16.h"

namespace m3 {
namespace {

#define M3_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))

/// Rounds x[r][k0, k0 + kc) of rows [r0, r1) to bf16 pairs: scratch row i holds `stride` elements
/// (kc rounded up to even; the odd tail's partner is 0).
M3_BF16_TARGET void RoundRows(const float* x, int64_t in, int64_t r0, int64_t r1, int64_t k0, int64_t kc,
                              int64_t stride, uint16_t* scratch) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* src = x + r * in + k0;
    uint16_t* dst = scratch + (r - r0) * stride;
    for (int64_t k = 0; k < stride; k += 32) {
      const int64_t left = kc - k;
      const __mmask16 lo_m = left >= 16 ? 0xffff : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0;
      const __mmask16 hi_m =
          left >= 32 ? 0xffff : left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0;
      const __m512 lo = _mm512_maskz_loadu_ps(lo_m, src + k);
      const __m512 hi = _mm512_maskz_loadu_ps(hi_m, src + k + 16);
      const __m512i packed = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
      const int64_t n = std::min<int64_t>(32, stride - k);
      const __mmask32 st = n >= 32 ? 0xffffffffu : static_cast<__mmask32>((1u << n) - 1);
      _mm512_mask_storeu_epi16(dst + k, st, packed);
    }
  }
}

template <int R>
M3_BF16_TARGET inline void Tile(const uint16_t* a, int64_t a_stride, const uint16_t* w, int64_t pairs, float* y,
                                int64_t y_stride, const float* bias, const __mmask16 (&cols)[4], bool accumulate) {
  __m512 acc[R][4];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const __m512i* wp = reinterpret_cast<const __m512i*>(w + kp * 2 * kBf16Panel);
    const __m512i w0 = _mm512_loadu_si512(wp), w1 = _mm512_loadu_si512(wp + 1);
    const __m512i w2 = _mm512_loadu_si512(wp + 2), w3 = _mm512_loadu_si512(wp + 3);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      int32_t bits;
      std::memcpy(&bits, a + r * a_stride + 2 * kp, 4);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(bits);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, (__m512bh)w0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, (__m512bh)w1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], av, (__m512bh)w2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], av, (__m512bh)w3);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    float* out = y + r * y_stride;
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const __m512 base = accumulate ? _mm512_maskz_loadu_ps(cols[v], out + 16 * v)
                                     : _mm512_maskz_loadu_ps(cols[v], bias + 16 * v);
      _mm512_mask_storeu_ps(out + 16 * v, cols[v], _mm512_add_ps(base, acc[r][v]));
    }
  }
}

using TileFn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t, float*, int64_t, const float*,
                        const __mmask16 (&)[4], bool);
constexpr TileFn kTiles[7] = {nullptr, Tile<1>, Tile<2>, Tile<3>, Tile<4>, Tile<5>, Tile<6>};

}  // namespace

M3_BF16_TARGET void LinearBf16BlockAvx512(const LinearBf16Args& a, int64_t r0, int64_t r1, int64_t p0, int64_t p1,
                                          uint16_t* scratch) {
  const PackedLinearBf16& l = *a.layer;
  for (int64_t k0 = 0; k0 < l.in; k0 += kBf16KChunk) {
    const int64_t kc = std::min(kBf16KChunk, l.in - k0);
    const int64_t stride = (kc + 1) & ~int64_t{1};
    RoundRows(a.x, l.in, r0, r1, k0, kc, stride, scratch);
    const int64_t pairs = stride / 2;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c0 = p * kBf16Panel;
      const int64_t ncols = std::min(kBf16Panel, l.out - c0);
      __mmask16 cols[4];
      for (int v = 0; v < 4; ++v) {
        const int64_t n = std::clamp<int64_t>(ncols - 16 * v, 0, 16);
        cols[v] = n == 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1);
      }
      const uint16_t* w = l.panel(p) + (k0 / 2) * 2 * kBf16Panel;
      for (int64_t r = r0; r < r1; r += 6) {
        const int rows = static_cast<int>(std::min<int64_t>(6, r1 - r));
        kTiles[rows](scratch + (r - r0) * stride, stride, w, pairs, a.y + r * l.out + c0, l.out, l.bias.data() + c0,
                     cols, k0 > 0);
      }
    }
  }
}

}  // namespace m3
