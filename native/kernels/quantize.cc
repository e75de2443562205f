#include "kernels/quantize.h"

#include <cmath>
#include <cstring>

namespace m3 {

void QuantizeBf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToBf16(x[i]);
}

int64_t FirstNonFiniteRow(const float* x, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    // Non-finite: all exponent bits set. One branch-free pass (vectorised) per row.
    uint32_t non_finite = 0;
    for (int64_t k = 0; k < dim; ++k) {
      uint32_t bits;
      std::memcpy(&bits, x + r * dim + k, sizeof bits);
      non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (non_finite) return r;
  }
  return -1;
}

int64_t PackRows(const float* src, int64_t rows, int64_t dim, int64_t dim_pad, bool bf16, void* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * dim;
    if (FirstNonFiniteRow(in, 1, dim) >= 0) return r;
    if (bf16) {
      uint16_t* out = static_cast<uint16_t*>(dst) + r * dim_pad;
      for (int64_t k = 0; k < dim; ++k) {  // FloatToBf16 without its NaN case (none here): vectorised
        uint32_t bits;
        std::memcpy(&bits, in + k, sizeof bits);
        out[k] = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
      }
      std::memset(out + dim, 0, static_cast<size_t>(dim_pad - dim) * sizeof(uint16_t));
    } else {
      float* out = static_cast<float*>(dst) + r * dim_pad;
      std::memcpy(out, in, static_cast<size_t>(dim) * sizeof(float));
      std::memset(out + dim, 0, static_cast<size_t>(dim_pad - dim) * sizeof(float));
    }
  }
  return -1;
}

void QuantizeI8(const float* x, int64_t rows, int64_t dim, int8_t* out, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;
    float peak = 0.0f;
    for (int64_t k = 0; k < dim; ++k) peak = std::fmax(peak, std::fabs(row[k]));
    const float scale = peak > 0.0f ? peak / 127.0f : 1.0f;
    for (int64_t k = 0; k < dim; ++k) {
      const long q = std::lround(row[k] / scale);
      const int8_t v = static_cast<int8_t>(q > 127 ? 127 : (q < -127 ? -127 : q));
      out[r * dim + k] = v;
    }
    scales[r] = scale;
  }
}

}  // namespace m3
