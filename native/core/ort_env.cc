#include "core/ort_env.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

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

}  // namespace m3
