#include "core/ort_env.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <cstdio>
#include <cstring>

namespace m3 {
namespace {

const char* const kSeverityNames[] = {"verbose", "info", "warning", "error", "fatal"};

/// ONNX Runtime's log lines, as ours: "bge-m3: onnxruntime warning: ..." on stderr.
void LogToStderr(void*, OrtLoggingLevel severity, const char*, const char*, const char*, const char* message) {
  const int s = static_cast<int>(severity);
  std::fprintf(stderr, "bge-m3: onnxruntime %s: %s\n", s >= 0 && s <= 4 ? kSeverityNames[s] : "log", message);
}

/// The least severe ONNX Runtime message that is printed: BGE_M3_ORT_LOG_LEVEL (verbose, info,
/// warning, error or fatal), else error, so that a load prints nothing (ONNX Runtime warns about
/// the graph optimisations it makes, which are not the user's concern).
OrtLoggingLevel LogLevel() {
  const char* chosen = getenv("BGE_M3_ORT_LOG_LEVEL");
  if (chosen && *chosen) {
    for (int i = 0; i < 5; ++i)
      if (std::strcmp(chosen, kSeverityNames[i]) == 0) return static_cast<OrtLoggingLevel>(i);
    std::fprintf(stderr, "bge-m3: BGE_M3_ORT_LOG_LEVEL='%s' is not verbose, info, warning, error or fatal; using error\n", chosen);
  }
  return ORT_LOGGING_LEVEL_ERROR;
}

}  // namespace

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
    return new Ort::Env(LogLevel(), "bge-m3", LogToStderr, nullptr);
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
