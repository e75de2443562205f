// A loaded BGE-M3 model: session + heads, and the batched encode that produces the three outputs
// in the caller's order (docs/semantics.md).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/cancel_token.h"
#include "core/encoder_session.h"
#include "core/m3_heads.h"
#include "core/model_files.h"
#include "kernels/cuda/heads_cuda.h"

namespace m3 {

/// What `Encoder::Load` needs besides the session settings.
struct LoadSettings {
  SessionSettings session;
  std::string onnx_file;   // optional, relative to the model directory
  int64_t vocab_size = 0;  // the tokenizer's id count; checked against the embedding table
};

/// Tokenized texts and the batch plan (made by the TypeScript layer).
struct EncodeRequest {
  std::vector<int32_t> ids;        // all texts' token ids, <s> ... </s> each
  std::vector<uint32_t> offsets;   // count + 1; text i is ids[offsets[i], offsets[i+1])
  std::vector<uint32_t> order;     // text indices in processing order
  std::vector<uint32_t> batch_ends;  // exclusive ends into `order`, one per batch
  bool dense = true, sparse = true, colbert = false;
  bool hidden = false;  // also return last_hidden_state rows (BAAI layout only; fine-tuning the heads)
};

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

class Encoder {
 public:
  /// Finds the files, opens the session, loads the heads (BAAI layout) and runs a three-token
  /// probe that checks the output shapes and that the tokenizer's largest id fits the model's
  /// embedding table. Throws CoreError.
  static std::unique_ptr<Encoder> Load(const std::string& dir, const LoadSettings& settings);

  /// Encodes a request. Thread-safe (ONNX Runtime sessions run concurrently). Throws
  /// CoreError(ERR_ABORTED) when `cancel` fires, ERR_INPUT for a malformed request.
  EncodeResult Encode(const EncodeRequest& request, CancelToken* cancel) const;

  /// Gives memory that a burst of large batches left behind back to the system: ONNX Runtime's
  /// CPU arena keeps every region it grew to (a short run with arena shrinkage frees the unused
  /// ones) and the C allocator keeps freed pages of every thread's heap (malloc_trim). Safe
  /// beside running encodes; costs about one three-token run.
  void ReleaseMemory() const;

  GraphKind kind() const { return session_->kind(); }
  /// Width of dense and ColBERT vectors.
  int64_t dim() const { return dim_; }
  /// The encoder's hidden size (BAAI layout) or the dense width (baked layout).
  int64_t hidden() const { return hidden_; }
  bool has_dense() const { return has_dense_; }
  bool has_sparse() const { return has_sparse_; }
  bool has_colbert() const { return has_colbert_; }
  const ModelFiles& files() const { return files_; }
  const EncoderSession& session() const { return *session_; }
  /// Where the BAAI layout's heads run: "cuda" (a CUDA session whose outputs stay on the GPU)
  /// or "cpu"; and, for a CUDA session whose heads stay on the CPU, why.
  const char* heads_device() const { return gpu_heads_ ? "cuda" : "cpu"; }
  const std::string& gpu_heads_why() const { return gpu_heads_why_; }

 private:
  Encoder() = default;
  void Probe(int64_t vocab_size);
  /// The GPU heads on a device-resident probe output against the CPU heads on the same output
  /// copied to the host; throws (CoreError or Ort::Exception) when either path fails or they differ.
  void CheckGpuHeads() const;
  std::vector<const char*> OutputsFor(bool dense, bool sparse, bool colbert) const;
  // Throws ERR_MODEL_FILES when an output holds NaN or Inf (sparse_text: the first text whose
  // token weights did, or -1), naming the text and the graph file.
  void CheckFinite(const EncodeRequest& request, const EncodeResult& result, int64_t sparse_text) const;
  void CheckBatchShapes(const std::vector<Ort::Value>& out, const std::vector<const char*>& names,
                        int64_t batch, int64_t len) const;

  ModelFiles files_;
  std::unique_ptr<EncoderSession> session_;
  std::unique_ptr<M3Heads> heads_;
  std::unique_ptr<cuda::DeviceHeads> gpu_heads_;  // CUDA sessions (BAAI layout), when the kernels run here
  std::string gpu_heads_why_;
  int64_t dim_ = 0, hidden_ = 0;
  bool has_dense_ = false, has_sparse_ = false, has_colbert_ = false;
  int head_threads_ = 1;  // threads for the native heads: the session's intra-op thread count
};

}  // namespace m3
