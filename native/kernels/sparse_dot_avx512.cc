// AVX-512 kernels, 16 ids per step, products and sums in double.
// - Table: one masked gather per step from the query table.
// - Intersect: VP2INTERSECTD of each document vector with each query vector (up to four, so
//   queries of at most 64 ids) whose id range overlaps it; the matched lanes of both sides are
//   compressed to the front, where they pair up in order because both rows ascend. No table, so
//   no cache misses on it: on AMD Zen 5, which executes VP2INTERSECTD natively, about 1.6x the
//   table kernel's documents per second for a 40-id query.
// The rule checks ride along in mask registers: each id above its predecessor (the previous id
// comes from the last vector by alignr, so nothing is reloaded), finite weights, and ids below
// the vocabulary (in the table kernel per lane, which is also the gather mask, so no lane reads
// outside the table; in the intersect kernel on the row's last id, which bounds an ascending row).

// GCC 12 reports its own intrinsics' placeholder operands as maybe-uninitialized once they are
// inlined (GCC bug 105593, fixed in 13); the warning is located in the header, so silence it there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "kernels/sparse_dot_kernels.h"

namespace m3 {
namespace sparse {

#define M3_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define M3_VP2INTERSECT __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512vp2intersect,fma,popcnt")))

namespace {

// fpclass categories: QNaN (0x01), +Inf (0x08), -Inf (0x10), SNaN (0x80).
constexpr int kNonFinite = 0x99;

/// Ascending ids (each above its predecessor in the row) and finite weights over the lanes `live`
/// of one step; ORs any broken rule into *bad. `prev` is the row's previous vector; `first` marks
/// the row's first step, whose first id has no predecessor.
M3_AVX512 inline void CheckOrder(__m512i id, __m512i prev, __m512 wv, __mmask16 live, bool first, uint32_t* bad) {
  const __mmask16 ordered = first ? static_cast<__mmask16>(live & 0xfffe) : live;
  const __m512i before = _mm512_alignr_epi32(id, prev, 15);  // [prev[15], id[0..14]]
  const __mmask16 ascending = _mm512_mask_cmpgt_epu32_mask(ordered, id, before);
  *bad |= static_cast<uint32_t>(ascending ^ ordered) | _mm512_mask_fpclass_ps_mask(live, wv, kNonFinite);
}

/// CheckOrder plus ids below the vocabulary; returns the in-vocabulary lanes.
M3_AVX512 inline __mmask16 Check(__m512i id, __m512i prev, __m512 wv, __mmask16 live, bool first,
                                 __m512i vocab_v, uint32_t* bad) {
  const __mmask16 in_vocab = _mm512_mask_cmplt_epu32_mask(live, id, vocab_v);
  *bad |= static_cast<uint32_t>(in_vocab ^ live);
  CheckOrder(id, prev, wv, live, first, bad);
  return in_vocab;
}

M3_AVX512 inline void Prefetch(const uint32_t* ids, const float* w) {
  _mm_prefetch(Ahead(ids, kPrefetchAhead), _MM_HINT_T0);
  _mm_prefetch(Ahead(w, kPrefetchAhead), _MM_HINT_T0);
}

/// The first min(remaining, 16) lanes; remaining >= 0.
M3_AVX512 inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << remaining) - 1);
}

M3_AVX512 inline __m512d Low(__m512 x) { return _mm512_cvtps_pd(_mm512_castps512_ps256(x)); }
M3_AVX512 inline __m512d High(__m512 x) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)); }

