// AVX2+FMA micro-kernel: 3 rows x 32 columns of y in 12 ymm accumulators plus 4 weight
// registers (16 in all), one broadcast of x per row and k.
#include <immintrin.h>

#include <algorithm>

#include "kernels/linear_f32.h"

namespace m3 {
namespace {

constexpr int kRows = 3;

template <int R>
__attribute__((target("avx2,fma"))) void Tile(const PackedLinear& layer, const float* x,
                                              int64_t x_stride, int64_t col, float* y,
                                              int64_t y_stride) {
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  const float* w = layer.panel(col);
  for (int64_t k = 0; k < layer.in; ++k) {
    const float* wk = w + k * kLinearColumnBlock;
    const __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
    const __m256 w2 = _mm256_loadu_ps(wk + 16), w3 = _mm256_loadu_ps(wk + 24);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * x_stride + k);
      acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(xv, w2, acc[r][2]);
      acc[r][3] = _mm256_fmadd_ps(xv, w3, acc[r][3]);
    }
  }
  const int64_t valid = std::min<int64_t>(kLinearColumnBlock, layer.out - col);
  alignas(32) float tmp[kLinearColumnBlock];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j)
      _mm256_store_ps(tmp + 8 * j, _mm256_add_ps(acc[r][j], _mm256_loadu_ps(layer.bias.data() + col + 8 * j)));
    std::copy(tmp, tmp + valid, y + r * y_stride + col);
  }
}

constexpr LinearTileFn kTiles[kRows + 1] = {nullptr, Tile<1>, Tile<2>, Tile<3>};

}  // namespace

void LinearForwardAvx2(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                       float* y, int64_t y_stride) {
  LinearDriveTiles(layer, x, rows, x_stride, y, y_stride, kRows, kTiles);
}

}  // namespace m3
