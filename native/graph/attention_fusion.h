// Rewrites an exported encoder graph so each self-attention core runs as one fused node.
//
// The pattern, as torch.onnx exports BERT-family attention (eager or SDPA):
//   s = MatMul(q, kt)  [-> Div(s, c) | Mul(s, c)]  [-> Add(s, mask)]  -> Softmax(axis -1)
//   out = MatMul(softmax, v)
// becomes  out = bge_m3.FusedAttention(q, kt, v[, mask]) {scale[, bf16]}. Every intermediate must have
// that one consumer and not be a graph output; anything else is left as it is. The rewrite works
// on the protobuf wire format: untouched fields (and the weights with them) are copied byte for
// byte, so it needs no ONNX library.
#pragma once
#include <string>

namespace m3 {

/// The custom operator's domain and name (registered by RegisterFusedAttention).
constexpr const char* kFusedAttentionDomain = "bge_m3";
constexpr const char* kFusedAttentionOp = "FusedAttention";

struct AttentionFusion {
  std::string model;  // the rewritten ModelProto (empty when nothing was fused)
  int fused = 0;      // attention blocks rewritten
};

/// Fuses the attention blocks of a serialized ONNX ModelProto. A model that does not parse as
/// protobuf, or has no matching block, gives fused == 0 (the caller loads the original). With
/// `bf16` the fused nodes compute their products in bf16 (AttentionArgs::bf16).
AttentionFusion FuseAttentionBlocks(const std::string& model_bytes, bool bf16 = false);

}  // namespace m3
