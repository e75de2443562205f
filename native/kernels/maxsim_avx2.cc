// AVX2+FMA MaxSim, the same transposed scheme as the AVX-512 kernels with 8 lanes: up to 16
// query rows (two vectors) x 4 document rows per tile.
//   f32:  vfmadd231ps
//   bf16: the bf16 query and document values widened to fp32 (same products as vdpbf16ps)
//   i8:   vpmaddwd on sign-extended pairs (exact integer dot products, like the other tiers)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/maxsim_kernels.h"
#include "kernels/quantize.h"

#define M3_AVX2 __attribute__((target("avx2,fma")))
#define M3_INLINE inline __attribute__((always_inline))

namespace m3 {
namespace maxsim {
namespace {

constexpr int kRows = 4;

/// Loads element k of a document row as a float (f32 or bf16 storage).
M3_INLINE float Element(const float* row, int64_t k) { return row[k]; }
M3_INLINE float Element(const uint16_t* row, int64_t k) { return Bf16ToFloat(row[k]); }

template <int QV, int R, typename T>
M3_AVX2 M3_INLINE void TileFloat(const PackedQuery& q, int64_t qb, const T* rows, __m256 (&best)[QV]) {
  const int64_t np = q.nq_pad, dim = q.dim;
  __m256 acc[R][QV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) acc[r][v] = _mm256_setzero_ps();
  const float* qt = q.f32.data() + qb * 8;
  for (int64_t k = 0; k < dim; ++k) {
    __m256 qv[QV];
    for (int v = 0; v < QV; ++v) qv[v] = _mm256_loadu_ps(qt + k * np + v * 8);
    for (int r = 0; r < R; ++r) {
      const __m256 d = _mm256_set1_ps(Element(rows + r * dim, k));
      for (int v = 0; v < QV; ++v) acc[r][v] = _mm256_fmadd_ps(qv[v], d, acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) best[v] = _mm256_max_ps(best[v], acc[r][v]);
}

template <int QV, typename T>
M3_AVX2 void BlockFloat(const PackedQuery& q, int64_t qb, const T* rows, int64_t n, float* row_max) {
  __m256 best[QV];
  for (int v = 0; v < QV; ++v) best[v] = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + kRows <= n; j += kRows) TileFloat<QV, kRows>(q, qb, rows + j * q.dim, best);
  for (; j < n; ++j) TileFloat<QV, 1>(q, qb, rows + j * q.dim, best);
  for (int v = 0; v < QV; ++v) _mm256_storeu_ps(row_max + qb * 8 + v * 8, best[v]);
}

/// Two int8 document values as a pair of int16s in one 32-bit word (zero past the row's end).
M3_INLINE uint32_t PairWord(const int8_t* row, int64_t e, int64_t dim) {
  const uint32_t lo = static_cast<uint16_t>(static_cast<int16_t>(row[e]));
  const uint32_t hi = e + 1 < dim ? static_cast<uint16_t>(static_cast<int16_t>(row[e + 1])) : 0u;
  return lo | (hi << 16);
}

template <int QV, int R>
M3_AVX2 M3_INLINE void TileI8(const PackedQuery& q, int64_t qb, const int8_t* rows, const float* scales,
                              __m256 (&best)[QV]) {
  const int64_t np = q.nq_pad, dim = q.dim, pairs = (dim + 1) / 2;
  __m256i acc[R][QV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) acc[r][v] = _mm256_setzero_si256();
  const int16_t* qt = q.s16.data() + qb * 16;
  for (int64_t p = 0; p < pairs; ++p) {
    __m256i qv[QV];
    for (int v = 0; v < QV; ++v) qv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + p * np * 2 + v * 16));
    for (int r = 0; r < R; ++r) {
      const __m256i d = _mm256_set1_epi32(static_cast<int>(PairWord(rows + r * dim, 2 * p, dim)));
      for (int v = 0; v < QV; ++v) acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(qv[v], d));
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m256 doc_scale = _mm256_set1_ps(scales[r]);
    for (int v = 0; v < QV; ++v) {
      const __m256 query_scale = _mm256_loadu_ps(q.scales.data() + qb * 8 + v * 8);
      const __m256 dot = _mm256_cvtepi32_ps(acc[r][v]);
      best[v] = _mm256_max_ps(best[v], _mm256_mul_ps(_mm256_mul_ps(dot, query_scale), doc_scale));
    }
  }
}

template <int QV>
M3_AVX2 void BlockI8(const PackedQuery& q, int64_t qb, const int8_t* rows, const float* scales, int64_t n,
                     float* row_max) {
  __m256 best[QV];
  for (int v = 0; v < QV; ++v) best[v] = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + kRows <= n; j += kRows) TileI8<QV, kRows>(q, qb, rows + j * q.dim, scales + j, best);
  for (; j < n; ++j) TileI8<QV, 1>(q, qb, rows + j * q.dim, scales + j, best);
  for (int v = 0; v < QV; ++v) _mm256_storeu_ps(row_max + qb * 8 + v * 8, best[v]);
}

}  // namespace

void PackAvx2(const float* query, int64_t nq, int64_t dim, VectorFormat format, PackedQuery* out) {
  PackTransposed(query, nq, dim, format, 8, /*pairs_bf16=*/false, /*quads_u8=*/false, out);
}

bool RowMaxAvx2(const PackedQuery& q, const MultiVectorSet& docs, int64_t row_begin, int64_t rows, float* row_max) {
  // Checked per document just before scoring it, so the scoring reads the rows from cache.
  if (!FiniteAvx2(docs, row_begin, rows)) return false;
  const int64_t vectors = q.nq_pad / 8;
  for (int64_t qb = 0; qb < vectors;) {
    const bool two = vectors - qb >= 2;
    if (q.format == VectorFormat::kF32) {
      const float* d = static_cast<const float*>(docs.data) + row_begin * q.dim;
      two ? BlockFloat<2>(q, qb, d, rows, row_max) : BlockFloat<1>(q, qb, d, rows, row_max);
    } else if (q.format == VectorFormat::kBF16) {
      const uint16_t* d = static_cast<const uint16_t*>(docs.data) + row_begin * q.dim;
      two ? BlockFloat<2>(q, qb, d, rows, row_max) : BlockFloat<1>(q, qb, d, rows, row_max);
    } else {
      const int8_t* d = static_cast<const int8_t*>(docs.data) + row_begin * q.dim;
      const float* s = docs.scales + row_begin;
      two ? BlockI8<2>(q, qb, d, s, rows, row_max) : BlockI8<1>(q, qb, d, s, rows, row_max);
    }
    qb += two ? 2 : 1;
  }
  return true;
}

M3_AVX2 bool FiniteAvx2(const MultiVectorSet& docs, int64_t row_begin, int64_t rows) {
  if (docs.format != VectorFormat::kF32) return FiniteSerial(docs, row_begin, rows);
  const float* d = static_cast<const float*>(docs.data) + row_begin * docs.dim;
  const int64_t n = rows * docs.dim;
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  int64_t e = 0;
  for (; e + 8 <= n; e += 8) {
    const __m256i x = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + e)), exponent);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(x, exponent));
  }
  if (!_mm256_testz_si256(bad, bad)) return false;
  for (; e < n; ++e)
    if (!std::isfinite(d[e])) return false;
  return true;
}

}  // namespace maxsim
}  // namespace m3