/// The intersect kernel for queries of 16 * (NV - 1) + 1 to 16 * NV ids (NV = 1 also takes the
/// empty query). One accumulator per query vector keeps the FMA chains independent.
template <int NV>
M3_VP2INTERSECT bool IntersectRows(const uint32_t* q_ids, const float* q_w, int64_t q_n, uint32_t vocab,
                                   const SparseRowSet& docs, int64_t begin, int64_t end, float* scores) {
  // Padding never equals a valid id (all are below 2^31), nor the documents' padding.
  const __m512i q_pad = _mm512_set1_epi32(-1), d_pad = _mm512_set1_epi32(-2);
  __m512i qv[NV];
  __m512 qw[NV];
  // Each query vector's id range: a document vector outside it cannot match (an empty range,
  // first > last, for the empty query).
  uint32_t q_first[NV], q_last[NV];
  for (int k = 0; k < NV; ++k) {
    const int64_t rem = q_n - 16 * k;
    const __mmask16 m = TailMask(rem);
    qv[k] = _mm512_mask_loadu_epi32(q_pad, m, q_ids + 16 * k);
    qw[k] = _mm512_maskz_loadu_ps(m, q_w + 16 * k);
    q_first[k] = rem > 0 ? q_ids[16 * k] : 0xffffffffu;
    q_last[k] = rem > 0 ? q_ids[16 * k + (rem >= 16 ? 15 : rem - 1)] : 0;
  }
  uint32_t bad = 0;
  for (int64_t d = begin; d < end; ++d) {
    const uint32_t s = docs.offsets[d], e = docs.offsets[d + 1];
    if (s > e || e > docs.nnz) {
      bad = 1;
      scores[d] = 0.0f;
      continue;
    }
    const uint32_t* ids = docs.ids + s;
    const float* w = docs.weights + s;
    const int64_t n = e - s;
    // Ids ascend (checked per step), so the last one bounds them all.
    if (n > 0) bad |= ids[n - 1] >= vocab;
    __m512d acc[NV];
    for (int k = 0; k < NV; ++k) acc[k] = _mm512_setzero_pd();
    __m512i prev = _mm512_setzero_si512();
    for (int64_t j = 0; j < n; j += 16) {
      Prefetch(ids + j, w + j);
      const __mmask16 live = TailMask(n - j);
      // Full steps load unmasked: masked loads that miss the cache are slower on AMD.
      const bool full = live == 0xffff;
      const __m512i id = full ? _mm512_loadu_si512(ids + j) : _mm512_mask_loadu_epi32(d_pad, live, ids + j);
      const __m512 wv = full ? _mm512_loadu_ps(w + j) : _mm512_maskz_loadu_ps(live, w + j);
      CheckOrder(id, prev, wv, live, j == 0, &bad);
      const uint32_t first = ids[j], last = ids[full ? j + 15 : n - 1];
      for (int k = 0; k < NV; ++k) {
        // Skips about half the pairs on Zipf-distributed ids, for a few mispredicted branches.
        if (q_first[k] > last || first > q_last[k]) continue;
        __mmask16 mq, md;
        _mm512_2intersect_epi32(qv[k], id, &mq, &md);
        const __m512 a = _mm512_maskz_compress_ps(mq, qw[k]);
        const __m512 b = _mm512_maskz_compress_ps(md, wv);
        acc[k] = _mm512_fmadd_pd(Low(a), Low(b), acc[k]);
        // More than eight matches between two 16-id vectors is rare: skip the upper half.
        if (__builtin_expect(__builtin_popcount(md) > 8, 0)) acc[k] = _mm512_fmadd_pd(High(a), High(b), acc[k]);
      }
      prev = id;
    }
    __m512d sum = acc[0];
    for (int k = 1; k < NV; ++k) sum = _mm512_add_pd(sum, acc[k]);
    scores[d] = static_cast<float>(_mm512_reduce_add_pd(sum));
  }
  return bad == 0;
}

}  // namespace

M3_AVX512 bool TableAvx512(const float* table, uint32_t vocab, const SparseRowSet& docs, int64_t begin,
                           int64_t end, float* scores) {
  const __m512i vocab_v = _mm512_set1_epi32(static_cast<int>(vocab));
  uint32_t bad = 0;
  for (int64_t d = begin; d < end; ++d) {
    const uint32_t s = docs.offsets[d], e = docs.offsets[d + 1];
    if (s > e || e > docs.nnz) {
      bad = 1;
      scores[d] = 0.0f;
      continue;
    }
    const uint32_t* ids = docs.ids + s;
    const float* w = docs.weights + s;
    const int64_t n = e - s;
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    __m512i prev = _mm512_setzero_si512();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      Prefetch(ids + j, w + j);
      const __m512i id = _mm512_loadu_si512(ids + j);
      const __m512 wv = _mm512_loadu_ps(w + j);
      const __mmask16 in_vocab = Check(id, prev, wv, 0xffff, j == 0, vocab_v, &bad);
      const __m512 t = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in_vocab, id, table, 4);
      lo = _mm512_fmadd_pd(Low(t), Low(wv), lo);
      hi = _mm512_fmadd_pd(High(t), High(wv), hi);
      prev = id;
    }
    if (j < n) {
      Prefetch(ids + j, w + j);
      const __mmask16 live = TailMask(n - j);
      const __m512i id = _mm512_maskz_loadu_epi32(live, ids + j);
      const __m512 wv = _mm512_maskz_loadu_ps(live, w + j);
      const __mmask16 in_vocab = Check(id, prev, wv, live, j == 0, vocab_v, &bad);
      const __m512 t = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in_vocab, id, table, 4);
      lo = _mm512_fmadd_pd(Low(t), Low(wv), lo);
      hi = _mm512_fmadd_pd(High(t), High(wv), hi);
    }
    scores[d] = static_cast<float>(_mm512_reduce_add_pd(_mm512_add_pd(lo, hi)));
  }
  return bad == 0;
}

bool IntersectAvx512(const uint32_t* q_ids, const float* q_w, int64_t q_n, uint32_t vocab,
                     const SparseRowSet& docs, int64_t begin, int64_t end, float* scores) {
  switch ((q_n + 15) / 16) {
    case 0:
    case 1: return IntersectRows<1>(q_ids, q_w, q_n, vocab, docs, begin, end, scores);
    case 2: return IntersectRows<2>(q_ids, q_w, q_n, vocab, docs, begin, end, scores);
    case 3: return IntersectRows<3>(q_ids, q_w, q_n, vocab, docs, begin, end, scores);
    default: return IntersectRows<4>(q_ids, q_w, q_n, vocab, docs, begin, end, scores);
  }
}

#undef M3_VP2INTERSECT
#undef M3_AVX512

}  // namespace sparse
}  // namespace m3
