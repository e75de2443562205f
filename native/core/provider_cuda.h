// ONNX Runtime's CUDA execution provider (registered in core/providers.cc as "cuda"): the
// libraries it loads, for the runtime report and the errors that name what is missing.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <onnxruntime_cxx_api.h>

namespace m3 {

/// Provider libraries the CUDA execution provider needs next to libonnxruntime.
std::vector<std::string> CudaProviderLibraries();

/// The CUDA provider libraries missing from OrtLibraryDir() (empty when all are there).
std::vector<std::string> MissingCudaProviderLibraries();

/// Appends ONNX Runtime's CUDA execution provider with these V2 options (key, value) to
/// `options`, which loads its libraries; returns ONNX Runtime's error message, or "" on success.
std::string AppendCudaProvider(Ort::SessionOptions& options, const std::vector<std::pair<std::string, std::string>>& settings);

/// Why the CUDA execution provider cannot be loaded here ("" when it can): its libraries are
/// missing, or loading them fails (say, CUDA or cuDNN libraries not on the library path). Loads
/// them once, on the first call. Without a GPU or driver, ONNX Runtime's check of device 0 fails
/// here too; a session on some other missing device fails when it is created.
const std::string& CudaProviderLoadError();

}  // namespace m3
