// MaxSim driver: validation, query packing, document chunking and threading, and the final
// mean over query rows (in double, in row order, so every tier and thread count agrees on it).
#include "kernels/maxsim.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/parallel_for.h"
#include "kernels/maxsim_kernels.h"
#include "kernels/quantize.h"

namespace m3 {
namespace {

struct TierKernels {
  maxsim::PackFn pack;
  maxsim::RowMaxFn row_max;
};

TierKernels KernelsFor(IsaTier tier) {
  if (tier > DetectedTier()) tier = DetectedTier();
  // bf16 and int8 on the AVX-512 tier need BF16 and VNNI; the AVX2 kernels cover the rest.
  switch (tier) {
    case IsaTier::kAvx512: return {maxsim::PackAvx512, maxsim::RowMaxAvx512};
    case IsaTier::kAvx2: return {maxsim::PackAvx2, maxsim::RowMaxAvx2};
    default: return {maxsim::PackSerial, maxsim::RowMaxSerial};
  }
}

IsaTier EffectiveTier(IsaTier tier, VectorFormat format) {
  if (tier > DetectedTier()) tier = DetectedTier();
  const CpuFeatures& f = DetectCpuFeatures();
  if (tier == IsaTier::kAvx512 && format == VectorFormat::kBF16 && !f.avx512_bf16) tier = IsaTier::kAvx2;
  if (tier == IsaTier::kAvx512 && format == VectorFormat::kI8 && !f.avx512_vnni) tier = IsaTier::kAvx2;
  return tier;
}

void CheckFinite(const float* x, int64_t n, const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      throw CoreError("ERR_INPUT", what + " holds a non-finite value (" + std::to_string(x[i]) + ") at element " +
                                       std::to_string(i) + "; MaxSim needs finite vectors.");
    }
  }
}

/// Offsets only: the values are checked per chunk by the scoring threads, while they are in cache.
void ValidateOffsets(const MultiVectorSet& docs) {
  if (docs.dim <= 0) throw CoreError("ERR_INPUT", "docs: dim must be positive.");
  if (docs.offsets[0] != 0) throw CoreError("ERR_INPUT", "docs.offsets[0] must be 0.");
  for (int64_t i = 0; i < docs.count; ++i) {
    if (docs.offsets[i + 1] < docs.offsets[i]) {
      throw CoreError("ERR_INPUT", "docs.offsets must be non-decreasing: offsets[" + std::to_string(i + 1) + "] = " +
                                       std::to_string(docs.offsets[i + 1]) + " < offsets[" + std::to_string(i) +
                                       "] = " + std::to_string(docs.offsets[i]) + ".");
    }
  }
}

/// Documents handed to a thread at a time: about 256 KB of rows, so a chunk stays in L2 while
/// every query of a batch is scored against it.
std::vector<int64_t> ChunkDocuments(const MultiVectorSet& docs) {
  const int64_t bytes_per_row = docs.dim * (docs.format == VectorFormat::kF32 ? 4 : docs.format == VectorFormat::kBF16 ? 2 : 1);
  const int64_t budget = std::max<int64_t>(1, (256 << 10) / bytes_per_row);
  std::vector<int64_t> starts{0};
  int64_t rows = 0;
  for (int64_t i = 0; i < docs.count; ++i) {
    rows += docs.offsets[i + 1] - docs.offsets[i];
    if (rows >= budget && i + 1 < docs.count) {
      starts.push_back(i + 1);
      rows = 0;
    }
  }
  starts.push_back(docs.count);
  return starts;
}

/// Scores queries against documents: all of them (`indices` null; scores [queries x count]) or
/// the listed ones (scores [queries x n]).
/// Listed documents handed to a thread at a time.
std::vector<int64_t> ChunkList(int64_t n) {
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < n; i += 8) starts.push_back(i);
  starts.push_back(n);
  return starts;
}

