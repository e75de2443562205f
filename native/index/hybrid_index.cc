#include "index/hybrid_index.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "base/error.h"
#include "kernels/dense_dot.h"
#include "kernels/quantize.h"
#include "kernels/sparse_dot.h"

namespace m3 {
namespace {

/// The `count` best slots by score (ties by slot), among slots with a finite score.
std::vector<uint32_t> TopSlots(const std::vector<float>& scores, const std::vector<uint32_t>& slots, int64_t count) {
  std::vector<uint32_t> order;
  order.reserve(slots.size());
  for (size_t i = 0; i < slots.size(); ++i)
    if (std::isfinite(scores[i])) order.push_back(static_cast<uint32_t>(i));
  const auto better = [&](uint32_t a, uint32_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && slots[a] < slots[b]); };
  const size_t take = std::min<size_t>(order.size(), static_cast<size_t>(std::max<int64_t>(count, 0)));
  std::partial_sort(order.begin(), order.begin() + take, order.end(), better);
  std::vector<uint32_t> out(take);
  for (size_t i = 0; i < take; ++i) out[i] = slots[order[i]];
  return out;
}

}  // namespace

HybridIndex::HybridIndex(const IndexConfig& config) : config_(config) {
  if (config.dim <= 0 || config.vocab_size <= 0)
    throw CoreError("ERR_INPUT", "HybridIndex: dim and vocabSize must be positive integers.");
  postings_.resize(static_cast<size_t>(config.vocab_size));
}

uint32_t HybridIndex::Add(const float* dense, const uint32_t* ids, const float* weights, int64_t nnz,
                          const float* colbert, int64_t colbert_rows) {
  const uint32_t slot = static_cast<uint32_t>(live_.size());
  live_.push_back(1);
  ++live_count_;
  dense_.insert(dense_.end(), dense, dense + config_.dim);
  sparse_ids_.insert(sparse_ids_.end(), ids, ids + nnz);
  sparse_weights_.insert(sparse_weights_.end(), weights, weights + nnz);
  sparse_offsets_.push_back(static_cast<uint32_t>(sparse_ids_.size()));
  for (int64_t i = 0; i < nnz; ++i) postings_[ids[i]].push_back({slot, weights[i]});
  const int64_t rows = config_.colbert ? colbert_rows : 0;
  const int64_t values = rows * config_.dim;
  switch (config_.colbert_format) {
    case VectorFormat::kF32:
      colbert_f32_.insert(colbert_f32_.end(), colbert, colbert + values);
      break;
    case VectorFormat::kBF16: {
      const size_t at = colbert_bf16_.size();
      colbert_bf16_.resize(at + values);
      QuantizeBf16(colbert, values, colbert_bf16_.data() + at);
      break;
    }
    case VectorFormat::kI8: {
      const size_t at = colbert_i8_.size(), row_at = colbert_scales_.size();
      colbert_i8_.resize(at + values);
      colbert_scales_.resize(row_at + rows);
      QuantizeI8(colbert, rows, config_.dim, colbert_i8_.data() + at, colbert_scales_.data() + row_at);
      break;
    }
  }
  colbert_offsets_.push_back(colbert_offsets_.back() + static_cast<uint32_t>(rows));
  return slot;
}

void HybridIndex::Remove(uint32_t slot) {
  if (slot >= live_.size() || !live_[slot]) return;
  // Postings of removed slots are skipped at search time and dropped by Compact: erasing them
  // here would cost a scan of every posting list the document touches.
  live_[slot] = 0;
  --live_count_;
}

