#include "kernels/linear_f32.h"

#include <algorithm>

namespace m3 {

void TransposeBlocked(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float* dst, int64_t dst_stride) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
    }
  }
}

void PackLinearInto(const float* w, const float* b, int64_t out, int64_t in, PackedLinear* p) {
  constexpr int64_t B = kLinearColumnBlock;
  p->in = in;
  p->out = out;
  p->out_padded = (out + B - 1) / B * B;
  p->panel_stride = in * B;
  p->wt_view = nullptr;
  p->wt.resize(static_cast<size_t>(in * p->out_padded));
  p->bias.assign(static_cast<size_t>(p->out_padded), 0.0f);
  // Each panel is the transposition of B rows of W: tile by tile, so both sides stay in cache.
  for (int64_t c0 = 0; c0 < p->out_padded; c0 += B) {
    float* panel = p->wt.data() + (c0 / B) * p->panel_stride;
    const int64_t cols = std::min(B, out - c0);
    for (int64_t k0 = 0; k0 < in; k0 += B) {
      const int64_t k1 = std::min(in, k0 + B);
      for (int64_t k = k0; k < k1; ++k) std::fill(panel + k * B + cols, panel + (k + 1) * B, 0.0f);
      for (int64_t j = 0; j < cols; ++j) {
        const float* src = w + (c0 + j) * in;
        for (int64_t k = k0; k < k1; ++k) panel[k * B + j] = src[k];
      }
    }
  }
  if (b) std::copy(b, b + out, p->bias.begin());
}

PackedLinear PackLinear(const float* w, const float* b, int64_t out, int64_t in) {
  PackedLinear p;
  PackLinearInto(w, b, out, in, &p);
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
