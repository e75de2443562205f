// Execution providers: where ONNX Runtime runs the graph. The binding parses the JS `device`,
// `deviceId` and `gpuMemLimit` options once into a ProviderSpec; the session asks the spec's
// provider for its part. Adding one (ROCm, CoreML, TensorRT) is a provider_<name>.cc that
// implements ExecutionProvider, plus its line in the table of providers.cc.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <onnxruntime_cxx_api.h>

namespace m3 {

struct ProviderSpec;

class ExecutionProvider {
 public:
  virtual ~ExecutionProvider() = default;
  /// The name JavaScript gives it (the `device` load option).
  virtual const char* name() const = 0;
  /// Whether the graph runs on this host's CPU, so that the CPU graph rewrites (fused attention,
  /// bf16 dense layers) apply.
  virtual bool host() const = 0;
  /// Whether outputs can stay in CUDA device memory for the CUDA kernels (the GPU heads).
  virtual bool cuda() const { return false; }
  /// Adds the provider to a session's options. Throws CoreError(ERR_DEVICE) naming what is
  /// missing and how to get it.
  virtual void Append(Ort::SessionOptions& options, const ProviderSpec& spec) const = 0;
  /// Where outputs kept on the device go; a null MemoryInfo where outputs always reach the host.
  virtual Ort::MemoryInfo DeviceMemory(const ProviderSpec&) const { return Ort::MemoryInfo{nullptr}; }
  /// Makes the spec's device the calling thread's current one (the inputs' copies go there).
  virtual void MakeCurrent(const ProviderSpec&) const {}
  /// Whether an ONNX Runtime error message is the device's failure (memory, driver) rather than
  /// the model files'.
  virtual bool IsDeviceFailure(const std::string&) const { return false; }
  /// "device 0", "CUDA device 1": the device a spec names, for messages.
  virtual std::string DeviceName(const ProviderSpec& spec) const;
};

/// An execution provider and its settings, as the load options give them.
struct ProviderSpec {
  const ExecutionProvider* provider = nullptr;  // null: the CPU
  int device_id = 0;
  int64_t memory_limit = 0;  // bytes the provider's arena may hold; 0: no limit
  bool allow_tf32 = false;   // CUDA: TF32 tensor-core math for fp32 (off: fp32 parity)

  const ExecutionProvider& get() const;
};

const ExecutionProvider& CpuProvider();
const ExecutionProvider& CudaProvider();

/// The registered provider called `name`. Throws CoreError(ERR_INPUT) naming the registered ones.
const ExecutionProvider& FindProvider(const std::string& name);

/// The registered providers' names, in registration order.
std::vector<std::string> ProviderNames();

}  // namespace m3