std::vector<uint32_t> HybridIndex::Compact() {
  HybridIndex fresh(config_);
  std::vector<uint32_t> old_of_new;
  for (uint32_t slot = 0; slot < live_.size(); ++slot) {
    if (!live_[slot]) continue;
    old_of_new.push_back(slot);
    const uint32_t s0 = sparse_offsets_[slot], s1 = sparse_offsets_[slot + 1];
    const int64_t n = colbert_offsets_[slot + 1] - colbert_offsets_[slot];
    // Quantized rows are carried over as they are, not re-quantized.
    fresh.Add(dense_.data() + slot * config_.dim, sparse_ids_.data() + s0, sparse_weights_.data() + s0, s1 - s0,
              config_.colbert_format == VectorFormat::kF32 ? colbert_f32_.data() + static_cast<size_t>(colbert_offsets_[slot]) * config_.dim : nullptr,
              config_.colbert_format == VectorFormat::kF32 ? n : 0);
    if (config_.colbert && config_.colbert_format != VectorFormat::kF32) {
      const size_t from = static_cast<size_t>(colbert_offsets_[slot]) * config_.dim, count = static_cast<size_t>(n * config_.dim);
      if (config_.colbert_format == VectorFormat::kBF16) {
        fresh.colbert_bf16_.insert(fresh.colbert_bf16_.end(), colbert_bf16_.begin() + from, colbert_bf16_.begin() + from + count);
      } else {
        fresh.colbert_i8_.insert(fresh.colbert_i8_.end(), colbert_i8_.begin() + from, colbert_i8_.begin() + from + count);
        fresh.colbert_scales_.insert(fresh.colbert_scales_.end(), colbert_scales_.begin() + colbert_offsets_[slot],
                                     colbert_scales_.begin() + colbert_offsets_[slot + 1]);
      }
      fresh.colbert_offsets_.back() = fresh.colbert_offsets_[fresh.colbert_offsets_.size() - 2] + static_cast<uint32_t>(n);
    }
  }
  *this = std::move(fresh);
  return old_of_new;
}

HybridIndex::State HybridIndex::Export() const {
  if (live_count_ != slots()) throw CoreError("ERR_RUNTIME", "HybridIndex::Export needs a compacted index.");
  return State{dense_, sparse_offsets_, sparse_ids_, sparse_weights_, colbert_offsets_, colbert_f32_,
               colbert_bf16_, colbert_i8_, colbert_scales_};
}

