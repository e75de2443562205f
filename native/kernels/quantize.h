// Compact storage formats for ColBERT vectors (MaxSim documents) and their error bounds.
//
// bf16: round-to-nearest-even to the upper 16 bits of the float. Relative error per element
//   <= 2^-9. For L2-normalised q and d (both rounded, as the bf16 kernels do), the dot product
//   error is <= 2 * 2^-9 + 2^-18 < 3.92e-3 (Cauchy-Schwarz), plus fp32 accumulation error;
//   MaxSim (a mean of maxima of such dots) keeps the same bound.
// int8: per row, scale = max|x| / 127 and q = round(x / scale) in [-127, 127], so each element's
//   error is <= scale / 2. For rows x, y quantized this way the dot error is
//   <= (||x||_1 * scale_y + ||y||_1 * scale_x) / 2 + dim * scale_x * scale_y / 4; for
//   L2-normalised rows, ||x||_1 <= sqrt(dim), so <= sqrt(dim) * (scale_x + scale_y) / 2 +
//   dim * scale_x * scale_y / 4 (about 0.02 for 1024-d rows whose largest element is 0.1).
#pragma once
#include <cstdint>

#include "base/half.h"

namespace m3 {

/// Converts n floats to bf16.
void QuantizeBf16(const float* x, int64_t n, uint16_t* out);

/// The first of `rows` rows of `dim` floats holding a NaN or an infinity, or -1.
int64_t FirstNonFiniteRow(const float* x, int64_t rows, int64_t dim);

/// Packs `rows` rows of `dim` floats into rows of `dim_pad` >= dim elements, the rest zero: bf16
/// bits (as QuantizeBf16) when `bf16`, else floats. Returns the first row holding a non-finite
/// value (its packed row is undefined), or -1 when every value is finite.
int64_t PackRows(const float* src, int64_t rows, int64_t dim, int64_t dim_pad, bool bf16, void* dst);

/// Quantizes `rows` rows of `dim` floats to int8 with a per-row scale (max|x| / 127; 1 for an
/// all-zero row, whose values are all 0).
void QuantizeI8(const float* x, int64_t rows, int64_t dim, int8_t* out, float* scales);

}  // namespace m3
