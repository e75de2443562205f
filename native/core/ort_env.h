// The process-wide ONNX Runtime environment and facts about the loaded runtime library.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <onnxruntime_cxx_api.h>

namespace m3 {

/// The one Ort::Env of the process. Created on first use and deliberately never destroyed: it
/// must outlive every session in every worker thread, and tearing it down at exit races them.
Ort::Env& SharedOrtEnv();

/// The ONNX Runtime version string of the library actually loaded (e.g. "1.30.0").
std::string OrtVersion();

/// Execution providers compiled into the loaded library (not necessarily loadable: the CUDA
/// provider also needs its provider libraries next to libonnxruntime).
std::vector<std::string> OrtAvailableProviders();

/// Folder that holds the loaded libonnxruntime (empty when it cannot be told).
std::string OrtLibraryDir();

}  // namespace m3