void HybridIndex::Import(State st) {
  auto fail = [](const std::string& what) { throw CoreError("ERR_MODEL_FILES", "index data is inconsistent: " + what); };
  if (!live_.empty()) fail("import into a non-empty index");
  const size_t n = st.sparse_offsets.empty() ? 0 : st.sparse_offsets.size() - 1;
  if (st.sparse_offsets.empty() || st.sparse_offsets[0] != 0) fail("sparse offsets must start at 0");
  if (st.dense.size() != n * static_cast<size_t>(config_.dim)) fail("dense vectors do not match the document count");
  if (st.sparse_offsets[n] != st.sparse_ids.size() || st.sparse_ids.size() != st.sparse_weights.size()) fail("sparse arrays disagree");
  for (size_t i = 0; i < n; ++i) {
    if (st.sparse_offsets[i + 1] < st.sparse_offsets[i]) fail("sparse offsets decrease at document " + std::to_string(i));
    if (st.sparse_offsets[i + 1] > st.sparse_ids.size()) fail("sparse offsets run past the ids at document " + std::to_string(i));
    for (uint32_t j = st.sparse_offsets[i]; j < st.sparse_offsets[i + 1]; ++j) {
      if (!IndexValueOk(st.sparse_weights[j])) fail("a non-finite or out-of-range sparse weight in document " + std::to_string(i));
      if (st.sparse_ids[j] >= config_.vocab_size) fail("token id " + std::to_string(st.sparse_ids[j]) + " beyond the vocabulary");
      if (j > st.sparse_offsets[i] && st.sparse_ids[j] <= st.sparse_ids[j - 1]) fail("sparse ids not ascending in document " + std::to_string(i));
    }
  }
  for (float x : st.dense)
    if (!IndexValueOk(x)) fail("a non-finite or out-of-range dense value");
  if (st.colbert_offsets.size() != n + 1 || st.colbert_offsets[0] != 0) fail("ColBERT offsets do not match the document count");
  for (size_t i = 0; i < n; ++i)
    if (st.colbert_offsets[i + 1] < st.colbert_offsets[i]) fail("ColBERT offsets decrease at document " + std::to_string(i));
  const uint64_t values = static_cast<uint64_t>(st.colbert_offsets[n]) * config_.dim;
  if (!config_.colbert && values != 0) fail("ColBERT rows in an index without ColBERT");
  if (config_.colbert) {
    const uint64_t rows = st.colbert_offsets[n];
    const bool ok = config_.colbert_format == VectorFormat::kF32    ? st.colbert_f32.size() == values
                    : config_.colbert_format == VectorFormat::kBF16 ? st.colbert_bf16.size() == values
                                                                    : st.colbert_i8.size() == values && st.colbert_scales.size() == rows;
    if (!ok) fail("ColBERT data does not match its offsets");
    for (float x : st.colbert_f32)
      if (!IndexValueOk(x)) fail("a non-finite or out-of-range ColBERT value");
    // An int8 row is scale * q with |q| <= 127, its scale the row's peak / 127 (1 for a zero
    // row): the same bound on what it decodes to, with room for the division's rounding.
    const float max_scale = kMaxIndexValue / 127.0f * 1.000001f;
    for (float x : st.colbert_scales)
      if (!(x >= 0.0f && x <= max_scale)) fail("a negative, non-finite or out-of-range int8 ColBERT scale");
    // bf16 keeps float's exponent: magnitude bits above kMaxIndexValue's (2^16 = 0x4780) are out of range.
    for (uint16_t b : st.colbert_bf16)
      if ((b & 0x7fffu) > 0x4780u) fail("a non-finite or out-of-range bf16 ColBERT value");
  }
  dense_ = std::move(st.dense);
  sparse_offsets_ = std::move(st.sparse_offsets);
  sparse_ids_ = std::move(st.sparse_ids);
  sparse_weights_ = std::move(st.sparse_weights);
  colbert_offsets_ = std::move(st.colbert_offsets);
  colbert_f32_ = std::move(st.colbert_f32);
  colbert_bf16_ = std::move(st.colbert_bf16);
  colbert_i8_ = std::move(st.colbert_i8);
  colbert_scales_ = std::move(st.colbert_scales);
  live_.assign(n, 1);
  live_count_ = static_cast<int64_t>(n);
  for (uint32_t slot = 0; slot < n; ++slot)
    for (uint32_t j = sparse_offsets_[slot]; j < sparse_offsets_[slot + 1]; ++j) postings_[sparse_ids_[j]].push_back({slot, sparse_weights_[j]});
}

double HybridIndex::ColbertBytesPerDocument() const {
  if (!config_.colbert || live_.empty()) return 0.0;
  const double bytes = colbert_f32_.size() * 4.0 + colbert_bf16_.size() * 2.0 + colbert_i8_.size() +
                       colbert_scales_.size() * 4.0;
  return bytes / static_cast<double>(live_.size());
}

MultiVectorSet HybridIndex::ColbertSet() const {
  MultiVectorSet set;
  set.format = config_.colbert_format;
  set.dim = config_.dim;
  set.count = static_cast<int64_t>(live_.size());
  set.offsets = colbert_offsets_.data();
  set.data = config_.colbert_format == VectorFormat::kF32 ? static_cast<const void*>(colbert_f32_.data())
             : config_.colbert_format == VectorFormat::kBF16 ? static_cast<const void*>(colbert_bf16_.data())
                                                              : static_cast<const void*>(colbert_i8_.data());
  set.scales = colbert_scales_.data();
  return set;
}

std::vector<uint32_t> HybridIndex::DenseCandidates(const float* q, int64_t count, const SearchParams& params) const {
  std::vector<float> scores(live_.size());
  DenseScores(q, dense_.data(), static_cast<int64_t>(live_.size()), config_.dim, scores.data());
  std::vector<uint32_t> slots(live_.size());
  std::iota(slots.begin(), slots.end(), 0u);
  for (size_t i = 0; i < live_.size(); ++i)
    if (!live_[i] || !params.Allows(static_cast<uint32_t>(i))) scores[i] = -INFINITY;
  return TopSlots(scores, slots, count);
}

