// Reading ONNX Runtime output values: shapes, element types, and 16-bit float outputs widened.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <onnxruntime_cxx_api.h>

namespace m3 {

std::vector<int64_t> ShapeOf(const Ort::Value& v);

/// float32, or a 16-bit float that the encoder widens (fp16 / bf16 exports).
bool FloatLike(const Ort::Value& v);

/// Throws CoreError(ERR_MODEL_LAYOUT) unless output `name` is float32, float16 or bfloat16.
void RequireFloat(const Ort::Value& v, const std::string& name);

/// An output as floats: float32 in place, a 16-bit float widened into `scratch`.
const float* FloatData(const Ort::Value& v, std::vector<float>* scratch);

}  // namespace m3
