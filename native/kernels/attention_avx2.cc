// AVX2 attention steps (RunBlock strings them together): scores in 6-row x 16-key register tiles
// from a broadcast of q against the packed transposed key, the row softmax with a vector exp,
// the weighted sum of v in 6-row x 16-column tiles; 12 accumulators of the 16 ymm registers.
// Tails use masked loads and stores.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/attention.h"

namespace m3 {
namespace attention {
namespace {

#define M3_AVX2 __attribute__((target("avx2,fma")))

constexpr int kRows = 6;
constexpr int kMaxVectors = 2;
constexpr int64_t kKeys = 8 * kMaxVectors;
static_assert(kKeys <= kAttentionPackedKeys, "the packed kt block must fit its scratch");

/// Lanes [0, valid) set.
M3_AVX2 inline __m256i TailMask(int64_t valid) {
  const int n = static_cast<int>(std::min<int64_t>(valid, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

M3_AVX2 inline __m256 Load(const float* p, bool full, __m256i mask) {
  return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}

M3_AVX2 inline void Store(float* p, bool full, __m256i mask, __m256 v) {
  if (full) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, mask, v);
}

/// e^x for x <= 0, to about 2 ulp (attention_avx512.cc's polynomial); 0 below e^-87.3, where
/// 2^n would leave the normal range.
M3_AVX2 inline __m256 Exp(__m256 x) {
  const __m256 low = _mm256_set1_ps(-87.3f);
  const __m256 keep = _mm256_cmp_ps(x, low, _CMP_GE_OQ);
  x = _mm256_max_ps(x, low);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), keep);
}

M3_AVX2 inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

M3_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

/// scores[r][0..8*NV) = scale * q[r] · kt[:, 0..8*NV) + mask[r][...]; the last vector holds
/// the lanes of `last`.
template <int R, int NV>
M3_AVX2 void TileScores(const Block& b, const float* q, const float* kt, const float* mask, float* s, int64_t ld,
                        __m256i last) {
  __m256 acc[R][NV];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  const int64_t head_dim = b.head_dim;
  for (int64_t k = 0; k < head_dim; ++k) {
    __m256 kv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) kv[v] = _mm256_loadu_ps(kt + k * kKeys + 8 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 qv = _mm256_broadcast_ss(q + r * head_dim + k);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(qv, kv[v], acc[r][v]);
    }
  }
  const __m256 scale = _mm256_set1_ps(b.scale);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const bool full = v + 1 < NV;
      __m256 x = _mm256_mul_ps(acc[r][v], scale);
      if (mask) x = _mm256_add_ps(x, Load(mask + r * b.mask_stride_q + 8 * v, full, last));
      Store(s + r * ld + 8 * v, full, last, x);
    }
  }
}

template <int R, int NV>
M3_AVX2 void TileWeighted(const Block& b, const float* p, int64_t ld, int64_t n, const float* v, const float* factor,
                          float* out, int64_t out_ld, bool accumulate, __m256i last) {
  __m256 acc[R][NV];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm256_setzero_ps();
  const int64_t v_dim = b.v_dim;
  for (int64_t j = 0; j < n; ++j) {
    const float* vrow = v + j * v_dim;
    __m256 vv[NV];
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) vv[c] = Load(vrow + 8 * c, c + 1 < NV, last);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 pv = _mm256_broadcast_ss(p + r * ld + j);
#pragma GCC unroll 2
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm256_fmadd_ps(pv, vv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    const __m256 f = _mm256_set1_ps(factor[r]);
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) {
      const bool full = c + 1 < NV;
      float* o = out + r * out_ld + 8 * c;
      Store(o, full, last, accumulate ? _mm256_fmadd_ps(Load(o, full, last), f, acc[r][c]) : _mm256_mul_ps(acc[r][c], f));
    }
  }
}

using ScoresFn = void (*)(const Block&, const float*, const float*, const float*, float*, int64_t, __m256i);
using WeightedFn = void (*)(const Block&, const float*, int64_t, int64_t, const float*, const float*, float*, int64_t, bool,
                            __m256i);

