// Dense layer y = x · Wᵀ + b in fp32, used for BGE-M3's ColBERT head (1024 -> 1024) applied to
// every token row, and by the head trainer. The weight is packed once (in column panels) so the
// kernels stream it contiguously.
#pragma once
#include <cstdint>
#include <vector>

#include "base/cpu_features.h"

namespace m3 {

/// Column block width of the packed weight (two AVX-512 vectors).
constexpr int64_t kLinearColumnBlock = 32;

/// A Linear layer's weight packed for the kernels in column panels: panel p holds columns
/// [32p, 32p + 32) of the output as `in` rows of kLinearColumnBlock floats (row k = W[32p.., k]),
/// panels `panel_stride` floats apart (in * 32 when packed by PackLinear); padding columns zero.
/// A kernel streams one panel from start to end, so its loads are contiguous.
struct PackedLinear {
  int64_t in = 0, out = 0, out_padded = 0;
  int64_t panel_stride = 0;
  std::vector<float> wt;
  std::vector<float> bias;  // out_padded entries
  /// When set, the kernels read the panels here instead of `wt`: a view of `in` consecutive
  /// rows of another layer's panels (`wt` stays empty, panel_stride is the other layer's).
  const float* wt_view = nullptr;
  const float* weights() const { return wt_view ? wt_view : wt.data(); }
  /// The panel holding output column `col` (a multiple of kLinearColumnBlock for the kernels).
  const float* panel(int64_t col) const { return weights() + (col / kLinearColumnBlock) * panel_stride; }
};

/// dst[c][r] = src[r][c] for a rows x cols matrix (row strides given), in cache-sized tiles so
/// neither side is walked with a large stride element by element.
void TransposeBlocked(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float* dst, int64_t dst_stride);

/// Packs a PyTorch Linear weight w [out][in] (row-major) and bias b [out] (may be null: zero).
PackedLinear PackLinear(const float* w, const float* b, int64_t out, int64_t in);

/// The same into an existing layer, reusing its buffers (callers that repack every step).
void PackLinearInto(const float* w, const float* b, int64_t out, int64_t in, PackedLinear* p);

/// y[r][0..out) = x[r] · Wᵀ + b for r in [0, rows). x rows are x_stride floats apart, y rows
/// y_stride apart (y_stride >= out). Dispatches on ActiveTier().
void LinearForward(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                   float* y, int64_t y_stride);

/// The same on an explicit tier (tests compare tiers against the serial oracle).
void LinearForwardOn(IsaTier tier, const PackedLinear& layer, const float* x, int64_t rows,
                     int64_t x_stride, float* y, int64_t y_stride);

/// One register tile of a kernel: y[0..R) x [col, col + kLinearColumnBlock) for R rows of x.
using LinearTileFn = void (*)(const PackedLinear& layer, const float* x, int64_t x_stride, int64_t col,
                              float* y, int64_t y_stride);

/// The loop nest shared by the vector kernels: rows in chunks of 96 (which stay in
/// L2 while every column block of the weight streams past), tiles of up to `tile_rows` rows.
/// tiles[r] handles r rows (1 <= r <= tile_rows).
void LinearDriveTiles(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                      float* y, int64_t y_stride, int tile_rows, const LinearTileFn* tiles);

// Per-tier entry points (linear_f32_<isa>.cc).
void LinearForwardSerial(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                         float* y, int64_t y_stride);
void LinearForwardAvx2(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                       float* y, int64_t y_stride);
void LinearForwardAvx512(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                         float* y, int64_t y_stride);

}  // namespace m3
