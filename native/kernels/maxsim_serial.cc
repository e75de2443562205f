// The MaxSim oracle: plain loops. bf16 rounds the query like the vector kernels do; int8
// quantizes it and takes exact integer dot products, so every tier's int8 scores agree bitwise.
#include <cmath>
#include <cstring>

#include "kernels/maxsim_kernels.h"
#include "kernels/quantize.h"

namespace m3 {
namespace maxsim {

void PackSerial(const float* query, int64_t nq, int64_t dim, VectorFormat format, PackedQuery* out) {
  out->format = format;
  out->nq = nq;
  out->nq_pad = nq;
  out->dim = dim;
  if (format == VectorFormat::kI8) {
    QuantizeQueryI8(query, nq, dim, &out->s8, &out->scales);
    return;
  }
  out->f32.assign(query, query + nq * dim);
  if (format == VectorFormat::kBF16)
    for (float& x : out->f32) x = Bf16ToFloat(FloatToBf16(x));
}

bool RowMaxSerial(const PackedQuery& q, const MultiVectorSet& docs, int64_t row_begin, int64_t rows, float* row_max) {
  if (!FiniteSerial(docs, row_begin, rows)) return false;
  const int64_t dim = q.dim;
  for (int64_t i = 0; i < q.nq; ++i) {
    float best = -INFINITY;
    for (int64_t j = row_begin; j < row_begin + rows; ++j) {
      float dot;
      if (q.format == VectorFormat::kI8) {
        const int8_t* d = static_cast<const int8_t*>(docs.data) + j * dim;
        const int8_t* a = q.s8.data() + i * dim;
        int32_t acc = 0;
        for (int64_t k = 0; k < dim; ++k) acc += static_cast<int32_t>(a[k]) * d[k];
        dot = static_cast<float>(acc) * q.scales[i] * docs.scales[j];
      } else {
        const float* a = q.f32.data() + i * dim;
        dot = 0.0f;
        if (q.format == VectorFormat::kBF16) {
          const uint16_t* d = static_cast<const uint16_t*>(docs.data) + j * dim;
          for (int64_t k = 0; k < dim; ++k) dot += a[k] * Bf16ToFloat(d[k]);
        } else {
          const float* d = static_cast<const float*>(docs.data) + j * dim;
          for (int64_t k = 0; k < dim; ++k) dot += a[k] * d[k];
        }
      }
      best = std::fmax(best, dot);
    }
    row_max[i] = best;
  }
  return true;
}

bool FiniteSerial(const MultiVectorSet& docs, int64_t row_begin, int64_t rows) {
  const int64_t n = rows * docs.dim;
  if (docs.format == VectorFormat::kI8) {
    for (int64_t r = row_begin; r < row_begin + rows; ++r)
      if (!std::isfinite(docs.scales[r])) return false;
    return true;
  }
  if (docs.format == VectorFormat::kBF16) {
    const uint16_t* d = static_cast<const uint16_t*>(docs.data) + row_begin * docs.dim;
    uint32_t bad = 0;
    for (int64_t e = 0; e < n; ++e) bad |= static_cast<uint32_t>((d[e] & 0x7f80u) == 0x7f80u);
    return bad == 0;
  }
  const float* d = static_cast<const float*>(docs.data) + row_begin * docs.dim;
  uint32_t bad = 0;
  for (int64_t e = 0; e < n; ++e) {
    uint32_t bits;
    std::memcpy(&bits, d + e, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

void PackTransposed(const float* query, int64_t nq, int64_t dim, VectorFormat format, int64_t lanes,
                    bool pairs_bf16, bool quads_u8, PackedQuery* out) {
  out->format = format;
  out->nq = nq;
  out->dim = dim;
  out->nq_pad = (nq + lanes - 1) / lanes * lanes;
  const int64_t np = out->nq_pad;
  if (format == VectorFormat::kF32 || (format == VectorFormat::kBF16 && !pairs_bf16)) {
    out->f32.assign(static_cast<size_t>(dim * np), 0.0f);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t k = 0; k < dim; ++k) {
        float x = query[i * dim + k];
        if (format == VectorFormat::kBF16) x = Bf16ToFloat(FloatToBf16(x));
        out->f32[k * np + i] = x;
      }
    return;
  }
  if (format == VectorFormat::kBF16) {
    const int64_t pairs = (dim + 1) / 2;
    out->u16.assign(static_cast<size_t>(pairs * np * 2), 0);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t k = 0; k < dim; ++k) out->u16[((k / 2) * np + i) * 2 + (k % 2)] = FloatToBf16(query[i * dim + k]);
    return;
  }
  std::vector<int8_t> s8;
  QuantizeQueryI8(query, nq, dim, &s8, &out->scales);
  out->scales.resize(static_cast<size_t>(np), 0.0f);
  if (quads_u8) {
    const int64_t quads = (dim + 3) / 4;
    // Padding (rows and the dim tail) holds 128, i.e. a zero after the offset is removed; the
    // driver's row-sum correction assumes every one of the 4 * quads query slots carries +128.
    out->u8.assign(static_cast<size_t>(quads * np * 4), 128);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t k = 0; k < dim; ++k)
        out->u8[((k / 4) * np + i) * 4 + (k % 4)] = static_cast<uint8_t>(s8[i * dim + k] + 128);
  } else {
    const int64_t pairs = (dim + 1) / 2;
    out->s16.assign(static_cast<size_t>(pairs * np * 2), 0);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t k = 0; k < dim; ++k) out->s16[((k / 2) * np + i) * 2 + (k % 2)] = s8[i * dim + k];
  }
}

}  // namespace maxsim
}  // namespace m3
