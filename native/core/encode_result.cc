#include "core/encode_result.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "core/pooling.h"

namespace m3 {

// Exponent bits all set means NaN or Inf; the integer test over blocks vectorizes.
size_t FirstNonFinite(const float* v, size_t size) {
  constexpr size_t kBlock = 4096;
  for (size_t start = 0; start < size; start += kBlock) {
    const size_t end = std::min(size, start + kBlock);
    uint32_t any = 0;
    for (size_t i = start; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &v[i], sizeof(bits));
      any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (any) {
      for (size_t i = start; i < end; ++i)
        if (!std::isfinite(v[i])) return i;
    }
  }
  return size;
}

namespace {

size_t FirstNonFiniteIn(const std::vector<float>& v) { return FirstNonFinite(v.data(), v.size()); }

/// The text whose rows hold row `row`, given the texts' row offsets.
size_t TextOfRow(const std::vector<uint32_t>& offsets, size_t row) {
  return static_cast<size_t>(std::upper_bound(offsets.begin(), offsets.end(), static_cast<uint32_t>(row)) - offsets.begin()) - 1;
}

}  // namespace

ResultWriter::ResultWriter(const EncodeRequest& request, int64_t dim, int64_t hidden) : request_(request), hidden_(hidden) {
  const size_t count = request.count();
  const OutputSet& want = request.outputs;
  result_.count = static_cast<int64_t>(count);
  result_.dim = dim;
  if (want.dense()) result_.dense.assign(count * dim, 0.0f);
  if (want.colbert()) {
    result_.colbert_offsets.assign(count + 1, 0);
    for (size_t i = 0; i < count; ++i)
      result_.colbert_offsets[i + 1] = result_.colbert_offsets[i] + static_cast<uint32_t>(request.length(i) - 1);
    result_.colbert.assign(static_cast<size_t>(result_.colbert_offsets[count]) * dim, 0.0f);
  }
  if (want.hidden()) result_.hidden.assign(static_cast<size_t>(request.offsets[count]) * hidden, 0.0f);
  if (want.sparse()) {
    sparse_ids_.resize(count);
    sparse_weights_.resize(count);
    sparse_non_finite_.assign(count, 0);
  }
}

void ResultWriter::SetSparse(uint32_t text, const float* token_weights, LexicalScratch* scratch) {
  const int64_t n = request_.length(text);
  sparse_non_finite_[text] = FirstNonFinite(token_weights, static_cast<size_t>(n)) < static_cast<size_t>(n);
  AggregateLexicalWeights(request_.text_ids(text), token_weights, n, 1, &sparse_ids_[text], &sparse_weights_[text], scratch);
}

EncodeResult ResultWriter::Finish(const std::string& graph_file) {
  const size_t count = request_.count();
  if (request_.outputs.sparse()) {
    result_.sparse_offsets.assign(count + 1, 0);
    for (size_t i = 0; i < count; ++i)
      result_.sparse_offsets[i + 1] = result_.sparse_offsets[i] + static_cast<uint32_t>(sparse_ids_[i].size());
    result_.sparse_ids.reserve(result_.sparse_offsets[count]);
    result_.sparse_weights.reserve(result_.sparse_offsets[count]);
    for (size_t i = 0; i < count; ++i) {
      result_.sparse_ids.insert(result_.sparse_ids.end(), sparse_ids_[i].begin(), sparse_ids_[i].end());
      result_.sparse_weights.insert(result_.sparse_weights.end(), sparse_weights_[i].begin(), sparse_weights_[i].end());
    }
  }
  // The heads' weights were checked at load, so a NaN or Inf here comes from the graph: weights
  // that hold one, or that overflow fp32 on this text. Either way the vectors are meaningless,
  // and stored in an index they would poison every search.
  auto fail = [&](const char* what, size_t text) {
    throw CoreError("ERR_MODEL_FILES", std::string("The model produced a non-finite value (NaN or Inf) in the ") + what +
                                           " output of text " + std::to_string(text) + ": the weights in '" + graph_file +
                                           "' (or its external data) hold NaN or Inf, or overflow float32. The model files are "
                                           "corrupted or not a trained BGE-M3; download them again.");
  };
  const size_t dim = static_cast<size_t>(result_.dim);
  size_t at = FirstNonFiniteIn(result_.dense);
  if (at < result_.dense.size()) fail("dense", at / dim);
  const auto bad_sparse = std::find(sparse_non_finite_.begin(), sparse_non_finite_.end(), 1);
  if (bad_sparse != sparse_non_finite_.end()) fail("sparse", static_cast<size_t>(bad_sparse - sparse_non_finite_.begin()));
  at = FirstNonFiniteIn(result_.colbert);
  if (at < result_.colbert.size()) fail("colbert", TextOfRow(result_.colbert_offsets, at / dim));
  at = FirstNonFiniteIn(result_.hidden);
  if (at < result_.hidden.size()) fail("last_hidden_state", TextOfRow(request_.offsets, at / static_cast<size_t>(hidden_)));
  return std::move(result_);
}

}  // namespace m3
