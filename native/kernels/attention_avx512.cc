// AVX-512 attention block: scores in 6-row x 48-key register tiles (a broadcast of q against
// rows of the transposed key, so no horizontal sums), the row softmax with a vector exp, then the
// weighted sum of v in 6-row x 64-column tiles. Tails use masked loads and stores.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/attention.h"

// GCC 12 reports its own _mm512_undefined_ps() (inside the masked intrinsics) as maybe
// uninitialized once the tiles are inlined; the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace m3 {
namespace attention {
namespace {

#define M3_AVX512 __attribute__((target("avx512f,fma")))

constexpr int kRows = 6;
/// Keys per block of scores; the block's slice of kt is packed contiguously (kt's rows are
/// kv_len floats apart, often a power of two that would map them onto a few cache sets).
constexpr int64_t kKeys = 48;
static_assert(kKeys <= kAttentionPackedKeys, "the packed kt block must fit its scratch");

M3_AVX512 inline __mmask16 TailMask(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << valid) - 1);
}

/// e^x for x <= 0 (softmax arguments after the row maximum is subtracted), to about 2 ulp: 2^n
/// times a degree-7 polynomial on the reduced argument, exact 0 below e^-104.
M3_AVX512 inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

/// scores[r][0..16*NV) = scale * q[r] · kt[:, 0..16*NV) + mask[r][...] for R rows; the last
/// vector holds `last` lanes.
template <int R, int NV>
M3_AVX512 void TileScores(const Block& b, const float* q, const float* kt, const float* mask, float* s,
                          int64_t ld, __mmask16 last) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t head_dim = b.head_dim;
  for (int64_t k = 0; k < head_dim; ++k) {
    const float* krow = kt + k * kKeys;
    __m512 kv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) kv[v] = _mm512_loadu_ps(krow + 16 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m512 qv = _mm512_set1_ps(q[r * head_dim + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(qv, kv[v], acc[r][v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(b.scale);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v + 1 < NV ? static_cast<__mmask16>(0xffff) : last;
      __m512 x = _mm512_mul_ps(acc[r][v], scale);
      if (mask) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, mask + r * b.mask_stride_q + 16 * v));
      _mm512_mask_storeu_ps(s + r * ld + 16 * v, m, x);
    }
  }
}

/// acc[r] = sum_{j < n} p[r][j] * v[j][0..16*NV) for R rows, then
///   out[r] = acc[r] * factor[r]                (accumulate false: the last step, 1 / row sum)
///   out[r] = out[r] * factor[r] + acc[r]       (accumulate true: a key chunk of the online softmax)
template <int R, int NV>
M3_AVX512 void TileWeighted(const Block& b, const float* p, int64_t ld, int64_t n, const float* v, const float* factor,
                            float* out, int64_t out_ld, bool accumulate, __mmask16 last) {
  __m512 acc[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_setzero_ps();
  const int64_t v_dim = b.v_dim;
  for (int64_t j = 0; j < n; ++j) {
    const float* vrow = v + j * v_dim;
    __m512 vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c)
      vv[c] = c + 1 < NV ? _mm512_loadu_ps(vrow + 16 * c) : _mm512_maskz_loadu_ps(last, vrow + 16 * c);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512 pv = _mm512_set1_ps(p[r * ld + j]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_fmadd_ps(pv, vv[c], acc[r][c]);
    }
  }
  // Unrolled like the main loop: GCC then keeps the accumulators in registers throughout.
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    const __m512 f = _mm512_set1_ps(factor[r]);
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      const __mmask16 m = c + 1 < NV ? static_cast<__mmask16>(0xffff) : last;
      float* o = out + r * out_ld + 16 * c;
      const __m512 x = accumulate ? _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, o), f, acc[r][c]) : _mm512_mul_ps(acc[r][c], f);
      _mm512_mask_storeu_ps(o, m, x);
    }
  }
}

using ScoresFn = void (*)(const Block&, const float*, const float*, const float*, float*, int64_t, __mmask16);
using WeightedFn = void (*)(const Block&, const float*, int64_t, int64_t, const float*, const float*, float*, int64_t, bool,
                           __mmask16);

template <int NV>
constexpr ScoresFn kScores[kRows + 1] = {nullptr, TileScores<1, NV>, TileScores<2, NV>, TileScores<3, NV>,
                                         TileScores<4, NV>, TileScores<5, NV>, TileScores<6, NV>};
template <int NV>
constexpr WeightedFn kWeighted[kRows + 1] = {nullptr, TileWeighted<1, NV>, TileWeighted<2, NV>, TileWeighted<3, NV>,
                                             TileWeighted<4, NV>, TileWeighted<5, NV>, TileWeighted<6, NV>};
