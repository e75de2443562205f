// The bge_m3 operator domain the graph rewrites target (FusedAttention, LinearBf16).
#pragma once
#include <onnxruntime_cxx_api.h>

namespace m3 {

/// Registers the bge_m3 operator domain on session options (the domain lives for the process).
void AddBgeM3Ops(Ort::SessionOptions& options);

}  // namespace m3
