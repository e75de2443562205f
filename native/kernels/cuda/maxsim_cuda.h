// MaxSim on an NVIDIA GPU (CUDA): documents uploaded once and kept resident on the device in
// fp32 or bf16, and batches of queries scored against all of them in one launch per batch. The
// query x document similarity matrix is never materialised in global memory: bf16 documents go
// through a tensor-core GEMM whose epilogue keeps only each query row's maximum per document;
// fp32 documents through a CUDA-core kernel that stages each document's rows in shared memory.
//
// Plain C++ interface (no CUDA headers): built from maxsim_cuda.cu when CMake finds a CUDA
// toolkit, from maxsim_cuda_stub.cc otherwise, where every entry point reports ERR_DEVICE.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_device.h"
#include "kernels/maxsim.h"

namespace m3 {
namespace cuda {

/// Which bf16 kernel scores a batch. kTiled: the document rows x query rows product as a
/// pipelined tensor-core GEMM with the MaxSim reduction fused into its epilogue (the default);
/// kStaged: one block per document staging its rows in shared memory (the first design, kept for
/// comparison). fp32 documents always use the CUDA-core kernel.
enum class Kernel { kAuto, kStaged, kTiled };

/// The tiled kernels' configurations ("mma BMxBNxBK S stages", "wgmma ..."), in the order
/// MaxSimBatch's tile_config numbers them (benchmarks and tests); empty without CUDA.
std::vector<std::string> TiledConfigNames();

/// A document set resident on one GPU, laid out like MultiVectorSet (rows padded to a multiple
/// of 16 elements with zeros, which changes no dot product).
class DeviceMultiVectors {
 public:
  /// Uploads `docs` (fp32 or bf16 on the host) to `device`, stored as `format` (kF32 or kBF16;
  /// fp32 rows are rounded to bf16 as QuantizeBf16 does). Throws CoreError: ERR_DEVICE when
  /// CUDA is unavailable or the device is out of memory, ERR_INPUT for int8 documents, a
  /// format other than kF32 / kBF16, or a non-finite value (naming the document and row).
  static std::unique_ptr<DeviceMultiVectors> Upload(const MultiVectorSet& docs, VectorFormat format, int device);
  ~DeviceMultiVectors();
  DeviceMultiVectors(const DeviceMultiVectors&) = delete;
  DeviceMultiVectors& operator=(const DeviceMultiVectors&) = delete;

  int64_t count() const;
  int64_t dim() const;
  int64_t rows() const;
  VectorFormat format() const;
  int device() const;
  /// Whether bf16 batches of more than 64 query rows run the Hopper (wgmma) kernel here.
  bool uses_wgmma() const;
  /// Whether the tensor-map (TMA) configuration can run here (uses_wgmma() and a tensor map over
  /// the documents); where it cannot, naming it runs the default.
  bool uses_tma() const;
  /// Bytes held on the device.
  int64_t device_bytes() const;

  /// scores [num_queries x count], row-major, as MaxSimBatch computes them on the CPU (bf16
  /// documents: the query rounded to bf16 too, as the CPU kernels do). Thread-safe.
  /// Throws CoreError(ERR_INPUT) for a non-finite query value, ERR_DEVICE for CUDA failures.
  /// tile_config >= 0 runs that tiled configuration (TiledConfigNames; a wgmma one only where
  /// uses_wgmma(), else the default) instead of the default, for tests and benchmarks.
  void MaxSimBatch(const float* queries, const uint32_t* query_offsets, int64_t num_queries, float* scores,
                   Kernel kernel = Kernel::kAuto, int tile_config = -1) const;

  /// Seconds the last MaxSimBatch spent in its kernels (CUDA events), for benchmarks.
  double last_kernel_seconds() const;

  struct Impl;

 private:
  explicit DeviceMultiVectors(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace m3