/// Up to 32 columns keep 12 rows' accumulators in 24 registers (two rows of `kRows`).
template <int NV>
constexpr WeightedFn kWeightedWide[2 * kRows + 1] = {
    nullptr, TileWeighted<1, NV>, TileWeighted<2, NV>, TileWeighted<3, NV>, TileWeighted<4, NV>,
    TileWeighted<5, NV>, TileWeighted<6, NV>, TileWeighted<7, NV>, TileWeighted<8, NV>, TileWeighted<9, NV>,
    TileWeighted<10, NV>, TileWeighted<11, NV>, TileWeighted<12, NV>};

ScoresFn ScoresTile(int rows, int vectors) {
  switch (vectors) {
    case 1: return kScores<1>[rows];
    case 2: return kScores<2>[rows];
    default: return kScores<3>[rows];
  }
}

/// Rows per weighted-sum tile for a column chunk of `vectors` vectors.
int WeightedRows(int vectors) { return vectors <= 2 ? 2 * kRows : kRows; }

WeightedFn WeightedTile(int rows, int vectors) {
  switch (vectors) {
    case 1: return kWeightedWide<1>[rows];
    case 2: return kWeightedWide<2>[rows];
    case 3: return kWeighted<3>[rows];
    default: return kWeighted<4>[rows];
  }
}

M3_AVX512 float RowMax(const float* s, int64_t n) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 mx = neg_inf;
  for (int64_t j = 0; j < n; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(neg_inf, TailMask(n - j), s + j));
  return _mm512_reduce_max_ps(mx);
}

/// s[j] = e^(s[j] - max) in place for j < n; returns their sum.
M3_AVX512 float ExpSum(float* s, int64_t n, float max) {
  const __m512 row_max = _mm512_set1_ps(max);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = TailMask(n - j);
    const __m512 e = _mm512_maskz_mov_ps(m, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), row_max)));
    _mm512_mask_storeu_ps(s + j, m, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

M3_AVX512 float ExpScalar(float x) {
  return _mm512_cvtss_f32(Exp(_mm512_set1_ps(x)));
}

/// scores[r][0..n) for keys [j_begin, j_begin + n) of the block, scaled and masked.
M3_AVX512 void Scores(const Block& b, int64_t j_begin, int64_t n, float* scores, int64_t ld, float* kpack) {
  // Key blocks outer, row tiles inner: the packed slice (head_dim x 48 floats) stays in L1 while
  // every row tile of the block passes over it.
  for (int64_t j0 = j_begin; j0 < j_begin + n; j0 += kKeys) {
    const int64_t keys = std::min(kKeys, j_begin + n - j0);
    const int vectors = static_cast<int>((keys + 15) / 16);
    const __mmask16 last = TailMask(keys - 16 * (vectors - 1));
    for (int64_t k = 0; k < b.head_dim; ++k) {
      const float* src = b.kt + k * b.kv_len + j0;
      for (int v = 0; v < vectors; ++v)
        _mm512_storeu_ps(kpack + k * kKeys + 16 * v,
                         _mm512_maskz_loadu_ps(v + 1 < vectors ? static_cast<__mmask16>(0xffff) : last, src + 16 * v));
    }
    for (int64_t r0 = 0; r0 < b.rows; r0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, b.rows - r0));
      const float* mask = b.mask ? b.mask + r0 * b.mask_stride_q + j0 : nullptr;
      ScoresTile(rows, vectors)(b, b.q + r0 * b.head_dim, kpack, mask, scores + r0 * ld + (j0 - j_begin), ld, last);
    }
  }
}

/// out[r] (out_ld apart) from the weights p[r][0..n) (ld apart) and v's rows [j_begin, j_begin + n).
M3_AVX512 void Weighted(const Block& b, const float* p, int64_t ld, int64_t j_begin, int64_t n, const float* factor,
                        float* out, int64_t out_ld, bool accumulate) {
  constexpr int64_t kColumns = 64;
  for (int64_t c0 = 0; c0 < b.v_dim; c0 += kColumns) {
    const int64_t cols = std::min(kColumns, b.v_dim - c0);
    const int vectors = static_cast<int>((cols + 15) / 16);
    const __mmask16 last = TailMask(cols - 16 * (vectors - 1));
    const int tile_rows = WeightedRows(vectors);
    for (int64_t r0 = 0; r0 < b.rows; r0 += tile_rows) {
      const int rows = static_cast<int>(std::min<int64_t>(tile_rows, b.rows - r0));
      WeightedTile(rows, vectors)(b, p + r0 * ld, ld, n, b.v + j_begin * b.v_dim + c0, factor + r0,
                                  out + r0 * out_ld + c0, out_ld, accumulate, last);
    }
  }
}

}  // namespace

const BlockOps& OpsAvx512() {
  static const BlockOps ops{Scores, Weighted, RowMax, ExpSum, ExpScalar};
  return ops;
}

}  // namespace attention
}  // namespace m3
