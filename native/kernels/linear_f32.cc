#include "kernels/linear_f32.h"

#include <algorithm>

namespace m3 {

PackedLinear PackLinear(const float* w, const float* b, int64_t out, int64_t in) {
  PackedLinear p;
  p.in = in;
  p.out = out;
  p.out_padded = (out + kLinearColumnBlock - 1) / kLinearColumnBlock * kLinearColumnBlock;
  p.wt.assign(static_cast<size_t>(in * p.out_padded), 0.0f);
  p.bias.assign(static_cast<size_t>(p.out_padded), 0.0f);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t k = 0; k < in; ++k) p.wt[k * p.out_padded + o] = w[o * in + k];
    if (b) p.bias[o] = b[o];
  }
  return p;
}

void LinearDriveTiles(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                      float* y, int64_t y_stride, int tile_rows, const LinearTileFn* tiles) {
  constexpr int64_t kRowChunk = 96;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int64_t r_end = std::min(rows, r0 + kRowChunk);
    for (int64_t col = 0; col < layer.out; col += kLinearColumnBlock) {
      for (int64_t r = r0; r < r_end; r += tile_rows) {
        const int count = static_cast<int>(std::min<int64_t>(tile_rows, r_end - r));
        tiles[count](layer, x + r * x_stride, x_stride, col, y + r * y_stride, y_stride);
      }
    }
  }
}

void LinearForwardOn(IsaTier tier, const PackedLinear& layer, const float* x, int64_t rows,
                     int64_t x_stride, float* y, int64_t y_stride) {
  if (tier > DetectedTier()) tier = DetectedTier();
  switch (tier) {
    case IsaTier::kAvx512: LinearForwardAvx512(layer, x, rows, x_stride, y, y_stride); break;
    case IsaTier::kAvx2: LinearForwardAvx2(layer, x, rows, x_stride, y, y_stride); break;
    default: LinearForwardSerial(layer, x, rows, x_stride, y, y_stride); break;
  }
}

void LinearForward(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                   float* y, int64_t y_stride) {
  LinearForwardOn(ActiveTier(), layer, x, rows, x_stride, y, y_stride);
}

}  // namespace m3