void Run(IsaTier requested, const float* queries, const uint32_t* query_offsets, int64_t num_queries,
         const MultiVectorSet& docs, float* scores, int threads, const uint32_t* indices = nullptr,
         int64_t n = 0) {
  if (!indices) ValidateOffsets(docs);
  const IsaTier tier = EffectiveTier(requested, docs.format);
  const TierKernels kernels = KernelsFor(tier);
  std::vector<maxsim::PackedQuery> packed(static_cast<size_t>(num_queries));
  int64_t widest = 0;
  for (int64_t k = 0; k < num_queries; ++k) {
    const int64_t nq = query_offsets[k + 1] - query_offsets[k];
    const float* q = queries + static_cast<int64_t>(query_offsets[k]) * docs.dim;
    CheckFinite(q, nq * docs.dim, "query " + std::to_string(k));
    kernels.pack(q, nq, docs.dim, docs.format, &packed[k]);
    widest = std::max(widest, packed[k].nq_pad);
  }
  const int64_t targets = indices ? n : docs.count;
  const std::vector<int64_t> chunks = indices ? ChunkList(n) : ChunkDocuments(docs);
  std::vector<std::vector<float>> row_max(static_cast<size_t>(std::max(1, threads)), std::vector<float>(widest + 1));
  ParallelFor(static_cast<int64_t>(chunks.size()) - 1, threads, [&](int64_t c, int worker) {
    float* maxima = row_max[worker].data();
    for (int64_t k = 0; k < num_queries; ++k) {
      const maxsim::PackedQuery& q = packed[k];
      for (int64_t t = chunks[c]; t < chunks[c + 1]; ++t) {
        const int64_t i = indices ? indices[t] : t;
        const int64_t begin = docs.offsets[i], rows = docs.offsets[i + 1] - begin;
        float score = 0.0f;
        if (rows > 0 && q.nq > 0) {
          if (!kernels.row_max(q, docs, begin, rows, maxima)) {
            throw CoreError("ERR_INPUT", "docs: document " + std::to_string(i) + " holds a NaN or infinite value" +
                                             std::string(docs.format == VectorFormat::kI8 ? " in its scales" : "") +
                                             "; MaxSim needs finite vectors.");
          }
          double sum = 0.0;
          for (int64_t r = 0; r < q.nq; ++r) sum += maxima[r];
          score = static_cast<float>(sum / static_cast<double>(q.nq));
        }
        scores[k * targets + t] = score;
      }
    }
  });
}

}  // namespace

const char* VectorFormatName(VectorFormat f) {
  switch (f) {
    case VectorFormat::kBF16: return "bf16";
    case VectorFormat::kI8: return "i8";
    default: return "f32";
  }
}

bool ParseVectorFormat(const std::string& name, VectorFormat* out) {
  if (name == "f32") *out = VectorFormat::kF32;
  else if (name == "bf16") *out = VectorFormat::kBF16;
  else if (name == "i8") *out = VectorFormat::kI8;
  else return false;
  return true;
}

void MaxSim(const float* query, int64_t nq, const MultiVectorSet& docs, float* scores, int threads) {
  const uint32_t offsets[2] = {0, static_cast<uint32_t>(nq)};
  Run(ActiveTier(), query, offsets, 1, docs, scores, threads);
}

void MaxSimBatch(const float* queries, const uint32_t* query_offsets, int64_t num_queries,
                 const MultiVectorSet& docs, float* scores, int threads) {
  Run(ActiveTier(), queries, query_offsets, num_queries, docs, scores, threads);
}

void MaxSimOn(IsaTier tier, const float* query, int64_t nq, const MultiVectorSet& docs, float* scores, int threads) {
  const uint32_t offsets[2] = {0, static_cast<uint32_t>(nq)};
  Run(tier, query, offsets, 1, docs, scores, threads);
}

void MaxSimSubset(const float* query, int64_t nq, const MultiVectorSet& docs, const uint32_t* indices, int64_t n,
                  float* scores, int threads) {
  const uint32_t offsets[2] = {0, static_cast<uint32_t>(nq)};
  Run(ActiveTier(), query, offsets, 1, docs, scores, threads, indices, n);
}

void MaxSimBatchOn(IsaTier tier, const float* queries, const uint32_t* query_offsets, int64_t num_queries,
                   const MultiVectorSet& docs, float* scores, int threads) {
  Run(tier, queries, query_offsets, num_queries, docs, scores, threads);
}

namespace maxsim {

void QuantizeQueryI8(const float* query, int64_t nq, int64_t dim, std::vector<int8_t>* s8, std::vector<float>* scales) {
  s8->assign(static_cast<size_t>(nq * dim), 0);
  scales->assign(static_cast<size_t>(nq), 0.0f);
  QuantizeI8(query, nq, dim, s8->data(), scales->data());
}

}  // namespace maxsim
}  // namespace m3
