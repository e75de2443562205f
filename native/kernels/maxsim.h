// ColBERT late-interaction scoring (MaxSim): score(q, d) = mean over query rows i of
// max over document rows j of <q_i, d_j>, FlagEmbedding's ColBERT score. Fused: the query x
// document similarity matrix is never materialised; each document's rows are scored in
// register tiles and reduced to one max per query row on the fly.
#pragma once
#include <cstdint>
#include <string>

#include "base/cpu_features.h"

namespace m3 {

/// Storage formats of document vectors.
enum class VectorFormat : int {
  kF32 = 0,   // float
  kBF16 = 1,  // bfloat16 (upper half of a float, round-to-nearest-even)
  kI8 = 2,    // int8 with a per-row scale: x ~= scale * q, q in [-127, 127]
};

const char* VectorFormatName(VectorFormat f);
bool ParseVectorFormat(const std::string& name, VectorFormat* out);

/// Many documents' multi-vectors, laid out like encode()'s `colbert` output. Row r of the data
/// holds `dim` elements of the format; document i owns rows offsets[i] .. offsets[i+1].
struct MultiVectorSet {
  VectorFormat format = VectorFormat::kF32;
  int64_t dim = 0;
  int64_t count = 0;                  // documents
  const uint32_t* offsets = nullptr;  // count + 1 entries, non-decreasing
  const void* data = nullptr;         // rows * dim elements (float, uint16_t or int8_t)
  const float* scales = nullptr;      // kI8: one per row
};

/// One query (nq rows of `dim` floats, row-major) against every document of `docs`:
/// scores[i] for document i. An empty document scores 0; an empty query scores 0 everywhere.
/// Work is split over up to `threads` threads by document; results do not depend on it.
/// Throws CoreError(ERR_INPUT) for non-finite values, naming the document and row.
void MaxSim(const float* query, int64_t nq, const MultiVectorSet& docs, float* scores, int threads);

/// Many queries: queries[k] has query_offsets[k] .. query_offsets[k+1] rows (of docs.dim floats);
/// scores is [num_queries x docs.count], row-major.
void MaxSimBatch(const float* queries, const uint32_t* query_offsets, int64_t num_queries,
                 const MultiVectorSet& docs, float* scores, int threads);

/// Scores only the documents listed in `indices` (each < docs.count): scores[i] for indices[i].
/// For callers that own the document set (an index): offsets are trusted, values still checked.
void MaxSimSubset(const float* query, int64_t nq, const MultiVectorSet& docs, const uint32_t* indices, int64_t n,
                  float* scores, int threads);

/// The same on an explicit tier (tests compare every tier with the serial oracle; a tier above
/// the detected one, or AVX-512 without BF16/VNNI for those formats, falls back to the next).
void MaxSimOn(IsaTier tier, const float* query, int64_t nq, const MultiVectorSet& docs, float* scores,
              int threads);
void MaxSimBatchOn(IsaTier tier, const float* queries, const uint32_t* query_offsets, int64_t num_queries,
                   const MultiVectorSet& docs, float* scores, int threads);

}  // namespace m3
