#include "graph/fused_attention_op.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "graph/attention_fusion.h"
#include "base/error.h"
#include "kernels/attention.h"

namespace m3 {
namespace {

struct Job {
  AttentionArgs args;
  IsaTier tier;
  size_t scratch_floats;
};

void RunUnit(void* data, size_t unit) {
  const Job& job = *static_cast<const Job*>(data);
  thread_local std::vector<float> scratch;  // per ONNX Runtime thread, grown to the largest call
  if (scratch.size() < job.scratch_floats) scratch.resize(job.scratch_floats);
  AttentionRunUnit(job.tier, job.args, static_cast<int64_t>(unit), scratch.data());
}

struct FusedAttentionKernel {
  float scale = 1.0f;
  bool bf16 = false;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Compute(Ort::KernelContext(context));
      return nullptr;
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, e.what());
    }
  }

  void Compute(Ort::KernelContext ctx) {
    const Ort::ConstValue q = ctx.GetInput(0), kt = ctx.GetInput(1), v = ctx.GetInput(2);
    const Ort::ConstValue mask = ctx.GetInputCount() > 3 ? ctx.GetInput(3) : Ort::ConstValue(nullptr);
    std::vector<int64_t> qs = q.GetTensorTypeAndShapeInfo().GetShape();
    std::vector<int64_t> ks = kt.GetTensorTypeAndShapeInfo().GetShape();
    std::vector<int64_t> vs = v.GetTensorTypeAndShapeInfo().GetShape();
    const size_t rank = qs.size();
    auto fail = [&](const std::string& what) {
      throw std::runtime_error("FusedAttention: " + what + " (q " + ShapeString(qs) + ", kt " + ShapeString(ks) + ", v " +
                               ShapeString(vs) + "); load the model with fusedAttention: false to run the graph's own attention");
    };
    if (rank < 2 || rank > 4 || ks.size() != rank || vs.size() != rank) fail("q, kt and v must all have rank 2, 3 or 4");
    // Rank 3 is [batch, len, dim] (heads folded into the batch), rank 2 one [len, dim] matrix.
    while (qs.size() < 4) {
      qs.insert(qs.begin(), 1);
      ks.insert(ks.begin(), 1);
      vs.insert(vs.begin(), 1);
    }
    if (rank == 3) {  // [1, B, ...] -> [B, 1, ...]
      std::swap(qs[0], qs[1]);
      std::swap(ks[0], ks[1]);
      std::swap(vs[0], vs[1]);
    }
    AttentionArgs a;
    a.batch = qs[0];
    a.heads = qs[1];
    a.q_len = qs[2];
    a.head_dim = qs[3];
    a.kv_len = ks[3];
    a.v_dim = vs[3];
    if (ks[0] != a.batch || vs[0] != a.batch || ks[1] != a.heads || vs[1] != a.heads) fail("batch and head dimensions differ");
    if (ks[2] != a.head_dim || vs[2] != a.kv_len) fail("q · kt or the weights · v do not chain");
    std::vector<int64_t> out_shape = {a.batch, a.heads, a.q_len, a.v_dim};
    if (rank == 3) out_shape.erase(out_shape.begin() + 1);
    if (rank == 2) out_shape.erase(out_shape.begin(), out_shape.begin() + 2);
    Ort::UnownedValue out = ctx.GetOutput(0, out_shape);
    a.q = q.GetTensorData<float>();
    a.kt = kt.GetTensorData<float>();
    a.v = v.GetTensorData<float>();
    a.out = out.GetTensorMutableData<float>();
    a.scale = scale;
    a.bf16 = bf16;
    if (mask) {
      // Right-aligned broadcasting against the scores ([B,H,Sq,Skv], [B,Sq,Skv] or [Sq,Skv] by
      // rank): a dimension of 1 gets stride 0. A mask constant along the keys shifts every score
      // of a row alike, which the softmax cancels.
      std::vector<int64_t> ms = mask.GetTensorTypeAndShapeInfo().GetShape();
      const std::vector<int64_t> full = rank == 4   ? std::vector<int64_t>{a.batch, a.heads, a.q_len, a.kv_len}
                                        : rank == 3 ? std::vector<int64_t>{a.batch, a.q_len, a.kv_len}
                                                    : std::vector<int64_t>{a.q_len, a.kv_len};
      if (ms.size() > rank) fail("the mask " + ShapeString(ms) + " has a higher rank than the scores");
      std::vector<int64_t> dims(rank - ms.size(), 1);
      dims.insert(dims.end(), ms.begin(), ms.end());
      std::vector<int64_t> strides(rank);
      int64_t stride = 1;
      for (size_t d = rank; d-- > 0;) {
        if (dims[d] != 1 && dims[d] != full[d]) fail("the mask " + ShapeString(ms) + " does not broadcast to the scores");
        strides[d] = dims[d] == 1 ? 0 : stride;
        stride *= dims[d];
      }
      if (dims[rank - 1] == a.kv_len) {
        a.mask = mask.GetTensorData<float>();
        a.mask_stride_q = strides[rank - 2];
        a.mask_stride_b = rank >= 3 ? strides[0] : 0;
        a.mask_stride_h = rank == 4 ? strides[1] : 0;
      }
    }
    if (a.batch * a.heads * a.q_len * a.v_dim == 0) return;
    if (a.kv_len == 0) fail("there are no keys");
    Job job{a, ActiveTier(), AttentionScratchFloats(a)};
    ctx.ParallelFor(RunUnit, static_cast<size_t>(AttentionUnitCount(a)), 0, &job);
  }
};

struct FusedAttentionOp : Ort::CustomOpBase<FusedAttentionOp, FusedAttentionKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    try {
      auto k = std::make_unique<FusedAttentionKernel>();
      k->scale = Ort::ConstKernelInfo(info).GetAttribute<float>("scale");
      int64_t bf16 = 0;  // optional: absent means fp32
      OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_int64(info, "bf16", &bf16);
      k->bf16 = status == nullptr && bf16 != 0;
      if (status) Ort::GetApi().ReleaseStatus(status);
      *kernel = k.release();
      return nullptr;
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, e.what());
    }
  }
  const char* GetName() const { return kFusedAttentionOp; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace

const OrtCustomOp* FusedAttentionCustomOp() {
  static FusedAttentionOp op;
  return &op;
}

}  // namespace m3
