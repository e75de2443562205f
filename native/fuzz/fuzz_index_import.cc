// Fuzz target: HybridIndex::Import, which takes the arrays of a saved index segment (see
// lib/index_store.ts) after only their checksums and element sizes were verified, so every
// offset, id and value in them is untrusted. An index that imports is then exported (it must
// give back the same arrays), searched, compacted and added to: Import's checks must leave
// nothing that these read out of bounds.
//
// Input layout (small numbers so mutations stay meaningful):
//   byte 0   dim - 1 (low 3 bits: dim 1..8)
//   byte 1   vocabulary size - 1 (1..256)
//   byte 2   ColBERT storage, modulo 4: none, f32, bf16, i8
//   then the nine sections of a segment in lib/index_store.ts's order (dense, sparseOffsets,
//   sparseIds, sparseWeights, colbertOffsets, colbertF32, colbertBf16, colbertI8, colbertScales),
//   each a u16 little-endian byte length and that many bytes (cut short by the input's end),
//   rounded down to whole elements as the segment reader refuses anything else.
// Seeds: native/fuzz/make_corpus.js writes valid and near-valid states for each storage.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "index/hybrid_index.h"

namespace {

class InputReader {
 public:
  InputReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }

  template <typename T>
  std::vector<T> Section() {
    size_t bytes = Byte();
    bytes |= static_cast<size_t>(Byte()) << 8;
    bytes = std::min(bytes, size_ - pos_);
    std::vector<T> out(bytes / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), data_ + pos_, out.size() * sizeof(T));
    pos_ += bytes;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

bool SameState(const m3::HybridIndex::State& a, const m3::HybridIndex::State& b) {
  // Bitwise for the floats: NaNs are refused by Import, and -0 must come back as -0.
  auto same = [](const auto& x, const auto& y) {
    return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof x[0]) == 0);
  };
  return same(a.dense, b.dense) && same(a.sparse_offsets, b.sparse_offsets) && same(a.sparse_ids, b.sparse_ids) &&
         same(a.sparse_weights, b.sparse_weights) && same(a.colbert_offsets, b.colbert_offsets) &&
         same(a.colbert_f32, b.colbert_f32) && same(a.colbert_bf16, b.colbert_bf16) && same(a.colbert_i8, b.colbert_i8) &&
         same(a.colbert_scales, b.colbert_scales);
}

void SearchAndCheck(const m3::HybridIndex& index, const m3::IndexConfig& config, bool exhaustive) {
  const std::vector<float> dense(static_cast<size_t>(config.dim), 0.5f);
  std::vector<uint32_t> ids{0};
  if (config.vocab_size > 1) ids.push_back(static_cast<uint32_t>(config.vocab_size - 1));
  const std::vector<float> weights(ids.size(), 0.25f);
  const int64_t rows = config.colbert ? 2 : 0;
  const std::vector<float> colbert(static_cast<size_t>(rows * config.dim), 0.125f);
  m3::SearchParams params;
  params.k = 4;
  params.dense_candidates = 3;
  params.sparse_candidates = 3;
  params.exhaustive = exhaustive;
  const auto hits = index.Search(dense.data(), ids.data(), weights.data(), static_cast<int64_t>(ids.size()),
                                 rows ? colbert.data() : nullptr, rows, params);
  m3::fuzz::Require(hits.size() <= 4, "Search returned more than k hits");
  for (const m3::SearchHit& hit : hits) m3::fuzz::Require(index.is_live(hit.slot), "Search returned a slot that is not live");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  InputReader in(data, size);
  m3::IndexConfig config;
  config.dim = 1 + (in.Byte() & 7);
  config.vocab_size = 1 + in.Byte();
  const int storage = in.Byte() % 4;
  config.colbert = storage != 0;
  config.colbert_format = storage == 2 ? m3::VectorFormat::kBF16 : storage == 3 ? m3::VectorFormat::kI8 : m3::VectorFormat::kF32;
  m3::HybridIndex::State state;
  state.dense = in.Section<float>();
  state.sparse_offsets = in.Section<uint32_t>();
  state.sparse_ids = in.Section<uint32_t>();
  state.sparse_weights = in.Section<float>();
  state.colbert_offsets = in.Section<uint32_t>();
  state.colbert_f32 = in.Section<float>();
  state.colbert_bf16 = in.Section<uint16_t>();
  state.colbert_i8 = in.Section<int8_t>();
  state.colbert_scales = in.Section<float>();

  return m3::fuzz::RunCase("ERR_MODEL_FILES", [&] {
    m3::HybridIndex index(config);
    index.Import(state);
    const int64_t documents = static_cast<int64_t>(state.sparse_offsets.size()) - 1;
    m3::fuzz::Require(index.slots() == documents && index.live() == documents, "imported document count");
    m3::fuzz::Require(SameState(index.Export(), state), "Export does not give back the imported arrays");
    SearchAndCheck(index, config, false);
    SearchAndCheck(index, config, true);
    index.ColbertBytesPerDocument();

    if (documents > 0) index.Remove(0);
    const std::vector<uint32_t> old_of_new = index.Compact();
    m3::fuzz::Require(static_cast<int64_t>(old_of_new.size()) == std::max<int64_t>(documents - 1, 0),
                      "Compact kept the wrong number of documents");
    const std::vector<float> dense(static_cast<size_t>(config.dim), 1.0f);
    const uint32_t id = static_cast<uint32_t>(config.vocab_size - 1);
    const float weight = 0.5f;
    const std::vector<float> colbert(static_cast<size_t>(config.dim), -1.0f);
    index.Add(dense.data(), &id, &weight, 1, config.colbert ? colbert.data() : nullptr, config.colbert ? 1 : 0);
    SearchAndCheck(index, config, false);
    const m3::HybridIndex::State again = index.Export();
    m3::fuzz::Require(again.sparse_offsets.size() == old_of_new.size() + 2, "Export after Add");
  });
}
