// ONNX Runtime's CUDA execution provider: its libraries next to libonnxruntime, its options,
// device-resident outputs for the GPU heads, and which of its errors are the device's.
#include <sys/stat.h>

#include "base/error.h"
#include "core/ort_env.h"
#include "core/provider_cuda.h"
#include "core/providers.h"
#include "kernels/cuda/cuda_device.h"

namespace m3 {
namespace {

class Cuda final : public ExecutionProvider {
 public:
  const char* name() const override { return "cuda"; }
  bool host() const override { return false; }
  bool cuda() const override { return true; }

  void Append(Ort::SessionOptions& options, const ProviderSpec& spec) const override {
    const auto missing = MissingCudaProviderLibraries();
    if (!missing.empty()) {
      throw CoreError("ERR_DEVICE",
                      "device 'cuda' needs ONNX Runtime's CUDA provider, but " + JoinNames(missing) + " is missing from " +
                          OrtLibraryDir() +
                          " (the folder of the loaded libonnxruntime). Install it with "
                          "ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node (its install script downloads it), or "
                          "rebuild with ORT_ROOT pointing at an ONNX Runtime GPU release; CUDA 12 and cuDNN 9 must be "
                          "on the library path.");
    }
    const std::string id = std::to_string(spec.device_id);
    // TF32 off unless asked for: BGE-M3 parity is defined in fp32 (docs/semantics.md). The arena grows by what a
    // run asks for: texts of every length make power-of-two growth hold up to twice the memory used.
    std::vector<std::pair<std::string, std::string>> settings = {
        {"device_id", id}, {"cudnn_conv_algo_search", "DEFAULT"}, {"do_copy_in_default_stream", "1"},
        {"use_tf32", spec.allow_tf32 ? "1" : "0"},
        {"arena_extend_strategy", "kSameAsRequested"}};
    if (spec.memory_limit > 0) settings.emplace_back("gpu_mem_limit", std::to_string(spec.memory_limit));
    const std::string error = AppendCudaProvider(options, settings);
    if (!error.empty()) {
      throw CoreError("ERR_DEVICE", "The CUDA execution provider could not be enabled (device " + id + "): " + error +
                                        ". Check that the GPU driver and the CUDA libraries this ONNX Runtime was built for (CUDA 12 and "
                                        "cuDNN 9 for onnxruntime-node's download, CUDA 13 for the 1.29 release of "
                                        "scripts/fetch-ort-gpu.sh) are installed and on the library path.");
    }
  }

  Ort::MemoryInfo DeviceMemory(const ProviderSpec& spec) const override {
    return Ort::MemoryInfo("Cuda", OrtArenaAllocator, spec.device_id, OrtMemTypeDefault);
  }

  void MakeCurrent(const ProviderSpec& spec) const override { cuda::MakeCurrent(spec.device_id); }

  bool IsDeviceFailure(const std::string& message) const override {
    for (const char* marker : {"CUDA failure", "CUDA error", "CUBLAS failure", "CUDNN failure", "cudaMalloc",
                               "Failed to allocate memory", "out of memory"})
      if (message.find(marker) != std::string::npos) return true;
    return false;
  }

