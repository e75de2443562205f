// The FusedAttention custom operator (domain bge_m3) that attention_fusion.h rewrites graphs to,
// computed by kernels/attention.h on ONNX Runtime's intra-op threads.
//   inputs:  q [B,H,Sq,d], kt [B,H,d,Skv], v [B,H,Skv,dv] (or rank 3 without H, rank 2 without B and H),
//            mask (optional): additive, broadcastable to [B,H,Sq,Skv]
//   output:  [B,H,Sq,dv]; attributes scale (float), bf16 (int, optional: the products in bf16)
#pragma once
#include <onnxruntime_cxx_api.h>

namespace m3 {

/// The operator, for the bge_m3 domain (custom_ops.h); it lives for the process.
const OrtCustomOp* FusedAttentionCustomOp();

}  // namespace m3
