// One ONNX Runtime session over a BGE-M3 graph, and what its outputs mean.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <onnxruntime_cxx_api.h>

#include "core/model_files.h"
#include "core/providers.h"

namespace m3 {

/// The encoder's arithmetic: fp32; bf16 dense layers (on a CPU with AVX-512 BF16) for the JS
/// `precision: 'bf16'`; or the whole graph converted to fp16 (graph/fp16_rewrite.h) for
/// `precision: 'fp16'`, the GPU's path.
enum class Precision { kFp32, kBf16, kFp16 };

/// The JS names of Precision and of ONNX Runtime's graph optimization levels (`precision`,
/// `graphOptimization`); false for another name.
bool ParsePrecision(const std::string& name, Precision* out);
bool ParseGraphOptimization(const std::string& name, GraphOptimizationLevel* out);

/// Session settings (the JS `load` options).
struct SessionSettings {
  int intra_op_threads = 0;                 // 0: ONNX Runtime's default (one per physical core)
  int inter_op_threads = 1;
  GraphOptimizationLevel graph_optimization = ORT_ENABLE_ALL;
  bool memory_arena = true;
  bool allow_spinning = false;              // ONNX Runtime intra-op threads spin-wait between runs
  ProviderSpec provider;                    // where the graph runs (the CPU by default)
  bool fused_attention = true;              // cpu, AVX2 / AVX-512: attention blocks as one fused node
  Precision precision = Precision::kFp32;
  std::string optimized_graph_path;         // where ONNX Runtime writes the graph it optimized (empty: nowhere)
};

/// Which outputs the graph gives (docs/semantics.md, "Model files as users find them").
enum class GraphKind {
  kHiddenState,  // last_hidden_state; heads applied natively (BAAI/bge-m3 snapshot)
  kHeadsBaked,   // dense/sparse/colbert outputs computed in the graph
};

class EncoderSession {
 public:
  /// Opens the graph. Throws CoreError: ERR_MODEL_FILES (unreadable/invalid graph, missing
  /// external data), ERR_MODEL_LAYOUT (unknown inputs/outputs), ERR_DEVICE (CUDA unavailable).
  EncoderSession(const std::string& onnx_path, const SessionSettings& settings);

  GraphKind kind() const { return kind_; }
  /// Output names by role; empty when the graph lacks that output.
  const std::string& hidden_output() const { return hidden_; }
  const std::string& dense_output() const { return dense_; }
  const std::string& sparse_output() const { return sparse_; }
  const std::string& colbert_output() const { return colbert_; }
  const std::vector<std::string>& output_names() const { return outputs_; }

  /// Runs one padded batch: ids and mask are [batch, len] int64 (narrowed for a graph whose inputs
  /// are int32). Returns the named outputs in
  /// order, through an I/O binding: in host memory, or with `on_device` (a CUDA session) in the
  /// device's memory, where ONNX Runtime computed them. Ort::Exception propagates (the caller maps
  /// it, knowing whether it cancelled).
  std::vector<Ort::Value> Run(const int64_t* ids, const int64_t* mask, int64_t batch, int64_t len,
                              const std::vector<const char*>& outputs, Ort::RunOptions& options, bool on_device = false);

  /// Attention blocks running as the fused kernel (0: the graph's own attention), and why not
  /// when they were looked for but none run fused.
  int fused_attention_blocks() const { return fused_blocks_; }
  const std::string& attention_note() const { return attention_note_; }

  /// Dense layers running in bf16 (precision 'bf16'; 0 in fp32, and then the fused attention is
  /// fp32 too), and why none do when bf16 was asked for.
  int bf16_layers() const { return bf16_layers_; }
  const std::string& precision_note() const { return precision_note_; }

  /// What the fp16 conversion did (precision 'fp16'; tensors is 0 when the graph runs in fp32).
  struct Fp16Facts {
    int64_t tensors = 0, clamped = 0;
    int layer_norms = 0, fp32_nodes = 0, casts = 0;
  };
  const Fp16Facts& fp16() const { return fp16_; }
  /// "fp32", "bf16" or "fp16": what runs.
  const char* precision_name() const { return bf16_layers_ > 0 ? "bf16" : fp16_.tensors > 0 ? "fp16" : "fp32"; }

  /// Whether ONNX Runtime's CPU arena is on (memoryArena), so that it can be shrunk.
  bool cpu_arena() const { return cpu_arena_; }

  /// The execution provider the session runs on, and its device.
  const ProviderSpec& provider() const { return provider_; }
  /// Whether outputs can stay in CUDA device memory (Run with on_device).
  bool cuda() const { return provider_.get().cuda(); }
  int device_id() const { return provider_.device_id; }

 private:
  /// Opens the graph rewritten for the CPU kernels: attention blocks fused (when asked, and the
  /// CPU runs the AVX2 or AVX-512 kernels) and dense layers in bf16 (when asked, and the CPU has
  /// AVX-512 BF16). Leaves session_ empty when nothing was rewritten, saying why in the notes.
  void OpenRewritten(const std::string& onnx_path, const SessionSettings& settings, const Ort::SessionOptions& options);
  /// One try: the graph with the chosen rewrites, opened into session_; otherwise the notes say
  /// why (nothing matched, or ONNX Runtime refused the result, with or without bf16 layers).
  enum class Rewritten { kOpened, kNothing, kRefused, kRefusedBf16 };
  Rewritten TryOpenRewritten(const std::string& onnx_path, bool fuse, bool bf16, const Ort::SessionOptions& options);
  /// Opens the graph converted to fp16 into session_; otherwise leaves it empty and the note says why.
  void OpenFp16(const std::string& onnx_path, const Ort::SessionOptions& options, bool host);
  /// Opens a rewritten copy of onnx_path from memory (external data found next to the file).
  void OpenFromMemory(const std::string& onnx_path, const std::string& model, const Ort::SessionOptions& options);

  Ort::Session session_{nullptr};
  Ort::MemoryInfo cpu_memory_;
  Ort::MemoryInfo device_memory_{nullptr};  // where device-bound outputs go (null: host only)
  ProviderSpec provider_;
  bool cpu_arena_ = true;
  GraphKind kind_ = GraphKind::kHiddenState;
  std::vector<std::string> inputs_, outputs_;
  std::vector<bool> input_int32_;  // per input: the graph takes int32 (else int64)
  std::string hidden_, dense_, sparse_, colbert_;
  int fused_blocks_ = 0;
  std::string attention_note_;
  int bf16_layers_ = 0;
  Fp16Facts fp16_;
  std::string precision_note_;
};

}  // namespace m3