template <int NV>
constexpr ScoresFn kScores[kRows + 1] = {nullptr, TileScores<1, NV>, TileScores<2, NV>, TileScores<3, NV>,
                                         TileScores<4, NV>, TileScores<5, NV>, TileScores<6, NV>};
template <int NV>
constexpr WeightedFn kWeighted[kRows + 1] = {nullptr, TileWeighted<1, NV>, TileWeighted<2, NV>, TileWeighted<3, NV>,
                                             TileWeighted<4, NV>, TileWeighted<5, NV>, TileWeighted<6, NV>};

M3_AVX2 float RowMax(const float* s, int64_t n) {
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 mx = neg_inf;
  for (int64_t j = 0; j < n; j += 8) {
    const __m256i m = TailMask(n - j);
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(s + j, m), _mm256_castsi256_ps(m)));
  }
  return HorizontalMax(mx);
}

M3_AVX2 float ExpSum(float* s, int64_t n, float max) {
  const __m256 row_max = _mm256_set1_ps(max);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256i m = TailMask(n - j);
    const __m256 e = _mm256_and_ps(Exp(_mm256_sub_ps(_mm256_maskload_ps(s + j, m), row_max)), _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(s + j, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  return HorizontalSum(sum);
}

M3_AVX2 float ExpScalar(float x) {
  return _mm256_cvtss_f32(Exp(_mm256_set1_ps(x)));
}

M3_AVX2 void Scores(const Block& b, int64_t j_begin, int64_t n, float* scores, int64_t ld, float* kpack) {
  for (int64_t j0 = j_begin; j0 < j_begin + n; j0 += kKeys) {
    const int64_t keys = std::min(kKeys, j_begin + n - j0);
    const int vectors = static_cast<int>((keys + 7) / 8);
    const __m256i last = TailMask(keys - 8 * (vectors - 1));
    for (int64_t k = 0; k < b.head_dim; ++k) {
      const float* src = b.kt + k * b.kv_len + j0;
      for (int v = 0; v < vectors; ++v)
        _mm256_storeu_ps(kpack + k * kKeys + 8 * v, Load(src + 8 * v, v + 1 < vectors, last));
    }
    for (int64_t r0 = 0; r0 < b.rows; r0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, b.rows - r0));
      const float* mask = b.mask ? b.mask + r0 * b.mask_stride_q + j0 : nullptr;
      const ScoresFn tile = vectors == 1 ? kScores<1>[rows] : kScores<2>[rows];
      tile(b, b.q + r0 * b.head_dim, kpack, mask, scores + r0 * ld + (j0 - j_begin), ld, last);
    }
  }
}

M3_AVX2 void Weighted(const Block& b, const float* p, int64_t ld, int64_t j_begin, int64_t n, const float* factor,
                      float* out, int64_t out_ld, bool accumulate) {
  constexpr int64_t kColumns = 8 * kMaxVectors;
  for (int64_t c0 = 0; c0 < b.v_dim; c0 += kColumns) {
    const int64_t cols = std::min(kColumns, b.v_dim - c0);
    const int vectors = static_cast<int>((cols + 7) / 8);
    const __m256i last = TailMask(cols - 8 * (vectors - 1));
    for (int64_t r0 = 0; r0 < b.rows; r0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, b.rows - r0));
      const WeightedFn tile = vectors == 1 ? kWeighted<1>[rows] : kWeighted<2>[rows];
      tile(b, p + r0 * ld, ld, n, b.v + j_begin * b.v_dim + c0, factor + r0, out + r0 * out_ld + c0, out_ld, accumulate, last);
    }
  }
}

}  // namespace

const BlockOps& OpsAvx2() {
  static const BlockOps ops{Scores, Weighted, RowMax, ExpSum, ExpScalar};
  return ops;
}

}  // namespace attention
}  // namespace m3
