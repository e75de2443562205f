// AVX-512 MaxSim. The query is packed transposed (lanes = query rows), so each document element
// is broadcast and multiplied into vectors of query rows: no horizontal reductions, and the
// running max of every query row stays in registers for the whole document. Tiles: up to 64
// query rows (QV vectors) x DR document rows, QV * DR accumulators.
//   f32:  vfmadd231ps,  16 MACs per instruction
//   bf16: vdpbf16ps,    32 MACs (query rounded to bf16; products exact, fp32 accumulation)
//   i8:   vpdpbusd,     64 MACs (query quantized to u8 = s8 + 128; 128 * row sum subtracted)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/maxsim_kernels.h"

// GCC 12 reports its own _mm512_undefined_ps() (used inside the intrinsics) as maybe
// uninitialized once the tiles are inlined; the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define M3_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define M3_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))
#define M3_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512vnni")))
#define M3_INLINE inline __attribute__((always_inline))

namespace m3 {
namespace maxsim {

/// True when the rows hold only finite values (bf16: exponent bits; i8: scales).
bool FiniteAvx512(const MultiVectorSet& docs, int64_t row_begin, int64_t rows);

namespace {

/// Document row j's elements [e, e + n) (n <= 4 bytes' worth) as one 32-bit word, zero-padded:
/// the tail of a row whose dim is not a multiple of the packing.
template <typename T>
M3_INLINE uint32_t TailWord(const T* row, int64_t e, int64_t dim) {
  uint32_t word = 0;
  const int64_t n = std::min<int64_t>(4 / sizeof(T), dim - e);
  std::memcpy(&word, row + e, static_cast<size_t>(n) * sizeof(T));
  return word;
}

// ---- f32 -----------------------------------------------------------------------------------

template <int QV, int R>
M3_AVX512 M3_INLINE void TileF32(const PackedQuery& q, int64_t qb, const float* rows, __m512 (&best)[QV],
                                 __mmask16& bad) {
  const int64_t np = q.nq_pad, dim = q.dim;
  __m512 acc[R][QV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* qt = q.f32.data() + qb * 16;
  for (int64_t k0 = 0; k0 < dim; k0 += 16) {
    // One vector load per row and 16 elements checks for NaN/Inf (fpclass) and brings the line
    // in for the broadcasts below; the next tile's rows are prefetched meanwhile.
    const int64_t k_end = std::min<int64_t>(k0 + 16, dim);
    const __mmask16 valid = static_cast<__mmask16>((1u << (k_end - k0)) - 1);
    for (int r = 0; r < R; ++r) {
      bad |= _mm512_mask_fpclass_ps_mask(valid, _mm512_maskz_loadu_ps(valid, rows + r * dim + k0), 0x99);
      _mm_prefetch(reinterpret_cast<const char*>(rows + (R + r) * dim + k0), _MM_HINT_T0);
    }
    for (int64_t k = k0; k < k_end; ++k) {
      __m512 qv[QV];
      for (int v = 0; v < QV; ++v) qv[v] = _mm512_loadu_ps(qt + k * np + v * 16);
      for (int r = 0; r < R; ++r) {
        const __m512 d = _mm512_set1_ps(rows[r * dim + k]);
        for (int v = 0; v < QV; ++v) acc[r][v] = _mm512_fmadd_ps(qv[v], d, acc[r][v]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) best[v] = _mm512_max_ps(best[v], acc[r][v]);
}

template <int QV, int DR>
M3_AVX512 bool BlockF32(const PackedQuery& q, int64_t qb, const float* rows, int64_t n, float* row_max) {
  __m512 best[QV];
  for (int v = 0; v < QV; ++v) best[v] = _mm512_set1_ps(-INFINITY);
  __mmask16 bad = 0;
  int64_t j = 0;
  for (; j + DR <= n; j += DR) TileF32<QV, DR>(q, qb, rows + j * q.dim, best, bad);
  const int64_t left = n - j;
  if (left > 0) {
    const float* tail = rows + j * q.dim;
    // Fewer than DR rows remain: one tile per remaining row count (DR <= 8).
    if (left == 1) TileF32<QV, 1>(q, qb, tail, best, bad);
    else if (left == 2) TileF32<QV, 2>(q, qb, tail, best, bad);
    else if (left == 3) TileF32<QV, 3>(q, qb, tail, best, bad);
    else if (left == 4) TileF32<QV, 4>(q, qb, tail, best, bad);
    else if (left == 5) TileF32<QV, 5>(q, qb, tail, best, bad);
    else if (left == 6) TileF32<QV, 6>(q, qb, tail, best, bad);
    else TileF32<QV, 7>(q, qb, tail, best, bad);
  }
  for (int v = 0; v < QV; ++v) _mm512_storeu_ps(row_max + qb * 16 + v * 16, best[v]);
  return bad == 0;
}

// ---- bf16 ----------------------------------------------------------------------------------

template <int QV, int R>
M3_AVX512_BF16 M3_INLINE void TileBf16(const PackedQuery& q, int64_t qb, const uint16_t* rows, __m512 (&best)[QV],
                                       __mmask32& bad) {
  const int64_t np = q.nq_pad, dim = q.dim, full = dim / 2, pairs = (dim + 1) / 2;
  __m512 acc[R][QV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) acc[r][v] = _mm512_setzero_ps();
  const uint16_t* qt = q.u16.data() + qb * 32;
  const __m512i exponent = _mm512_set1_epi16(0x7f80);
  for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
    // One cache line per row: its exponents are checked for NaN/Inf, and the next tile's line
    // is prefetched.
    const int64_t e0 = 2 * p0, n = std::min<int64_t>(32, dim - e0);
    const __mmask32 valid = n >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << n) - 1);
    for (int r = 0; r < R; ++r) {
      const __m512i x = _mm512_and_si512(_mm512_maskz_loadu_epi16(valid, rows + r * dim + e0), exponent);
      bad |= _mm512_mask_cmpeq_epi16_mask(valid, x, exponent);
      _mm_prefetch(reinterpret_cast<const char*>(rows + (R + r) * dim + e0), _MM_HINT_T0);
    }
    const int64_t p_end = std::min<int64_t>(p0 + 16, pairs);
    for (int64_t p = p0; p < p_end; ++p) {
      __m512i qv[QV];
      for (int v = 0; v < QV; ++v) qv[v] = _mm512_loadu_si512(qt + p * np * 2 + v * 32);
      for (int r = 0; r < R; ++r) {
        const uint16_t* row = rows + r * dim;
        uint32_t word;
        if (p < full) std::memcpy(&word, row + 2 * p, 4);
        else word = TailWord(row, 2 * p, dim);
        const __m512i d = _mm512_set1_epi32(static_cast<int>(word));
        for (int v = 0; v < QV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)qv[v], (__m512bh)d);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) best[v] = _mm512_max_ps(best[v], acc[r][v]);
}

template <int QV, int DR>
M3_AVX512_BF16 bool BlockBf16(const PackedQuery& q, int64_t qb, const uint16_t* rows, int64_t n, float* row_max) {
  __m512 best[QV];
  for (int v = 0; v < QV; ++v) best[v] = _mm512_set1_ps(-INFINITY);
  __mmask32 bad = 0;
  int64_t j = 0;
  for (; j + DR <= n; j += DR) TileBf16<QV, DR>(q, qb, rows + j * q.dim, best, bad);
  for (; j < n; ++j) TileBf16<QV, 1>(q, qb, rows + j * q.dim, best, bad);
  for (int v = 0; v < QV; ++v) _mm512_storeu_ps(row_max + qb * 16 + v * 16, best[v]);
  return bad == 0;
}

// ---- i8 ------------------------------------------------------------------------------------

/// The sums of R rows' int8 values: VPDPBUSD of all-ones bytes with 64 values of each row at
/// a time, one accumulator per row so the chains overlap. The kernel computes the sums rather
/// than take them from the caller, so no input can make them disagree with the rows: about
/// 1/(4 * QV) of the tile's instructions. Not inlined, so that it leaves the tile's register
/// allocation alone (inlined, GCC spills the tile's accumulators).
template <int R>
__attribute__((noinline)) M3_AVX512_VNNI void RowSumsI8(const int8_t* rows, int64_t dim, int32_t* sums) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 64 <= dim; k += 64)
    for (int r = 0; r < R; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], ones, _mm512_loadu_si512(rows + r * dim + k));
  if (k < dim) {
    const __mmask64 m = static_cast<__mmask64>(~0ull >> (64 - (dim - k)));
    for (int r = 0; r < R; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], ones, _mm512_maskz_loadu_epi8(m, rows + r * dim + k));
  }
  for (int r = 0; r < R; ++r) sums[r] = _mm512_reduce_add_epi32(acc[r]);
}

template <int QV, int R>
M3_AVX512_VNNI M3_INLINE void TileI8(const PackedQuery& q, int64_t qb, const int8_t* rows, const float* scales,
                                     __m512 (&best)[QV]) {
  const int64_t np = q.nq_pad, dim = q.dim, full = dim / 4, quads = (dim + 3) / 4;
  __m512i acc[R][QV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < QV; ++v) acc[r][v] = _mm512_setzero_si512();
  int32_t sums[R];
  RowSumsI8<R>(rows, dim, sums);
  const uint8_t* qt = q.u8.data() + qb * 64;
  for (int64_t p0 = 0; p0 < quads; p0 += 16) {
    // The next tile's rows are prefetched a cache line (64 values) at a time.
    for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(rows + (R + r) * dim + 4 * p0), _MM_HINT_T0);
    const int64_t p_end = std::min<int64_t>(p0 + 16, quads);
    for (int64_t p = p0; p < p_end; ++p) {
      __m512i qv[QV];
      for (int v = 0; v < QV; ++v) qv[v] = _mm512_loadu_si512(qt + p * np * 4 + v * 64);
      for (int r = 0; r < R; ++r) {
        const int8_t* row = rows + r * dim;
        uint32_t word;
        if (p < full) std::memcpy(&word, row + 4 * p, 4);
        else word = TailWord(row, 4 * p, dim);
        const __m512i d = _mm512_set1_epi32(static_cast<int>(word));
        for (int v = 0; v < QV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], qv[v], d);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    // The query was stored as unsigned bytes (value + 128): subtract 128 * the row's sum.
    const __m512i offset = _mm512_set1_epi32(128 * sums[r]);
    const __m512 doc_scale = _mm512_set1_ps(scales[r]);
    for (int v = 0; v < QV; ++v) {
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], offset));
      const __m512 query_scale = _mm512_loadu_ps(q.scales.data() + qb * 16 + v * 16);
      best[v] = _mm512_max_ps(best[v], _mm512_mul_ps(_mm512_mul_ps(dot, query_scale), doc_scale));
    }
  }
}

