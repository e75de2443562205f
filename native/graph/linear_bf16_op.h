// The LinearBf16 custom operator (domain bge_m3) that linear_rewrite.h rewrites dense layers to,
// computed by kernels/linear_bf16.h on ONNX Runtime's intra-op threads.
//   inputs:  x [..., in] (float), W [in, out] (a constant initializer; [out, in] with trans_b = 1),
//            b [out] (optional constant)
//   output:  [..., out] = x · W + b, with x and W rounded to bf16 and fp32 accumulation
// W is packed once, when ONNX Runtime creates the kernel.
#pragma once
#include <onnxruntime_cxx_api.h>

namespace m3 {

/// The operator, for the bge_m3 domain (custom_ops.h); it lives for the process.
const OrtCustomOp* LinearBf16CustomOp();

}  // namespace m3
