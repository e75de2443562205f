// BGE-M3's heads on an NVIDIA GPU, applied where the encoder's last_hidden_state already is (the
// ONNX Runtime CUDA provider's output, bound to device memory), so that only the results cross to
// the host: the dense vector (the normalised CLS row), the sparse head's token weights
// (ReLU(h . w + b)) and the ColBERT rows (normalise(h W^T + b) for every token after CLS). Same
// definitions as the CPU heads (core/m3_heads.h, core/pooling.h); fp32 arithmetic throughout
// (fp16 and bf16 hidden states, from such exports, are widened exactly as they are read).
//
// Plain C++ interface: built from heads_cuda.cu with the CUDA kernels, from the stub otherwise,
// where Upload reports ERR_DEVICE.
#pragma once
#include <cstdint>
#include <memory>

namespace m3 {
namespace cuda {

/// The element type of the hidden states given to the heads.
enum class HiddenFormat { kF32, kF16, kBF16 };

class DeviceHeads {
 public:
  /// Uploads the ColBERT head (weight [dim x hidden] row-major, bias [dim]) and the sparse head
  /// (weight [hidden], bias) to `device`. Throws CoreError(ERR_DEVICE) without CUDA or on
  /// allocation failure, ERR_INPUT for non-positive sizes.
  static std::unique_ptr<DeviceHeads> Upload(const float* colbert_weight, const float* colbert_bias, int64_t dim, int64_t hidden,
                                             const float* sparse_weight, float sparse_bias, int device);
  ~DeviceHeads();
  DeviceHeads(const DeviceHeads&) = delete;
  DeviceHeads& operator=(const DeviceHeads&) = delete;

  int64_t hidden() const;
  int64_t dim() const;

  /// Applies the heads to `hidden_states` [batch x len x hidden] (`format`: fp32, fp16 or bf16) in
  /// device memory on this object's device; text b has lengths[b] tokens (1..len, CLS first).
  /// Each output is optional
  /// (null: not computed) and is host memory:
  ///   dense   [batch x hidden]: CLS rows, L2-normalised;
  ///   sparse  [batch x len]: token weights (entries past a text's length are 0);
  ///   colbert [sum(lengths[b] - 1) x dim]: the texts' ColBERT rows, packed in text order.
  /// Synchronous. Thread-safe (one batch at a time). Throws CoreError(ERR_DEVICE) on CUDA errors.
  void Run(const void* hidden_states, HiddenFormat format, int64_t batch, int64_t len, const int64_t* lengths, float* dense,
           float* sparse, float* colbert) const;

  /// Run() on host hidden states (copied to the device first): for tests and benchmarks.
  void RunHost(const void* hidden_states, HiddenFormat format, int64_t batch, int64_t len, const int64_t* lengths, float* dense,
               float* sparse, float* colbert) const;

  struct Impl;

 private:
  explicit DeviceHeads(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace m3
