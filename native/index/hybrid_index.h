// The hybrid index of BGE-M3's "multi-route recall, then rerank" (docs/semantics.md): a dense
// route (exact inner products), a sparse route (an inverted index over token ids, exact
// term-at-a-time scoring) and a ColBERT store, with candidates from the routes reranked by
// (w_dense * dense + w_sparse * lexical + w_colbert * colbert) / (w_dense + w_sparse + w_colbert).
// Documents live in slots (append order); the TypeScript layer maps caller ids to slots.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/maxsim.h"

namespace m3 {

/// The largest magnitude of a value the index stores or is queried with (dense and ColBERT
/// components, lexical weights). BGE-M3's vectors are unit rows and its lexical weights are
/// about 0 to 1; the bound keeps every product and sum of the scores finite (components of
/// 1e30, or an int8 scale of 3e38 in a crafted file, would score Inf and rank first).
constexpr float kMaxIndexValue = 65536.0f;

/// Whether x is a value the index takes: finite and at most kMaxIndexValue in magnitude.
inline bool IndexValueOk(float x) { return std::fabs(x) <= kMaxIndexValue; }

struct IndexConfig {
  int64_t dim = 0;
  int64_t vocab_size = 0;
  bool colbert = false;                       // store ColBERT vectors for reranking
  VectorFormat colbert_format = VectorFormat::kF32;
};

struct SearchParams {
  int64_t k = 10;
  double w_dense = 1.0, w_sparse = 0.3, w_colbert = 1.0;  // the paper's MIRACL "All" weights
  int64_t dense_candidates = 200, sparse_candidates = 200;
  bool dense_route = true, sparse_route = true;
  bool exhaustive = false;  // score every document (the reference for the routes' recall)
  // Dense-route candidates found elsewhere (an approximate index); used instead of the exact scan.
  const uint32_t* dense_slots = nullptr;
  int64_t dense_slot_count = 0;
  // A filter, as one byte per slot (nonzero: the slot may be returned), or null for none. Every
  // route honours it, so a filtered search still recalls its candidates among allowed slots only
  // (filtering after recall would return fewer than k hits whenever the routes' best are refused).
  const uint8_t* allowed = nullptr;
  int threads = 1;

  /// Whether `slot` passes the filter (callers check liveness apart).
  bool Allows(uint32_t slot) const { return allowed == nullptr || allowed[slot] != 0; }
};

struct SearchHit {
  uint32_t slot;
  double score, dense, sparse, colbert;  // colbert is 0 when the index stores none
};

class HybridIndex {
 public:
  /// Throws CoreError(ERR_INPUT) for a non-positive dim or vocabulary size.
  explicit HybridIndex(const IndexConfig& config);

  const IndexConfig& config() const { return config_; }
  int64_t slots() const { return static_cast<int64_t>(live_.size()); }
  int64_t live() const { return live_count_; }
  bool is_live(uint32_t slot) const { return slot < live_.size() && live_[slot]; }

  /// Appends a document: `dense` has dim floats; sparse ids ascending, unique, < vocab_size;
  /// `colbert_rows` rows of dim floats (required iff the index stores ColBERT vectors). Inputs
  /// are validated by the caller (the binding checks what guards memory). Returns its slot.
  uint32_t Add(const float* dense, const uint32_t* ids, const float* weights, int64_t nnz, const float* colbert,
               int64_t colbert_rows);

  /// Marks a slot removed (its postings are skipped; storage is reclaimed by Compact).
  void Remove(uint32_t slot);

  /// Drops removed slots; returns the old slot of each new slot (for the caller's id map).
  std::vector<uint32_t> Compact();

  /// The stored arrays of a compacted index (no removed slots), for persistence.
  struct State {
    std::vector<float> dense;
    std::vector<uint32_t> sparse_offsets, sparse_ids;
    std::vector<float> sparse_weights;
    std::vector<uint32_t> colbert_offsets;
    std::vector<float> colbert_f32;
    std::vector<uint16_t> colbert_bf16;
    std::vector<int8_t> colbert_i8;
    std::vector<float> colbert_scales;
  };
  /// Requires live() == slots() (compact first).
  State Export() const;
  /// Replaces the contents of an empty index; checks every size, offset and id (the data comes
  /// from a file) and throws CoreError(ERR_MODEL_FILES) describing the first inconsistency.
  void Import(State state);

  /// Bytes of ColBERT storage per live document on average (0 without ColBERT).
  double ColbertBytesPerDocument() const;

  /// Top-k by the fused score, best first (ties by slot). Query vectors as encode() gives them.
  /// `params.allowed`, when set, holds slots() bytes (the caller checks its length).
  std::vector<SearchHit> Search(const float* q_dense, const uint32_t* q_ids, const float* q_weights, int64_t q_nnz,
                                const float* q_colbert, int64_t q_rows, const SearchParams& params) const;

 private:
  struct Posting {
    uint32_t slot;
    float weight;
  };
  std::vector<uint32_t> DenseCandidates(const float* q, int64_t count, const SearchParams& params) const;
  std::vector<uint32_t> SparseCandidates(const uint32_t* ids, const float* w, int64_t nnz, int64_t count,
                                         const SearchParams& params) const;
  MultiVectorSet ColbertSet() const;

  IndexConfig config_;
  std::vector<uint8_t> live_;
  int64_t live_count_ = 0;
  std::vector<float> dense_;                 // slots x dim
  std::vector<uint32_t> sparse_offsets_{0};  // slots + 1
  std::vector<uint32_t> sparse_ids_;
  std::vector<float> sparse_weights_;
  std::vector<std::vector<Posting>> postings_;  // by token id
  std::vector<uint32_t> colbert_offsets_{0};    // slots + 1, in rows
  std::vector<float> colbert_f32_;
  std::vector<uint16_t> colbert_bf16_;
  std::vector<int8_t> colbert_i8_;
  std::vector<float> colbert_scales_;
};

}  // namespace m3
