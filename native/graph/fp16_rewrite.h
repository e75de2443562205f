// Converts an fp32 encoder graph to fp16 for `precision: 'fp16'` (the GPU's tensor cores):
// every float weight, constant and activation becomes float16, except where half precision is
// not safe, which keeps fp32 with Cast nodes at its edges:
//   - LayerNorm statistics. A LayerNorm exported as ReduceMean, Sub, Pow, ReduceMean, Add(eps),
//     Sqrt, Div keeps those seven nodes in fp32 (a residual stream in the hundreds squares past
//     fp16's 65504); its scale and bias run in fp16. The result is the pattern ONNX Runtime fuses
//     into one LayerNormalization node (input cast to fp32, Div cast back before the Mul), whose
//     kernels compute the statistics in fp32 anyway. A LayerNormalization node stays as it is.
//   - Squared norms: ReduceL2, ReduceSumSquare and any other Pow, and what only rescales their
//     result (ReduceSum/ReduceMean, Sqrt, Clip, Max, Min, Add of a constant, Expand, ...), so
//     an L2 normalisation's clamp (1e-12) keeps its value.
// Softmax stays fp16: ONNX Runtime's kernels accumulate it in fp32. Constants beyond fp16's range
// (an attention mask's float32 minimum) are held at +-65504. The graph's float outputs are cast
// back to fp32 under their own names, so what reads them is unchanged. Like the other rewrites it
// works on the protobuf wire format; weights kept in external data are read and inlined as fp16.
#pragma once
#include <cstdint>
#include <string>

namespace m3 {

struct Fp16Rewrite {
  std::string model;          // the converted ModelProto; empty when the graph was not converted
  int64_t tensors = 0;        // float initializers and constants now stored as fp16
  int64_t clamped = 0;        // of their values, those held at +-65504
  int layer_norms = 0;        // decomposed LayerNorms whose statistics stay fp32
  int fp32_nodes = 0;         // nodes kept in fp32 in all (the LayerNorms' included)
  int casts = 0;              // Cast nodes added at the edges
  std::string problem;        // why the graph was not converted
};

/// Converts a serialized ONNX ModelProto; `model_dir` is where its external data lives.
Fp16Rewrite RewriteFloat16(const std::string& model_bytes, const std::string& model_dir);

}  // namespace m3
