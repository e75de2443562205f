#include "graph/custom_ops.h"

#include "graph/attention_fusion.h"
#include "graph/fused_attention_op.h"
#include "graph/linear_bf16_op.h"

namespace m3 {

void AddBgeM3Ops(Ort::SessionOptions& options) {
  static Ort::CustomOpDomain* domain = [] {
    auto* d = new Ort::CustomOpDomain(kFusedAttentionDomain);
    d->Add(FusedAttentionCustomOp());
    d->Add(LinearBf16CustomOp());
    return d;
  }();
  options.Add(*domain);
}

}  // namespace m3