template <int QV, int DR>
M3_AVX512_VNNI void BlockI8(const PackedQuery& q, int64_t qb, const int8_t* rows, const float* scales, int64_t n,
                            float* row_max) {
  __m512 best[QV];
  for (int v = 0; v < QV; ++v) best[v] = _mm512_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + DR <= n; j += DR) TileI8<QV, DR>(q, qb, rows + j * q.dim, scales + j, best);
  for (; j < n; ++j) TileI8<QV, 1>(q, qb, rows + j * q.dim, scales + j, best);
  for (int v = 0; v < QV; ++v) _mm512_storeu_ps(row_max + qb * 16 + v * 16, best[v]);
}

}  // namespace

void PackAvx512(const float* query, int64_t nq, int64_t dim, VectorFormat format, PackedQuery* out) {
  PackTransposed(query, nq, dim, format, 16, /*pairs_bf16=*/true, /*quads_u8=*/true, out);
}

bool RowMaxAvx512(const PackedQuery& q, const MultiVectorSet& docs, int64_t row_begin, int64_t rows, float* row_max) {
  // f32 and bf16 rows are checked inside the tiles (they load each line once anyway); int8
  // rows cannot hold a NaN, only their scales can.
  if (q.format == VectorFormat::kI8 && !FiniteAvx512(docs, row_begin, rows)) return false;
  bool finite = true;
  const int64_t vectors = q.nq_pad / 16;
  for (int64_t qb = 0; qb < vectors;) {
    const int64_t take = std::min<int64_t>(4, vectors - qb);
    if (q.format == VectorFormat::kF32) {
      const float* d = static_cast<const float*>(docs.data) + row_begin * q.dim;
      if (take == 4) finite &= BlockF32<4, 4>(q, qb, d, rows, row_max);
      else if (take == 3) finite &= BlockF32<3, 5>(q, qb, d, rows, row_max);
      else if (take == 2) finite &= BlockF32<2, 6>(q, qb, d, rows, row_max);
      else finite &= BlockF32<1, 8>(q, qb, d, rows, row_max);
    } else if (q.format == VectorFormat::kBF16) {
      const uint16_t* d = static_cast<const uint16_t*>(docs.data) + row_begin * q.dim;
      if (take == 4) finite &= BlockBf16<4, 4>(q, qb, d, rows, row_max);
      else if (take == 3) finite &= BlockBf16<3, 5>(q, qb, d, rows, row_max);
      else if (take == 2) finite &= BlockBf16<2, 6>(q, qb, d, rows, row_max);
      else finite &= BlockBf16<1, 8>(q, qb, d, rows, row_max);
    } else {
      const int8_t* d = static_cast<const int8_t*>(docs.data) + row_begin * q.dim;
      const float* s = docs.scales + row_begin;
      if (take == 4) BlockI8<4, 4>(q, qb, d, s, rows, row_max);
      else if (take == 3) BlockI8<3, 5>(q, qb, d, s, rows, row_max);
      else if (take == 2) BlockI8<2, 6>(q, qb, d, s, rows, row_max);
      else BlockI8<1, 8>(q, qb, d, s, rows, row_max);
    }
    qb += take;
  }
  return finite;
}

