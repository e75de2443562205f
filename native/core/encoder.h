// A loaded BGE-M3 model: session + heads, and the batched encode that produces the three outputs
// in the caller's order (docs/semantics.md). An encode runs three stages per batch: pack (the
// texts padded into [batch, len] inputs, core/encode_request.h), run (the session), and heads
// (core/heads.h: baked into the graph, on the CPU or on the GPU), which write into the result.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/cancel_token.h"
#include "core/encode_request.h"
#include "core/encode_result.h"
#include "core/encoder_session.h"
#include "core/heads.h"
#include "core/model_files.h"

namespace m3 {

class GpuHeads;

/// What `Encoder::Load` needs besides the session settings.
struct LoadSettings {
  SessionSettings session;
  std::string onnx_file;   // optional, relative to the model directory
  int64_t vocab_size = 0;  // the tokenizer's id count; checked against the embedding table
};

class Encoder {
 public:
  /// Finds the files, opens the session, loads the heads (BAAI layout) and runs a three-token
  /// probe that checks the output shapes and that the tokenizer's largest id fits the model's
  /// embedding table. Throws CoreError.
  static std::unique_ptr<Encoder> Load(const std::string& dir, const LoadSettings& settings);

  ~Encoder();

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
  const char* heads_device() const { return heads_->device(); }
  const std::string& gpu_heads_why() const { return gpu_heads_why_; }

 private:
  Encoder() = default;
  void Probe(int64_t vocab_size);
  /// Loads the BAAI layout's heads (CPU, and on a CUDA session the GPU ones when they can run).
  void LoadHeads(int head_threads);
  /// Throws ERR_INPUT / ERR_MODEL_LAYOUT for outputs this model does not have.
  void CheckOutputs(const EncodeRequest& request) const;
  /// The heads for a request: hidden states are read on the host, so by the CPU heads.
  const Heads& HeadsFor(const EncodeRequest& request) const;
  /// The run stage: one padded batch through the session, mapped errors, checked shapes.
  std::vector<Ort::Value> RunBatch(const PaddedBatch& batch, const std::vector<const char*>& names, bool device_outputs,
                                   CancelToken* cancel, EncodeResult* stats) const;
  void CheckBatchShapes(const std::vector<Ort::Value>& out, const std::vector<const char*>& names,
                        int64_t batch, int64_t len) const;

  ModelFiles files_;
  std::unique_ptr<EncoderSession> session_;
  std::unique_ptr<GraphHeads> graph_heads_;  // heads baked into the graph
  std::unique_ptr<CpuHeads> cpu_heads_;      // BAAI layout
  std::unique_ptr<GpuHeads> gpu_heads_;      // BAAI layout on a CUDA session, where the kernels run here
  const Heads* heads_ = nullptr;             // the one encodes use
  std::string gpu_heads_why_;
  int64_t dim_ = 0, hidden_ = 0;
  bool has_dense_ = false, has_sparse_ = false, has_colbert_ = false;
};

}  // namespace m3
