#include "core/ort_values.h"

#include "base/error.h"
#include "base/half.h"

namespace m3 {
namespace {

std::string ElementTypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    default: return "ONNX element type " + std::to_string(static_cast<int>(type));
  }
}

}  // namespace

std::vector<int64_t> ShapeOf(const Ort::Value& v) { return v.GetTensorTypeAndShapeInfo().GetShape(); }

bool FloatLike(const Ort::Value& v) {
  const auto type = v.GetTensorTypeAndShapeInfo().GetElementType();
  return type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ||
         type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
}

void RequireFloat(const Ort::Value& v, const std::string& name) {
  if (!FloatLike(v)) {
    throw CoreError("ERR_MODEL_LAYOUT", "Output '" + name + "' is " + ElementTypeName(v.GetTensorTypeAndShapeInfo().GetElementType()) +
                                            "; bge-m3 reads float32, float16 and bfloat16 outputs. Export the model with "
                                            "one of those output types.");
  }
}

const float* FloatData(const Ort::Value& v, std::vector<float>* scratch) {
  const auto info = v.GetTensorTypeAndShapeInfo();
  const auto type = info.GetElementType();
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return v.GetTensorData<float>();
  const size_t n = info.GetElementCount();
  scratch->resize(n);
  const auto* src = static_cast<const uint16_t*>(v.GetTensorRawData());
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) WidenHalfs(src, n, scratch->data());
  else WidenBf16s(src, n, scratch->data());
  return scratch->data();
}

}  // namespace m3
