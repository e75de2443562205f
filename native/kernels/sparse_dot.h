// Lexical (sparse) scores: the sum over token ids present in both rows of w_a * w_b
// (BGE-M3's lexical matching score). Rows are sorted, unique u32 ids with f32 weights, laid out
// like encode()'s `sparse` output.
//
// Products are formed and summed in double (a product of two floats is exact in double), and
// each score is rounded to float once at the end. So every tier gives the sorted merge's result
// to within float rounding, and the serial tier gives it exactly; a score never depends on the
// thread count.
#pragma once
#include <cstdint>

#include "base/cpu_features.h"

namespace m3 {

/// Many sparse rows: row i is ids/weights[offsets[i] .. offsets[i+1]).
struct SparseRowSet {
  int64_t count = 0;
  const uint32_t* offsets = nullptr;  // count + 1
  const uint32_t* ids = nullptr;
  const float* weights = nullptr;
  int64_t nnz = 0;  // length of ids and of weights; offsets[count] must equal it
};

/// The largest vocabulary the kernels accept: ids are gathered with signed 32-bit indices.
constexpr int64_t kMaxLexicalVocab = int64_t{1} << 31;

/// One pair of rows (sorted merge, summed in double in ascending id order). Inputs are trusted
/// (validated by the caller); only positions are used as indices, so unsorted ids give a wrong
/// score, never an out-of-bounds read.
double LexicalScorePair(const uint32_t* a_ids, const float* a_w, int64_t a_n, const uint32_t* b_ids,
                        const float* b_w, int64_t b_n);

/// How the documents are scored.
enum class LexicalMethod : int {
  kFastest = 0,  // the query table, or the vector intersection where that is faster (below)
  kTable = 1,    // always the query table (tests and benchmarks)
  kMerge = 2,    // a sorted merge per document: the oracle, tier ignored
};

/// One query row against every document row: scores[i]. Scatters the query into a dense table
/// over the vocabulary and gathers per document, on ActiveTier(); on the AVX-512 tier, queries of
/// at most 64 ids are instead intersected with each document by VP2INTERSECTD where the CPU
/// executes it natively. Validates the query and the documents (offsets start at 0, never
/// decrease and end at nnz; ids ascending, unique and below vocab_size; finite weights) and
/// throws CoreError(ERR_INPUT) naming the first problem. Each id and offset is read once and
/// bounds-checked where it is used, so arrays changed by another thread during the call give
/// wrong scores or an error, never an out-of-bounds access. Work is split over up to `threads`
/// threads; results do not depend on it.
void LexicalScores(const uint32_t* q_ids, const float* q_w, int64_t q_n, const SparseRowSet& docs,
                   int64_t vocab_size, float* scores, int threads);

/// The same on an explicit tier (clamped to the detected one).
void LexicalScoresOn(IsaTier tier, const uint32_t* q_ids, const float* q_w, int64_t q_n,
                     const SparseRowSet& docs, int64_t vocab_size, float* scores, int threads);

/// The same with an explicit method: tests compare the tiers with the merge; benchmarks time each.
void LexicalScoresWith(IsaTier tier, LexicalMethod method, const uint32_t* q_ids, const float* q_w, int64_t q_n,
                       const SparseRowSet& docs, int64_t vocab_size, float* scores, int threads);

}  // namespace m3
