#include "core/ort_env.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

namespace m3 {

Ort::Env& SharedOrtEnv() {
  static Ort::Env* env = [] {
    // ONNX Runtime's POSIX telemetry (on by default since 1.2x) matches regular expressions
    // against the process command line while the environment is created; libstdc++'s regex
    // recurses once per character, so a command line of some 30,000 characters overflows the
    // stack and kills the process (a CLI text argument, a long `node -e` script). The variable
    // is read at creation: set here, unless the user chose a value, it turns telemetry off.
    // Upstream: onnxruntime/core/platform/posix/telemetry.cc.
    const char* chosen = getenv("ORT_DISABLE_TELEMETRY");
    if (!chosen || !*chosen) setenv("ORT_DISABLE_TELEMETRY", "1", /*overwrite=*/1);
    return new Ort::Env(ORT_LOGGING_LEVEL_ERROR, "bge-m3");
  }();
  return *env;
}

std::string OrtVersion() { return Ort::GetVersionString(); }

std::vector<std::string> OrtAvailableProviders() { return Ort::GetAvailableProviders(); }

std::string OrtLibraryDir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&OrtGetApiBase), &info) == 0 || !info.dli_fname) return "";
  const std::string path = info.dli_fname;
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string(".") : path.substr(0, slash);
  // The folder itself resolved (not the library, which may be a link into another folder): the
  // same folder the loader reads for "dir/name", without "build/Release/../.." in messages.
  char resolved[PATH_MAX];
  return realpath(dir.c_str(), resolved) ? std::string(resolved) : dir;
}

std::vector<std::string> CudaProviderLibraries() {
  return {"libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"};
}

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
  if (!status) return "";
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ' || message.back() == '.')) message.pop_back();
  return message.empty() ? "unknown error" : message;
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

std::vector<std::string> MissingCudaProviderLibraries() {
  std::vector<std::string> missing;
  const std::string dir = OrtLibraryDir();
  for (const auto& name : CudaProviderLibraries()) {
    struct stat st {};
    if (stat((dir + "/" + name).c_str(), &st) != 0) missing.push_back(name);
  }
  return missing;
}

}  // namespace m3
