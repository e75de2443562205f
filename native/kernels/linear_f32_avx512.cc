// AVX-512 micro-kernel: 6 rows x 32 columns of y in 12 zmm accumulators, one broadcast of x and
// two loads of the packed weight per k. Rows are processed in chunks that stay in L2 while every
// column block of the weight streams past them.
#include <immintrin.h>

#include <algorithm>

#include "kernels/linear_f32.h"

namespace m3 {
namespace {

constexpr int kRows = 6;

template <int R>
__attribute__((target("avx512f,fma"))) void Tile(const PackedLinear& layer, const float* x,
                                                 int64_t x_stride, int64_t col, float* y,
                                                 int64_t y_stride) {
  __m512 acc[R][2];
  const __m512 b0 = _mm512_loadu_ps(layer.bias.data() + col);
  const __m512 b1 = _mm512_loadu_ps(layer.bias.data() + col + 16);
  for (int r = 0; r < R; ++r) {
    acc[r][0] = _mm512_setzero_ps();
    acc[r][1] = _mm512_setzero_ps();
  }
  const float* w = layer.panel(col);
  for (int64_t k = 0; k < layer.in; ++k) {
    const __m512 w0 = _mm512_loadu_ps(w + k * kLinearColumnBlock);
    const __m512 w1 = _mm512_loadu_ps(w + k * kLinearColumnBlock + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * x_stride + k]);
      acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
    }
  }
  const int64_t valid = std::min<int64_t>(kLinearColumnBlock, layer.out - col);
  const __mmask16 m0 = valid >= 16 ? 0xffff : static_cast<__mmask16>((1u << valid) - 1);
  const __mmask16 m1 =
      valid >= 32 ? 0xffff : (valid <= 16 ? 0 : static_cast<__mmask16>((1u << (valid - 16)) - 1));
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(y + r * y_stride + col, m0, _mm512_add_ps(acc[r][0], b0));
    _mm512_mask_storeu_ps(y + r * y_stride + col + 16, m1, _mm512_add_ps(acc[r][1], b1));
  }
}

constexpr LinearTileFn kTiles[kRows + 1] = {nullptr, Tile<1>, Tile<2>, Tile<3>, Tile<4>, Tile<5>, Tile<6>};

}  // namespace

void LinearForwardAvx512(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                         float* y, int64_t y_stride) {
  LinearDriveTiles(layer, x, rows, x_stride, y, y_stride, kRows, kTiles);
}

}  // namespace m3
