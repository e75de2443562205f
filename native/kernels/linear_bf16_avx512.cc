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

M3_BF16_TARGET void RoundRowsBf16Avx512(const float* x, int64_t x_stride, int64_t rows, int64_t cols, int64_t out_stride,
                                        uint16_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x + r * x_stride;
    uint16_t* dst = out + r * out_stride;
    for (int64_t k = 0; k < out_stride; k += 32) {
      const int64_t left = cols - k;
      const __mmask16 lo_m = left >= 16 ? 0xffff : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0;
      const __mmask16 hi_m =
          left >= 32 ? 0xffff : left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0;
      const __m512 lo = _mm512_maskz_loadu_ps(lo_m, src + k);
      const __m512 hi = _mm512_maskz_loadu_ps(hi_m, src + k + 16);
      const __m512i packed = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
      const int64_t n = std::min<int64_t>(32, out_stride - k);
      const __mmask32 st = n >= 32 ? 0xffffffffu : static_cast<__mmask32>((1u << n) - 1);
      _mm512_mask_storeu_epi16(dst + k, st, packed);
    }
  }
}

M3_BF16_TARGET void InterleaveBf16Avx512(const float* a, const float* b, int64_t n, uint16_t* out) {
  // cvtne2ps(b, a) holds a's 16 values then b's; the permutation pairs them up.
  const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                         20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 m = n - c >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - c)) - 1);
    const __m512 av = _mm512_maskz_loadu_ps(m, a + c);
    const __m512 bv = b ? _mm512_maskz_loadu_ps(m, b + c) : _mm512_setzero_ps();
    _mm512_storeu_si512(out + 2 * c, _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(bv, av)));
  }
}

M3_BF16_TARGET void LinearBf16BlockAvx512(const LinearBf16Args& a, int64_t r0, int64_t r1, int64_t p0, int64_t p1,
                                          uint16_t* scratch) {
  const PackedLinearBf16& l = *a.layer;
  for (int64_t k0 = 0; k0 < l.in; k0 += kBf16KChunk) {
    const int64_t kc = std::min(kBf16KChunk, l.in - k0);
    const int64_t stride = (kc + 1) & ~int64_t{1};
    RoundRowsBf16Avx512(a.x + r0 * l.in + k0, l.in, r1 - r0, kc, stride, scratch);
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