M3_AVX512 bool FiniteAvx512(const MultiVectorSet& docs, int64_t row_begin, int64_t rows) {
  const int64_t n = rows * docs.dim;
  if (docs.format == VectorFormat::kI8) return FiniteSerial(docs, row_begin, rows);
  if (docs.format == VectorFormat::kBF16) {
    const uint16_t* d = static_cast<const uint16_t*>(docs.data) + row_begin * docs.dim;
    const __m512i exponent = _mm512_set1_epi16(0x7f80);
    __mmask32 bad = 0;
    int64_t e = 0;
    for (; e + 32 <= n; e += 32) {
      const __m512i x = _mm512_and_si512(_mm512_loadu_si512(d + e), exponent);
      bad |= _mm512_cmpeq_epi16_mask(x, exponent);
    }
    if (e < n) {
      const __mmask32 m = static_cast<__mmask32>((1ull << (n - e)) - 1);
      const __m512i x = _mm512_and_si512(_mm512_maskz_loadu_epi16(m, d + e), exponent);
      bad |= _mm512_mask_cmpeq_epi16_mask(m, x, exponent);
    }
    return bad == 0;
  }
  const float* d = static_cast<const float*>(docs.data) + row_begin * docs.dim;
  __mmask16 bad = 0;
  int64_t e = 0;
  for (; e + 16 <= n; e += 16) bad |= _mm512_fpclass_ps_mask(_mm512_loadu_ps(d + e), 0x99);  // NaN or +-Inf
  if (e < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - e)) - 1);
    bad |= _mm512_mask_fpclass_ps_mask(m, _mm512_maskz_loadu_ps(m, d + e), 0x99);
  }
  return bad == 0;
}

}  // namespace maxsim
}  // namespace m3
