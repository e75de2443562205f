// AVX-512 BF16 attention block (precision 'bf16'): the AVX-512 kernel's steps with both products
// on `vdpbf16ps`. q and the keys are rounded to bf16 for the scores (fp32 sums, then the fp32
// scale, mask and softmax); the softmax weights e^(s - max) and v are rounded to bf16 for the
// weighted sum (fp32 sums, normalised by the fp32 sum of the unrounded weights).
//   scores:   6-row x 48-key tiles; the key block is packed as pairs along head_dim
//   weighted: 6-row x 64-column (12-row x 32-column) tiles; v is packed as pairs along the keys
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/attention.h"
#include "kernels/linear_bf16.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace m3 {
namespace attention {
namespace {

#define M3_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))

constexpr int kRows = 6;
constexpr int64_t kKeys = 48;
static_assert(kKeys <= kAttentionPackedKeys, "the packed key block must fit its scratch");

inline int64_t Even(int64_t n) { return (n + 1) & ~int64_t{1}; }

M3_BF16 inline __mmask16 TailMask(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << valid) - 1);
}

M3_BF16 inline __m512bh Pair(const uint16_t* p) {
  int32_t bits;
  std::memcpy(&bits, p, 4);
  return (__m512bh)_mm512_set1_epi32(bits);
}

/// Per-thread buffers of the bf16 operands (q rows, softmax weights, the packed v), grown to the
/// largest block.
struct Buffers {
  std::vector<uint16_t> q, p, v;
};
Buffers& ThreadBuffers() {
  thread_local Buffers b;
  return b;
}
uint16_t* Grow(std::vector<uint16_t>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

/// scores[r][0..16*NV) = scale * q[r] · k[0..16*NV) + mask for R rows: q rows of `dp` bf16 (pairs
/// along head_dim), kp the packed key block (pair t: 48 keys x 2).
template <int R, int NV>
M3_BF16 void TileScores(const Block& b, const uint16_t* q, int64_t dp, const uint16_t* kp, const float* mask, float* s,
                        int64_t ld, __mmask16 last) {
  __m512 acc[R][NV];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t t = 0; t < dp / 2; ++t) {
    __m512bh kv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) kv[v] = (__m512bh)_mm512_loadu_si512(kp + t * 2 * kKeys + 32 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m512bh qv = Pair(q + r * dp + 2 * t);
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], qv, kv[v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(b.scale);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v + 1 < NV ? static_cast<__mmask16>(0xffff) : last;
      __m512 x = _mm512_mul_ps(acc[r][v], scale);
      if (mask) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, mask + r * b.mask_stride_q + 16 * v));
      _mm512_mask_storeu_ps(s + r * ld + 16 * v, m, x);
    }
  }
}

/// acc[r] = sum_j p[r][j] v[j][16*NV columns] (p rows of `np` bf16, vp pairs of keys `vld` apart),
/// then out[r] = acc[r] * factor[r], or with `accumulate` out[r] * factor[r] + acc[r].
template <int R, int NV>
M3_BF16 void TileWeighted(const uint16_t* p, int64_t np, const uint16_t* vp, int64_t vld, const float* factor, float* out,
                          int64_t out_ld, bool accumulate, __mmask16 last) {
  __m512 acc[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < np / 2; ++t) {
    __m512bh vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) vv[c] = (__m512bh)_mm512_loadu_si512(vp + t * vld + 32 * c);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512bh pv = Pair(p + r * np + 2 * t);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pv, vv[c]);
    }
  }
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

using ScoresFn = void (*)(const Block&, const uint16_t*, int64_t, const uint16_t*, const float*, float*, int64_t, __mmask16);
using WeightedFn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t, const float*, float*, int64_t, bool, __mmask16);

template <int NV>
constexpr ScoresFn kScores[kRows + 1] = {nullptr, TileScores<1, NV>, TileScores<2, NV>, TileScores<3, NV>,
                                         TileScores<4, NV>, TileScores<5, NV>, TileScores<6, NV>};
template <int NV>
constexpr WeightedFn kWeighted[kRows + 1] = {nullptr, TileWeighted<1, NV>, TileWeighted<2, NV>, TileWeighted<3, NV>,
                                             TileWeighted<4, NV>, TileWeighted<5, NV>, TileWeighted<6, NV>};
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

