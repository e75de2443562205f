// Rewrites the encoder graph's dense layers for `precision: 'bf16'`: each
//   y = MatMul(x, W) [-> Add(y, b)]      W a 2-D float initializer [in, out], or one stored
//                                        [out, in] read through Transpose (perm 1, 0)
//   y = Gemm(x, W[, b]) {transB}         alpha = beta = 1, transA = 0
// with b a 1-D float initializer of the output width, becomes
//   y = bge_m3.LinearBf16(x, W[, b]) {trans_b: W stored [out, in]}
// which kernels/linear_bf16.h computes with bf16 inputs and fp32 accumulation. The attention's
// own products (both inputs computed) and anything the graph feeds in are left as they are.
// Like attention_fusion.h it works on the protobuf wire format, copying everything else as is.
#pragma once
#include <string>

namespace m3 {

constexpr const char* kLinearBf16Op = "LinearBf16";

struct LinearRewrite {
  std::string model;  // the rewritten ModelProto (empty when nothing was rewritten)
  int layers = 0;     // MatMul nodes rewritten
};

/// Rewrites the dense layers of a serialized ONNX ModelProto (possibly already attention-fused).
LinearRewrite RewriteLinearsBf16(const std::string& model_bytes);

}  // namespace m3
