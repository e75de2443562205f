// AVX2 table kernel: 8 ids per step, one masked gather from the query table, products and sums
// in double (two 4-lane accumulators). The rule checks are vector compares on the loaded ids and
// weights; AVX2 has only signed 32-bit compares, so ids are compared with their sign bit
// flipped (which orders them as unsigned). The in-vocabulary compare is also the gather mask.
#include <immintrin.h>

#include "kernels/sparse_dot_kernels.h"

namespace m3 {
namespace sparse {

#define M3_AVX2 __attribute__((target("avx2,fma")))

namespace {

M3_AVX2 inline void Accumulate(__m256 t, __m256 w, __m256d* lo, __m256d* hi) {
  *lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(t)),
                        _mm256_cvtps_pd(_mm256_castps256_ps128(w)), *lo);
  *hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)),
                        _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)), *hi);
}

/// The rule checks of one step over the lanes `live` (all ones where a lane holds an element).
struct Checked {
  __m256i in_vocab;  // all ones where the id is below the vocabulary: the gather mask
  int broken;        // nonzero when a live lane breaks a rule
};

/// `prev` is the row's previous vector; `ordered` is all ones except lane 0 on the row's first
/// step, whose first id has no predecessor to be above.
M3_AVX2 inline Checked Check(__m256i id, __m256i prev, __m256 wv, __m256i live, __m256i ordered,
                             __m256i vocab_biased) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  const __m256i rotate = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
  const __m256i biased = _mm256_xor_si256(id, sign);
  const __m256i in_vocab = _mm256_and_si256(_mm256_cmpgt_epi32(vocab_biased, biased), live);
  // before[k] = id[k - 1], before[0] = the previous vector's last id.
  const __m256i before = _mm256_blend_epi32(_mm256_permutevar8x32_epi32(id, rotate),
                                            _mm256_permutevar8x32_epi32(prev, rotate), 0x01);
  const __m256i ascending = _mm256_cmpgt_epi32(biased, _mm256_xor_si256(before, sign));
  const __m256i need = _mm256_and_si256(live, ordered);
  const __m256i exp_bits = _mm256_and_si256(_mm256_castps_si256(wv), exponent);
  const __m256i non_finite = _mm256_and_si256(_mm256_cmpeq_epi32(exp_bits, exponent), live);
  const __m256i broken = _mm256_or_si256(_mm256_or_si256(_mm256_xor_si256(in_vocab, live),
                                                         _mm256_andnot_si256(ascending, need)),
                                         non_finite);
  return {in_vocab, _mm256_movemask_epi8(broken)};
}

}  // namespace

M3_AVX2 bool TableAvx2(const float* table, uint32_t vocab, const SparseRowSet& docs, int64_t begin,
                       int64_t end, float* scores) {
  const __m256i vocab_biased = _mm256_set1_epi32(static_cast<int>(vocab ^ 0x80000000u));
  const __m256i all = _mm256_set1_epi32(-1);
  const __m256i not_first = _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int bad = 0;
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
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    __m256i prev = _mm256_setzero_si256();
    __m256i ordered = not_first;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      // One line (16 elements) per two steps would do; one per step is simpler and as fast.
      _mm_prefetch(Ahead(ids + j, kPrefetchAhead), _MM_HINT_T0);
      _mm_prefetch(Ahead(w + j, kPrefetchAhead), _MM_HINT_T0);
      const __m256i id = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ids + j));
      const __m256 wv = _mm256_loadu_ps(w + j);
      const Checked c = Check(id, prev, wv, all, ordered, vocab_biased);
      bad |= c.broken;
      const __m256 t = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), table, id, _mm256_castsi256_ps(c.in_vocab), 4);
      Accumulate(t, wv, &lo, &hi);
      prev = id;
      ordered = all;
    }
    if (j < n) {
      _mm_prefetch(Ahead(ids + j, kPrefetchAhead), _MM_HINT_T0);
      _mm_prefetch(Ahead(w + j, kPrefetchAhead), _MM_HINT_T0);
      const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - j)), lanes);
      const __m256i id = _mm256_maskload_epi32(reinterpret_cast<const int*>(ids + j), live);
      const __m256 wv = _mm256_maskload_ps(w + j, live);
      const Checked c = Check(id, prev, wv, live, ordered, vocab_biased);
      bad |= c.broken;
      const __m256 t = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), table, id, _mm256_castsi256_ps(c.in_vocab), 4);
      Accumulate(t, wv, &lo, &hi);
    }
    const __m256d sum = _mm256_add_pd(lo, hi);
    const __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(sum), _mm256_extractf128_pd(sum, 1));
    scores[d] = static_cast<float>(_mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair))));
  }
  return bad == 0;
}

#undef M3_AVX2

}  // namespace sparse
}  // namespace m3
