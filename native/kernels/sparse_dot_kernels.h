// Internal interface between the lexical-score driver (sparse_dot.cc) and its per-ISA kernels
// (sparse_dot_<isa>.cc). For the table kernels the driver scatters the query into a zeroed
// float table of `vocab` entries (the query's weight at each of its ids, zero elsewhere) and a
// kernel gathers each document's ids from it; the intersect kernel takes the query itself.
//
// Kernels do the rule checks on the very values they use (each offset and id is loaded once),
// so they stay in bounds even when another thread rewrites the arrays, and the data is read
// from memory once instead of once for validation and once for scoring. A kernel only reports
// that some rule was broken; the driver then runs the serial validator for the message.
#pragma once
#include <cstdint>

#include "kernels/sparse_dot.h"

namespace m3 {
namespace sparse {

/// scores[d] for documents d in [begin, end). Returns false when a document breaks a rule:
/// offsets[d] > offsets[d + 1] or past docs.nnz, an id not above its predecessor in the row or
/// not below `vocab`, a non-finite weight. Ids at or above `vocab` are never looked up; a
/// document whose offsets are out of bounds scores 0. Other scores are then unspecified.
using TableFn = bool (*)(const float* table, uint32_t vocab, const SparseRowSet& docs, int64_t begin,
                         int64_t end, float* scores);

bool TableSerial(const float* table, uint32_t vocab, const SparseRowSet& docs, int64_t begin, int64_t end,
                 float* scores);
bool TableAvx2(const float* table, uint32_t vocab, const SparseRowSet& docs, int64_t begin, int64_t end,
               float* scores);
bool TableAvx512(const float* table, uint32_t vocab, const SparseRowSet& docs, int64_t begin, int64_t end,
                 float* scores);

/// The same scores by intersecting the query (kept in registers; at most kIntersectMaxQuery ids)
/// with each document vector; the same rule checks and return value. Needs AVX512_VP2INTERSECT.
bool IntersectAvx512(const uint32_t* q_ids, const float* q_w, int64_t q_n, uint32_t vocab,
                     const SparseRowSet& docs, int64_t begin, int64_t end, float* scores);

/// The longest query IntersectAvx512 takes: its cost grows with the query's vectors, and beyond
/// four (64 ids) the table kernel is faster.
constexpr int64_t kIntersectMaxQuery = 64;

/// The oracle on documents [begin, end) of already validated rows: LexicalScorePair per document.
void MergeRows(const uint32_t* q_ids, const float* q_w, int64_t q_n, const SparseRowSet& docs,
               int64_t begin, int64_t end, float* scores);

/// How far ahead of the current position the kernels prefetch a document's ids and weights, in
/// elements (1 KiB). Documents stream from DRAM once; the hardware prefetcher alone leaves the
/// gathers waiting on them (about 20% slower on AMD Zen 5).
constexpr int64_t kPrefetchAhead = 256;

/// `p + elements`, for prefetching only: an address that may lie past the array (prefetches never
/// fault), computed as an integer so no out-of-range pointer is formed.
template <typename T>
inline const char* Ahead(const T* p, int64_t elements) {
  return reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(elements) * sizeof(T));
}

/// True when the weight is neither infinite nor NaN (exponent bits not all set).
inline bool FiniteBits(uint32_t bits) { return (bits & 0x7f800000u) != 0x7f800000u; }

}  // namespace sparse
}  // namespace m3
