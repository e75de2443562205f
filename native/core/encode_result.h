// The outputs of an encode in the caller's order, laid out as the JS API returns them, and the
// writer the heads fill them through, text by text, from any batch and any worker thread.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/encode_request.h"

namespace m3 {

/// Outputs in the caller's order, laid out as the JS API returns them.
struct EncodeResult {
  int64_t count = 0, dim = 0;
  std::vector<float> dense;                 // count * dim
  std::vector<uint32_t> sparse_offsets;     // count + 1
  std::vector<uint32_t> sparse_ids;         // ascending, unique per row
  std::vector<float> sparse_weights;
  std::vector<uint32_t> colbert_offsets;    // count + 1, in vectors
  std::vector<float> colbert;               // vectors * dim
  std::vector<float> hidden;                // tokens * hidden: text i's rows start at request offsets[i]
  // Where the time went (wall clock, this request only).
  double session_ms = 0;  // ONNX Runtime runs
  double heads_ms = 0;    // pooling and the native heads
  int64_t padded_tokens = 0, batches = 0;
};

/// Per-thread scratch for turning token weights into lexical weights.
using LexicalScratch = std::vector<std::pair<uint32_t, float>>;

/// Holds a request's result while its batches run. Each text's rows are written once, by one
/// thread; different texts may be written concurrently.
class ResultWriter {
 public:
  /// Sizes the requested outputs for `request` (vectors of `dim`, hidden rows of `hidden`).
  ResultWriter(const EncodeRequest& request, int64_t dim, int64_t hidden);

  const EncodeRequest& request() const { return request_; }
  int64_t dim() const { return result_.dim; }
  /// Where text `text`'s dense vector (dim floats), ColBERT rows ((length - 1) x dim) and hidden
  /// rows (length x hidden) go.
  float* dense_row(uint32_t text) { return result_.dense.data() + text * result_.dim; }
  float* colbert_rows(uint32_t text) { return result_.colbert.data() + static_cast<size_t>(result_.colbert_offsets[text]) * result_.dim; }
  float* hidden_rows(uint32_t text) { return result_.hidden.data() + static_cast<size_t>(request_.offsets[text]) * hidden_; }
  /// Text `text`'s lexical weights from its per-token weights (one per token, <s> and </s>
  /// included): the largest positive weight per token id (docs/semantics.md). A NaN or Inf token
  /// weight is remembered for Finish, since the ReLU would hide it.
  void SetSparse(uint32_t text, const float* token_weights, LexicalScratch* scratch);

  /// Time and work counters.
  EncodeResult& stats() { return result_; }

  /// The result: the lexical weights concatenated in text order. Throws CoreError(ERR_MODEL_FILES)
  /// when an output holds NaN or Inf, naming the text and `graph_file`.
  EncodeResult Finish(const std::string& graph_file);

 private:
  const EncodeRequest& request_;
  int64_t hidden_ = 0;
  EncodeResult result_;
  std::vector<std::vector<uint32_t>> sparse_ids_;
  std::vector<std::vector<float>> sparse_weights_;
  std::vector<uint8_t> sparse_non_finite_;
};

/// Index of the first NaN or Inf of v[0..size), or size.
size_t FirstNonFinite(const float* v, size_t size);

}  // namespace m3
