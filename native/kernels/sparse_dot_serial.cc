// The oracle (a sorted merge per pair of rows) and the portable table kernel used where no
// vector tier is available. Both add the products in ascending id order in double, so the table
// kernel reproduces the merge bit for bit: the table's zeros add nothing.
#include <cstring>

#include "kernels/sparse_dot_kernels.h"

namespace m3 {

double LexicalScorePair(const uint32_t* a_ids, const float* a_w, int64_t a_n, const uint32_t* b_ids,
                        const float* b_w, int64_t b_n) {
  int64_t i = 0, j = 0;
  double sum = 0.0;
  while (i < a_n && j < b_n) {
    const uint32_t x = a_ids[i], y = b_ids[j];
    if (x == y) {
      sum += static_cast<double>(a_w[i]) * static_cast<double>(b_w[j]);
      ++i;
      ++j;
    } else if (x < y) {
      ++i;
    } else {
      ++j;
    }
  }
  return sum;
}

namespace sparse {

void MergeRows(const uint32_t* q_ids, const float* q_w, int64_t q_n, const SparseRowSet& docs,
               int64_t begin, int64_t end, float* scores) {
  for (int64_t d = begin; d < end; ++d) {
    const uint32_t s = docs.offsets[d], e = docs.offsets[d + 1];
    // Validated before the call; re-checked because the arrays may be shared with JS.
    if (s > e || e > docs.nnz) {
      scores[d] = 0.0f;
      continue;
    }
    scores[d] = static_cast<float>(LexicalScorePair(q_ids, q_w, q_n, docs.ids + s, docs.weights + s, e - s));
  }
}

bool TableSerial(const float* table, uint32_t vocab, const SparseRowSet& docs, int64_t begin, int64_t end,
                 float* scores) {
  bool ok = true;
  for (int64_t d = begin; d < end; ++d) {
    const uint32_t s = docs.offsets[d], e = docs.offsets[d + 1];
    if (s > e || e > docs.nnz) {
      ok = false;
      scores[d] = 0.0f;
      continue;
    }
    double sum = 0.0;
    uint32_t prev = 0;
    for (uint32_t j = s; j < e; ++j) {
      const uint32_t id = docs.ids[j];
      const float w = docs.weights[j];
      uint32_t bits;
      std::memcpy(&bits, &w, sizeof bits);
      const bool in_vocab = id < vocab;
      // Branch-free rule checks: the common case is a valid row.
      ok &= in_vocab & (j == s || id > prev) & FiniteBits(bits);
      prev = id;
      const float t = in_vocab ? table[id] : 0.0f;
      sum += static_cast<double>(t) * static_cast<double>(w);
    }
    scores[d] = static_cast<float>(sum);
  }
  return ok;
}

}  // namespace sparse
}  // namespace m3