std::vector<uint32_t> HybridIndex::SparseCandidates(const uint32_t* ids, const float* w, int64_t nnz, int64_t count,
                                                    const SearchParams& params) const {
  // Term at a time into a dense accumulator; only touched slots are candidates.
  std::vector<float> acc(live_.size(), 0.0f);
  std::vector<uint8_t> touched(live_.size(), 0);
  std::vector<uint32_t> slots;
  for (int64_t t = 0; t < nnz; ++t) {
    if (ids[t] >= postings_.size()) continue;
    for (const Posting& p : postings_[ids[t]]) {
      if (!live_[p.slot] || !params.Allows(p.slot)) continue;
      acc[p.slot] += w[t] * p.weight;
      if (!touched[p.slot]) {
        touched[p.slot] = 1;
        slots.push_back(p.slot);
      }
    }
  }
  std::vector<float> scores(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) scores[i] = acc[slots[i]];
  return TopSlots(scores, slots, count);
}

std::vector<SearchHit> HybridIndex::Search(const float* q_dense, const uint32_t* q_ids, const float* q_weights,
                                           int64_t q_nnz, const float* q_colbert, int64_t q_rows,
                                           const SearchParams& params) const {
  std::vector<uint32_t> candidates;
  if (params.exhaustive) {
    for (uint32_t slot = 0; slot < live_.size(); ++slot)
      if (live_[slot] && params.Allows(slot)) candidates.push_back(slot);
  } else {
    if (params.dense_route && params.dense_slots) {
      for (int64_t i = 0; i < params.dense_slot_count; ++i)
        if (is_live(params.dense_slots[i]) && params.Allows(params.dense_slots[i])) candidates.push_back(params.dense_slots[i]);
    } else if (params.dense_route) {
      candidates = DenseCandidates(q_dense, params.dense_candidates, params);
    }
    if (params.sparse_route) {
      const auto sparse = SparseCandidates(q_ids, q_weights, q_nnz, params.sparse_candidates, params);
      candidates.insert(candidates.end(), sparse.begin(), sparse.end());
    }
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  }
  std::vector<SearchHit> hits(candidates.size());
  std::vector<float> colbert(candidates.size(), 0.0f);
  const bool use_colbert = config_.colbert && params.w_colbert > 0 && q_rows > 0;
  if (use_colbert && !candidates.empty()) {
    MaxSimSubset(q_colbert, q_rows, ColbertSet(), candidates.data(), static_cast<int64_t>(candidates.size()),
                 colbert.data(), params.threads);
  }
  // The ColBERT term counts only when it is computed (the caller refuses a ColBERT weight with
  // a query that has no ColBERT vectors); otherwise scores are (w_d * d + w_s * s) / (w_d + w_s).
  const double total = params.w_dense + params.w_sparse + (use_colbert ? params.w_colbert : 0.0);
  for (size_t i = 0; i < candidates.size(); ++i) {
    const uint32_t slot = candidates[i];
    SearchHit& h = hits[i];
    h.slot = slot;
    // Exact component scores, computed like the scoring functions of the JS API.
    h.dense = DenseDotExact(q_dense, dense_.data() + static_cast<size_t>(slot) * config_.dim, config_.dim);
    const uint32_t s0 = sparse_offsets_[slot], s1 = sparse_offsets_[slot + 1];
    h.sparse = LexicalScorePair(q_ids, q_weights, q_nnz, sparse_ids_.data() + s0, sparse_weights_.data() + s0, s1 - s0);
    h.colbert = colbert[i];
    h.score = total > 0 ? (params.w_dense * h.dense + params.w_sparse * h.sparse + (use_colbert ? params.w_colbert * h.colbert : 0.0)) / total : 0.0;
  }
  const size_t take = std::min<size_t>(hits.size(), static_cast<size_t>(std::max<int64_t>(params.k, 0)));
  std::partial_sort(hits.begin(), hits.begin() + take, hits.end(), [](const SearchHit& a, const SearchHit& b) {
    return a.score > b.score || (a.score == b.score && a.slot < b.slot);
  });
  hits.resize(take);
  return hits;
}

}  // namespace m3