  std::string DeviceName(const ProviderSpec& spec) const override { return "CUDA device " + std::to_string(spec.device_id); }
};

}  // namespace

const ExecutionProvider& CudaProvider() {
  static const Cuda cuda;
  return cuda;
}

std::vector<std::string> CudaProviderLibraries() {
  return {"libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"};
}

std::vector<std::string> MissingCudaProviderLibraries() {
  std::vector<std::string> missing;
  const std::string dir = OrtLibraryDir();
  for (const auto& name : CudaProviderLibraries()) {
    struct stat st {};
    if (stat((dir + "/" + name).c_str(), &st) != 0) missing.push_back(name);
  }
  return missing;
}

namespace {

/// The message of a failed ONNX Runtime call (released), without trailing dots and newlines; "" for success.
std::string TakeMessage(OrtStatus* status) {
  if (!status) return "";
  const OrtApi& api = Ort::GetApi();
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ' || message.back() == '.')) message.pop_back();
  return message.empty() ? "unknown error" : message;
}

#if ORT_API_VERSION >= 22
/// ONNX Runtime 1.22+ loads execution providers as plugin libraries: the CUDA provider's library
/// is registered with the environment once (its error, if any, is kept), then each session
/// appends the CUDA device numbered `device_id` among those the plugin reports, in its order.
std::string AppendCudaPlugin(Ort::SessionOptions& options, const std::vector<std::pair<std::string, std::string>>& settings) {
  const OrtApi& api = Ort::GetApi();
  OrtEnv* env = SharedOrtEnv();
  static const std::string registered = [&] {
    const std::string path = OrtLibraryDir() + "/libonnxruntime_providers_cuda.so";
    const std::string error = TakeMessage(api.RegisterExecutionProviderLibrary(env, "bge-m3-cuda", path.c_str()));
    return error.empty() ? error : "loading the CUDA provider plugin " + path + " failed: " + error;
  }();
  if (!registered.empty()) return registered;
  const OrtEpDevice* const* devices = nullptr;
  size_t count = 0;
  if (std::string error = TakeMessage(api.GetEpDevices(env, &devices, &count)); !error.empty()) return error;
  std::vector<const OrtEpDevice*> cuda;
  for (size_t i = 0; i < count; ++i)
    if (std::string(api.EpDevice_EpName(devices[i])) == "CUDAExecutionProvider") cuda.push_back(devices[i]);
  std::string id = "0";
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : settings) {
    if (k == "device_id") {
      id = v;
    } else {
      keys.push_back(k.c_str());
      values.push_back(v.c_str());
    }
  }
  const size_t index = std::stoul(id);
  if (index >= cuda.size()) {
    return "ONNX Runtime's CUDA provider plugin reports " + std::to_string(cuda.size()) + " CUDA device(s), so there is no device " + id;
  }
  return TakeMessage(api.SessionOptionsAppendExecutionProvider_V2(options, env, &cuda[index], 1, keys.data(), values.data(),
                                                                 keys.size()));
}
#endif

}  // namespace

std::string AppendCudaProvider(Ort::SessionOptions& options, const std::vector<std::pair<std::string, std::string>>& settings) {
  SharedOrtEnv();  // loading the provider logs through the environment, and fails without one
  const OrtApi& api = Ort::GetApi();
  OrtCUDAProviderOptionsV2* cuda = nullptr;
  OrtStatus* status = api.CreateCUDAProviderOptions(&cuda);
  if (!status && !settings.empty()) {
    std::vector<const char*> keys, values;
    for (const auto& [k, v] : settings) {
      keys.push_back(k.c_str());
      values.push_back(v.c_str());
    }
    status = api.UpdateCUDAProviderOptions(cuda, keys.data(), values.data(), keys.size());
  }
  if (!status) status = api.SessionOptionsAppendExecutionProvider_CUDA_V2(options, cuda);
  if (cuda) api.ReleaseCUDAProviderOptions(cuda);
  std::string message = TakeMessage(status);
#if ORT_API_VERSION >= 22
  // A core built without the CUDA provider (ONNX Runtime's CPU release) takes it as a plugin.
  if (message.find("not enabled") != std::string::npos) return AppendCudaPlugin(options, settings);
#endif
  return message;
}

const std::string& CudaProviderLoadError() {
  static const std::string error = [] {
    const auto missing = MissingCudaProviderLibraries();
    if (!missing.empty()) {
      std::string names;
      for (const auto& n : missing) names += (names.empty() ? "" : ", ") + n;
      return names + " missing from " + OrtLibraryDir();
    }
    Ort::SessionOptions options;
    // Setting an option loads the libraries too, and its error names the library and the loader's reason.
    return AppendCudaProvider(options, {{"device_id", "0"}});
  }();
  return error;
}

}  // namespace m3