WeightedFn WeightedTile(int rows, int vectors) {
  switch (vectors) {
    case 1: return kWeightedWide<1>[rows];
    case 2: return kWeightedWide<2>[rows];
    case 3: return kWeighted<3>[rows];
    default: return kWeighted<4>[rows];
  }
}

M3_BF16 void Scores(const Block& b, int64_t j_begin, int64_t n, float* scores, int64_t ld, float* kpack_floats) {
  const int64_t dp = Even(b.head_dim);
  uint16_t* q = Grow(ThreadBuffers().q, b.rows * dp);
  RoundRowsBf16Avx512(b.q, b.head_dim, b.rows, b.head_dim, dp, q);
  // head_dim x 48 floats of scratch hold the (dp / 2) x 48 x 2 bf16 of a packed key block.
  auto* kp = reinterpret_cast<uint16_t*>(kpack_floats);
  for (int64_t j0 = j_begin; j0 < j_begin + n; j0 += kKeys) {
    const int64_t keys = std::min(kKeys, j_begin + n - j0);
    const int vectors = static_cast<int>((keys + 15) / 16);
    const __mmask16 last = TailMask(keys - 16 * (vectors - 1));
    for (int64_t t = 0; t < dp / 2; ++t) {
      const float* k0 = b.kt + 2 * t * b.kv_len + j0;
      const float* k1 = 2 * t + 1 < b.head_dim ? k0 + b.kv_len : nullptr;
      InterleaveBf16Avx512(k0, k1, keys, kp + t * 2 * kKeys);
    }
    for (int64_t r0 = 0; r0 < b.rows; r0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, b.rows - r0));
      const float* mask = b.mask ? b.mask + r0 * b.mask_stride_q + j0 : nullptr;
      ScoresTile(rows, vectors)(b, q + r0 * dp, dp, kp, mask, scores + r0 * ld + (j0 - j_begin), ld, last);
    }
  }
}

M3_BF16 void Weighted(const Block& b, const float* p, int64_t ld, int64_t j_begin, int64_t n, const float* factor,
                      float* out, int64_t out_ld, bool accumulate) {
  Buffers& buf = ThreadBuffers();
  const int64_t np = Even(n);
  uint16_t* pb = Grow(buf.p, b.rows * np);
  RoundRowsBf16Avx512(p, ld, b.rows, n, np, pb);
  // v's rows [j_begin, j_begin + n) as pairs of keys: pair t holds, per column, (v[2t], v[2t + 1]).
  const int64_t vld = 2 * ((b.v_dim + 15) / 16 * 16);
  uint16_t* vp = Grow(buf.v, (np / 2) * vld);
  for (int64_t t = 0; t < np / 2; ++t) {
    const float* v0 = b.v + (j_begin + 2 * t) * b.v_dim;
    InterleaveBf16Avx512(v0, 2 * t + 1 < n ? v0 + b.v_dim : nullptr, b.v_dim, vp + t * vld);
  }
  constexpr int64_t kColumns = 64;
  for (int64_t c0 = 0; c0 < b.v_dim; c0 += kColumns) {
    const int64_t cols = std::min(kColumns, b.v_dim - c0);
    const int vectors = static_cast<int>((cols + 15) / 16);
    const __mmask16 last = TailMask(cols - 16 * (vectors - 1));
    const int tile_rows = vectors <= 2 ? 2 * kRows : kRows;
    for (int64_t r0 = 0; r0 < b.rows; r0 += tile_rows) {
      const int rows = static_cast<int>(std::min<int64_t>(tile_rows, b.rows - r0));
      WeightedTile(rows, vectors)(pb + r0 * np, np, vp + 2 * c0, vld, factor + r0, out + r0 * out_ld + c0, out_ld, accumulate,
                                  last);
    }
  }
}

}  // namespace

const BlockOps& OpsAvx512Bf16() {
  static const BlockOps ops = [] {
    BlockOps o = OpsAvx512();  // the row maximum and the exponentials stay fp32
    o.scores = Scores;
    o.weighted = Weighted;
    return o;
  }();
  return ops;
}

}  // namespace attention
}  // namespace m3
